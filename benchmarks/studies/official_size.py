"""A randomly initialised model at the official Sudoku-MLP size (5.0M parameters), for latency benchmarks:
`python -m benchmarks.studies.official_size OUT_DIR` (random weights time the same as trained ones).

Down-projections are scaled by 0.1: at full random scale the recursion is chaotic (a 1e-4 difference at step 1
flips most answers by step 16, so the export's end-to-end check rightly fails); damped, it is contractive and the
check means something. Shapes, FLOPs and hence timings are unchanged."""

from __future__ import annotations

import argparse

import torch

from trm_edge.checkpoint import save
from trm_edge.config import TRMConfig
from trm_edge.model import TRM

SUDOKU_MLP = TRMConfig(vocab_size=11, seq_len=81, hidden_size=512, num_heads=8, H_cycles=3, L_cycles=6,
                       mlp_t=True, pos_encodings="none", forward_dtype="float32")


def damped(config: TRMConfig) -> TRM:
    """A random model of this config (seed 0) with its down-projections scaled by 0.1."""
    torch.manual_seed(0)
    model = TRM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("down_proj.weight"):
                p.mul_(0.1)
    return model


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the model directory to write (refused if it holds something not ours)")
    a = ap.parse_args()
    print(save(damped(SUDOKU_MLP), a.out, task="sudoku",
               note="random weights (down_proj x0.1), official Sudoku-MLP size"))
