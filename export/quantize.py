"""ONNX Runtime's int8 for a recursive model: calibrate on carries from EVERY supervision step, then prove accuracy
on the task.

The carry (z_H, z_L) drifts over the supervision steps, so a step graph calibrated on initial states alone
clips the ranges later steps need. We record the step graph's inputs at every step of real solves. After
quantizing, the accuracy guard (export.guard) compares int8 with fp32 on held-out puzzles and, while the exact-solve
drop exceeds the budget, the ONNX ladder keeps the most sensitive MatMuls (largest float-vs-QDQ output error) in
float. Loop and unrolled int8 graphs wrap the quantized step (no quantizer enters a Loop body).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from trm_edge.errors import TRMEdgeError
from trm_edge.export.guard import Rung, guard_record, judge, ladder, speed_check
from trm_edge.int8 import FLOAT_MODULES
from trm_edge.runtimes.ort import OrtAdapter
from trm_edge.runtimes.solver import Solver

if TYPE_CHECKING:
    from trm_edge.export.formats import Context

DEFAULT_FLOAT_MODULES = tuple(f"model.{m}" for m in FLOAT_MODULES)  # as the exporter names their scopes
CALIB_PERCENTILE = 99.99
# ORT's histogram calibrator holds every calibrated tensor of the feeds it is given at once: at the official
# size, 32 feeds were killed at 24 GB. It gets the feeds in chunks of at most this many bytes (histograms merge).
CALIB_CHUNK_BYTES = 2 << 30
PROBE_MB = 1024  # the sensitivity ranking's two probes' outputs at once (ARC's step: 0.6 GB a puzzle each)
QUANTIZED_OPS = ["MatMul", "Gemm"]
WEIGHT_BITS = {"int8-weights": 8, "int4-weights": 4}  # MatMulNBits routes: weights only, activations per block
WEIGHT_BLOCK = 32
ROW_EPS = 1e-30  # a row of zeros keeps a finite scale (127 / ROW_EPS is far from float32's overflow)
# int8-rows' weights in [-63, 63]: x86 without VNNI multiplies u8 x s8 with 16-bit saturating pair sums
# (vpmaddubsw), which 255 * 127 * 2 overflows and 255 * 63 * 2 does not (onnxruntime#12088); VNNI and ARM need no
# margin, but a bundle runs where it is copied
ROW_WEIGHT_MAX = 63
SCHEMES = {  # what each route's graph holds, for the manifest
    "int8-static": {"format": "QDQ, float MatMul outputs", "activations": "uint8 per tensor",
                    "weights": "int8 per output channel"},
    "int8-dynamic": {"format": "dynamic (MatMulInteger)", "activations": "uint8 per tensor, per call",
                     "weights": "int8 per output channel"},
    **{m: {"format": "MatMulNBits, accuracy level 4", "activations": f"int8 per block of {WEIGHT_BLOCK}, per call",
           "weights": f"int{b} per block of {WEIGHT_BLOCK}"} for m, b in WEIGHT_BITS.items()},
    "int8-rows": {"format": "MatMulIntegerToFloat", "activations": "int8 per row (token), per call",
                  "weights": "int8 per output channel, in [-63, 63]"},
}


def module_of(node: onnx.NodeProto) -> str:
    """The PyTorch module a node came from (the exporter's name scope), e.g. 'model.q_head'."""
    for p in node.metadata_props:
        if p.key == "namespace":
            parts = [seg.split(":")[0].strip() for seg in p.value.split("/")]
            mods = [s for s in parts if s.startswith("model")]
            return mods[-1] if mods else ""
    return ""


def matmul_nodes(model: onnx.ModelProto, weights_only: bool = False) -> list[onnx.NodeProto]:
    """`weights_only`: those whose second operand is a weight (int8-rows quantizes no other: attention's products
    of two activations stay float, so floating them would change nothing)."""
    weights = {t.name for t in model.graph.initializer} if weights_only else None
    return [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
            and (weights is None or n.input[1] in weights)]


def candidates(model: onnx.ModelProto, route: str) -> tuple[list[onnx.NodeProto], list[str]]:
    """The MatMuls `route` may quantize, and the names of those it keeps float by default (the heads)."""
    mm = matmul_nodes(model, weights_only=route == "int8-rows")
    return mm, [n.name for n in mm if module_of(n) in DEFAULT_FLOAT_MODULES]


def calibration_feeds(solver: Solver, puzzles: np.ndarray, steps: int, batch: int = 8) -> list[dict]:
    """Step-graph inputs recorded at every supervision step (1..steps) of real solves, tagged with the step."""
    feeds = []
    for i in range(0, len(puzzles), batch):
        tokens = puzzles[i:i + batch]
        ids = np.zeros(len(tokens), np.int64)
        z_H, z_L = solver.carry(len(tokens))
        for k in range(1, steps + 1):
            feeds.append({"step": k, "tokens": tokens, "puzzle_ids": ids, "z_H": z_H, "z_L": z_L})
            z_H, z_L, *_ = solver.step(tokens, ids, z_H, z_L)
    return feeds


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over recorded feeds."""

    def __init__(self, feeds: list[dict]):
        self.items = [{k: v for k, v in f.items() if k != "step"} for f in feeds]
        self.set_range(0, len(self.items))

    def __len__(self):
        return len(self.items)

    def set_range(self, start_index: int, end_index: int):  # what ORT's chunked calibration ('stride') calls
        self.it = iter(self.items[start_index:end_index])

    def get_next(self):
        return next(self.it, None)


def calib_chunk(model: onnx.ModelProto, feeds: list[dict]) -> int:
    """Feeds per calibration chunk: the largest divisor of len(feeds) (ORT requires one) whose calibrated tensors,
    estimated from the MatMul shapes (inputs + outputs, fp32), fit CALIB_CHUNK_BYTES."""
    weights = {t.name: t.dims for t in model.graph.initializer}
    rows = feeds[0]["z_H"].size // feeds[0]["z_H"].shape[-1]
    width = sum(weights[n.input[1]][0] + weights[n.input[1]][1] if n.input[1] in weights else
                3 * feeds[0]["z_H"].shape[-1] for n in matmul_nodes(model))
    per_feed = 4 * rows * width
    fits = [d for d in range(2, len(feeds) + 1) if len(feeds) % d == 0 and d * per_feed <= CALIB_CHUNK_BYTES]
    return max(fits, default=1)


def site_overrides(model: onnx.ModelProto, sites: dict[str, list]) -> dict[str, list[dict]]:
    """ORT tensor overrides from learned call-site ranges (`trm_edge.int8`): the k-th distinct activation input of a
    module's MatMuls in graph order is its k-th call (a gate/up pair split from one call shares its input)."""
    inputs: dict[str, list[str]] = {}
    for n in matmul_nodes(model):
        mod = module_of(n).removeprefix("model.")
        if mod in sites and n.input[0] not in inputs.setdefault(mod, []):
            inputs[mod].append(n.input[0])
    if missing := sorted(set(sites) - set(inputs)) or [m for m in sites if len(inputs[m]) != len(sites[m])]:
        raise TRMEdgeError(f"the model's learned int8 ranges do not fit its step graph (module {missing[0]}): "
                           "re-run `trm-edge finetune --qat` on this model")
    return {t: [{"scale": np.array(s, np.float32), "zero_point": np.array(z, np.uint8)}]
            for mod, ts in inputs.items() for t, (s, z) in zip(ts, sites[mod])}


def route_of(mode: str, learned: bool) -> str:
    """`int8` is the best route the model allows, measured (benchmarks/RESULTS.md): static with ranges learned by
    `finetune --qat` (within 0.5 pp of that model's fp32, 1.5x at batch 64); without them, int8 rows (activation
    scales per token at run time), which holds accuracy untrained like 8-bit weights (MatMulNBits) but runs faster
    than fp32 where those run slower (calibrated static and per-tensor dynamic ranges lose 1-7 pp)."""
    if mode != "int8":
        return mode
    return "int8-static" if learned else "int8-rows"


def quantize_step(src: Path, dst: Path, mode: str, feeds: list[dict], exclude: list[str],
                  calib_cache: Path | None = None, overrides: dict | None = None) -> None:
    """`calib_cache`: a file that keeps the calibrated ranges for the next call on the same graph and feeds (the
    guard's attempts differ only in the nodes kept float; recalibrating each time took ~75 s on the bundled model).
    `overrides`: learned activation ranges (`site_overrides`), which replace the calibrated ones."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic

    if mode in WEIGHT_BITS:
        _quantize_weights(src, dst, WEIGHT_BITS[mode], exclude)
        return
    if mode == "int8-rows":
        _quantize_rows(src, dst, exclude)
        return
    if mode == "int8-dynamic":  # it first rewrites each Gemm as a MatMul named '<gemm>_MatMul': exclude that too
        with quiet_logging():  # "consider pre-processing": shape inference adds nothing to our typed graphs
            quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=QUANTIZED_OPS,
                             nodes_to_exclude=exclude + [f"{n}_MatMul" for n in exclude],
                             extra_options={"MatMulConstBOnly": True})
        return
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(feeds)
    chunk = calib_chunk(onnx.load(str(src), load_external_data=False), feeds)
    with contextlib.redirect_stdout(sys.stderr), quiet_logging():  # calibrator progress; stdout carries --json
        _quantize_static(src, dst, reader, exclude, calib_cache, chunk, overrides or {})


def _quantize_static(src: Path, dst: Path, reader, exclude: list[str], calib_cache: Path | None,
                     chunk: int, overrides: dict) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # U8 activations / S8 weights: on x86 the S8/S8 kernels are ~2x slower than fp32 (measured here).
    # Percentile ranges: MinMax lets rare carry outliers set the scale (bundled model: 17 pp drop vs 7).
    # Float MatMul outputs (ORT runs MatMulIntegerToFloat): rounding them to uint8 cost a Dequantize per output
    # (28% of the official-size step in Q/DQ) and put int8 rounding on the residual stream; bundled model, side by side:
    # 1.69x instead of 1.24x faster than fp32 and a 3.9 instead of 7.8 pp drop (RESULTS.md).
    quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.Percentile,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=exclude,
                    extra_options={"MatMulConstBOnly": True, "CalibPercentile": CALIB_PERCENTILE,
                                   "CalibStridedMinMax": chunk,  # despite the name, any calibrator: chunks
                                   "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
                                   "TensorQuantOverrides": overrides},
                    calibration_cache_path=calib_cache)


def _quantize_weights(src: Path, dst: Path, bits: int, exclude: list[str]) -> None:
    """Every MatMul as ORT's MatMulNBits: weights in `bits`, symmetric per block of 32 along K; accuracy level 4
    quantizes the activations to int8 per block at run time and computes in int8 (x86 VNNI, ARM64 since 1.23)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=WEIGHT_BLOCK, is_symmetric=True,
                             accuracy_level=4, nodes_to_exclude=exclude, op_types_to_quantize=("MatMul",))
    with quiet_logging():
        q.process()
    onnx.save(q.model.model, str(dst))


