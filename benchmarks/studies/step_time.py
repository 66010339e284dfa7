"""One step at batch 1 on several engines, each timed alone: engines side by side on a shared 2-core machine.

Alternating engines call by call (as the export's speed check alternates fp32 and int8 of one engine) is wrong across
engines: one engine's idle thread pool still spins while the next runs (measured 2026-12-04: ORT fp32 read 14.6 ms a
step beside LiteRT, 9.0 ms beside OpenVINO). Here each engine gets a pause, warm-up calls and a block of timed calls
of its own, round after round, so drift shows as the spread between rounds. numpy and the engines only (no torch):
it runs where the engines are installed alone, as on a Pi.

    python -m benchmarks.studies.step_time BUNDLE:BACKEND:PRECISION ... [--rounds 3] [--runs 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from trm_edge.api import builtin_data
from trm_edge.runtimes import open_solver
from trm_edge.tasks import read_puzzles


def measure(specs: list[str], rounds: int, runs: int, threads: int) -> dict[str, list[float]]:
    solvers = {}
    for spec in specs:
        bundle, backend, precision = spec.rsplit(":", 2)
        solvers[spec] = open_solver(bundle, backend, "step", precision, threads)
    ref = next(iter(solvers.values()))
    tokens = read_puzzles(ref.codec, str(builtin_data(ref.codec.name)[0]))[0][0][None].astype(np.int64)
    pid, (z_H, z_L) = np.zeros(1, np.int64), ref.carry(1)
    ms = {spec: [] for spec in solvers}
    for _ in range(rounds):
        for spec, s in solvers.items():
            time.sleep(0.5)  # the previous engine's threads stop spinning
            for _ in range(30):
                s.step(tokens, pid, z_H, z_L)
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.step(tokens, pid, z_H, z_L)
                t.append(time.perf_counter() - t0)
            ms[spec].append(round(1000 * float(np.median(t)), 2))
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="+", help="BUNDLE:BACKEND:PRECISION, bundles of one model; the first is the "
                    "reference for the ratios")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    ms = measure(a.specs, a.rounds, a.runs, a.threads)
    first = ms[a.specs[0]]
    print(json.dumps({spec: {"step_ms_b1": v, "speed_vs_first": [round(f / x, 2) for f, x in zip(first, v)]}
                      for spec, v in ms.items()}, indent=2))


if __name__ == "__main__":
    main()
