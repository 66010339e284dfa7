"""One supervision step at ARC size (916 tokens, hidden 512), issue 35 item 5: the bundle's ONNX step graph on ORT,
fp32 and int8, against PyTorch eager as the official code runs it (fp32 and bf16 forward), at batch 1 and at the
batch of a vote. Each is timed alone (a pause, a warm-up call, then `--runs` timed calls), on the same inputs.

int8 is the bundle's own int8 step graph, or else its fp32 step quantized here by the route `--quantize int8`
ships (int8-rows): the time of a step does not depend on the weights, while a guard on random weights would judge
nothing (their near-tied logits flip under any rounding).

`python -m benchmarks.studies.arc_step CKPT BUNDLE [--batch 1,8] [--runs 3] [--threads 2]`
(BUNDLE: an export of CKPT, e.g. `--tasks ... --graph step`; the step's cost does not depend on which rows.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trm_edge.bundle import Bundle
from trm_edge.checkpoint import load_model, with_config
from trm_edge.export.quantize import route_of
from trm_edge.model import Batch, Carry
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.ort import OrtAdapter
from trm_edge.tasks import ARC


def _timed(call, runs: int) -> float:
    time.sleep(0.5)  # the previous engine's threads stop spinning
    call()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        t.append(time.perf_counter() - t0)
    return float(np.median(t))


def _graphs(b: Bundle, tmp: Path) -> dict[str, Path]:
    """fp32 and int8 step graphs: the bundle's, int8 quantized here where the bundle has none."""
    from trm_edge.export.quantize import candidates, quantize_step

    files = b.formats()["onnx"]["step"]
    graphs = {p: b.graph_file("step", p) for p in ("fp32", "int8") if p in files}
    if "int8" not in graphs:
        import onnx

        route = route_of("int8", False)
        heads = candidates(onnx.load(str(graphs["fp32"])), route)[1]
        quantize_step(graphs["fp32"], tmp / "int8.onnx", route, [], heads)
        graphs["int8"] = tmp / "int8.onnx"
    return graphs


def measure(ckpt: str, bundle: str, batches: list[int], runs: int, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    model, _ = load_model(ckpt, rows=[1])
    models = {name: with_config(model, dataclasses.replace(model.config, forward_dtype=dtype)).eval()
              for name, dtype in (("fp32", "float32"), ("bf16", "bfloat16"))}
    b = Bundle(bundle)
    fp32 = open_solver(b, "ort", "step", "fp32", threads)  # its initial carry
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        engines = {p: OrtAdapter(g, threads) for p, g in _graphs(b, Path(tmp)).items()}
        for n in batches:
            tokens = ARC.sample(n) if n <= 120 else np.resize(ARC.sample(120), (n, 900))
            pid = np.zeros(n, np.int64)
            z_H, z_L = fp32.carry(n)
            feed = {"tokens": tokens, "puzzle_ids": pid, "z_H": z_H, "z_L": z_L}
            row = {"batch": n, **{f"ort_{p}_s": _timed(lambda e=e, f=feed: e.run(f), runs)
                                  for p, e in engines.items()}}
            for name, m in models.items():
                batch = Batch(torch.from_numpy(tokens), torch.from_numpy(pid))
                carry = Carry(*(torch.from_numpy(z).to(m.dtype) for z in (z_H, z_L)))

                def step(m=m, batch=batch, carry=carry):
                    with torch.inference_mode():
                        m.step(carry, batch)

                row[f"torch_{name}_s"] = _timed(step, runs)
            for p in engines:
                row[f"ort_{p}_vs_torch_fp32"] = round(row["torch_fp32_s"] / row[f"ort_{p}_s"], 2)
                row[f"ort_{p}_vs_torch_bf16"] = round(row["torch_bf16_s"] / row[f"ort_{p}_s"], 2)
                row[f"gflop_per_s_ort_{p}"] = round(model.config.flops_per_step() * n / row[f"ort_{p}_s"] / 1e9, 1)
            out.append(row)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("bundle")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(measure(a.ckpt, a.bundle, [int(b) for b in a.batch.split(",")], a.runs, a.threads), indent=2))
