"""The TRM trainer: deep supervision with the official streaming ACT carry.

One optimizer step = one supervision step for every row of the batch. A row keeps its puzzle and its
carry across optimizer steps until it halts (q_halt > 0, or halt_max_steps, with random exploration of
a minimum step count); then it is refilled with a fresh puzzle and its carry reset. Loss =
lm (stablemax/softmax CE, per-sequence mean) + q_loss_weight · BCE(q_halt, "whole answer correct").

Runs on CPU or GPU, single process or `torchrun` (DDP; gloo on CPU, NCCL on GPU). Each rank takes its
slice of a global batch drawn from one seeded stream, so N ranks reproduce the 1-rank run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from trm_edge.atomic import atomic_dir
from trm_edge.checkpoint import export_official, save
from trm_edge.config import TRMConfig
from trm_edge.errors import TRMEdgeError
from trm_edge.model import TRM, Batch, Carry
from trm_edge.training import qat

IGNORE = -100
QAT_CALIB_PUZZLES = 32  # initial activation ranges: every step of this many training puzzles
PACE_STEPS = 20  # a time budget: steps timed (after as many to warm up) to fit the run's length


@dataclass(frozen=True)
class TrainConfig:
    model: TRMConfig
    task: str = "sudoku"
    steps: int = 10_000  # optimizer steps
    batch_size: int = 32  # global, across ranks
    lr: float = 1e-3
    lr_min_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    ema_rate: float = 0.999
    carry_bank: int = 0  # puzzles in flight (global); 0 = the batch, as officially
    loss_type: str = "stablemax"  # or "softmax"
    q_loss_weight: float = 0.5
    optimizer: str = "adamw"  # or "adam_atan2" (needs the adam-atan2-pytorch package)
    autocast_bf16: bool = False  # pays on GPUs, and on CPUs with AVX-512 BF16 (1.45-1.65x a step here)
    compile: bool = False
    eval_every: int = 500
    checkpoint_every: int = 250
    seed: int = 0
    data: dict = field(default_factory=dict)  # the data source's knobs (see training.sources)
    init: str | None = None  # start from this model's weights (fine-tuning) instead of a fresh init
    qat: bool = False  # train through the deployed int8 arithmetic (training.qat) and learn its activation ranges

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d, model=TRMConfig.from_dict(d["model"]), betas=tuple(d["betas"]))
        return cls(**d)


@dataclass(frozen=True)
class RunOptions:
    """How one run trains, kept out of TrainConfig (the recipe, which the model records): where (a torch device
    name or device), for how long (`budget_s` fits the optimizer steps to that many seconds; None: the recipe's
    steps) and whether it also writes the official checkpoint format."""
    device: str | torch.device = "cpu"
    budget_s: float | None = None
    official: bool = False


# -- losses ------------------------------------------------------------------------------------------

def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token loss with s(x) = x+1 (x >= 0), 1/(1-x) (x < 0) in place of exp, in float64."""
    x = logits.to(torch.float64)
    # each branch clamped to its own side: an unselected 1/(1-x) at x == 1 is inf, and its zero gradient times inf
    # is NaN (it poisoned a fine-tuning run)
    s = torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x.clamp(min=0) + 1)
    logp = torch.log(s / s.sum(-1, keepdim=True))
    valid = labels != IGNORE
    picked = logp.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.to(torch.float32).transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")


LOSSES = {"stablemax": stablemax_cross_entropy, "softmax": softmax_cross_entropy}


def act_losses(logits: torch.Tensor, q_halt: torch.Tensor, labels: torch.Tensor, loss_type: str):
    """(lm loss summed over rows of per-row means, q BCE summed, per-row 'exactly right' flags)."""
    valid = labels != IGNORE
    counts = valid.sum(-1).clamp_min(1)
    lm = (LOSSES[loss_type](logits, labels).sum(-1) / counts).sum()
    correct = ((logits.argmax(-1) == labels) | ~valid).all(-1)
    q = F.binary_cross_entropy_with_logits(q_halt, correct.to(q_halt.dtype), reduction="sum")
    return lm, q, correct


# -- EMA and the sparse puzzle-embedding optimizer ---------------------------------------------------

