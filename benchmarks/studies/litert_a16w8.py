"""LiteRT static int8 weights with 16-bit activations ("A16W8") beside the bundle's fp32 LiteRT step: accuracy
(paired, held-out) and step time at batch 1. Not an export mode: XNNPACK has no int16-activation kernels, so LiteRT
runs it on its reference kernels (benchmarks/results/engines.md, issue 13).

`python -m benchmarks.studies.litert_a16w8 BUNDLE [-n 512] [--halt learned:3]` — BUNDLE exported with
`--format litert` (the dynamic-batch signatures); calibration as `litert:int8-static` (seed-1 puzzles, all steps).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.studies.int8_routes import HELDOUT_SEED
from trm_edge.bundle import Bundle
from trm_edge.evaluate import paired_drop
from trm_edge.export.format_litert import BATCHES, STATIC, calibration_calls, recipe_rules
from trm_edge.export.guard import solved_rows, step_ms
from trm_edge.export.quantize import DEFAULT_FLOAT_MODULES, calibration_feeds
from trm_edge.halting import HaltPolicy
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.litert import LiteRtAdapter, quiet_native_output


def measure(bundle: str, n: int, halt: str, calib: int = 32, threads: int = 2) -> dict:
    from ai_edge_quantizer import quantizer

    b = Bundle(bundle)
    fp32 = open_solver(b, "litert", "step", "fp32", threads)
    feeds = calibration_feeds(open_solver(b, "ort", "step", "fp32", threads),
                              fp32.codec.sample(calib, 1), b.config.halt_max_steps)
    with tempfile.TemporaryDirectory() as tmp, quiet_native_output():
        dst = Path(tmp) / "a16w8.tflite"
        rules = recipe_rules(STATIC, DEFAULT_FLOAT_MODULES, activation_bits=16)
        q = quantizer.Quantizer(str(b.graph_file("step", "fp32", "litert")), rules)
        q.quantize(q.calibrate(calibration_calls(feeds, BATCHES))).export_model(str(dst))
        a16 = open_solver(b, "litert", "step", "fp32", threads)
        a16.adapter = LiteRtAdapter(dst, threads)
        puzzles = fp32.codec.sample(n, HELDOUT_SEED)
        policy = HaltPolicy.parse(halt, b.config.halt_max_steps)
        s32, s16 = (s.solve_stream(puzzles, policy, slots=64) for s in (fp32, a16))
        z_H, z_L = fp32.carry(1)
        feed = {"tokens": puzzles[:1], "puzzle_ids": np.zeros(1, np.int64), "z_H": z_H, "z_L": z_L}
        ms = dict(zip(("fp32", "a16w8"), step_ms([fp32, a16], feed)))
        mb = dst.stat().st_size / 1e6
    ok32, ok16 = (solved_rows(fp32.codec, puzzles, s, s32.tokens) for s in (s32, s16))
    return {"n": n, "halt": halt, "fp32_exact": float(ok32.mean()), "a16w8_exact": float(ok16.mean()),
            **paired_drop(ok32, ok16), "answers_equal": float((s16.tokens == s32.tokens).all(1).mean()),
            "step_ms_b1": ms, "speed_vs_fp32": round(ms["fp32"] / ms["a16w8"], 2), "file_mb": round(mb, 2)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("-n", type=int, default=512)
    ap.add_argument("--halt", default="learned:3")
    a = ap.parse_args()
    print(json.dumps(measure(a.bundle, a.n, a.halt), indent=1))
