"""What an export is asked to do, as typed frozen configs (the CLI parses into these; formats read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trm_edge.errors import TRMEdgeError
from trm_edge.spec import GRAPHS

DEFAULT_OPSET, MAX_OPSET = 18, 24  # 19-24 export and verify too (tried with torch 2.13, ORT 1.2x)
# int8: the best route the model allows (export.quantize.route_of); the others by name
MODES = ("int8", "int8-static", "int8-dynamic", "int8-rows", "int8-weights", "int4-weights")
# format -> module with `write(ctx)`, `MODES` (int8 modes it offers) and `GRAPHS` (forms it writes); named here, with
# the options that choose among them, and imported only when a format runs (export.formats.format_module)
FORMATS = {
    "onnx": "trm_edge.export.format_onnx",
    "openvino": "trm_edge.export.format_openvino",
    "litert": "trm_edge.export.format_litert",
}
GUARD_PUZZLES = 4  # a close call may solve up to 4x --heldout puzzles (2,048 by default), half a draw at a time


@dataclass(frozen=True)
class QuantOptions:
    """int8 requests: `modes` from MODES, each for every format that offers it, or for one format as
    `format:mode` (e.g. litert:int8-dynamic); puzzles for calibration (carries from every step) and for the
    held-out guard (one draw; a close call draws half as many again, up to GUARD_PUZZLES times as
    many in all); the guard's exact-solve budget in percentage points. 512 held-out puzzles make one puzzle 0.2 pp,
    and two draws of the same graph differ by about 1 pp: hence the paired interval and the extra draws (both in
    the manifest)."""
    modes: tuple[str, ...] = ()
    calib: int = 32
    heldout: int = 512
    max_drop: float = 1.0

    def __post_init__(self):
        for spec in self.modes:
            fmt, _, mode = spec.rpartition(":")
            if mode not in MODES or (fmt and fmt not in FORMATS):
                raise TRMEdgeError(f"--quantize {spec!r}: choose from {', '.join(MODES)}, each optionally for one "
                                   f"format as FORMAT:MODE ({', '.join(FORMATS)})")
        if self.modes and min(self.calib, self.heldout) < 1:
            raise TRMEdgeError(f"--calib {self.calib} / --heldout {self.heldout}: int8 needs at least 1 puzzle for "
                               "each")


@dataclass(frozen=True)
class ExportOptions:
    """`formats`: ONNX always comes first (the source of truth every other format is converted from or checked
    beside); `batch=None` is a dynamic batch; `max_steps` sizes the unrolled graph (default: the model's)."""
    graphs: tuple[str, ...] = ("step", "loop")
    formats: tuple[str, ...] = ("onnx",)
    halt: str | None = None
    max_steps: int | None = None
    opset: int = DEFAULT_OPSET
    batch: int | None = None
    puzzle_ids: tuple[int, ...] | None = None
    verify_n: int = 16
    quant: QuantOptions = field(default_factory=QuantOptions)

    def __post_init__(self):
        if not self.graphs or any(g not in GRAPHS for g in self.graphs):
            raise TRMEdgeError(f"--graph {','.join(self.graphs)!r}: choose from {', '.join(GRAPHS)} (comma-separated)")
        if bad := [f for f in self.formats if f not in FORMATS]:
            raise TRMEdgeError(f"--format {bad[0]!r}: choose from {', '.join(FORMATS)} (comma-separated)")
        if not DEFAULT_OPSET <= self.opset <= MAX_OPSET:
            raise TRMEdgeError(f"--opset {self.opset}: choose {DEFAULT_OPSET}-{MAX_OPSET} (the exporter's range)")
        # ONNX first, each format once; int8 graphs are built from the quantized step, so it is always exported
        object.__setattr__(self, "formats", tuple(dict.fromkeys(("onnx", *self.formats))))
        for spec in self.quant.modes:
            if ":" in spec and spec.split(":")[0] not in self.formats:
                raise TRMEdgeError(f"--quantize {spec!r}: add {spec.split(':')[0]} to --format")
        if self.quant.modes and "step" not in self.graphs:
            object.__setattr__(self, "graphs", ("step", *self.graphs))

