"""The machine's matmul peak: graphs our encoder writes are valid ONNX that engines compute right, a probe keeps to
its budget and never takes a wrong answer for a peak, and the cache is used only while it is this machine's."""

from __future__ import annotations

import datetime
import json
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, onnx_pb

from trm_edge.benchmarks import peak as pk
from trm_edge.cache import cache_dir

DTYPES = {"fp32": (np.float32, np.float32, np.float32), "int8": (np.uint8, np.int8, np.int32)}  # A, W, Y


def inputs(kind: str, m: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "fp32":
        return rng.standard_normal((m, k)).astype(np.float32)
    return rng.integers(0, 256, (m, k)).astype(np.uint8)


def weight(model: bytes) -> np.ndarray:
    """W as the onnx package reads it from the graph, not as our encoder meant it."""
    return numpy_helper.to_array(onnx.load_from_string(model).graph.initializer[0])


def expected(kind: str, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """numpy's product, in float64: exact for int8 (every sum is far below 2**53), and fast (BLAS)."""
    return a.astype(np.float64) @ w.astype(np.float64)


def same(kind: str, y: np.ndarray, want: np.ndarray) -> None:
    assert y.dtype == DTYPES[kind][2] and y.shape == want.shape
    if kind == "int8":
        np.testing.assert_array_equal(y, want)
    else:
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


# -- the graph --------------------------------------------------------------------------------------------------

def test_the_encoder_s_field_numbers_are_onnx_s():
    messages = {"model": onnx_pb.ModelProto, "opset": onnx_pb.OperatorSetIdProto, "graph": onnx_pb.GraphProto,
                "node": onnx_pb.NodeProto, "value_info": onnx_pb.ValueInfoProto, "type": onnx_pb.TypeProto,
                "tensor_type": onnx_pb.TypeProto.Tensor, "shape": onnx_pb.TensorShapeProto,
                "dim": onnx_pb.TensorShapeProto.Dimension, "tensor": onnx_pb.TensorProto}
    assert set(messages) == set(pk.FIELDS)
    for kind, fields in pk.FIELDS.items():
        assert {n: messages[kind].DESCRIPTOR.fields_by_name[n].number for n in fields} == fields, kind
    assert pk.DATA_TYPES == {name: onnx.helper.np_dtype_to_tensor_dtype(np.dtype(name)) for name in pk.DATA_TYPES}


@pytest.mark.parametrize("kind", pk.KINDS)
def test_the_graph_is_valid_onnx_and_ort_computes_the_product(kind):
    import onnxruntime as ort

    data = pk.matmul_graph(kind, 5, 7, 3)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert (model.ir_version, [(o.domain, o.version) for o in model.opset_import]) == (8, [("", 13)])
    assert [n.op_type for n in model.graph.node] == [pk.KINDS[kind][0]]
    w = weight(data)
    assert w.dtype == DTYPES[kind][1] and w.shape == (7, 3)
    if kind == "int8":
        assert np.abs(w).max() <= pk.WEIGHT_MAX  # no 16-bit pair sum saturates on x86 without VNNI
    assert np.array_equal(weight(pk.matmul_graph(kind, 5, 7, 3, seed=0)), w)
    assert not np.array_equal(weight(pk.matmul_graph(kind, 5, 7, 3, seed=1)), w)

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    a = inputs(kind, 5, 7)
    same(kind, session.run(None, {"A": a})[0], expected(kind, a, w))


@pytest.mark.parametrize("kind", pk.KINDS)
def test_openvino_computes_the_product_of_the_kinds_it_reads(kind):
    ov = pytest.importorskip("openvino")
    data = pk.matmul_graph(kind, 5, 7, 3)
    core = ov.Core()
    try:
        model = core.read_model(data, b"")
    except RuntimeError as e:
        pytest.skip(f"OpenVINO's ONNX frontend refuses {pk.KINDS[kind][0]}: {e}")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    a = inputs(kind, 5, 7)
    same(kind, compiled({0: a})[0], expected(kind, a, weight(data)))


# -- the probes -------------------------------------------------------------------------------------------------

def fake_ort(monkeypatch, call_s: float = 0.0, wrong: bool = False):
    """ORT replaced by an engine whose calls take at least `call_s` and answer numpy's product (or its negation)."""
    def open_fake(model: bytes, threads):
        w = weight(model)
        kind = "int8" if w.dtype == np.int8 else "fp32"

        def run(a):
            time.sleep(call_s)
            y = expected(kind, a, w)
            return (-y if wrong else y).astype(DTYPES[kind][2])
        return run
    monkeypatch.setattr(pk, "_ort", open_fake)


def test_a_probe_within_its_budget_measures_ort():
    start = time.perf_counter()
    p = pk.probe("ort", "fp32", 0.5, threads=1)
    assert time.perf_counter() - start < 5  # generous: the machine is shared
    assert p["reason"] is None and p["gflop_per_s"] > 0 and p["calls"] >= 1 and p["threads"] == 1
    assert pk.FIRST_SIZE <= p["size"] <= pk.MAX_SIZE


def test_a_first_call_longer_than_the_budget_ends_the_probe(monkeypatch):
    fake_ort(monkeypatch, call_s=0.4)
    start = time.perf_counter()
    p = pk.probe("ort", "fp32", 0.1)
    assert time.perf_counter() - start < 1.5  # one call, not the four a minimum of timed calls would take
    assert (p["size"], p["calls"], p["reason"]) == (pk.FIRST_SIZE, 0, None)
    assert 0 < p["gflop_per_s"] <= 2 * pk.FIRST_SIZE**3 / 0.4 / 1e9


def test_short_calls_grow_the_product_to_the_cap_and_long_ones_do_not(monkeypatch):
    monkeypatch.setattr(pk, "_check", lambda *args: None)  # answers are not the point: call times are
    monkeypatch.setattr(pk, "_ort", lambda model, threads: lambda a: None)
    assert pk.probe("ort", "int8", 1.0)["size"] == pk.MAX_SIZE
    monkeypatch.setattr(pk, "_ort", lambda model, threads: lambda a: time.sleep(2 * pk.TIMEABLE_S))
    p = pk.probe("ort", "fp32", 0.5)
    assert p["size"] == pk.FIRST_SIZE and p["calls"] >= pk.MIN_CALLS


def test_a_wrong_or_failing_engine_is_unmeasured_not_an_error(monkeypatch):
    fake_ort(monkeypatch, wrong=True)
    p = pk.probe("ort", "fp32", 0.5)
    assert p["gflop_per_s"] is None and "differs from numpy" in p["reason"]

    def broken(model, threads):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : no kernel")
    monkeypatch.setattr(pk, "_ort", broken)
    p = pk.probe("ort", "int8", 0.5)
    assert p["gflop_per_s"] is None and "no kernel" in p["reason"]


def test_openvino_s_int8_probe_is_an_int8_kernel_or_says_why_not():
    pytest.importorskip("openvino")
    p = pk.probe("openvino", "int8", 0.3)
    assert (p["gflop_per_s"] is None) == (p["reason"] is not None)
    if p["reason"]:
        assert "MatMulInteger" in p["reason"] and "not int8" in p["reason"]


def test_measure_peak_keeps_to_its_budget_and_takes_the_best_engine():
    start = time.perf_counter()
    doc = pk.measure_peak(budget_s=1.0)
    assert time.perf_counter() - start < 15  # bounded (imports and compiles included), with slack for a shared CPU
    ort_fp32 = next(p for p in doc["probes"] if (p["engine"], p["kind"]) == ("ort", "fp32"))
    assert ort_fp32["gflop_per_s"] > 0
    for kind in pk.KINDS:
        rates = [p["gflop_per_s"] for p in doc["probes"] if p["kind"] == kind and p["gflop_per_s"]]
        assert doc[kind]["gflop_per_s"] == max(rates)
    json.dumps(doc, allow_nan=False)  # cacheable as it is


@pytest.mark.parametrize("engines", [("onnxruntime",), ("onnxruntime", "openvino", "ai_edge_litert")])
def test_the_budget_is_split_among_the_installed_engines_up_front(monkeypatch, engines):
    budgets = []

    def fake(engine, kind, budget_s, threads=None):
        budgets.append(budget_s)
        return {"engine": engine, "kind": kind, "gflop_per_s": float(len(budgets)), "threads": threads, "reason": None}
    monkeypatch.setattr(pk, "probe", fake)
    monkeypatch.setattr(pk, "installed", lambda module: module in engines)
    doc = pk.measure_peak(budget_s=3.0, threads=2)
    probed = [e for e, module in pk.ENGINES.items() if module in engines]
    assert budgets == [3.0 / (2 * len(probed))] * 2 * len(probed)
    assert [(p["engine"], p["kind"]) for p in doc["probes"][:len(budgets)]] == \
        [(e, k) for e in probed for k in pk.KINDS]
    litert = doc["probes"][len(budgets):]
    assert [p["kind"] for p in litert] == (list(pk.KINDS) if "ai_edge_litert" in engines else [])
    assert all(p["engine"] == "litert" and p["gflop_per_s"] is None and p["reason"] for p in litert)
    assert doc["fp32"] == {"gflop_per_s": len(budgets) - 1.0, "engine": probed[-1]}  # the fastest, the last here
    assert doc["int8"] == {"gflop_per_s": float(len(budgets)), "engine": probed[-1]}
    assert (doc["budget_s"], doc["threads"]) == (3.0, 2)


# -- the cache --------------------------------------------------------------------------------------------------

@pytest.fixture
def measured(monkeypatch, tmp_path) -> list[float]:
    """An empty cache and a fast fake measurement; the list records each measurement's budget."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    budgets = []

    def fake(budget_s=6.0):
        budgets.append(budget_s)
        return {"probes": [], "fp32": {"gflop_per_s": 10.0 * len(budgets), "engine": "ort"}, "int8": None,
                "budget_s": budget_s, "seconds": 0.0, "threads": None}
    monkeypatch.setattr(pk, "measure_peak", fake)
    return budgets


def no_measuring(monkeypatch):
    def refuse(budget_s=6.0):
        raise AssertionError("measured again")
    monkeypatch.setattr(pk, "measure_peak", refuse)


def test_the_peak_is_measured_once_then_read_from_the_cache(measured, monkeypatch):
    first = pk.peak(budget_s=0.5)
    assert first["cached"] is False and measured == [0.5]
    stored = json.loads((cache_dir() / "peak.json").read_text())
    assert "cached" not in stored and stored["key"] == pk.machine_key()
    assert datetime.datetime.fromisoformat(stored["measured"]).tzinfo is not None
    no_measuring(monkeypatch)
    second = pk.peak()
    assert second["cached"] is True and second == {**stored, "cached": True}


def test_another_machine_s_peak_or_a_refresh_measures_again(measured, monkeypatch):
    pk.peak()
    assert pk.peak(refresh=True)["measurements"] == 2 and len(measured) == 2
    monkeypatch.setattr(pk, "machine_key", lambda: "another machine")
    doc = pk.peak()
    assert doc["cached"] is False and len(measured) == 3 and doc["fp32"]["gflop_per_s"] == 30.0
    assert pk.peak()["cached"] is True


@pytest.mark.parametrize("spoil", [
    lambda text: text[: len(text) // 2],  # truncated
    lambda text: "[]",
    lambda text: text.replace('"gflop_per_s": 10.0', '"gflop_per_s": NaN'),
    lambda text: text.replace('"gflop_per_s": 10.0', '"gflop_per_s": "fast"'),
    lambda text: text.replace('"gflop_per_s": 10.0', '"gflop_per_s": -1'),
    lambda text: text.replace('"int8": null', '"int8s": null'),
    lambda text: text.replace('"probes": []', '"probes": 3'),
])
def test_a_corrupt_cache_entry_measures_again(measured, spoil):
    pk.peak()
    entry = cache_dir() / "peak.json"
    text = entry.read_text()
    assert spoil(text) != text
    entry.write_text(spoil(text))
    assert pk.peak()["cached"] is False and len(measured) == 2
    assert pk.peak()["cached"] is True


def test_an_unwritable_cache_still_gives_the_peak(measured, monkeypatch, tmp_path):
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a file"))
    assert pk.peak()["fp32"]["gflop_per_s"] == 10.0 and pk.peak()["cached"] is False


def test_share_holds_a_run_against_its_precision_s_peak():
    doc = {"fp32": {"gflop_per_s": 40.0, "engine": "ort"}, "int8": {"gflop_per_s": 160.0, "engine": "openvino"}}
    assert pk.share(10.0, "fp32", doc) == 10.0 / 40.0
    assert pk.share(10.0, "int8-rows", doc) == pk.share(10.0, "int8", doc) == 10.0 / 160.0
    assert pk.share(10.0, "bf16", doc) is None and pk.share(10.0, "int4-weights", doc) is None
    assert pk.share(10.0, "int8-weights", doc) is None  # float products of int8-stored weights
    assert pk.share(10.0, "int8-dynamic", {**doc, "int8": None}) is None
    assert pk.share(10.0, "fp32", {}) is None


def test_a_refresh_keeps_the_best_figure_of_each_kind(tmp_path, monkeypatch):
    """A measurement beside other work reads low: a refresh never lowers the peak, and a kind it could not measure
    keeps its figure."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    figures = iter([(100.0, 400.0), (50.0, 500.0), (120.0, None)])

    def fake(budget_s=6.0):
        fp32, int8 = next(figures)
        return {"probes": [], "fp32": {"gflop_per_s": fp32, "engine": "ort"},
                "int8": int8 and {"gflop_per_s": int8, "engine": "ort"}, "budget_s": budget_s, "seconds": 0.0,
                "threads": None}
    monkeypatch.setattr(pk, "measure_peak", fake)
    pk.peak()
    doc = pk.peak(refresh=True)
    assert (doc["fp32"]["gflop_per_s"], doc["int8"]["gflop_per_s"], doc["measurements"]) == (100.0, 500.0, 2)
    doc = pk.peak(refresh=True)
    assert (doc["fp32"]["gflop_per_s"], doc["int8"]["gflop_per_s"], doc["measurements"]) == (120.0, 500.0, 3)
    assert pk.peak() == {**doc, "cached": True}