class EMA:
    """Shadow copy of the parameters; the saved model carries these weights (as the official one)."""

    def __init__(self, model: torch.nn.Module, rate: float):
        self.rate = rate
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        rate = min(self.rate, (1 + step) / (10 + step))  # warm-up: early averages do not keep the random init
        for k, p in model.named_parameters():
            self.shadow[k].lerp_(p.detach(), 1 - rate)

    def copy_to(self, model: TRM) -> TRM:
        ema = TRM(model.config)
        if qat.is_attached(model):  # same structure, ranges overwritten below
            qat.attach(ema, {n: (m.sites.lo, m.sites.hi) for n, m in qat.quantized_modules(model).items()})
        ema.load_state_dict({**model.state_dict(), **self.shadow})
        return ema.eval()


def sign_sgd_puzzle_emb(model: TRM, lr: float, wd: float) -> None:
    """The official sparse SignSGD on the rows the batch used (summed across ranks)."""
    table = model.puzzle_emb
    if table is None or table.last_lookup is None or table.last_lookup[1].grad is None:  # none (puzzle_emb_ndim 0)
        return
    ids, rows = table.last_lookup
    grad = rows.grad
    if dist.is_initialized():
        all_ids = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
        all_grads = [torch.empty_like(grad) for _ in range(dist.get_world_size())]
        dist.all_gather(all_ids, ids)
        dist.all_gather(all_grads, grad)
        ids, grad = torch.cat(all_ids), torch.cat(all_grads)
    uniq, inv = ids.unique(return_inverse=True)
    summed = torch.zeros(len(uniq), grad.shape[-1], dtype=grad.dtype, device=grad.device).index_add_(0, inv, grad)
    table.weights[uniq] = table.weights[uniq] * (1 - lr * wd) - lr * summed.sign()
    table.last_lookup = None


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# -- the loop ----------------------------------------------------------------------------------------

