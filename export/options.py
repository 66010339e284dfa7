"""What an export is asked to do, as typed frozen configs (the CLI parses into these; formats read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trm_edge.errors import TRMEdgeError
from trm_edge.spec import GRAPHS
from trm_edge.tasks.arc_rows import TaskRows

DEFAULT_OPSET, MAX_OPSET = 18, 24  # 19-24 export and verify too (tried with torch 2.13, ORT 1.2x)
# int8: the best route the model allows (export.quantize.route_of); the others by name
MODES = ("int8", "int8-static", "int8-dynamic", "int8-rows", "int8-weights", "int4-weights")
# format -> the module whose `FORMAT` (export.formats.Format) says what it writes, offers and needs; named here, with
# the options that choose among them, and imported only when a format runs (export.formats.format_of)
FORMATS = {
    "onnx": "trm_edge.export.format_onnx",
    "openvino": "trm_edge.export.format_openvino",
    "litert": "trm_edge.export.format_litert",
}
ROOT = "onnx"  # every bundle holds it: the manifest's top level is its section (the graphs Bundle reads)
GUARD_PUZZLES = 4  # a close call may solve up to 4x --heldout puzzles (2,048 by default), half a draw at a time
CALIB_TFLOP = 16.0  # calibration solves at most this much (the bundled model's and Sudoku-MLP's 32 puzzles fit)


@dataclass(frozen=True)
class QuantOptions:
    """int8 requests: `modes` from MODES, each for every format that offers it, or for one format as
    `format:mode` (e.g. litert:int8-dynamic); puzzles for calibration (carries from every step) and for the
    held-out guard (one draw; a close call draws half as many again, up to GUARD_PUZZLES times as
    many in all); the guard's exact-solve budget in percentage points; its time a candidate (None or 0: no cap; a
    full-size model's 512 puzzles take half an hour on two cores). 512 held-out puzzles make one puzzle 0.2 pp, and
    two draws of the same graph differ by about 1 pp: hence the paired interval and the extra draws (both in the
    manifest)."""
    modes: tuple[str, ...] = ()
    calib: int = 32
    heldout: int = 512
    max_drop: float = 1.0
    guard_minutes: float | None = 5.0

    def __post_init__(self):
        for spec in self.modes:
            fmt, _, mode = spec.rpartition(":")
            if mode not in MODES or (fmt and fmt not in FORMATS):
                raise TRMEdgeError(f"--quantize {spec!r}: choose from {', '.join(MODES)}, each optionally for one "
                                   f"format as FORMAT:MODE ({', '.join(FORMATS)})")
        if self.modes and min(self.calib, self.heldout) < 1:
            raise TRMEdgeError(f"--calib {self.calib} / --heldout {self.heldout}: int8 needs at least 1 puzzle for "
                               "each")
        if self.guard_minutes is not None and not self.guard_minutes >= 0:
            raise TRMEdgeError(f"--guard-minutes {self.guard_minutes}: give minutes >= 0 (0: no cap)")


@dataclass(frozen=True)
class ExportOptions:
    """`formats`: those asked for (the bundle also holds ROOT, and each format what it needs: export.pipeline.ordered);
    `batch=None` is a dynamic batch; `max_steps` sizes the unrolled graph (default: the model's)."""
    graphs: tuple[str, ...] = ("step", "loop")
    formats: tuple[str, ...] = ("onnx",)
    halt: str | None = None
    max_steps: int | None = None
    opset: int = DEFAULT_OPSET
    batch: int | None = None
    puzzle_ids: tuple[int, ...] | None = None
    arc_rows: TaskRows | None = None  # the names of the kept rows (export --tasks), in puzzle_ids' order
    verify_n: int = 16
    quant: QuantOptions = field(default_factory=QuantOptions)

    def __post_init__(self):
        if not self.graphs or any(g not in GRAPHS for g in self.graphs):
            raise TRMEdgeError(f"--graph {','.join(self.graphs)!r}: choose from {', '.join(GRAPHS)} (comma-separated)")
        if bad := [f for f in self.formats if f not in FORMATS]:
            raise TRMEdgeError(f"--format {bad[0]!r}: choose from {', '.join(FORMATS)} (comma-separated)")
        if not DEFAULT_OPSET <= self.opset <= MAX_OPSET:
            raise TRMEdgeError(f"--opset {self.opset}: choose {DEFAULT_OPSET}-{MAX_OPSET} (the exporter's range)")
        if self.arc_rows and len(self.arc_rows.names) != len(self.puzzle_ids or ()):
            raise TRMEdgeError("arc_rows must name each kept puzzle row")
        for spec in self.quant.modes:
            if ":" in spec and spec.split(":")[0] not in (ROOT, *self.formats):
                raise TRMEdgeError(f"--quantize {spec!r}: add {spec.split(':')[0]} to --format")

