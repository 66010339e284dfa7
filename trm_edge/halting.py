"""Halting policies: the one place that decides when a row stops, shared by every backend.

`fixed:N` is the official evaluation (every row runs N supervision steps); `learned:τ` stops a row once
its q_halt logit exceeds τ (with optional min/max steps). Torch-free: runtimes use it as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trm_edge.errors import TRMEdgeError

MAX_STEPS = 256  # supervision steps; models train with 16, and a typo of 10**9 must not run for days
_USAGE = "use fixed[:N] or learned[:TAU][,min=K][,max=M], e.g. fixed:16 or learned:0,min=2"


@dataclass(frozen=True)
class HaltPolicy:
    kind: str  # "fixed" | "learned"
    max_steps: int
    threshold: float = math.inf
    min_steps: int = 1

    @classmethod
    def parse(cls, text: str, halt_max_steps: int) -> HaltPolicy:
        """Parse a policy string; N and max default to the model's halt_max_steps."""
        head, *opts = [p.strip() for p in str(text).strip().split(",")]
        kind, _, arg = head.partition(":")
        try:
            if kind == "fixed":
                if opts:
                    raise ValueError
                n = int(arg) if arg else halt_max_steps
                pol = cls("fixed", max_steps=n, min_steps=1)
            elif kind == "learned":
                kw = dict(o.split("=", 1) for o in opts)
                if set(kw) - {"min", "max"}:
                    raise ValueError
                pol = cls("learned", max_steps=int(kw.get("max", halt_max_steps)),
                          threshold=float(arg) if arg else 0.0, min_steps=int(kw.get("min", 1)))
            else:
                raise ValueError
        except ValueError:
            raise TRMEdgeError(f"halting policy {text!r} not understood: {_USAGE}") from None
        if not 1 <= pol.min_steps <= pol.max_steps <= MAX_STEPS:
            raise TRMEdgeError(f"halting policy {text!r}: need 1 <= min <= max <= {MAX_STEPS} steps, got "
                               f"min={pol.min_steps} max={pol.max_steps}")
        if math.isnan(pol.threshold):
            raise TRMEdgeError(f"halting policy {text!r}: the threshold must be a number, not NaN")
        return pol

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.max_steps}"
        return f"learned:{self.threshold:g},min={self.min_steps},max={self.max_steps}"

    def halted(self, step: int | np.ndarray, q_halt: np.ndarray) -> np.ndarray:
        """Which rows stop after supervision step `step` (1-based; one per row or shared) given q_halt."""
        q, k = np.asarray(q_halt, dtype=np.float32), np.asarray(step)
        return (k >= self.max_steps) | ((q > self.threshold) & (k >= self.min_steps))

    def graph_inputs(self) -> dict[str, np.ndarray]:
        """The policy as the loop and unrolled graphs take it (fixed:N is a threshold of +inf)."""
        return {"halt_threshold": np.array(self.threshold, np.float32),
                "min_steps": np.array(self.min_steps, np.int64), "max_steps": np.array(self.max_steps, np.int64)}


@dataclass
class Solution:
    """What a solve returns on every backend: answers, steps used and the last q_halt, per row."""

    tokens: np.ndarray  # [B, seq_len] int64 predicted tokens
    steps: np.ndarray  # [B] int64 supervision steps used
    q_halt: np.ndarray  # [B] float32 q_halt logit at the row's last step
    # [B] int64: the step at which NaN or Inf first appeared in the row's carry, logits or q_halt (0: never).
    # Such a row stops there and its tokens are all pad, so no checker can take them for an answer.
    fault: np.ndarray | None = None

    def __post_init__(self):
        if self.fault is None:
            self.fault = np.zeros(len(self.steps), np.int64)
        self.tokens[self.fault > 0] = 0

    @classmethod
    def concat(cls, parts: list[Solution]) -> Solution:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("tokens", "steps", "q_halt", "fault")))


def finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Per row (first axis): every value of every array is finite."""
    ok = np.ones(len(arrays[0]), bool)
    for a in arrays:
        ok &= np.isfinite(a.reshape(len(a), -1)).all(1)
    return ok


def halting_loop(step: Callable[[Any], tuple[Any, np.ndarray, np.ndarray, np.ndarray]], carry: Any,
                 policy: HaltPolicy) -> Solution:
    """The outer loop every backend shares: `step(carry) -> (carry, predicted tokens, q_halt, finite rows)`
    runs one supervision step for the whole batch; a halted row's outputs are frozen; a row whose step was not
    finite stops with a fault; stop when all have halted."""
    tokens = steps = q_last = running = fault = None
    for k in range(1, policy.max_steps + 1):
        carry, pred, q, ok = step(carry)
        if running is None:
            running, steps, fault = np.ones(len(q), bool), np.zeros(len(q), np.int64), np.zeros(len(q), np.int64)
            tokens, q_last = np.zeros(pred.shape, np.int64), np.zeros(len(q), np.float32)
        tokens[running], steps[running], q_last[running] = pred[running], k, q[running]
        fault[running & ~ok] = k
        running &= ok & ~policy.halted(k, q)
        if not running.any():
            break
    return Solution(tokens, steps, q_last, fault)
