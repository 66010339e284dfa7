"""LiteRT `.tflite` of the step graph, converted from the PyTorch module by Google's litert-torch (no TensorFlow),
run and verified in LiteRT with XNNPACK; int8-dynamic (int8 weights, activations quantized per call) by
ai-edge-quantizer.

Only the step graph: litert-torch has no lowering for while_loop, so the halting loop runs on the host. Shapes are
static (the converter cannot lower our embedding with a dynamic batch): one signature per batch size, weights
stored once (runtimes/litert.py splits a call into them). ai-edge-quantizer's static int8 needs calibration of
every signature and stops on our embedding's reshape; it is not offered yet."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch

from trm_edge.errors import CheckFailed, TRMEdgeError
from trm_edge.export.formats import Context
from trm_edge.export.quantize import DEFAULT_FLOAT_MODULES, guard_figures, quiet_logging, speed_check
from trm_edge.model import TRM, Batch, Carry
from trm_edge.runtimes.litert import LiteRtAdapter, quiet_native_output

MODES, MODES_NOTE = ("int8-dynamic",), "LiteRT int8 here is ai-edge-quantizer's dynamic range: ask for int8-dynamic"
GRAPHS, GRAPHS_NOTE = ("step",), "litert-torch cannot lower a while_loop: LiteRT runs the step with the host loop"
REQUIRES, EXTRA = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"), "litert-export"
DIR = "litert"
BATCHES = (1, 8, 64)  # signatures of a dynamic-batch bundle


class _Step(torch.nn.Module):
    """One supervision step with LiteRT's types (int32 in and out) and the spec's names on every input and output."""

    def __init__(self, model: TRM):
        super().__init__()
        self.model = model

    def forward(self, tokens, puzzle_ids, z_H, z_L):
        carry, logits, q = self.model.step(Carry(z_H, z_L), Batch(tokens.long(), puzzle_ids.long()))
        logits = logits.float()
        return {"z_H_out": carry.z_H.float(), "z_L_out": carry.z_L.float(), "pred": logits.argmax(-1).int(),
                "q_halt": q.float(), "logits": logits}


def write(ctx: Context, modes: tuple[str, ...]) -> dict:
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
    if "int8-dynamic" in modes:
        entry["quantization"] = {"int8-dynamic": quantize(ctx, solver, out)}
        graphs["step"]["int8-dynamic"] = f"{DIR}/step.int8-dynamic.tflite"
    return entry


def convert(model: TRM, batches: tuple[int, ...], path: Path) -> None:
    with contextlib.redirect_stdout(sys.stderr), quiet_logging(), quiet_native_output() as cap:
        try:
            import litert_torch

            step, cfg = _Step(model).eval(), model.config
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


# The guard's ladder, first rung first: each keeps more in float (module names as in the model); the last rung
# stores int8 weights and computes in float (a smaller file at fp32's accuracy, not a faster one).
LADDER = (("dynamic_wi8_afp32", DEFAULT_FLOAT_MODULES),
          ("dynamic_wi8_afp32", (*DEFAULT_FLOAT_MODULES, "down_proj")),
          ("weight_only_wi8_afp32", ()))


def quantize(ctx: Context, solver32, out: Path) -> dict:
    """ai-edge-quantizer dynamic-range int8 (weights int8 per channel, activations per call) under the guard: the
    halting and answer heads stay float as in the ONNX int8; over budget, the ladder's next rung is tried."""
    fp32, heldout, max_drop = ctx.heldout_fp32, ctx.heldout, ctx.options.quant.max_drop
    dst, tries = out / "step.int8-dynamic.tflite", []
    for name, keep in LADDER:
        ctx.status(f"quantizing (litert int8-dynamic by ai-edge-quantizer: {name}, {len(keep)} module kinds float)")
        with contextlib.redirect_stdout(sys.stderr), quiet_logging(), quiet_native_output():
            from ai_edge_quantizer import quantizer, recipe

            rules = getattr(recipe, name)()
            if keep:  # the last matching rule wins; tensor names end in the module's attribute name
                rules.append({"regex": f".*CastedLinear_({'|'.join(m.split('.')[-1] for m in keep)});.*",
                              "operation": "*", "algorithm_key": recipe.AlgorithmName.NO_QUANTIZE.value})
            quantizer.Quantizer(str(out / "step.tflite"), rules).quantize().export_model(str(dst), overwrite=True)
        solver8 = ctx.solver(LiteRtAdapter(dst))
        figs = guard_figures(fp32, solver8.solve(heldout, ctx.policy), heldout, ctx.codec)
        tries.append({"recipe": name, "float_modules": list(keep), **figs})
        if figs["exact_drop_pp"] <= max_drop:
            break
    else:
        raise CheckFailed(f"litert int8-dynamic accuracy guard failed: exact-solve drop "
                          f"{tries[0]['exact_drop_pp']:.2f} pp with the heads in float, still "
                          f"{figs['exact_drop_pp']:.2f} pp with int8 weights only; budget {max_drop:g} pp (fp32 "
                          f"{figs['fp32_exact']:.1%}); no bundle written")
    speed, warnings = speed_check("int8-dynamic", solver32, solver8, ctx.probe_feed,
                                  f"{name}, {', '.join(keep) or 'nothing'} in float", "litert ")
    return {"mode": "int8-dynamic", "format": f"TFLite, ai-edge-quantizer {name}",
            "activations": "float" if name.startswith("weight_only") else "int8 per call",
            "weights": "int8 per-channel", "graphs": ["step"], "float_modules": list(keep),
            "calibration": {"method": "none: ranges per call"}, "heldout_puzzles": len(heldout),
            "policy": str(ctx.policy), "max_drop_pp": max_drop, "guard": tries[-1], "attempts": tries, "speed": speed,
            "warnings": warnings}


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert")}

