"""Weight-space interpolation (WiSE-FT) of a fine-tuned model back toward the model it started from, and puzzles
solved under several draws of views: the candidate tried for a stronger bundled model (issue 16;
benchmarks/results/training.md).

`python -m benchmarks.studies.wise_ft blend TUNED ALPHA -o OUT [--base MODEL]` writes (1-ALPHA)·BASE + ALPHA·TUNED
(BASE: the bundled model); `python -m benchmarks.studies.wise_ft draws BUNDLE FILE [--views 64] [--seeds 0,1,2]`
solves FILE (e.g. top95.txt) under the default view policy once per view seed: on top95 one draw of 64 views moves
the rate by several points, so one draw cannot rank two models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def blend(tuned: str, alpha: float, out: str, base: str | None = None) -> Path:
    import torch

    from trm_edge.checkpoint import load_model, save

    start, meta = load_model(base)
    end, tuned_meta = load_model(tuned)
    if start.config != end.config:
        raise SystemExit(f"blend: {tuned} is not a fine-tune of {base or 'the bundled model'} (other architecture)")
    a, b = start.state_dict(), end.state_dict()
    with torch.no_grad():
        start.load_state_dict({k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k] for k in a})
    return save(start, out, task=meta.get("task"), recipe=tuned_meta.get("recipe"),
                blend={"alpha": alpha, "base": base or "bundled", "tuned": tuned},
                recommended_halt=meta.get("recommended_halt"))


def draws(bundle: str, data: str, views: int, seeds: list[int], halt: str = "learned:3") -> list[dict]:
    from trm_edge.benchmarks.candidate import solve_line

    return [{"seed": seed, "views": views, "solved": float(np.mean(line["per_puzzle"])), **line}
            for seed in seeds for line in [solve_line(bundle, data, views, seed, halt, None)]]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("blend")
    b.add_argument("tuned")
    b.add_argument("alpha", type=float)
    b.add_argument("-o", "--out", required=True)
    b.add_argument("--base")
    t = sub.add_parser("draws")
    t.add_argument("bundle")
    t.add_argument("data")
    t.add_argument("--views", type=int, default=64)
    t.add_argument("--seeds", default="0,1,2")
    a = ap.parse_args()
    if a.cmd == "blend":
        print(blend(a.tuned, a.alpha, a.out, a.base))
    else:
        print(json.dumps(draws(a.bundle, a.data, a.views, [int(s) for s in a.seeds.split(",")])))
