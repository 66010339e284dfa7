"""Which MatMuls int8 keeps in float by default, decided by measurement: quantize a bundle's step graph with
nothing kept in float and with the defaults (q_head, lm_head), and compare accuracy and latency side by side:
`python -m trm_edge.benchmarks.int8_defaults BUNDLE [--calib 32] [--heldout 128]`."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import onnx

from trm_edge.bundle import Bundle
from trm_edge.export.quantize import (
    DEFAULT_FLOAT_MODULES,
    calibration_feeds,
    guard_figures,
    matmul_nodes,
    module_of,
    quantize_step,
)
from trm_edge.export.verify import sample_puzzles
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.ort import OrtAdapter
from trm_edge.runtimes.solver import Solver


def measure(bundle: str, calib: int, heldout: int, threads: int = 2) -> list[dict]:
    b = Bundle(bundle)
    fp32 = open_solver(b, "ort", "step", "fp32", threads)
    src = b.graph_file("step")
    mm = matmul_nodes(onnx.load(str(src)))
    defaults = [n.name for n in mm if module_of(n) in DEFAULT_FLOAT_MODULES]
    feeds = calibration_feeds(fp32, sample_puzzles(fp32.codec, calib, seed=1), fp32.config.halt_max_steps)
    x = sample_puzzles(fp32.codec, heldout, seed=2)
    ref = fp32.solve(x, "fixed")
    one = x[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("int8", "int8-dynamic"):
            for label, exclude in (("all quantized", []), ("q_head+lm_head float", defaults)):
                dst = Path(tmp) / f"{mode}-{len(exclude)}.onnx"
                quantize_step(src, dst, mode, feeds, exclude)
                s = Solver(OrtAdapter(dst, threads), "step", fp32.config, fp32.codec,
                           {"H_init": fp32.H_init, "L_init": fp32.L_init})
                figs = {p: guard_figures(ref if p == "fixed" else fp32.solve(x, p), s.solve(x, p), x, fp32.codec)
                        for p in ("fixed", "learned:0")}
                s.solve(one, "fixed")
                t0 = time.perf_counter()
                for _ in range(5):
                    s.solve(one, "fixed")
                ms = round(200 * (time.perf_counter() - t0), 2)
                rows.append({"mode": mode, "float": label, "ms_per_solve_b1": ms,
                             **{f"{p}/{k}": round(v, 4) for p, f in figs.items() for k, v in f.items()
                                if k in ("int8_exact", "fp32_exact", "answer_agreement", "int8_mean_steps",
                                         "fp32_mean_steps")}})
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=128)
    a = ap.parse_args()
    print(json.dumps(measure(a.bundle, a.calib, a.heldout), indent=2))
