"""ONNX: the source of truth. The step graph from torch.onnx, the loop and unrolled graphs built around it,
each verified in ONNX Runtime, int8 from ORT's quantizer under the accuracy guard (loop and unrolled int8 wrap
the quantized step: no quantizer enters a Loop body)."""

from __future__ import annotations

import time
from pathlib import Path

import onnx

from trm_edge.export.formats import Context, Format, Written
from trm_edge.export.graphs import build_loop, build_unrolled, export_step
from trm_edge.export.options import MODES as ALL_MODES
from trm_edge.export.quantize import quantize_graphs
from trm_edge.runtimes.ort import OrtAdapter
from trm_edge.spec import io_spec

_PROTOBUF_LIMIT = 1_800_000_000  # bytes; larger graphs keep their weights in an external data file


def write(ctx: Context, modes: tuple[str, ...]) -> Written:
    """Write `<graph>.onnx` (and `<graph>.<mode>.onnx`) into ctx.tmp; return the manifest's top-level ONNX entries
    (graphs, verification, quantization, timings) and the verified fp32 solvers (every int8 is judged against them:
    its own, and the later formats')."""
    opts, tmp = ctx.options, ctx.tmp
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    ctx.status("exporting the supervision step")
    step = export_step(ctx.model, opts.opset, opts.batch)
    times["step"] = time.perf_counter() - t0
    builders = {"step": lambda s: s, "loop": lambda s: build_loop(s, ctx.init),
                "unrolled": lambda s: build_unrolled(s, ctx.init, ctx.n_unrolled)}
    for g in ctx.graphs:
        t = time.perf_counter()
        if g != "step":
            ctx.status(f"building the {g} graph" + (f" ({ctx.n_unrolled} steps)" if g == "unrolled" else ""))
        save_graph(builders[g](step), tmp / f"{g}.onnx")
        times.setdefault(g, time.perf_counter() - t)
    graphs: dict[str, dict] = {g: {"files": {"fp32": f"{g}.onnx"}, "io": io_spec(g, ctx.model.config, opts.batch),
                                   **({"steps": ctx.n_unrolled} if g == "unrolled" else {})} for g in ctx.graphs}
    solvers = {}
    for g in ctx.graphs:
        t = time.perf_counter()
        adapter = OrtAdapter(tmp / f"{g}.onnx")
        ms = 1000 * (time.perf_counter() - t)
        graphs[g]["session_init_ms"] = round(ms, 1)
        solvers[g] = ctx.solver(adapter, g, ms)
    entry = {"graphs": graphs, "verification": ctx.verify(solvers, "ONNX Runtime"),
             "export_seconds": {k: round(v, 2) for k, v in times.items()}}
    verified = ctx.needing({FORMAT.name: solvers})
    for mode in modes:
        entry.setdefault("quantization", {})[mode] = quantize_graphs(verified, mode)
        q_step = onnx.load(str(tmp / f"step.{mode}.onnx"))
        for g in ctx.graphs:
            graphs[g]["files"][mode] = f"{g}.{mode}.onnx"
            if g != "step":
                save_graph(builders[g](q_step), tmp / f"{g}.{mode}.onnx")
    return Written(entry, solvers)


def save_graph(proto: onnx.ModelProto, path: Path) -> None:
    large = proto.ByteSize() > _PROTOBUF_LIMIT
    onnx.save_model(proto, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")


def versions() -> dict:
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


FORMAT = Format(name="onnx", modes=ALL_MODES, modes_note="", graphs=("step", "loop", "unrolled"), graphs_note="",
                requires=("onnx", "onnxscript", "onnxruntime"), extra="export", needs=(), write=write,
                versions=versions)  # ONNX offers every int8 mode and every graph form
