"""`trm-edge train`: a named recipe, single process or under torchrun (DDP over gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import torch.distributed as dist

from trm_edge.errors import TRMEdgeError
from trm_edge.training.recipes import RECIPES, run


def train_recipe(task: str, out_dir: str, steps: int | None = None, official: bool = False, echo=None) -> Path:
    if task not in RECIPES:
        raise TRMEdgeError(f"train: no recipe for task {task!r} (have: {', '.join(RECIPES)})")
    cfg = RECIPES[task]
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        return run(cfg, out_dir, official=official, echo=echo if not distributed or dist.get_rank() == 0 else None)
    finally:
        if distributed:
            dist.destroy_process_group()
