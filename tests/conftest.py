from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRM_EDGE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "official"
TOP95 = SHARED / "data" / "sudoku" / "top95.txt"
OFFICIAL = ["sudoku_mlp_fp32", "maze_att_fp32"]


@pytest.fixture(params=OFFICIAL)
def official_dir(request) -> Path:
    d = FIXTURES / request.param
    if not d.is_dir():
        pytest.skip(f"official fixtures not found at {d}")
    return d


def tiny_config(mlp_t: bool = True, **kw):
    """A hidden-32 model for fast differential tests."""
    from trm_edge.config import TRMConfig

    base = dict(vocab_size=11, seq_len=81, hidden_size=32, num_heads=4, L_layers=2, H_cycles=2, L_cycles=2,
                halt_max_steps=4, puzzle_emb_ndim=32, pos_encodings="none" if mlp_t else "rope", mlp_t=mlp_t,
                forward_dtype="float32")
    return TRMConfig(**{**base, **kw})
