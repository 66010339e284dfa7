"""LiteRT `.tflite` of the step graph, converted from the PyTorch module by Google's litert-torch (no TensorFlow),
run and verified in LiteRT with XNNPACK; int8 by ai-edge-quantizer: int8-dynamic (int8 weights, activations
quantized per call) and int8-static (the matmuls in int8 with calibrated ranges).

Only the step graph: litert-torch has no lowering for while_loop, so the halting loop runs on the host. Shapes are
static (the converter cannot lower our embedding with a dynamic batch): one signature per batch size, weights
stored once (runtimes/litert.py splits a call into them). Static calibration must feed every signature (a tensor
of an uncalibrated one stops the quantizer)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from trm_edge.errors import TRMEdgeError
from trm_edge.export.formats import Context, Format, Written
from trm_edge.export.guard import Rung, guard_record, judge, ladder, speed_check
from trm_edge.export.quantize import DEFAULT_FLOAT_MODULES, quiet_logging
from trm_edge.model import TRM, StepModule
from trm_edge.runtimes.litert import LiteRtAdapter, quiet_native_output

# int8: the route that holds accuracy (-0.2 pp as guarded) and pays on XNNPACK where the CPU has VNNI (2.4x ORT fp32
# per solve; 0.9x on AVX2 only: RESULTS.md)
ROUTES = {"int8": "int8-dynamic"}
DIR = "litert"
BATCHES = (1, 8, 64)  # signatures of a dynamic-batch bundle


def write(ctx: Context, modes: tuple[str, ...]) -> Written:
    out = ctx.tmp / DIR
    out.mkdir()
    batches = (ctx.options.batch,) if ctx.options.batch else BATCHES
    ctx.status(f"converting the step to LiteRT (signatures {', '.join(f'b{b}' for b in batches)})")
    t0 = time.perf_counter()
    convert(ctx.model, batches, out / "step.tflite")
    seconds = time.perf_counter() - t0
    t = time.perf_counter()
    adapter = LiteRtAdapter(out / "step.tflite")
    init_ms = round(1000 * (time.perf_counter() - t), 1)
    solver = ctx.solver(adapter, "step", init_ms)
    graphs = {"step": {"fp32": f"{DIR}/step.tflite"}}
    entry = {"engine": "litert", "graphs": graphs, "signatures": [f"b{b}" for b in batches],
             "session_init_ms": {"step": init_ms}, "convert_seconds": round(seconds, 2),
             "verification": ctx.verify({"step": solver}, "LiteRT")}
    for mode in (m for m in FORMAT.modes if m in modes):
        entry.setdefault("quantization", {})[mode] = quantize(ctx, mode, solver, out, batches)
        graphs["step"][mode] = f"{DIR}/step.{mode}.tflite"
    return Written(entry, {"step": solver})


def convert(model: TRM, batches: tuple[int, ...], path: Path) -> None:
    with contextlib.redirect_stdout(sys.stderr), quiet_logging(), quiet_native_output() as cap:
        try:
            import litert_torch

            step, cfg = StepModule(model, torch.int32).eval(), model.config  # LiteRT's integers are int32
            chain = litert_torch
            for b in batches:
                z = model.initial_carry(b)
                chain = chain.signature(f"b{b}", step, sample_kwargs={
                    "tokens": torch.ones(b, cfg.seq_len, dtype=torch.int32),
                    "puzzle_ids": torch.zeros(b, dtype=torch.int32), "z_H": z.z_H.float(), "z_L": z.z_L.float()})
            chain.convert().export(str(path))
        except Exception as e:  # the converter's errors are long traces from JAX / MLIR
            failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
        else:
            failure = None
    if failure:
        tail = cap.text.strip().splitlines()[-1:] if cap.text.strip() else []
        raise TRMEdgeError(f"litert-torch could not convert this model ({failure}{'; ' + tail[0] if tail else ''})")


# The guard's ladders, first rung first: each keeps more in float (module names as in the model; then how the refusal
# names the rung); dynamic's last rung stores int8 weights and computes in float (a smaller file at fp32's accuracy,
# not a faster one). Static quantizes the matmuls only (FULLY_CONNECTED, BATCH_MATMUL; their outputs are int8 too, as
# XNNPACK's QS8 kernels need): a recipe over every op would make the signatures' inputs and outputs int8 and round
# the residual stream.
STATIC = "static_wi8_ai8_matmuls"
HEADS, DOWN = "the heads in float", "the down projections also in float"
LADDERS = {"int8-dynamic": (("dynamic_wi8_afp32", DEFAULT_FLOAT_MODULES, HEADS),
                            ("dynamic_wi8_afp32", (*DEFAULT_FLOAT_MODULES, "down_proj"), DOWN),
                            ("weight_only_wi8_afp32", (), "int8 weights only")),
           "int8-static": ((STATIC, DEFAULT_FLOAT_MODULES, HEADS),
                           (STATIC, (*DEFAULT_FLOAT_MODULES, "down_proj"), DOWN))}
CALIB_CALLS = 8  # calibration calls per signature (ai-edge-quantizer keeps every tensor of a call: ~1-2 s each)


def quantize(ctx: Context, mode: str, solver32, out: Path, batches: tuple[int, ...]) -> dict:
    """ai-edge-quantizer int8 under the guard: the halting and answer heads stay float as in the ONNX int8; over
    budget, the ladder's next rung is tried. Static ranges come from the all-steps carries the ONNX int8 uses."""
    from ai_edge_quantizer import quantizer

    dst, ranges = out / f"step.{mode}.tflite", None
    route = ROUTES.get(mode, mode)

    def build(name: str, keep: tuple[str, ...]) -> tuple:
        """(its solver, the recipe, the modules kept float); static calibrates once, on its first rung"""
        nonlocal ranges
        calibrate = name == STATIC and ranges is None
        ctx.status(f"calibrating litert int8-static on {CALIB_CALLS} calls of each batch signature" if calibrate else
                   f"quantizing (litert {mode} by ai-edge-quantizer: {name}, {len(keep)} module kinds float)")
        with contextlib.redirect_stdout(sys.stderr), quiet_logging(), quiet_native_output():
            q = quantizer.Quantizer(str(out / "step.tflite"), recipe_rules(name, keep))
            if calibrate:
                ranges = q.calibrate(calibration_calls(ctx.calib_feeds, batches), num_threads=os.cpu_count() or 1)
            q.quantize(ranges).export_model(str(dst), overwrite=True)
        return ctx.solver(LiteRtAdapter(dst)), name, keep

    rungs = [Rung(f"litert {mode} ({name})", keeps, {"recipe": name, "float_modules": list(keep)},
                  partial(build, name, keep)) for name, keep, keeps in LADDERS[route]]
    t0 = time.perf_counter()
    climbed = ladder(rungs, lambda built, what: judge(ctx, partial(built[0].solve, halt=ctx.policy), what),
                     who=f"litert {mode}", budget=ctx.options.quant.max_drop)
    seconds = round(time.perf_counter() - t0, 1)
    solver8, name, keep = climbed.built
    speed, warnings = speed_check(mode, solver32, solver8, ctx.probe_feed,
                                  f"{name}, {', '.join(keep) or 'nothing'} in float", "litert ")
    static = name == STATIC
    return {"mode": mode, "route": route, "format": f"TFLite, ai-edge-quantizer {name}",
            "activations": "int8, calibrated per tensor (min/max)" if static else
            "float" if name.startswith("weight_only") else "int8 per call",
            "weights": "int8 per-channel", "graphs": ["step"], "float_modules": list(keep),
            "calibration": {"method": "min/max", "calls_per_signature": CALIB_CALLS,
                            "puzzles": len(ctx.calib_puzzles)} if static else {"method": "none: ranges per call"},
            **guard_record(ctx, climbed.tries, speed, warnings), "seconds": seconds}


