"""A randomly initialised model at the official Sudoku-MLP size (5.0M parameters), for latency benchmarks:
`python -m trm_edge.benchmarks.official_size OUT_DIR` (random weights time the same as trained ones)."""

from __future__ import annotations

import sys

import torch

from trm_edge.checkpoint import save
from trm_edge.config import TRMConfig
from trm_edge.model import TRM

SUDOKU_MLP = TRMConfig(vocab_size=11, seq_len=81, hidden_size=512, num_heads=8, H_cycles=3, L_cycles=6,
                       mlp_t=True, pos_encodings="none", forward_dtype="float32")

if __name__ == "__main__":
    torch.manual_seed(0)
    print(save(TRM(SUDOKU_MLP), sys.argv[1], task="sudoku", note="random weights, official Sudoku-MLP size"))