# global batch i -> (inputs, labels, puzzle ids); random access keeps resumption exact and cheap
Stream = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def train(cfg: TrainConfig, out_dir: str | os.PathLike, stream: Stream,
          evaluate: Callable[[TRM], dict] | None = None, log: Callable[[dict], None] = print,
          options: RunOptions = RunOptions(), stop: Callable[[], bool] = lambda: False) -> Path:
    """Train (resuming from `out_dir/state` if present) and write the EMA model to `out_dir/model`.

    The model, its carry and the optimizer live on `options.device`; batches are drawn on the host and copied over,
    and the halting decisions are made on the host. `options.budget_s`: the optimizer steps are fitted to this many
    seconds of training, from the pace of the warm-up's first steps (the cosine schedule needs its length in advance,
    and the warm-up does not depend on it); the number chosen is kept in the state, so a run resumed with a budget again
    ends where it would have (resumed without one, it takes `cfg.steps`, as any resumed run). When `stop()` turns
    true (an interruption, one process), the state is saved at the step reached and KeyboardInterrupt raised."""
    out, budget_s = Path(out_dir), options.budget_s
    dev = torch.device(options.device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cfg.batch_size % world:
        raise TRMEdgeError(f"train: batch size {cfg.batch_size} is not divisible by the {world} processes")
    if budget_s is not None and cfg.warmup_steps < 2 * PACE_STEPS:
        raise TRMEdgeError(f"train: a time budget needs at least {2 * PACE_STEPS} warm-up steps to measure the pace "
                           f"(the recipe has {cfg.warmup_steps})")
    local = cfg.batch_size // world
    torch.manual_seed(cfg.seed)
    model = TRM(cfg.model).train()
    inherited = _start_from(model, cfg, stream) if cfg.init else {}
    model.to(dev)
    opt = _optimizer(cfg, model)
    ema = EMA(model, cfg.ema_rate)
    step, rng, fitted = 0, np.random.default_rng(cfg.seed + 1), False
    state_dir = out / "state"
    if (state_dir / "train.pt").is_file():
        ck = torch.load(state_dir / "train.pt", map_location=dev, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        ema.shadow = ck["ema"]
        step, rng.bit_generator.state = ck["step"], ck["rng"]
        if budget_s is not None and "fitted_steps" in ck:  # the same budget again: keep the length it chose
            cfg, budget_s, fitted = dataclasses.replace(cfg, steps=ck["fitted_steps"]), None, True
        log({"event": "resumed", "step": step})
    pace_from = step + PACE_STEPS  # with a budget: the steps timed follow as many that warm up
    ddp_ids = [dev.index] if dev.type == "cuda" else None
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ddp_ids) if world > 1 else model
    step_fn = torch.compile(net) if cfg.compile else net
    lo, hi = rank * local, (rank + 1) * local
    M = cfg.model.halt_max_steps

    # The carry bank: the puzzles in flight. Each optimizer step draws its batch from the bank, so with a bank
    # larger than the batch a puzzle's supervision steps are spread over many updates instead of taking 16
    # consecutive ones (with small batches those let the model fit the batch along its way). bank == batch
    # is the official streaming carry.
    bank = max(cfg.carry_bank // world, local)
    pick = np.random.default_rng([cfg.seed, 7, rank])
    carry = model.initial_carry(bank)
    halted = np.ones(bank, bool)
    steps_done = np.zeros(bank, np.int64)
    inputs = np.zeros((bank, cfg.model.seq_len), np.int64)
    labels = np.full_like(inputs, IGNORE)
    pids = np.zeros(bank, np.int64)
    t0, seen, skipped = time.time(), 0, 0
    aside = 0.0  # seconds spent saving and evaluating: not part of a step's pace

    def checkpoint() -> None:
        _save_state(state_dir, model, opt, ema, step, rng, cfg.steps if fitted else None)

    while step < cfg.steps or budget_s is not None:
        if stop():
            checkpoint()
            log({"event": "interrupted", "step": step})
            raise KeyboardInterrupt
        if budget_s is not None and step in (pace_from, pace_from + PACE_STEPS):
            _sync(dev)
            if step == pace_from:
                paced = time.time() - aside
            else:
                pace = (time.time() - aside - paced) / PACE_STEPS
                length = torch.tensor(max(step + 1, int(budget_s / pace)), device=dev)
                if world > 1:  # every rank must stop at the same step: rank 0's pace decides
                    dist.broadcast(length, 0)
                cfg, fitted = dataclasses.replace(cfg, steps=int(length)), True
                budget_s = None
                log({"event": "fitted", "step": step, "s_per_step": pace, "steps": cfg.steps})
        new_in, new_lab, new_pid = (a[lo:hi] for a in stream(step))
        sel = np.arange(bank) if bank == local else np.sort(pick.choice(bank, local, replace=False))
        fresh = halted[sel]
        rows = sel[fresh]
        inputs[rows], labels[rows], pids[rows], steps_done[rows] = new_in[fresh], new_lab[fresh], new_pid[fresh], 0
        idx = torch.from_numpy(sel).to(dev)
        sub = model.reset_carry(Carry(carry.z_H[idx], carry.z_L[idx]), torch.from_numpy(fresh).to(dev))
        batch = Batch(torch.from_numpy(inputs[sel]).to(dev), torch.from_numpy(pids[sel]).to(dev))
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step) * g["lr_scale"]
        with torch.autocast(dev.type, torch.bfloat16, enabled=cfg.autocast_bf16):
            sub, logits, q_halt = step_fn(sub, batch)
        carry.z_H[idx], carry.z_L[idx] = sub.z_H.to(carry.z_H.dtype), sub.z_L.to(carry.z_L.dtype)  # bf16 under autocast
        lab = torch.from_numpy(labels[sel]).to(dev)
        lm, qloss, correct = act_losses(logits, q_halt, lab, cfg.loss_type)
        loss = (lm + cfg.q_loss_weight * qloss) / local
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if _finite_grads(model):
            opt.step()
            sign_sgd_puzzle_emb(model, cfg.puzzle_emb_lr * lr_at(cfg, step) / cfg.lr, cfg.puzzle_emb_weight_decay)
        else:  # one bad batch must not poison every weight (and the EMA, and the saved state) with NaN
            skipped += 1
            log({"event": "skipped", "step": step, "why": "non-finite gradient", "skipped": skipped})
        ema.update(model, step)
        step += 1
        seen += cfg.batch_size

        # halting (exploration draws are made for the global batch, so N ranks match 1)
        q = q_halt.detach().float().cpu().numpy()
        steps_done[sel] += 1
        explore = rng.random(cfg.batch_size)[lo:hi] < cfg.model.halt_exploration_prob
        min_steps = np.where(explore, rng.integers(min(2, M), M + 1, cfg.batch_size)[lo:hi], 0)
        done = (steps_done[sel] >= M) | ((q > 0) & (steps_done[sel] >= min_steps))
        halted[sel] = done

        if step % 50 == 0 or step == cfg.steps:
            corr, q_all = _gather(correct.float(), world), _gather(q_halt.detach().float(), world)
            log({"step": step, "lr": round(lr_at(cfg, step - 1), 6), "lm_loss": round(lm.item() / local, 4),
                 "q_loss": round(qloss.item() / local, 4), "exact": round(float(corr.mean()), 4),
                 "q_acc": round(float(((q_all > 0) == (corr > 0)).mean()), 4),
                 "mean_halt_steps": round(float(steps_done[sel][done].mean()), 2) if done.any() else None,
                 "samples_per_s": round(seen / (time.time() - t0), 1)})
        t_aside = time.time()
        if rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            checkpoint()
        if rank == 0 and evaluate and (step % cfg.eval_every == 0 or step == cfg.steps):
            log(dict(evaluate(ema.copy_to(model).to(dev)), step=step, event="eval"))
        aside += time.time() - t_aside
    if rank == 0:
        final, sites = ema.copy_to(model), {}
        if cfg.qat:
            final, sites = qat.detach(final)
        save(final, out / "model", task=cfg.task, recipe=cfg.to_dict(), trained_steps=step, **inherited,
             **({"int8_sites": sites} if sites else {}))
        if options.official:
            export_official(final, out / "official", step=step, task=cfg.task)
    return out / "model"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _finite_grads(model: TRM) -> bool:
    """Every gradient finite. Parameter gradients are all-reduced by DDP, so every rank decides alike (a rank whose
    puzzle rows went non-finite has non-finite parameter gradients too)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    lookup = model.puzzle_emb.last_lookup if model.puzzle_emb is not None else None
    if lookup is not None and lookup[1].grad is not None:
        grads.append(lookup[1].grad)
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def _gather(t: torch.Tensor, world: int) -> np.ndarray:
    if world == 1:
        return t.cpu().numpy()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    return torch.cat(parts).cpu().numpy()


def check_architecture(init_config, cfg: TrainConfig) -> None:
    """A model fine-tuned with a recipe must have the recipe's architecture (refused before any data is built)."""
    if init_config != cfg.model:
        raise TRMEdgeError(f"{cfg.init}: its architecture differs from the training config's; fine-tune it with "
                           "its own recipe")


def _start_from(model: TRM, cfg: TrainConfig, stream: Stream) -> dict:
    """Load `cfg.init`'s weights; for QAT, attach the fake-quant sites with ranges calibrated on the first batch.
    Returns what the fine-tuned model inherits: the source's recommended halting policy."""
    from trm_edge.checkpoint import load_model

    init, meta = load_model(cfg.init)
    check_architecture(init.config, cfg)
    model.load_state_dict(init.state_dict())
    if cfg.qat:
        qat.attach(model, qat.calibrate(init, stream(0)[0][:QAT_CALIB_PUZZLES]))
    return {k: meta[k] for k in ("recommended_halt",) if k in meta}


def _optimizer(cfg: TrainConfig, model: TRM) -> torch.optim.Optimizer:
    """AdamW on the weights; QAT's activation ranges get no weight decay and their own learning-rate scale."""
    params = [p for n, p in model.named_parameters() if p.requires_grad and ".sites." not in n]
    ranges = [p for n, p in model.named_parameters() if ".sites." in n]
    groups = [{"params": params, "lr_scale": 1.0}] + (
        [{"params": ranges, "weight_decay": 0.0, "lr_scale": qat.RANGE_LR_SCALE}] if ranges else [])
    if cfg.optimizer == "adam_atan2":
        try:
            from adam_atan2_pytorch import AdamAtan2
        except ImportError:
            raise TRMEdgeError("train: optimizer adam_atan2 needs `pip install adam-atan2-pytorch`") from None
        return AdamAtan2(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer != "adamw":
        raise TRMEdgeError(f"train: unknown optimizer {cfg.optimizer!r} (adamw or adam_atan2)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _save_state(state_dir: Path, model, opt, ema: EMA, step: int, rng, fitted_steps: int | None) -> None:
    def write(tmp: Path) -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.shadow, "step": step,
                    "rng": rng.bit_generator.state, **({"fitted_steps": fitted_steps} if fitted_steps else {})},
                   tmp / "train.pt")

    atomic_dir(state_dir, write, "training state")


def jsonl_logger(path: Path, echo: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(rec: dict) -> None:
        rec = dict(rec, time=round(time.time(), 1))
        with path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if echo:
            echo(rec)

    return log
