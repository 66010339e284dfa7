"""OpenVINO IR (.xml + .bin): each verified ONNX graph converted by openvino.convert_model (OpenVINO runs our ONNX
Loop, so step, loop and unrolled all convert), run and verified with f32 pinned; int8 by NNCF on the step IR.

int8 route: `nncf.quantize` of the IR (ov.Model) with model_type TRANSFORMER but SmoothQuant off (a weight shared by
~9 MatMuls a step stays one weight), calibrated on the carries of every supervision step, under our guard with a
ladder like LiteRT's: the heads in float, then the down projections too.
NNCF's own accuracy control (quantize_with_accuracy_control) was the route until 2026-12: it ranked ~74 op groups
by re-solving the first held-out draw for each (7 of the export's 11 minutes), and, judged on that one draw, it
shipped nothing the guard could pass on the model of 2026-12-04 (1.17 pp over more draws, budget 1). Quantizing
the IR rather than the ONNX graph avoids nncf#4172 (the ONNX backend crashes on an initializer shared by several
MatMuls, and each of our weights feeds ~9 MatMuls per step). The quantized step is IR, which cannot be wrapped in
our ONNX Loop, and NNCF does not enter a Loop body: OpenVINO int8 runs the step graph with the halting loop on the
host."""

from __future__ import annotations

import contextlib
import sys
import time
from functools import partial

import onnx

from trm_edge.export.formats import Context, Format, Written
from trm_edge.export.guard import Rung, guard_record, judge, ladder, speed_check
from trm_edge.export.quantize import calibration_summary, matmul_nodes, module_of, quiet_logging
from trm_edge.int8 import FLOAT_MODULES
from trm_edge.runtimes.openvino import OpenVinoAdapter

DIR = "openvino"


def write(ctx: Context, modes: tuple[str, ...]) -> Written:
    import openvino as ov

    out = ctx.tmp / DIR
    out.mkdir()
    graphs, init_ms, solvers = {}, {}, {}
    t0 = time.perf_counter()
    for g in ctx.graphs:
        ctx.status(f"converting the {g} graph to OpenVINO IR")
        ov.save_model(ov.convert_model(str(ctx.tmp / f"{g}.onnx")), str(out / f"{g}.xml"), compress_to_fp16=False)
        graphs[g] = {"fp32": f"{DIR}/{g}.xml"}
    seconds = time.perf_counter() - t0
    for g in ctx.graphs:
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
    return Written(entry, solvers)


# The guard's ladder, first rung first: the modules (last name in the model) each rung keeps in float, and how the
# refusal names it.
LADDER = ((FLOAT_MODULES, "the heads in float"), ((*FLOAT_MODULES, "down_proj"), "the down projections also in float"))


def quantize(ctx: Context, solver32, out) -> dict:
    """NNCF int8 of the step IR under the guard: over budget, the ladder's next rung keeps more in float."""
    import nncf
    import openvino as ov

    # SmoothQuant (on in the TRANSFORMER preset) rescales a weight by the statistics of each MatMul that uses it; a
    # step applies each weight ~9 times, so every use got its own copy and the int8 IR outgrew fp32's (12.7 MB vs 2.8
    # on the bundled model). Without it a shared weight quantizes once and the IR stores it once (1.4 MB).
    no_smooth_quant = nncf.AdvancedQuantizationParameters(
        smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1))
    data = nncf.Dataset([{k: v for k, v in f.items() if k != "step"} for f in ctx.calib_feeds])
    mm = matmul_nodes(onnx.load(str(ctx.tmp / "step.onnx"), load_external_data=False))

    def build(keep: tuple[str, ...]) -> tuple:
        """(its solver, the int8 ov.Model, the modules and the MatMuls kept float)"""
        floats = [n for n in mm if module_of(n).split(".")[-1] in keep]
        ctx.status(f"quantizing (openvino int8 by NNCF, {', '.join(keep)} in float)")
        with contextlib.redirect_stdout(sys.stderr), quiet_logging("nncf"):  # progress bars: stdout carries --json
            q = nncf.quantize(ov.Core().read_model(str(out / "step.xml")), data, subset_size=len(ctx.calib_feeds),
                              model_type=nncf.ModelType.TRANSFORMER,
                              ignored_scope=nncf.IgnoredScope(names=[n.name for n in floats], validate=False),
                              advanced_parameters=no_smooth_quant)
        ov.save_model(q, str(out / "step.int8.xml"), compress_to_fp16=False)
        return ctx.solver(OpenVinoAdapter(out / "step.int8.xml")), q, keep, floats

    rungs = [Rung(f"openvino int8 ({', '.join(keep)} float)", keeps, {"float_modules": list(keep)},
                  partial(build, keep)) for keep, keeps in LADDER]
    t0 = time.perf_counter()
    climbed = ladder(rungs, lambda built, what: judge(ctx, partial(built[0].solve, halt=ctx.policy), what),
                     who="openvino int8", budget=ctx.options.quant.max_drop)
    seconds = round(time.perf_counter() - t0, 1)
    solver8, q, keep, floats = climbed.built
    ops = [op for op in q.get_ordered_ops() if op.get_type_name() == "MatMul"]
    # a MatMul runs in int8 when its activation comes through a FakeQuantize (its weight is then int8 too)
    n_int8 = sum(op.input(0).get_source_output().get_node().get_type_name() == "FakeQuantize" for op in ops)
    speed, warnings = speed_check("int8", solver32, solver8, ctx.probe_feed, f"{n_int8} of {len(ops)} MatMuls in int8",
                                  "openvino ")
    return {"mode": "int8", "route": "nncf-int8",
            "format": "OpenVINO IR with FakeQuantize (NNCF, TRANSFORMER preset, SmoothQuant off)",
            "activations": "int8/uint8 per-tensor", "weights": "int8 per-channel", "graphs": ["step"],
            "calibration": dict(calibration_summary(ctx), method="NNCF min-max"), "float_modules": list(keep),
            "float_nodes": [{"node": m.name, "module": module_of(m)} for m in floats],
            "quantized_matmuls": n_int8, "matmuls": len(ops), **guard_record(ctx, climbed.tries, speed, warnings),
            "seconds": seconds}


def versions() -> dict:
    import nncf
    import openvino

    return {"openvino": openvino.__version__, "nncf": nncf.__version__}


FORMAT = Format(name="openvino", modes=("int8",),
                modes_note="NNCF quantizes with calibrated static ranges: ask for int8",
                graphs=("step", "loop", "unrolled"), graphs_note="", requires=("openvino", "nncf"),
                extra="openvino-export", needs=("onnx",), write=write, versions=versions)  # converts ONNX's graphs
