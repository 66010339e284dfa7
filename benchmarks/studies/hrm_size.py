"""HRM against TRM at their published Sudoku sizes: one supervision step on the PyTorch reference (fp32, eager),
batch 1 and 64. HRM (hidden 512, 8 heads, 4 + 4 layers, H 2 x L 2, 1 puzzle slot: 27.3M parameters) runs 24 block
applications a step on 82 positions; TRM-Att (hidden 512, 8 heads, 2 layers, H 3 x L 6, 16 puzzle slots: 6.8M) runs
42 on 97. Both evaluate 16 steps a puzzle, so the per-step ratio is the per-solve ratio.

Random weights (seed 0) built here in memory, nothing written: they time as trained ones do. The two models alternate
round after round (each: a warm-up call, then its timed calls), so drift on a shared machine hits both alike; the
median call of all rounds is reported, with the spread of the rounds' medians.

    python -m benchmarks.studies.hrm_size [--batches 1,64] [--rounds 3] [--runs 10,1] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from trm_edge.config import TRMConfig
from trm_edge.model import TRM, Batch

SUDOKU = dict(vocab_size=11, seq_len=81, hidden_size=512, num_heads=8, pos_encodings="rope", mlp_t=False,
              forward_dtype="float32")
MODELS = {
    "hrm": TRMConfig(**SUDOKU, family="hrm", H_layers=4, L_layers=4, H_cycles=2, L_cycles=2, puzzle_emb_len=0),
    "trm-att": TRMConfig(**SUDOKU, L_layers=2, H_cycles=3, L_cycles=6),
}


def measure(batches: list[int], rounds: int, runs: list[int], threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {name: TRM(cfg).eval() for name, cfg in MODELS.items()}
    out = {name: {"parameters": sum(p.numel() for p in m.parameters()),
                  "gflop_per_step": m.config.flops_per_step() / 1e9, "ms_per_step": {}} for name, m in models.items()}
    for batch, n in zip(batches, runs, strict=True):
        per_round = {name: [] for name in models}
        calls = {name: [] for name in models}
        for _ in range(rounds):
            for name, m in models.items():
                inputs = Batch(torch.randint(1, 11, (batch, 81)), torch.zeros(batch, dtype=torch.long))
                carry = m.initial_carry(batch)
                with torch.inference_mode():
                    m.step(carry, inputs)  # warm-up
                    took = []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        m.step(carry, inputs)
                        took.append((time.perf_counter() - t0) * 1e3)
                per_round[name].append(statistics.median(took))
                calls[name] += took
        for name in models:
            out[name]["ms_per_step"][batch] = {"median": statistics.median(calls[name]),
                                               "rounds": [round(x, 1) for x in per_round[name]]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", default="10,1", help="timed calls per model per round, for each batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    batches, runs = [int(x) for x in a.batches.split(",")], [int(x) for x in a.runs.split(",")]
    res = measure(batches, a.rounds, runs, a.threads)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"PyTorch {torch.__version__} eager fp32, {a.threads} threads, {a.rounds} interleaved rounds")
    for name, r in res.items():
        print(f"{name:8s} {r['parameters']:>12,} parameters  {r['gflop_per_step']:6.2f} GFLOP/step")
    for b in batches:
        h, t = (res[name]["ms_per_step"][b] for name in ("hrm", "trm-att"))
        for name, m in (("hrm", h), ("trm-att", t)):
            rate = res[name]["gflop_per_step"] * b / m["median"] * 1e3
            print(f"batch {b:3d} {name:8s} {m['median']:9.1f} ms/step (rounds {m['rounds']})  {rate:5.1f} GFLOP/s")
        print(f"batch {b:3d} HRM / TRM-Att time: {h['median'] / t['median']:.2f} "
              f"(FLOPs: {res['hrm']['gflop_per_step'] / res['trm-att']['gflop_per_step']:.2f})")


if __name__ == "__main__":
    main()