def recipe_rules(name: str, keep: tuple[str, ...], activation_bits: int = 8) -> list:
    """16-bit activations ("A16W8": benchmarks/studies/litert_a16w8.py) hold the accuracy, but XNNPACK has no such
    kernels."""
    from ai_edge_quantizer import recipe, recipe_manager

    if name == STATIC:
        rm = recipe_manager.RecipeManager()
        for op in (recipe.TFLOperationName.FULLY_CONNECTED, recipe.TFLOperationName.BATCH_MATMUL):
            rm.add_static_config(regex=".*", operation_name=op, activation_num_bits=activation_bits, weight_num_bits=8,
                                 algorithm_key=recipe.AlgorithmName.MIN_MAX_UNIFORM_QUANT)
        rules = rm.get_quantization_recipe()
    else:
        rules = getattr(recipe, name)()
    if keep:  # the last matching rule wins; tensor names end in the module's attribute name
        rules.append({"regex": f".*CastedLinear_({'|'.join(m.split('.')[-1] for m in keep)});.*",
                      "operation": "*", "algorithm_key": recipe.AlgorithmName.NO_QUANTIZE.value})
    return rules


def calibration_calls(feeds: list[dict], batches: tuple[int, ...]) -> dict[str, list[dict]]:
    """The recorded carries (every step of every calibration puzzle) as calls of each batch signature, spread
    evenly over the steps; LiteRT's integer inputs are int32."""
    rows = {k: np.concatenate([f[k] for f in feeds]) for k in ("tokens", "puzzle_ids", "z_H", "z_L")}
    rows["tokens"], rows["puzzle_ids"] = rows["tokens"].astype(np.int32), rows["puzzle_ids"].astype(np.int32)
    n = len(rows["tokens"])
    data = {}
    for b in batches:
        starts = np.linspace(0, max(n - b, 0), CALIB_CALLS).astype(int)
        take = [np.arange(s, s + b) % n for s in starts]  # fewer rows than b: wrap around
        data[f"b{b}"] = [{k: v[i] for k, v in rows.items()} for i in take]
    return data


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert")}


FORMAT = Format(name="litert", modes=("int8", "int8-dynamic", "int8-static"),
                modes_note="LiteRT int8 is ai-edge-quantizer's: int8 (= int8-dynamic, the accurate one) or int8-static",
                graphs=("step",), graphs_note="litert-torch cannot lower a while_loop: LiteRT runs the step with the "
                "host loop", requires=("litert_torch", "ai_edge_quantizer", "ai_edge_litert"), extra="litert-export",
                needs=("onnx",), write=write, versions=versions)  # int8 calibrated and judged on ONNX's fp32 solves
