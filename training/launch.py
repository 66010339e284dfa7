"""`trm-edge train`: a named recipe, single process or under torchrun (DDP over gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from trm_edge.errors import TRMEdgeError
from trm_edge.training.recipes import RECIPES, run
from trm_edge.training.trainer import TrainConfig


def train_recipe(task: str, out_dir: str, steps: int | None = None, official: bool = False, echo=None,
                 config: str | None = None) -> Path:
    """Train the named recipe, or the TrainConfig JSON in `config` (e.g. a recipe's `recipe` field, edited)."""
    if config:
        try:
            cfg = TrainConfig.from_dict(json.loads(Path(config).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TRMEdgeError(f"{config}: not a training config ({type(e).__name__}: {e})") from None
    elif task in RECIPES:
        cfg = RECIPES[task]
    else:
        raise TRMEdgeError(f"train: no recipe for task {task!r} (have: {', '.join(RECIPES)})")
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