def _quantize_rows(src: Path, dst: Path, exclude: list[str]) -> None:
    """Every MatMul with a constant weight in int8, its activations scaled per row (one token's features) at run
    time: one outlier token no longer coarsens every other token's rounding, which is what costs ORT's per-tensor
    dynamic route 4-7 pp (LiteRT's per-row dynamic int8 holds accuracy). ORT's integer MatMuls take one activation
    zero point, so each row is scaled to [-127, 127] in float, offset by 128 into uint8 (x86's fast u8 x s8) and
    the row's scale applied to the float output: y = (q - 128) @ Wq * (w_scale / 127) * row_max. MatMuls reading
    the same activation share its quantization."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    consts = {"rows/axes": np.array([-1], np.int64), "rows/eps": np.float32(ROW_EPS), "rows/127": np.float32(127),
              "rows/one": np.float32(1), "rows/zp": np.uint8(128)}
    quantized: dict[str, str] = {}
    nodes: list = []
    for n in graph.node:
        w = weights.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or n.name in exclude or len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            nodes.append(n)
            continue
        x, meta = n.input[0], list(n.metadata_props)
        if x not in quantized:  # |row| max (two reductions, no |x| tensor), the row scaled to +-127, rounded around 128
            p = f"{x}/rows"
            quantized[x] = p
            reduce = [helper.make_node(op, [x, "rows/axes"], [f"{p}/{op}"], keepdims=1)  # opset >= 18: axes input
                      for op in ("ReduceMax", "ReduceMin")]
            row = [*reduce, helper.make_node("Neg", [f"{p}/ReduceMin"], [f"{p}/neg"]),
                   helper.make_node("Max", [f"{p}/ReduceMax", f"{p}/neg", "rows/eps"], [f"{p}/scale"]),
                   helper.make_node("Div", ["rows/127", f"{p}/scale"], [f"{p}/inv"]),
                   helper.make_node("Mul", [x, f"{p}/inv"], [f"{p}/scaled"]),
                   helper.make_node("QuantizeLinear", [f"{p}/scaled", "rows/one", "rows/zp"], [f"{p}/q"])]
            for node in row:  # unique names: the loop graph prefixes them into its body
                node.name = node.output[0]
            nodes += row
        p = quantized[x]
        if w.name + "/rows" not in consts:
            wf = numpy_helper.to_array(w)
            scale = np.maximum(np.abs(wf).max(0), ROW_EPS) / ROW_WEIGHT_MAX
            consts[w.name + "/rows"] = np.clip(np.round(wf / scale), -ROW_WEIGHT_MAX, ROW_WEIGHT_MAX).astype(np.int8)
            consts[w.name + "/rows_scale"] = (scale / 127).astype(np.float32)
        mm = helper.make_node("MatMulIntegerToFloat", [f"{p}/q", w.name + "/rows", "rows/one", w.name + "/rows_scale",
                                                       "rows/zp"], [f"{n.output[0]}/rows"], name=n.name + "/rows",
                              domain="com.microsoft")
        out = helper.make_node("Mul", [f"{n.output[0]}/rows", f"{p}/scale"], [n.output[0]], name=n.name + "/rows_out")
        for node in (mm, out):
            node.metadata_props.extend(meta)
        nodes += [mm, out]
    used = {i for node in nodes for i in node.input}
    new_inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used]
    kept = [t for t in graph.initializer if t.name in used]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept + new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))


@contextlib.contextmanager
def quiet_logging(name: str = ""):
    """Quantizers and converters log known-benign advice (on the root logger, or NNCF's own); errors still show."""
    log = logging.getLogger(name)  # "": the root logger
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def sensitivity(float_path: Path, feeds: list[dict], candidates: list[str], mode: str, tmp: Path,
                overrides: dict | None = None) -> list[str]:
    """Candidate MatMuls, most sensitive first: relative error of each MatMul's output tensor in the quantized
    graph against the float graph, on the calibration inputs (quantizers rename nodes but keep these tensors).
    One piece of a feed at a time, as many puzzles as PROBE_MB holds (ARC's step: one; all of them at once were
    24 GB)."""
    by_name = {n.name: n for n in onnx.load(str(float_path)).graph.node}
    tensors = {by_name[n].output[0]: n for n in candidates if n in by_name}
    quantize_step(float_path, tmp / "probe_q_src.onnx", mode, feeds, [], tmp / "calib.json", overrides)
    ref, got = (_probe(path, list(tensors), tmp / f"probe_{k}.onnx")
                for k, path in (("f", float_path), ("q", tmp / "probe_q_src.onnx")))
    one = {k: v[:1] for k, v in feeds[0].items() if k != "step"}
    rows = max(1, int(PROBE_MB * 2**20 // (2 * sum(a.nbytes for a in ref(one).values()))))
    errors: dict[str, list[float]] = defaultdict(list)
    for feed in feeds[::4]:
        for i in range(0, len(feed["tokens"]), rows):
            piece = {k: v[i:i + rows] for k, v in feed.items() if k != "step"}
            a, b = ref(piece), got(piece)
            for t in a.keys() & b.keys():
                errors[tensors[t]].append(float(np.linalg.norm(a[t] - b[t]) / (np.linalg.norm(a[t]) + 1e-12)))
    err = {n: float(np.mean(e)) for n, e in errors.items()}
    return sorted(err, key=err.get, reverse=True)


def _probe(path: Path, names: list[str], probe: Path) -> Callable[[dict], dict[str, np.ndarray]]:
    """A copy of the graph that also outputs the named tensors (those it produces), as a call on one feed."""
    m = onnx.load(str(path))
    produced = {o for n in m.graph.node for o in n.output}
    wanted = [t for t in names if t in produced]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in wanted)
    onnx.save(m, str(probe))
    adapter = OrtAdapter(probe, opt_level="disable")

    def run(feed: dict) -> dict[str, np.ndarray]:
        res = adapter.run(feed)
        return {t: res[t] for t in wanted}

    return run


def quantize_graphs(ctx: Context, mode: str) -> dict:
    """Write `step.<mode>.onnx` in the bundle's temporary directory, guarded; returns the manifest section.
    Raises CheckFailed."""
    t0 = time.perf_counter()
    tmp, solver32, max_drop = ctx.tmp, ctx.onnx_solvers["step"], ctx.options.quant.max_drop
    src, dst = tmp / "step.onnx", tmp / f"step.{mode}.onnx"
    step_model = onnx.load(str(src))
    route = route_of(mode, bool(ctx.int8_sites))
    mm, default_float = candidates(step_model, route)
    learned = ctx.int8_sites if route == "int8-static" else None
    overrides = site_overrides(step_model, learned) if learned else None
    # only calibrated static int8 needs the recorded carries to quantize (learned ranges replace the calibrated
    # ones, and one feed satisfies the calibrator); the sensitivity ranking, if the guard needs it, reads them
    feeds = ctx.calib_feeds if route == "int8-static" and not learned else [dict(ctx.probe_feed, step=1)]
    scratch = tmp / ".quant"
    judged: list[dict] = []  # the guard's figures of each attempt (the ranking's status line quotes the first)

    def build(exclude: list[str], what: str) -> tuple[Solver, list[str]]:
        ctx.status(f"{what}: quantizing")
        quantize_step(src, dst, route, feeds, exclude, scratch / "calib.json", overrides)
        return ctx.solver(OrtAdapter(dst)), exclude

    def judge_attempt(built: tuple[Solver, list[str]], what: str) -> dict:
        judged.append(judge(ctx, partial(built[0].solve_stream, halt=ctx.policy), what))
        return judged[-1]

    def rungs() -> Iterator[Rung[tuple[Solver, list[str]]]]:
        """The default float nodes; over budget, the most int8-sensitive MatMuls float too, half as many again as
        are float at each attempt, until every MatMul is float (judged, never shipped)."""
        exclude, ranked = list(default_float), None
        for attempt in itertools.count(1):
            what = f"{mode} ({route}), attempt {attempt}: {len(exclude)} of {len(mm)} MatMuls float"
            keeps = "the default float nodes" if attempt == 1 else f"{len(exclude)} of {len(mm)} MatMuls in float"
            yield Rung(what, keeps, {"float_nodes": len(exclude)}, partial(build, exclude, what),
                       ships=len(exclude) < len(mm))
            if ranked is None:
                ctx.status(f"{mode}: drop {judged[0]['exact_drop_pp']:.2f} pp over the {max_drop:g} pp budget; ranking "
                           "MatMuls by int8 sensitivity")
                ranked = [n for n in sensitivity(src, ctx.calib_feeds, [n.name for n in mm if n.name not in exclude],
                                                 route, scratch, overrides) if n not in exclude]
            if not ranked:  # every MatMul is float: nothing int8 fits the budget
                return
            take = max(1, len(exclude) // 2)
            exclude, ranked = exclude + ranked[:take], ranked[take:]

    scratch.mkdir()
    try:
        climbed = ladder(rungs(), judge_attempt, who="int8", budget=max_drop, count=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (solver8, exclude), tries = climbed.built, climbed.tries
    n_int8 = _count_quantized(dst)
    speed, warnings = speed_check(mode, solver32, solver8, ctx.probe_feed, f"{n_int8} of {len(mm)} MatMuls in int8")
    if route == "int8-static" and not learned and len(exclude) > len(default_float):
        warnings.append(f"int8: calibrated ranges lost {tries[0]['exact_drop_pp']:.2f} pp, so the guard kept "
                        f"{len(exclude)} of {len(mm)} MatMuls float; `trm-edge finetune MODEL --qat` learns ranges "
                        "that hold (export its model), and --quantize int8-rows holds accuracy without training")
    by_name = {n.name: n for n in mm}
    return {
        "mode": mode, "route": route, **SCHEMES[route],
        "calibration": {"method": f"learned by QAT ({len(overrides)} call sites)"} if overrides else
        dict(calibration_summary(ctx), method=f"percentile {CALIB_PERCENTILE}") if route == "int8-static" else
        {"method": "none: activation ranges at run time"},
        "float_nodes": [{"node": n, "module": module_of(by_name[n])} for n in exclude],
        "quantized_matmuls": n_int8, "matmuls": len(mm), **guard_record(ctx, tries, speed, warnings),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def calibration_summary(ctx: Context) -> dict:
    feeds = ctx.calib_feeds
    return {"puzzles": len(ctx.calib_puzzles), "steps_per_puzzle": ctx.model.config.halt_max_steps,
            "carries": len(feeds), "steps_covered": sorted({f["step"] for f in feeds})}


def _count_quantized(path: Path) -> int:
    """MatMuls that really run in int8: both operands quantized (a float MatMul may still read an int8 weight
    or a rounded activation that it shares with quantized consumers; that is not counted)."""
    nodes = onnx.load(str(path)).graph.node
    dq = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(n.op_type in ("MatMulInteger", "MatMulIntegerToFloat", "MatMulNBits") or
               (n.op_type == "MatMul" and all(i in dq for i in n.input[:2])) for n in nodes)
