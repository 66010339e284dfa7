"""Export formats: one module each, one entry point `write(ctx) -> manifest section`, one registry line here.

ONNX is written first and is the source of truth: its verified fp32 step graph gives every later format the
calibration carries and the held-out fp32 answers its int8 is judged against. Each format converts, quantizes
the modes it offers, verifies its own graphs against the PyTorch reference, and returns its manifest entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from trm_edge.export.guard import heldout_plan
from trm_edge.export.options import FORMATS, ExportOptions
from trm_edge.halting import HaltPolicy, Solution
from trm_edge.model import TRM
from trm_edge.runtimes.base import Adapter
from trm_edge.runtimes.solver import Solver
from trm_edge.tasks import Codec


def format_module(name: str):
    return importlib.import_module(FORMATS[name])


@dataclass
class Context:
    """Everything a format needs, computed once per export."""
    model: TRM
    options: ExportOptions
    policy: HaltPolicy  # the bundle's halting policy
    codec: Codec
    init: dict[str, np.ndarray]
    n_unrolled: int
    tmp: Path
    status: Callable[[str], None]
    policies: list[HaltPolicy] = field(default_factory=list)  # verified under each
    int8_sites: dict | None = None  # activation ranges learned by QAT (trm_edge.int8), for static int8
    onnx_solvers: dict[str, Solver] = field(default_factory=dict)  # set by the ONNX format: fp32, by graph form
    _draws: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _fp32: dict[int, Solution] = field(default_factory=dict, repr=False)

    def solver(self, adapter: Adapter, graph: str = "step", init_ms: float = 0.0) -> Solver:
        return Solver(adapter, graph, self.model.config, self.codec, self.init, init_ms,
                      self.n_unrolled if graph == "unrolled" else None)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        return self.codec.sample(n, seed)

    @cached_property
    def verify_puzzles(self) -> np.ndarray:
        return self._sample(self.options.verify_n, 0)

    @cached_property
    def calib_puzzles(self) -> np.ndarray:
        return self._sample(self.options.quant.calib, 1)

    @property
    def heldout(self) -> np.ndarray:
        """The first held-out draw (its first puzzle is what the speed checks time)."""
        return self.heldout_draw(0)

    def heldout_draw(self, k: int) -> np.ndarray | None:
        """The k-th draw of held-out puzzles as the guard plans them (guard.heldout_plan), sampled once; None where
        the plan ends."""
        if k not in self._draws:
            if (plan := heldout_plan(k, self.options.quant.heldout, self.codec.generated)) is None:
                return None
            self._draws[k] = self._sample(*plan)
        return self._draws[k]

    @cached_property
    def calib_feeds(self) -> list[dict]:
        """Step inputs at every supervision step of real solves (the same carries for every format's int8)."""
        from trm_edge.export.quantize import calibration_feeds

        self.status(f"calibrating on carries from all {self.model.config.halt_max_steps} steps of "
                    f"{len(self.calib_puzzles)} puzzles")
        return calibration_feeds(self.onnx_solvers["step"], self.calib_puzzles, self.model.config.halt_max_steps)

    def heldout_fp32(self, k: int, advance: Callable[[int], None] | None = None) -> Solution:
        """The verified fp32 answers on held-out draw k under the bundle's policy: what int8 is judged by (solved
        once per export, whichever format asks first; `advance(n)` as puzzles finish)."""
        if k not in self._fp32:
            self._fp32[k] = self.onnx_solvers["step"].solve_stream(self.heldout_draw(k), self.policy, advance=advance)
        return self._fp32[k]

    @cached_property
    def probe_feed(self) -> dict[str, np.ndarray]:
        """One puzzle at the initial carry: what the int8 speed checks time."""
        z_H, z_L = self.onnx_solvers["step"].carry(1)
        return {"tokens": self.heldout[:1], "puzzle_ids": np.zeros(1, np.int64), "z_H": z_H, "z_L": z_L}

    @cached_property
    def reference_steps(self) -> list[tuple]:
        """The PyTorch reference's steps on the verification puzzles, once for every engine and policy."""
        from trm_edge.export.verify import reference_steps

        return reference_steps(self.model, self.verify_puzzles, self.policies)

    def verify(self, solvers: dict[str, Solver], engine: str) -> dict:
        from trm_edge.export.verify import verify

        self.status(f"verifying {engine} against the PyTorch reference")
        return dict(verify(self.model, solvers, self.verify_puzzles, self.policies, engine, self.reference_steps),
                    passed=True)
