"""Long runs: thousands of solves with one loaded solver, as an app embedding it would make. Reports resident
memory after warm-up and at the end, and whether any answer or step count changed between passes over the same
puzzles. `python -m benchmarks.studies.soak BUNDLE [--solves 5000] [--graph step] [--halt learned:3] [--json]`."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from trm_edge.halting import HaltPolicy


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def soak(solver, puzzles: np.ndarray, policy: HaltPolicy, solves: int, warmup: int = 200,
         progress=None) -> dict:
    """Solve one puzzle at a time, cycling through `puzzles`; memory is sampled every len(puzzles) solves."""
    first: dict[int, tuple[bytes, int]] = {}
    changed, samples, base = 0, [], None
    t0 = time.perf_counter()
    for i in range(solves):
        j = i % len(puzzles)
        sol = solver.solve(puzzles[j:j + 1], policy)
        key = (sol.tokens.tobytes(), int(sol.steps[0]))
        changed += first.setdefault(j, key) != key
        if i + 1 == warmup:
            base = rss_mb()
        if i + 1 > warmup and (i + 1) % len(puzzles) == 0:
            samples.append(rss_mb())
        if progress:
            progress(i + 1)
    end = rss_mb()
    return {"solves": solves, "warmup_solves": warmup, "distinct_puzzles": len(puzzles),
            "rss_after_warmup_mb": round(base, 2), "rss_end_mb": round(end, 2),
            "rss_max_after_warmup_mb": round(max(samples + [end]), 2),
            "growth_mb": round(max(samples + [end]) - base, 2), "answers_changed": changed,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    from trm_edge.benchmarks.harness import load_pairs
    from trm_edge.runtimes import open_solver

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--solves", type=int, default=5000)
    ap.add_argument("--data", default="builtin", help="puzzle file, or the builtin held-out puzzles")
    ap.add_argument("--puzzles", type=int, default=250)
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--graph", default="step")
    ap.add_argument("--halt", default="learned:3")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    solver = open_solver(a.bundle, a.backend, a.graph, threads=a.threads)
    puzzles = np.stack([p for p, _ in load_pairs(solver.codec, a.data, a.puzzles)])
    res = soak(solver, puzzles, solver.policy(HaltPolicy.parse(a.halt, solver.config.halt_max_steps)), a.solves)
    print(json.dumps(dict(res, bundle=a.bundle, backend=a.backend, graph=a.graph, halt=a.halt, threads=a.threads)))


if __name__ == "__main__":
    main()
