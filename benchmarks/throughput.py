"""Throughput with and without continuous batching, side by side in one process:
`python -m trm_edge.benchmarks.throughput BUNDLE [--halt learned:0] [--slots 64] [-n 512] [--data FILE]`."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from trm_edge.api import builtin_data
from trm_edge.runtimes import open_solver
from trm_edge.tasks import read_puzzles


def measure(bundle: str, halt: str, slots: int, n: int, data: str | None, threads: int | None,
            precision: str = "fp32") -> dict:
    solver = open_solver(bundle, "ort", "step", precision, threads)
    files = [data] if data else [str(f) for f in builtin_data(solver.codec.name)]
    x = np.stack([p for f in files for p, _ in read_puzzles(solver.codec, f)])
    x = np.resize(x, (n, x.shape[1]))
    res = {"bundle": bundle, "halt": halt, "slots": slots, "n": n, "precision": precision}
    for name, run in (("batched", lambda: [solver.solve(x[i:i + slots], halt) for i in range(0, n, slots)]),
                      ("continuous", lambda: [solver.solve_stream(x, halt, slots)])):
        solver.solve(x[:slots], halt)  # warm-up
        t0 = time.perf_counter()
        sols = run()
        dt = time.perf_counter() - t0
        steps = np.concatenate([s.steps for s in sols])
        res[name] = {"puzzles_per_s": round(n / dt, 2), "seconds": round(dt, 2),
                     "mean_steps": round(float(steps.mean()), 2)}
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
    a = ap.parse_args()
    print(json.dumps(measure(a.bundle, a.halt, a.slots, a.n, a.data, a.threads, a.precision), indent=2))
