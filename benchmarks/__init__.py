"""Benchmarks: accuracy vs the fp32 reference, steps, latency, memory and energy per run, on this machine or a
device over ssh.

`harness.run_bench`, `report.compare`, `remote.run_remote`, `machine.doctor`; the CLI in `commands.register`.
Imports stay light here (no torch, no matplotlib) since this runs on devices.
"""
