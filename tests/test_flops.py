"""The FLOPs per supervision step that `info`, verification budgets and the bench's throughput rest on
(TRMConfig.flops_per_step, counted from the config) against PyTorch's own count of the step's matrix products
(torch.utils.flop_counter), for the three built-in shapes; on the meta device, so an ARC-size step costs nothing."""

from __future__ import annotations

import pytest
import torch
from conftest import FIXTURES
from torch.utils.flop_counter import FlopCounterMode

from trm_edge.checkpoint import load_model
from trm_edge.model import TRM, Batch


def _config(shape: str):
    if shape == "arc-v1":
        from benchmarks.studies.full_size import ARC_V1

        return ARC_V1
    if shape == "maze" and not (FIXTURES / "maze_att_fp32").is_dir():
        pytest.skip("fixtures missing")
    return load_model(None if shape == "bundled" else FIXTURES / "maze_att_fp32", weights=False)[0].config


def counted_flops(cfg) -> int:
    """PyTorch's own count of one supervision step's products, on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = TRM(cfg)
        batch = Batch(torch.zeros(1, cfg.seq_len, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with FlopCounterMode(display=False) as counted, torch.no_grad():
        model.step(model.initial_carry(1), batch)
    return counted.get_total_flops()


@pytest.mark.parametrize("shape", ["bundled", "maze", "arc-v1"])
def test_flops_per_step_match_torchs_count(shape):
    cfg = _config(shape)
    assert cfg.flops_per_step() == counted_flops(cfg) > 0
    assert cfg.mlp_t == (shape == "bundled")  # the two block kinds are both held to it
