"""Which MatMuls int8 keeps in float by default, decided by measurement: quantize a bundle's step graph with
nothing kept in float and with the defaults (q_head, lm_head), and (--per-module) with one module at a time in
int8, and compare accuracy and latency side by side:
`python -m benchmarks.studies.int8_defaults BUNDLE [--calib 32] [--heldout 128] [--per-module]`."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnx

from trm_edge.bundle import Bundle
from trm_edge.export.guard import guard_figures, step_ms
from trm_edge.export.quantize import DEFAULT_FLOAT_MODULES, calibration_feeds, matmul_nodes, module_of, quantize_step
from trm_edge.halting import HaltPolicy
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.ort import OrtAdapter
from trm_edge.runtimes.solver import Solver


def measure(bundle: str, calib: int, heldout: int, threads: int = 2, per_module: bool = False) -> list[dict]:
    b = Bundle(bundle)
    fp32 = open_solver(b, "ort", "step", "fp32", threads)
    src = b.graph_file("step")
    mm = matmul_nodes(onnx.load(str(src)))
    defaults = [n.name for n in mm if module_of(n) in DEFAULT_FLOAT_MODULES]
    feeds = calibration_feeds(fp32, fp32.codec.sample(calib, 1), fp32.config.halt_max_steps)
    x = fp32.codec.sample(heldout, 2)
    refs = {p: fp32.solve(x, HaltPolicy.parse(p, fp32.config.halt_max_steps)) for p in ("fixed", "learned:0")}
    trials = [(label, exclude) for label, exclude in (("all quantized", []), ("q_head+lm_head float", defaults))]
    if per_module:  # one module quantized at a time (its ~9 calls per step), everything else float
        for mod in sorted({module_of(n) for n in mm} - set(DEFAULT_FLOAT_MODULES)):
            trials.append((f"only {mod}", [n.name for n in mm if module_of(n) != mod]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("int8-static", "int8-dynamic"):
            for i, (label, exclude) in enumerate(trials):
                dst = Path(tmp) / f"{mode}-{i}.onnx"
                quantize_step(src, dst, mode, feeds, exclude, Path(tmp) / "calib.json")
                s = Solver(OrtAdapter(dst, threads), "step", fp32.config, fp32.codec,
                           {"H_init": fp32.H_init, "L_init": fp32.L_init})
                figs = {p: guard_figures(ref, s.solve(x, HaltPolicy.parse(p, fp32.config.halt_max_steps)), x,
                                         fp32.codec) for p, ref in refs.items()}
                rows.append({"mode": mode, "float": label, "step_ms_b1": step_ms([s], feeds[0])[0],
                             **{f"{p}/{k}": round(v, 4) for p, f in figs.items() for k, v in f.items()
                                if k in ("int8_exact", "fp32_exact", "answer_agreement", "int8_mean_steps",
                                         "fp32_mean_steps")}})
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=128)
    ap.add_argument("--per-module", action="store_true", help="also quantize one module at a time")
    a = ap.parse_args()
    print(json.dumps(measure(a.bundle, a.calib, a.heldout, per_module=a.per_module), indent=2))
