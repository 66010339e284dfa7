"""Named training recipes: what `trm-edge train --task T` runs, and how the bundled model was made."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from trm_edge.atomic import claim_live, os_errors, stop_at_a_safe_point
from trm_edge.config import TRMConfig
from trm_edge.errors import TRMEdgeError
from trm_edge.evaluate import evaluate
from trm_edge.halting import HaltPolicy
from trm_edge.model import TRM, Batch
from trm_edge.tasks import get_codec
from trm_edge.training import sources
from trm_edge.training.trainer import RunOptions, TrainConfig, jsonl_logger, train

# The bundled model: the official mlp_t architecture at a size 2 CPU cores train in ~100 minutes.
SUDOKU_DEFAULT = TrainConfig(
    model=TRMConfig(vocab_size=11, seq_len=81, hidden_size=128, num_heads=4, expansion=4.0, L_layers=2,
                    H_cycles=3, L_cycles=2, halt_max_steps=16, puzzle_emb_ndim=128, pos_encodings="none",
                    mlp_t=True, forward_dtype="float32"),
    task="sudoku", steps=5_000, batch_size=32, lr=1e-3, lr_min_ratio=0.05, warmup_steps=300,
    weight_decay=0.1, ema_rate=0.999, eval_every=1250, checkpoint_every=250,
    # The sparse SignSGD rate of the (single, shared) sudoku puzzle embedding, as officially for sudoku. At the
    # ARC rate (1e-2) it becomes a fast memory: a batch stays for up to 16 optimizer steps in the streaming
    # carry, and the model learnt to store the current batch there (97% exact in training, 0% held out).
    puzzle_emb_lr=1e-4,
    # 512 puzzles in flight, 32 drawn per step: each puzzle's supervision steps spread over ~256 updates. With
    # the bank equal to the batch (official), 16 consecutive updates on the same 32 puzzles made the model fit
    # them along their trajectory (in-training exact 72%, held-out 0% at step 750).
    carry_bank=512,
    # harder puzzles dominate: easy ones are learnt within minutes
    data={"buckets": [[30, 40, 2000], [24, 29, 6000]], "pool_seed": 1, "eval_seed": 2, "eval_n": 100},
)

# A larger model for a GPU (ten minutes of one H200: training/gpu_run.sh): hidden 256 and 4 inner cycles (1.48M
# parameters, 2.1x the bundled model's; 5.7 GFLOP a supervision step, 4.2x), batch 1024 over a 16,384-puzzle bank
# (the bundled recipe's ratio), bf16 matmuls: ~10 TFLOP an optimizer step, ~40 GB of GPU memory. Its pool is larger
# and reaches below the bundled model's givens with puzzles that need search (top95 has 17-25 givens). Steps: a
# placeholder for `--minutes`, which fits them. Not yet run: no GPU was lent when it was written (2026-12-04).
SUDOKU_LARGE = dataclasses.replace(
    SUDOKU_DEFAULT, model=dataclasses.replace(SUDOKU_DEFAULT.model, hidden_size=256, puzzle_emb_ndim=256, L_cycles=4),
    steps=6_000, batch_size=1024, carry_bank=16_384, warmup_steps=200, eval_every=2_000, checkpoint_every=500,
    autocast_bf16=True, seed=21,
    data={"buckets": [[30, 40, 10_000], [24, 29, 60_000], [22, 26, 4_000, "hard"]], "pool_seed": 21,
          "eval_seed": 22, "eval_n": 100})

RECIPES = {"sudoku": SUDOKU_DEFAULT, "sudoku-large": SUDOKU_LARGE}


def heldout_sudoku(seed: int, n: int, buckets, cache: Path | None = None) -> dict[str, list]:
    """`n` held-out puzzles per givens bucket, from a seed the training pool never uses (cached like the pool:
    hard buckets take a while)."""
    p, s = sources.sudoku_pool([[*b[:2], n, *b[3:]] for b in buckets], seed, cache)
    p, s = (sources.sudoku_gen.to_tokens(a).astype(np.int64) for a in (p, s))
    return {sources.bucket_name(b): list(zip(p[k * n:(k + 1) * n], s[k * n:(k + 1) * n]))
            for k, b in enumerate(buckets)}


def torch_solver(model: TRM, halt: str):
    dev = model.H_init.device  # the trainer evaluates where it trains
    policy = HaltPolicy.parse(halt, model.config.halt_max_steps)

    def solve(tokens: np.ndarray):
        t = torch.from_numpy(tokens).to(dev)
        return model.solve(Batch(t, torch.zeros(len(t), dtype=torch.long, device=dev)), policy)
    return solve


def run(cfg: TrainConfig, out_dir: str | Path, options: RunOptions = RunOptions(), echo=None, progress=None,
        data_only: bool = False, at_step: Callable[[int], None] | None = None) -> Path:
    """Build the data (cached in the run directory), train, evaluate periodically on held-out puzzles, write the
    model. `data_only` stops after the data: a GPU's minutes then go to training alone. `echo(record)` hears the
    log, `progress` wraps the puzzle pool's generation (sudoku_gen.generate), `at_step(n)` hears each optimizer step
    begin after n (the trainer logs only every 50)."""
    out = claim_live(out_dir, "training run")
    with os_errors(out):  # a full disk or a read-only run dir: one line, whichever write meets it
        d = cfg.data
        codec = get_codec(cfg.task)
        if cfg.task != "sudoku":
            raise TRMEdgeError(f"train: the trainer's data sources cover sudoku only so far, not {cfg.task!r}")
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank:  # under DDP rank 0 builds and caches the data; the others then read it (one writer, cores not shared)
            dist.barrier()
        puzzles, solutions = sources.sudoku_pool(d["buckets"], d["pool_seed"],
                                                 out / "data" / "pool.npz", progress=progress)
        stream = sources.sudoku_stream(puzzles, solutions, cfg.batch_size, cfg.seed)
        if at_step:
            draw = stream

            def stream(step: int) -> tuple:  # the trainer draws one batch an optimizer step
                at_step(step)
                return draw(step)
        heldout = heldout_sudoku(d["eval_seed"], d["eval_n"], d["buckets"], out / "data" / "heldout.npz")
        if dist.is_initialized() and not rank:
            dist.barrier()
        if data_only:
            return out / "data"

        def evaluate_model(model: TRM) -> dict:
            res = {}
            for name, pairs in heldout.items():
                for halt in ("fixed:16", "learned:0"):
                    summary, _ = evaluate(torch_solver(model, halt), codec, pairs, batch_size=100)
                    res[f"{name}/{halt}/exact"] = round(summary["exact_accuracy"], 4)
                    res[f"{name}/{halt}/mean_steps"] = round(summary["mean_steps"], 2)
            return res

        log = jsonl_logger(out / "metrics.jsonl", echo) if not rank else (lambda rec: None)  # one log, not one a rank
        # one process saves its state when interrupted; under DDP the ranks would see a signal at different steps
        # and wait on each other, so there a run resumes from its last checkpoint
        safe = (nullcontext(lambda: False) if dist.is_initialized()
                else stop_at_a_safe_point("the training state for the same command to resume"))
        with safe as stop:
            return train(cfg, out, stream, evaluate_model, log=log, options=options, stop=stop)


def with_overrides(cfg: TrainConfig, **kw) -> TrainConfig:
    model_kw = {k: kw.pop(k) for k in list(kw) if k in {f.name for f in dataclasses.fields(TRMConfig)}}
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model_kw), **kw)
