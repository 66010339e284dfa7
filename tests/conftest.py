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


def bf16_official(tmp_path: Path, cast_init: bool = False) -> Path:
    """The sudoku fixture as a bf16 run: config forward_dtype bfloat16 (and, with cast_init, bf16 carry-init buffers,
    as a bf16 trainer saves them)."""
    import shutil

    import torch
    import yaml

    src = FIXTURES / "sudoku_mlp_fp32"
    if not src.is_dir():
        pytest.skip("fixtures missing")
    d = tmp_path / "bf16"
    shutil.copytree(src, d)
    doc = yaml.safe_load((d / "all_config.yaml").read_text())
    doc["arch"]["forward_dtype"] = "bfloat16"
    (d / "all_config.yaml").write_text(yaml.safe_dump(doc))
    if cast_init:
        state = torch.load(src / "step_1234", weights_only=True)
        torch.save({k: v.bfloat16() if k.endswith(("H_init", "L_init")) else v for k, v in state.items()},
                   d / "step_1234")
    return d
