"""Where ONNX Runtime spends one step at batch 1: its own profiler's kernel times per op type, summed into the matrix
products, the quantization ops around them, the rest, and the time outside any kernel (session entry, feeds,
thread wake-ups), for the bundle's fp32 step graph beside its int8 ones.

Why ORT int8 gains little at batch 1 (issue 39 item 4) and what is left outside the GEMMs (item 5) are read here:
each int8 MatMul of a dynamically quantized graph is a DynamicQuantizeLinear of the activation, a MatMulInteger and
a rescale (Mul, Cast) around it, and at batch 1 the GEMMs are small (97 x 128 by 128 x 512 for the bundled model).

    python -m benchmarks.studies.ort_profile BUNDLE [--precision fp32,int8] [--runs 100] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict

import numpy as np

from trm_edge.api import builtin_data
from trm_edge.bundle import Bundle
from trm_edge.runtimes import open_solver
from trm_edge.tasks import read_puzzles

GEMM = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
        "QGemm", "QLinearMatMul", "MatMulNBits"}
QUANT = {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLSTM"}
WARMUP = 20


def step_feed(b: Bundle) -> dict[str, np.ndarray]:
    """One step's inputs at batch 1: a held-out puzzle of the bundle's task and the initial carry."""
    solver = open_solver(b, "ort", "step")
    tokens = read_puzzles(solver.codec, str(builtin_data(solver.codec.name)[0]))[0][0][None].astype(np.int64)
    z_H, z_L = solver.carry(1)
    return {"tokens": tokens, "puzzle_ids": np.zeros(1, np.int64), "z_H": z_H, "z_L": z_L}


def profile(bundle: str, precision: str, runs: int, threads: int) -> dict:
    """Median wall time of a step and the profiler's kernel time per op type (both per step, ms) after WARMUP
    steps."""
    import onnxruntime as ort

    b = Bundle(bundle)
    feed = step_feed(b)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling, so.profile_file_prefix = True, os.path.join(tmp, "p")
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 4
        sess = ort.InferenceSession(str(b.graph_file("step", precision)), so, providers=["CPUExecutionProvider"])
        feed = {i.name: feed[i.name] for i in sess.get_inputs()}
        walls = []
        for k in range(WARMUP + runs):
            t0 = time.perf_counter()
            sess.run(None, feed)
            if k >= WARMUP:
                walls.append(1000 * (time.perf_counter() - t0))
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    after = run_starts[WARMUP] if len(run_starts) > WARMUP else 0
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after:
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    groups = {"gemm": sum(v for k, v in per_op.items() if k in GEMM),
              "quantize": sum(v for k, v in per_op.items() if k in QUANT)}
    groups["other kernels"] = sum(per_op.values()) - groups["gemm"] - groups["quantize"]
    wall = float(np.median(walls))
    groups["outside kernels"] = wall - sum(per_op.values())
    return {"precision": precision, "step_ms": round(wall, 3),
            "groups_ms": {k: round(v, 3) for k, v in groups.items()},
            "ops_ms": {k: round(v, 3) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
            "flops_per_step": b.config.flops_per_step()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--precision", default="fp32,int8")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = [profile(a.bundle, p, a.runs, a.threads) for p in a.precision.split(",")]
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for r in res:
        print(f"{r['precision']}: {r['step_ms']:.2f} ms a step at batch 1 "
              f"({r['flops_per_step'] / r['step_ms'] / 1e6:.0f} GFLOP/s)")
        for k, v in r["groups_ms"].items():
            print(f"  {k:<16} {v:7.3f} ms  {100 * v / r['step_ms']:5.1f}%")
        print("  top ops: " + ", ".join(f"{k} {v:.2f}" for k, v in list(r["ops_ms"].items())[:8]))


if __name__ == "__main__":
    main()
