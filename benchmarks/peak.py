"""This machine's sustained matrix-multiply throughput (fp32 GFLOP/s, int8 GOP/s) through each installed engine:
the ceiling `doctor` and `bench` hold a model's achieved GFLOP/s against, so a slow run reads as "a tenth of what
this CPU does", not just a number.

A probe times one square product Y = A @ W, W a constant weight as in our graphs (engines pre-pack it), grown from
256 until a call is long enough to time and stopped when its share of the budget is spent: the whole measurement
is bounded before it starts, on a Pi or an emulated ARM as on a server. The graph is written as ONNX protobuf here,
field by field, since a device has ONNX Runtime but not the `onnx` package; no torch import. The result is cached
per machine (trm_edge.cache, under trm_edge.benchmarks.machine.machine_key).
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable

import numpy as np

from trm_edge.benchmarks.machine import machine_key
from trm_edge.cache import read_entry, write_entry
from trm_edge.errors import TRMEdgeError
from trm_edge.extras import installed
from trm_edge.runtimes.base import engine_cause

# message -> {field name: number} of the fields the encoder writes, from onnx.proto; a test checks them against the
# onnx package's descriptors
FIELDS = {
    "model": {"ir_version": 1, "graph": 7, "opset_import": 8},
    "opset": {"domain": 1, "version": 2},
    "graph": {"node": 1, "name": 2, "initializer": 5, "input": 11, "output": 12},
    "node": {"input": 1, "output": 2, "op_type": 4},
    "value_info": {"name": 1, "type": 2},
    "type": {"tensor_type": 1},
    "tensor_type": {"elem_type": 1, "shape": 2},
    "shape": {"dim": 1},
    "dim": {"dim_value": 1},
    "tensor": {"dims": 1, "data_type": 2, "name": 8, "raw_data": 9},
}
DATA_TYPES = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6}  # TensorProto.DataType
# kind -> (op, A's type, W's type, Y's type); int8 is the u8 x s8 form our dynamically quantized graphs call
KINDS = {"fp32": ("MatMul", "float32", "float32", "float32"), "int8": ("MatMulInteger", "uint8", "int8", "int32")}
RUN_AS = {"fp32": ("f32",), "int8": ("u8", "i8")}  # the precisions OpenVINO's runtime model may name for each kind
ENGINES = {"ort": "onnxruntime", "openvino": "openvino"}  # engine -> module that runs its probe
# int8 weights in [-63, 63]: x86 without VNNI sums u8 x s8 pairs in saturating 16 bits, which 255 * 127 * 2
# overflows (as export/quantize.py's ROW_WEIGHT_MAX), and a peak is only taken from a product that is right
WEIGHT_MAX = 63
FIRST_SIZE, MAX_SIZE = 256, 2048
TIMEABLE_S = 0.01  # a call this long is timed well; a shorter one doubles the size
MIN_CALLS = 3
CACHE_ENTRY = "peak.json"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _message(kind: str, **fields: int | str | bytes | list) -> bytes:
    """One onnx.proto message: an int as a varint, text or bytes (a nested message too) length-delimited, a list as
    the field repeated."""
    out = bytearray()
    for name, value in fields.items():
        number = FIELDS[kind][name]
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int):
                out += _varint(number << 3) + _varint(v)
            else:
                data = v.encode() if isinstance(v, str) else v
                out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def _value_info(name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    dims = [_message("dim", dim_value=d) for d in shape]
    tensor = _message("tensor_type", elem_type=DATA_TYPES[dtype], shape=_message("shape", dim=dims))
    return _message("value_info", name=name, type=_message("type", tensor_type=tensor))


def _random(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == "float32":
        return rng.standard_normal(shape, dtype=np.float32)
    low, high = (0, 255) if dtype == "uint8" else (-WEIGHT_MAX, WEIGHT_MAX)
    return rng.integers(low, high, shape, dtype=dtype, endpoint=True)


def _weights(kind: str, k: int, n: int, seed: int) -> np.ndarray:
    return _random(KINDS[kind][2], (k, n), np.random.default_rng(seed))


def matmul_graph(kind: str, m: int, k: int, n: int, seed: int = 0) -> bytes:
    """ONNX model bytes (IR 8, opset 13) computing Y = A @ W: A an [m, k] input, W a constant [k, n] initializer
    drawn from default_rng(seed). kind "fp32": MatMul in float32; "int8": MatMulInteger, A uint8, W int8, Y int32."""
    if kind not in KINDS:
        raise TRMEdgeError(f"peak: no matmul kind {kind!r} (one of {', '.join(KINDS)})")
    op, a_type, w_type, y_type = KINDS[kind]
    w = _weights(kind, k, n, seed)
    weight = _message("tensor", dims=[k, n], data_type=DATA_TYPES[w_type], name="W", raw_data=w.tobytes())
    node = _message("node", input=["A", "W"], output=["Y"], op_type=op)
    graph = _message("graph", node=node, name="peak", initializer=weight, input=_value_info("A", a_type, (m, k)),
                     output=_value_info("Y", y_type, (m, n)))
    return _message("model", ir_version=8, opset_import=_message("opset", domain="", version=13), graph=graph)


def _ort(model: bytes, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    if threads:
        so.intra_op_num_threads = threads
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return lambda a: session.run(None, {"A": a})[0]


def _openvino(model: bytes, kind: str, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVINO's CPU plugin on the graph, refused where it runs the product in another precision: its ONNX frontend
    turns MatMulInteger into an int32 MatMul that the plugin computes in f32, which is no int8 peak."""
    import openvino as ov

    # f32 precision: the CPU plugin would run an fp32 graph in bf16 where the CPU has it, as runtimes/openvino.py says
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model, b""), "CPU", config)
    layers = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()]
    ran = {i["runtimePrecision"].astype(str) for i in layers
           if i["layerType"].astype(str) in ("FullyConnected", "MatMul")}
    if not ran & set(RUN_AS[kind]):
        raise ValueError(f"runs {KINDS[kind][0]} in {', '.join(sorted(ran)) or 'no product layer'}, not {kind}")
    request = compiled.create_infer_request()
    return lambda a: request.infer({0: a})[0]


