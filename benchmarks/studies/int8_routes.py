"""int8 routes side by side with honest statistics: every quantized step graph of one or more bundles, on every
engine they hold, solves the same held-out puzzles as the reference bundle's ORT fp32 graph, and each drop is a
paired comparison with its 95% interval.

`python -m benchmarks.studies.int8_routes REFERENCE_BUNDLE [OTHER_BUNDLE ...] [-n 1000] [--halt fixed,learned:3]
[--json]` — e.g. the bundled model exported with every route, and its QAT fine-tune exported with int8. The
puzzles are generated with a seed no export, guard or training run uses. Speed: `trm-edge bench` on the same bundles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from trm_edge.bundle import Bundle
from trm_edge.evaluate import paired_drop
from trm_edge.export.guard import solved_rows
from trm_edge.halting import HaltPolicy
from trm_edge.runtimes import ENGINES, open_solver

HELDOUT_SEED = 3  # Codec.sample seeds 0-2 are the export's verification, calibration and guard sets


def measure(bundles: list[str], n: int, halts: list[str], threads: int = 2, slots: int = 64) -> list[dict]:
    ref = open_solver(bundles[0], "ort", "step", "fp32", threads)
    puzzles = ref.codec.sample(n, HELDOUT_SEED)

    def run(solver, halt):  # continuous batching: a halted row's slot takes the next puzzle at once
        t0 = time.perf_counter()
        sol = solver.solve_stream(puzzles, HaltPolicy.parse(halt, solver.config.halt_max_steps), slots=slots)
        return solved_rows(ref.codec, puzzles, sol, sol.tokens), sol.tokens, sol.steps, time.perf_counter() - t0

    base = {h: run(ref, h) for h in halts}
    rows = []
    for path, b, backend, fmt, precision, quant in _routes(bundles):
        solver = open_solver(b, backend, "step", precision, threads)
        for h in halts:
            ok, tokens, steps, secs = run(solver, h)
            ok32, tok32, steps32, _ = base[h]
            q = quant.get(precision, {})
            rows.append({"bundle": path, "backend": backend, "precision": precision, "halt": h,
                         "fp32_exact": float(ok32.mean()),
                         "exact": float(ok.mean()), **paired_drop(ok32, ok),
                         "answers_equal": float((tokens == tok32).all(1).mean()),
                         "mean_steps": float(steps.mean()), "fp32_mean_steps": float(steps32.mean()),
                         "file_mb": round(b.graph_bytes("step", precision, fmt) / 1e6, 3),
                         "quantize_seconds": q.get("seconds"), "int8_matmuls": q.get("quantized_matmuls"),
                         "solve_seconds": round(secs, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _routes(bundles: list[str]):
    """(path, its opened bundle, backend, format, precision, its quantization records) for every step graph of
    every engine the bundles hold, the reference's fp32 graphs excepted (fp32 is one model on every engine)."""
    for path in bundles:
        b = Bundle(path)
        for backend, (fmt, _, _) in ENGINES.items():
            if fmt not in b.formats() or "step" not in b.formats()[fmt]:
                continue
            quant = b.manifest.get("quantization", {}) if fmt == "onnx" else \
                b.manifest["formats"][fmt].get("quantization", {})
            for precision in b.formats()[fmt]["step"]:
                if not (path == bundles[0] and precision == "fp32"):
                    yield path, b, backend, fmt, precision, quant


def table(rows: list[dict]) -> str:
    lines = ["| bundle | engine | route | halt | exact (fp32) | drop pp [95% CI] | lost/gained | answers = fp32 | MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95_pp"]
        lines.append(f"| {r['bundle']} | {r['backend']} | {r['precision']} | {r['halt']} | "
                     f"{r['exact']:.1%} ({r['fp32_exact']:.1%}) | "
                     f"{r['drop_pp']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {r['lost']}/{r['gained']} | "
                     f"{r['answers_equal']:.1%} | {r['file_mb']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="the first bundle's fp32 step graph is the reference")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--halt", default="fixed,learned:3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    a = ap.parse_args()
    result = measure(a.bundles, a.n, a.halt.split(","), a.threads)
    print(json.dumps(result, indent=1) if a.json else table(result))
