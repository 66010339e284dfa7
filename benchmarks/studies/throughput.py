"""Throughput with and without continuous batching, side by side in one process:
`python -m benchmarks.studies.throughput BUNDLE [--halt learned:0] [--slots 64] [-n 512] [--data FILE] [--views K]`.
With K views, "batched" is rounds of views over batches of `slots` puzzles (views.solve_views), "continuous" the
streamed views (Solver.solve_stream); both run the same views, so they solve the same puzzles."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from trm_edge.api import builtin_data
from trm_edge.halting import HaltPolicy, Solution
from trm_edge.runtimes import open_solver
from trm_edge.tasks import read_puzzles
from trm_edge.views import solve_views, view_policy


def measure(bundle: str, halt: str, slots: int, n: int, data: str | None, threads: int | None,
            precision: str = "fp32", views: int = 1) -> dict:
    solver = open_solver(bundle, "ort", "step", precision, threads)
    files = [data] if data else [str(f) for f in builtin_data(solver.codec.name)]
    pairs = [pair for f in files for pair in read_puzzles(solver.codec, f)]
    x = np.resize(np.stack([p for p, _ in pairs]), (n, len(pairs[0][0])))
    policy = view_policy(HaltPolicy.parse(halt, solver.config.halt_max_steps), views)
    res = {"bundle": bundle, "halt": str(policy), "views": views, "slots": slots, "n": n, "precision": precision}
    for name, run in (("batched", lambda: [solve_views(solver.solve, solver.codec, x[i:i + slots], policy, views)
                                           for i in range(0, n, slots)]),
                      ("continuous", lambda: [solver.solve_stream(x, policy, slots, views=views)])):
        solver.solve(x[:slots], policy)  # warm-up
        t0 = time.perf_counter()
        sol = Solution.concat(run())
        dt = time.perf_counter() - t0
        solved = [solver.codec.check(p, a) for p, a in zip(x, sol.tokens)]
        res[name] = {"puzzles_per_s": round(n / dt, 2), "seconds": round(dt, 2),
                     "mean_steps": round(float(sol.steps.mean()), 2),
                     "mean_view_steps": round(float(sol.view_steps.mean()), 2), "solved": int(np.sum(solved))}
    res["speedup"] = round(res["continuous"]["puzzles_per_s"] / res["batched"]["puzzles_per_s"], 2)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--halt", default="learned:0")
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("-n", type=int, default=512)
    ap.add_argument("--data")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--views", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(measure(a.bundle, a.halt, a.slots, a.n, a.data, a.threads, a.precision, a.views), indent=2))
