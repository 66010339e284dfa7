"""`trm-edge train`: a named recipe, single process or under torchrun (DDP over gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from trm_edge.errors import TRMEdgeError
from trm_edge.progress import Reporter
from trm_edge.training.recipes import RECIPES, run
from trm_edge.training.trainer import RunOptions, TrainConfig, check_architecture
from trm_edge.untrusted import load_json

# Fine-tuning from trained weights: a short run at a tenth of the bundled recipe's peak rate, evaluated at the end
# (for QAT the evaluation runs the simulated int8 model).
FINETUNE = dict(steps=600, lr=1e-4, lr_min_ratio=0.1, warmup_steps=20, checkpoint_every=100)


def train_device(name: str) -> torch.device:
    """`auto` is the GPU where one is visible (under torchrun, this rank's), else the CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise TRMEdgeError(f"train: device {name!r} is not one of auto, cpu, cuda")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TRMEdgeError("train: --device cuda, but this torch sees no GPU (torch.cuda.is_available() is False; "
                           "a CPU wheel, or no driver): use --device cpu")
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(dev)
    return dev


def _reported(report: Reporter | None, what: str, steps: int | None) -> dict:
    """recipes.run's callbacks for a reporter: the puzzle pool's chunks and the optimizer steps counted, the latter
    of `steps` (None under a time budget until its `fitted` record says), the log's records as JSON lines."""
    if report is None:
        return {}
    total = steps

    def echo(rec: dict) -> None:
        nonlocal total
        total = rec["steps"] if rec.get("event") == "fitted" else total
        report.note(json.dumps(rec))

    return {"echo": echo, "progress": report.tracker("building the puzzle pool"),
            "at_step": lambda step: report.progress(what, step, total)}


def train_recipe(task: str, out_dir: str, options: RunOptions, steps: int | None = None, config: str | None = None,
                 data_only: bool = False, report: Reporter | None = None) -> Path:
    """Train the named recipe, or the TrainConfig JSON in `config` (e.g. a recipe's `recipe` field, edited);
    `options.budget_s` fits the optimizer steps to that much training time (instead of `steps`); `options.device`
    is a name (train_device); `report` shows the progress (under torchrun, rank 0's)."""
    if config:
        doc = load_json(config, "training config")
        try:
            cfg = TrainConfig.from_dict(doc)
        except (ValueError, KeyError, TypeError) as e:
            raise TRMEdgeError(f"{config}: not a training config ({type(e).__name__}: {e})") from None
    elif task in RECIPES:
        cfg = RECIPES[task]
    else:
        raise TRMEdgeError(f"train: no recipe for task {task!r} (have: {', '.join(RECIPES)})")
    if steps is not None and options.budget_s is not None:
        raise TRMEdgeError("train: give --steps or --minutes, not both")
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    dev = train_device(options.device)
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        shown = _reported(report if not distributed or dist.get_rank() == 0 else None, "training",
                          cfg.steps if options.budget_s is None else None)
        return run(cfg, out_dir, dataclasses.replace(options, device=dev), data_only=data_only, **shown)
    finally:
        if distributed:
            dist.destroy_process_group()


def finetune(model: str | None, out_dir: str, steps: int | None = None, qat: bool = False,
             report: Reporter | None = None) -> Path:
    """Continue training a model (ours or the bundled one) with its own recipe; `qat` trains it through the
    deployed int8 arithmetic and stores the learned activation ranges in the model written."""
    from trm_edge.checkpoint import DEFAULT_MODEL, load_model

    source = Path(model) if model else DEFAULT_MODEL
    model, meta = load_model(source)
    if meta.get("format") != "trm-edge":
        raise TRMEdgeError(f"finetune: {source} is not a trm-edge model (official checkpoints: train from their "
                           "dataset with the official trainer, or convert with `trm-edge export` first)")
    recipe = meta.get("recipe")
    cfg = TrainConfig.from_dict(recipe) if recipe else RECIPES.get(meta.get("task"))
    if cfg is None:
        raise TRMEdgeError(f"finetune: {source} records no training recipe and task {meta.get('task')!r} has none")
    tune = dict(FINETUNE, steps=steps or FINETUNE["steps"])
    cfg = dataclasses.replace(cfg, init=str(source.resolve()), qat=qat, eval_every=tune["steps"], **tune)
    check_architecture(model.config, cfg)
    return run(cfg, out_dir, **_reported(report, "fine-tuning", cfg.steps))
