"""Halting policies: the one place that decides when a row stops, shared by every backend.

`fixed:N` is the official evaluation (every row runs N supervision steps); `learned:τ` stops a row once
its q_halt logit exceeds τ (with optional min/max steps). Torch-free: runtimes use it as is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trm_edge.errors import TRMEdgeError

MAX_STEPS = 256  # supervision steps; models train with 16, and a typo of 10**9 must not run for days
_USAGE = "use fixed[:N] or learned[:TAU][,min=K][,max=M], then ,verify to stop at an answer the rules accept; " \
         "e.g. fixed:16 or learned:3,max=6,verify"


def _unbounded(min_steps: int, max_steps: int) -> str | None:
    return None if 1 <= min_steps <= max_steps <= MAX_STEPS else \
        f"need 1 <= min <= max <= {MAX_STEPS} steps, got min={min_steps} max={max_steps}"


@dataclass(frozen=True)
class HaltPolicy:
    kind: str  # "fixed" | "learned"
    max_steps: int
    threshold: float = math.inf
    min_steps: int = 1
    verify: bool = False  # a row also stops once its answer passes the task's checker

    def __post_init__(self) -> None:
        """Bounded however it is made (parsed, or built in code): a loop graph runs up to max_steps steps."""
        if why := _unbounded(self.min_steps, self.max_steps):
            raise TRMEdgeError(f"halting policy {self}: {why}")

    @classmethod
    def parse(cls, text: str, halt_max_steps: int) -> HaltPolicy:
        """Parse a policy string; N and max default to the model's halt_max_steps."""
        head, *opts = [p.strip() for p in str(text).strip().split(",")]
        verify = "verify" in opts
        opts = [o for o in opts if o != "verify"]
        kind, _, arg = head.partition(":")
        try:
            if kind == "fixed":
                if opts:
                    raise ValueError
                kw = dict(kind="fixed", max_steps=int(arg) if arg else halt_max_steps, min_steps=1)
            elif kind == "learned":
                given = dict(o.split("=", 1) for o in opts)
                if set(given) - {"min", "max"}:
                    raise ValueError
                kw = dict(kind="learned", max_steps=int(given.get("max", halt_max_steps)),
                          threshold=float(arg) if arg else 0.0, min_steps=int(given.get("min", 1)))
            else:
                raise ValueError
        except ValueError:
            raise TRMEdgeError(f"halting policy {text!r} not understood: {_USAGE}") from None
        if why := _unbounded(kw["min_steps"], kw["max_steps"]):
            raise TRMEdgeError(f"halting policy {text!r}: {why}")
        pol = cls(**kw, verify=verify)
        if math.isnan(pol.threshold):
            raise TRMEdgeError(f"halting policy {text!r}: the threshold must be a number, not NaN")
        return pol

    def __str__(self) -> str:
        text = f"fixed:{self.max_steps}" if self.kind == "fixed" else \
            f"learned:{self.threshold:g},min={self.min_steps},max={self.max_steps}"
        return text + (",verify" if self.verify else "")

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
    view: np.ndarray | None = None  # [B] int64: which view of the puzzle gave the answer (trm_edge.views)
    view_steps: np.ndarray | None = None  # [B] int64: supervision steps spent on all its views

    def __post_init__(self):
        n = len(self.steps)
        self.fault = np.zeros(n, np.int64) if self.fault is None else self.fault
        self.view = np.zeros(n, np.int64) if self.view is None else self.view
        self.view_steps = np.asarray(self.steps, np.int64).copy() if self.view_steps is None else self.view_steps
        self.tokens[self.fault > 0] = 0

    @classmethod
    def concat(cls, parts: list[Solution]) -> Solution:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


def finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Per row (first axis): every value of every array is finite."""
    ok = np.ones(len(arrays[0]), bool)
    for a in arrays:
        ok &= np.isfinite(a.reshape(len(a), -1)).all(1)
    return ok


Checker = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (row indices, their answers) -> which pass the rules


def halting_loop(step: Callable[[Any], tuple[Any, np.ndarray, np.ndarray, np.ndarray]], carry: Any,
                 policy: HaltPolicy, check: Checker | None = None) -> Solution:
    """The outer loop every backend shares: `step(carry) -> (carry, predicted tokens, q_halt, finite rows)`
    runs one supervision step for the whole batch; a halted row's outputs are frozen; a row whose step was not
    finite stops with a fault; under a verifying policy a row whose answer passes `check` stops too; stop when
    all have halted."""
    if policy.verify and check is None:
        raise TRMEdgeError(f"halting policy {policy}: this solver has no checker for ',verify'")
    tokens = steps = q_last = running = fault = None
    for k in range(1, policy.max_steps + 1):
        carry, pred, q, ok = step(carry)
        if running is None:
            running, steps, fault = np.ones(len(q), bool), np.zeros(len(q), np.int64), np.zeros(len(q), np.int64)
            tokens, q_last = np.zeros(pred.shape, np.int64), np.zeros(len(q), np.float32)
        tokens[running], steps[running], q_last[running] = pred[running], k, q[running]
        fault[running & ~ok] = k
        if policy.verify:
            rows = np.flatnonzero(running & ok)
            running[rows[check(rows, pred[rows])]] = False
        running &= ok & ~policy.halted(k, q)
        if not running.any():
            break
    return Solution(tokens, steps, q_last, fault)