def _timed(run: Callable[[np.ndarray], np.ndarray], a: np.ndarray) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    y = run(a)
    return y, time.perf_counter() - t


def _check(kind: str, a: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
    """Raise unless the engine's product is numpy's, so a broken engine is never a peak. numpy's is taken in float64:
    exact for int8 (every sum is far below 2**53) and a BLAS call (numpy's integer products are not)."""
    want = a.astype(np.float64) @ w.astype(np.float64)
    if not (np.array_equal(y, want) if kind == "int8" else np.allclose(y, want, rtol=1e-3, atol=1e-3)):
        raise ValueError(f"its {kind} product of size {len(a)} differs from numpy's")


def _bounds(budget_s: float, threads: int | None) -> None:
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise TRMEdgeError(f"peak: the time budget must be a positive number of seconds, not {budget_s!r}")
    if threads is not None and threads < 1:
        raise TRMEdgeError(f"peak: threads must be at least 1, not {threads}")


def probe(engine: str, kind: str, budget_s: float, threads: int | None = None) -> dict:
    """One engine's throughput on one kind of product (2·n³ operations per n×n product, int8 ones counted alike),
    within about `budget_s` seconds: the fastest of the timed calls at the largest size that fits (a call lasts 10 ms
    or more, so it is sustained; other work on a shared machine only ever slows a call: the median of the calls read
    105 to 196 GFLOP/s here within an hour). `calls` counts the timed calls, 0 where the warm-up call alone spent the
    budget (its time is then the figure). An engine that fails (cannot load the graph, answers wrong, runs another
    precision) is unmeasured, with the reason."""
    if engine not in ENGINES:
        raise TRMEdgeError(f"peak: no probe for engine {engine!r} (one of {', '.join(ENGINES)})")
    if kind not in KINDS:
        raise TRMEdgeError(f"peak: no matmul kind {kind!r} (one of {', '.join(KINDS)})")
    _bounds(budget_s, threads)
    start = time.perf_counter()
    deadline = start + budget_s
    result = {"engine": engine, "kind": kind, "gflop_per_s": None, "size": None, "calls": 0, "seconds": None,
              "threads": threads, "reason": None}
    size = FIRST_SIZE
    try:
        while True:
            t = time.perf_counter()
            model = matmul_graph(kind, size, size, size)
            run = _ort(model, threads) if engine == "ort" else _openvino(model, kind, threads)
            opened = time.perf_counter() - t
            a = _random(KINDS[kind][1], (size, size), np.random.default_rng(1))
            y, took = _timed(run, a)  # the warm-up: a first call can be slow (lazy set-up, cold caches)
            if size == FIRST_SIZE:  # checked once, on the smallest product: numpy's costs as much as the engine's
                _check(kind, a, _weights(kind, size, size, 0), y)
            times = []
            if time.perf_counter() < deadline:
                took = _timed(run, a)[1]
                times.append(took)
            # Double while a call is too short to time, the next size fits the budget (4x the weights to build, 8x
            # the work per call, about 4 calls) and the size is below the cap; the warm-up alone may already have
            # spent the budget on a slow machine
            if took >= TIMEABLE_S or size >= MAX_SIZE or time.perf_counter() + 4 * opened + 32 * took > deadline:
                break
            size *= 2
        # Time calls until the budget is spent: at least MIN_CALLS while it lasts, then none that would end past it;
        # none where the warm-up spent it, which is then the figure
        while (now := time.perf_counter()) < deadline and (len(times) < MIN_CALLS or now + times[-1] <= deadline):
            times.append(_timed(run, a)[1])
    except Exception as e:  # an engine's error, raised in its own types; Ctrl-C is not one and passes through
        result["reason"] = f"{ENGINES[engine]}: {engine_cause(e)}"
    else:
        result.update(gflop_per_s=2 * size**3 / (min(times) if times else took) / 1e9, size=size,
                      calls=len(times))
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def measure_peak(budget_s: float = 6.0, threads: int | None = None) -> dict:
    """Every installed engine's probe of each kind, the budget split among them before any starts, and the best
    engine's figure of each kind (None where no engine measured it). threads None: each engine's default."""
    _bounds(budget_s, threads)
    start = time.perf_counter()
    runs = [(e, k) for e, module in ENGINES.items() if installed(module) for k in KINDS]
    probes = [probe(e, k, budget_s / len(runs), threads) for e, k in runs]
    if installed("ai_edge_litert"):
        probes += [{"engine": "litert", "kind": k, "gflop_per_s": None, "size": None, "calls": 0, "seconds": 0.0,
                    "threads": threads, "reason": "no probe: building a .tflite graph needs TensorFlow"}
                   for k in KINDS]
    best = {}
    for kind in KINDS:
        measured = [p for p in probes if p["kind"] == kind and p["gflop_per_s"] is not None]
        top = max(measured, key=lambda p: p["gflop_per_s"], default=None)
        best[kind] = None if top is None else {"gflop_per_s": top["gflop_per_s"], "engine": top["engine"]}
    return {"probes": probes, **best, "budget_s": budget_s, "seconds": round(time.perf_counter() - start, 3),
            "threads": threads}


def _usable(figure: object) -> bool:
    """A figure share() can divide by, or an honest None."""
    if figure is None:
        return True
    if not isinstance(figure, dict):
        return False
    rate = figure.get("gflop_per_s")
    return isinstance(figure.get("engine"), str) and type(rate) in (int, float) and math.isfinite(rate) and rate > 0


def _current(doc: dict | None, key: str) -> bool:
    """Whether a cached doc is this machine's and whole: the cache is a user's file, and may be anything."""
    return doc is not None and doc.get("key") == key and isinstance(doc.get("measured"), str) and \
        isinstance(doc.get("probes"), list) and all(k in doc and _usable(doc[k]) for k in KINDS)


def peak(refresh: bool = False, budget_s: float = 6.0, announce: Callable[[str], None] | None = None) -> dict:
    """This machine's peak, measured once (each engine's default threads) and then read from the cache while the
    machine key (CPU, cores, engine versions) holds; `cached` says which. `refresh` measures again and keeps, per
    kind, the better of the two figures: a measurement made while other work ran reads low (half, on 2 cores, beside
    one busy process), never high, so the best one seen is the machine's. `announce` hears when a measurement starts
    (seconds of work a progress display should name)."""
    key = machine_key()
    cached = read_entry(CACHE_ENTRY)
    cached = cached if _current(cached, key) else None
    if cached and not refresh:
        return {**cached, "cached": True}
    if announce:
        announce(f"measuring this machine's matrix-multiply peak (~{budget_s:g} s, once: then cached)")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    doc = {"key": key, "measured": now, **measure_peak(budget_s), "measurements": 1}
    if cached:
        doc["measurements"] += cached.get("measurements", 1) if type(cached.get("measurements")) is int else 1
        for kind in KINDS:
            old, new = cached[kind], doc[kind]
            if old and (not new or old["gflop_per_s"] > new["gflop_per_s"]):
                doc[kind] = old
    write_entry(CACHE_ENTRY, doc)
    return {**doc, "cached": False}


def share(gflop_per_s: float, precision: str, peak_doc: dict) -> float | None:
    """The fraction of this machine's peak a run reached: fp32 against the fp32 peak, every route with int8
    activations against the int8 peak; None for other precisions (int8-weights and int4-weights multiply in float
    what they store in fewer bits; bf16: no probe runs them) or where that peak is missing."""
    kind = "fp32" if precision == "fp32" else "int8" if precision.startswith("int8") and \
        precision != "int8-weights" else None
    top = peak_doc.get(kind) if kind else None
    return gflop_per_s / top["gflop_per_s"] if top else None
