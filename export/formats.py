"""Export formats: one module each, declaring one `FORMAT = Format(...)`, one registry line (export.options.FORMATS).

A format converts, quantizes the modes it offers, verifies its own graphs against the PyTorch reference, and returns
its manifest entry with its verified fp32 solvers. The pipeline runs each after the formats it `needs` and hands it
their solvers: ONNX needs nothing and is the source of truth, its verified fp32 step graph gives every later format
the calibration carries and the held-out fp32 answers its int8 is judged against.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from trm_edge.export.guard import heldout_plan
from trm_edge.export.options import CALIB_TFLOP, FORMATS, ExportOptions
from trm_edge.halting import HaltPolicy, Solution
from trm_edge.model import TRM
from trm_edge.progress import counting, duration
from trm_edge.runtimes.base import Adapter
from trm_edge.runtimes.solver import Solver
from trm_edge.tasks import Codec


@dataclass(frozen=True)
class Written:
    """What a format's `write` returns: its manifest section, and its verified fp32 solvers by graph form (what the
    formats that need it read)."""
    section: dict
    solvers: Mapping[str, Solver]


@dataclass(frozen=True)
class Format:
    """One export format, as its module declares it (`FORMAT`)."""
    name: str
    modes: tuple[str, ...]  # the int8 modes it offers (export.options.MODES)
    modes_note: str  # why the others are not offered (the manifest's notes)
    graphs: tuple[str, ...]  # the graph forms it writes
    graphs_note: str  # why the others are not written
    requires: tuple[str, ...]  # the packages its converter needs (extras.require checks them before any work)
    extra: str  # the pip extra that installs them
    needs: tuple[str, ...]  # the formats whose verified fp32 solvers (and files) it reads: written before it
    write: Callable[[Context, tuple[str, ...]], Written]  # (context, int8 modes to quantize) -> Written
    versions: Callable[[], dict]  # its converter's and engine's versions, for the manifest


def format_of(name: str) -> Format:
    """The registered format `name` (its module is imported now: formats run lazily)."""
    return importlib.import_module(FORMATS[name]).FORMAT


@dataclass(frozen=True, eq=False)
class Context:
    """Everything a format reads, fixed for the export; what is computed from it, once, is cached (shared by the
    contexts `needing` makes)."""
    model: TRM
    options: ExportOptions
    policy: HaltPolicy  # the bundle's halting policy
    codec: Codec
    init: Mapping[str, np.ndarray]
    n_unrolled: int
    graphs: tuple[str, ...]  # the forms written (pipeline.graphs_written)
    tmp: Path
    status: Callable[[str], None]
    policies: tuple[HaltPolicy, ...] = ()  # verified under each
    int8_sites: dict | None = None  # activation ranges learned by QAT (trm_edge.int8), for static int8
    # the verified fp32 solvers, by graph form, of each format this one needs (handed over by the pipeline)
    needed: Mapping[str, Mapping[str, Solver]] = field(default_factory=lambda: MappingProxyType({}))
    _draws: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _fp32: dict[tuple[int, int, int], Solution] = field(default_factory=dict, repr=False)
    _once: dict[str, Any] = field(default_factory=dict, repr=False)

    def needing(self, solvers: Mapping[str, Mapping[str, Solver]]) -> Context:
        """This context with the verified fp32 solvers of the formats given, by format."""
        given = {name: MappingProxyType(dict(by_graph)) for name, by_graph in solvers.items()}
        return dataclasses.replace(self, needed=MappingProxyType({**self.needed, **given}))

    @property
    def onnx_solvers(self) -> Mapping[str, Solver]:
        """ONNX's verified fp32 solvers by graph form: what every int8 is calibrated on and judged against."""
        return self.needed["onnx"]

    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._once:
            self._once[key] = make()
        return self._once[key]

    def solver(self, adapter: Adapter, graph: str = "step", init_ms: float = 0.0) -> Solver:
        return Solver(adapter, graph, self.model.config, self.codec, self.init, init_ms,
                      self.n_unrolled if graph == "unrolled" else None)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        return self.codec.sample(n, seed)

    @property
    def verify_puzzles(self) -> np.ndarray:
        """The first of the asked verification puzzles that the model's cost allows here (verify_plan)."""
        n = self.verify_plan["puzzles"]
        return self._cached("verify_asked", lambda: self._sample(self.options.verify_n, 0))[:n]

    @property
    def verify_plan(self) -> dict:
        """How many puzzles verification checks on every engine, from the model's cost (verify.verify_plan)."""
        from trm_edge.export.verify import verify_plan

        def plan() -> dict:
            asked = self._cached("verify_asked", lambda: self._sample(self.options.verify_n, 0))
            return verify_plan(self.model, asked, len({"onnx", *self.options.formats}), len(self.graphs),
                               len(self.policies))

        return self._cached("verify_plan", plan)

    @property
    def calib_puzzles(self) -> np.ndarray:
        """--calib puzzles, or as many as CALIB_TFLOP allows over all their steps (ARC's size: 4 of 32, whose
        carries alone would be 1.9 GB and their steps 14 min here), at least one."""
        cfg = self.model.config
        fit = int(CALIB_TFLOP * 1e12 // (cfg.halt_max_steps * cfg.flops_per_step()))
        return self._cached("calib_puzzles", lambda: self._sample(max(1, min(self.options.quant.calib, fit)), 1))

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

    @property
    def calib_feeds(self) -> list[dict]:
        """Step inputs at every supervision step of real solves (the same carries for every format's int8)."""
        from trm_edge.export.quantize import calibration_feeds

        def record() -> list[dict]:
            n, asked = len(self.calib_puzzles), self.options.quant.calib
            self.status(f"calibrating on carries from all {self.model.config.halt_max_steps} steps of {n} puzzles"
                        + (f" (of --calib {asked}: the most {CALIB_TFLOP:g} TFLOP allow at this size)" if n < asked
                           else ""))
            return calibration_feeds(self.onnx_solvers["step"], self.calib_puzzles, self.model.config.halt_max_steps)

        return self._cached("calib_feeds", record)

    def heldout_fp32(self, k: int, start: int, puzzles: np.ndarray, advance: Callable[[int], None] | None = None
                     ) -> Solution:
        """The verified fp32 answers on `puzzles`, held-out draw k's from `start`, under the bundle's policy: what
        int8 is judged by (solved once per export, whichever format asks first; `advance(n)` as puzzles finish)."""
        key = (k, start, len(puzzles))
        if key not in self._fp32:
            self._fp32[key] = self.onnx_solvers["step"].solve_stream(puzzles, self.policy, advance=advance)
        elif advance:
            advance(len(puzzles))
        return self._fp32[key]

    @property
    def guard_forecast(self) -> dict:
        """The int8 guard's cost here, told once before the first candidate is judged (guard.forecast)."""
        from trm_edge.export.guard import forecast

        def tell() -> dict:
            told = forecast(self)
            self.status(told["text"])
            return told

        return self._cached("guard_forecast", tell)

    @property
    def probe_feed(self) -> dict[str, np.ndarray]:
        """One puzzle at the initial carry: what the int8 speed checks time."""
        def feed() -> dict[str, np.ndarray]:
            z_H, z_L = self.onnx_solvers["step"].carry(1)
            return {"tokens": self.heldout[:1], "puzzle_ids": np.zeros(1, np.int64), "z_H": z_H, "z_L": z_L}

        return self._cached("probe_feed", feed)

    @property
    def reference_steps(self) -> list[tuple]:
        """The PyTorch reference's steps on the verification puzzles, once for every engine and policy."""
        from trm_edge.export.verify import reference_steps

        return self._cached("reference_steps",
                            lambda: reference_steps(self.model, self.verify_puzzles, list(self.policies)))

    def verify(self, solvers: dict[str, Solver], engine: str) -> dict:
        from trm_edge.export.verify import checks, verify, verify_seconds

        plan, first = self.verify_plan, "reference_steps" not in self._once
        estimate = verify_seconds(self.model, solvers.get("step"), self.verify_puzzles, len(solvers),
                                  len(self.policies), first)
        told = (f"verifying {engine} against the PyTorch reference on {plan['puzzles']} of {plan['asked']} puzzles, "
                f"{plan['steps']} steps each (~{duration(estimate)} here)")
        self.status(told)
        t0 = time.perf_counter()
        reference = self.reference_steps
        advance = counting(self.status, f"{told}:", "checks", 0, checks(solvers, list(self.policies)))
        return dict(verify(self.model, dict(solvers), self.verify_puzzles, list(self.policies), engine, reference,
                           advance),
                    passed=True, asked=plan["asked"], budget_tflop=plan["budget_tflop"], estimate_s=round(estimate, 1),
                    seconds=round(time.perf_counter() - t0, 1))
