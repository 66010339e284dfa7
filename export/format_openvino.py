"""OpenVINO IR (.xml + .bin): each verified ONNX graph converted by openvino.convert_model (OpenVINO runs our ONNX
Loop, so step, loop and unrolled all convert), run and verified with f32 pinned; int8 by NNCF on the step IR.

int8 route: `nncf.quantize_with_accuracy_control` on the IR (ov.Model) with model_type TRANSFORMER, calibrated
on the carries of every supervision step, validated by our exact-solve rate on held-out puzzles: NNCF reverts
the most harmful quantized ops to float until the drop fits the budget. Quantizing the IR rather than the ONNX
graph avoids nncf#4172 (the ONNX backend crashes on an initializer shared by several MatMuls, and each of our
weights feeds ~9 MatMuls per step). The quantized step is IR, which cannot be wrapped in our ONNX Loop, and NNCF
does not enter a Loop body: OpenVINO int8 runs the step graph with the halting loop on the host."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from functools import partial

import onnx

from trm_edge.errors import CheckFailed
from trm_edge.export.formats import Context
from trm_edge.export.quantize import (
    DEFAULT_FLOAT_MODULES,
    calibration_summary,
    guard_figures,
    guard_record,
    judge,
    matmul_nodes,
    module_of,
    speed_check,
)
from trm_edge.runtimes.openvino import OpenVinoAdapter

MODES, MODES_NOTE = ("int8",), "NNCF quantizes with calibrated static ranges: ask for int8"
GRAPHS, GRAPHS_NOTE = ("step", "loop", "unrolled"), ""
REQUIRES, EXTRA = ("openvino", "nncf"), "openvino-export"
DIR = "openvino"


def write(ctx: Context, modes: tuple[str, ...]) -> dict:
    import openvino as ov

    out = ctx.tmp / DIR
    out.mkdir()
    graphs, init_ms, solvers = {}, {}, {}
    t0 = time.perf_counter()
    for g in ctx.options.graphs:
        ctx.status(f"converting the {g} graph to OpenVINO IR")
        ov.save_model(ov.convert_model(str(ctx.tmp / f"{g}.onnx")), str(out / f"{g}.xml"), compress_to_fp16=False)
        graphs[g] = {"fp32": f"{DIR}/{g}.xml"}
    seconds = time.perf_counter() - t0
    for g in ctx.options.graphs:
        t = time.perf_counter()
        adapter = OpenVinoAdapter(out / f"{g}.xml")
        init_ms[g] = round(1000 * (time.perf_counter() - t), 1)
        solvers[g] = ctx.solver(adapter, g, init_ms[g])
    entry = {"engine": "openvino", "graphs": graphs, "session_init_ms": init_ms, "convert_seconds": round(seconds, 2),
             "inference_precision": "f32 (pinned: the CPU plugin's default is bf16 where the CPU has it)",
             "verification": ctx.verify(solvers, "OpenVINO")}
    if "int8" in modes:
        entry["quantization"] = {"int8": quantize(ctx, solvers["step"], out)}
        graphs["step"]["int8"] = f"{DIR}/step.int8.xml"
    return entry


def quantize(ctx: Context, solver32, out) -> dict:
    """NNCF accuracy-controlled int8 of the step IR, then our own guard figures on the result."""
    import nncf
    import openvino as ov

    max_drop, heldout, policy = ctx.options.quant.max_drop, ctx.heldout, ctx.policy
    feeds = ctx.calib_feeds
    fp32 = ctx.heldout_fp32(0)
    mm = matmul_nodes(onnx.load(str(ctx.tmp / "step.onnx"), load_external_data=False))
    default_float = [n.name for n in mm if module_of(n) in DEFAULT_FLOAT_MODULES]

    def exact_rate(compiled, _data) -> float:
        """NNCF's metric: the exact-solve rate on every held-out puzzle (ranking each of ~74 op groups re-solves
        them: ~7 of the ~11 minutes of the bundled model's export)."""
        got = ctx.solver(OpenVinoAdapter.from_compiled(compiled)).solve(heldout, policy)
        return guard_figures(fp32, got, heldout, ctx.codec)["int8_exact"]

    ctx.status(f"quantizing (openvino int8 by NNCF, accuracy control within {max_drop:g} pp)")
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars; stdout carries --json
            q = nncf.quantize_with_accuracy_control(
                ov.Core().read_model(str(out / "step.xml")), nncf.Dataset([{k: v for k, v in f.items() if k != "step"}
                                                                          for f in feeds]),
                nncf.Dataset([heldout]), exact_rate, max_drop=max_drop / 100, drop_type=nncf.DropType.ABSOLUTE,
                subset_size=len(feeds), model_type=nncf.ModelType.TRANSFORMER,
                ignored_scope=nncf.IgnoredScope(names=default_float, validate=False))
    finally:
        nncf_log.setLevel(level)
    ov.save_model(q, str(out / "step.int8.xml"), compress_to_fp16=False)
    solver8 = ctx.solver(OpenVinoAdapter(out / "step.int8.xml"))
    figs = judge(ctx, partial(solver8.solve, halt=policy), "openvino int8")
    ops = [op for op in q.get_ordered_ops() if op.get_type_name() == "MatMul"]
    # a MatMul runs in int8 when its activation comes through a FakeQuantize (its weight is then int8 too)
    n_int8 = sum(op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize" for op in ops)
    if not figs["passed"]:
        raise CheckFailed(f"openvino int8 accuracy guard failed: exact-solve drop {figs['exact_drop_pp']:.2f} pp after "
                          f"NNCF's accuracy control; budget {max_drop:g} pp (fp32 {figs['fp32_exact']:.1%}); no bundle "
                          "written")
    speed, warnings = speed_check("int8", solver32, solver8, ctx.probe_feed, f"{n_int8} of {len(ops)} MatMuls in int8",
                                  "openvino ")
    return {"mode": "int8", "format": "OpenVINO IR with FakeQuantize (NNCF, TRANSFORMER preset)",
            "activations": "int8/uint8 per-tensor", "weights": "int8 per-channel", "graphs": ["step"],
            "calibration": dict(calibration_summary(ctx), method="NNCF min-max, accuracy-controlled"),
            "float_nodes": [{"node": m.name, "module": module_of(m)} for m in mm if m.name in default_float],
            "quantized_matmuls": n_int8, "matmuls": len(ops), **guard_record(ctx, [figs], speed, warnings)}


def versions() -> dict:
    import nncf
    import openvino

    return {"openvino": openvino.__version__, "nncf": nncf.__version__}
