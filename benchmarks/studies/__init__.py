"""One-off experiments whose figures benchmarks/RESULTS.md cites; not installed (see README.md here). Run from the
repository root: `python -m benchmarks.studies.NAME`."""
