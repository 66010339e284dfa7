"""Graphs we run are graphs we wrote: a hostile bundle (its manifest's hashes rewritten, so they prove nothing) is
refused at load when a graph is not one trm-edge exports, and an engine failing mid-run is one line, not a
traceback."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import TINY_PUZZLE as PUZZLE
from conftest import cli as run
from conftest import copy_of, refused, rehash, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from trm_edge.bundle import Bundle
from trm_edge.errors import CheckFailed, TRMEdgeError
from trm_edge.export import ExportOptions, QuantOptions, export_bundle
from trm_edge.export.options import MODES
from trm_edge.halting import MAX_STEPS, HaltPolicy
from trm_edge.model import TRM
from trm_edge.onnxscan import FIELDS, Malformed, external_locations, read_model, unexported
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.openvino import OpenVinoAdapter


def _export(path: Path, graphs: tuple[str, ...], opset: int = 18, quant: QuantOptions | None = None,
            **config) -> Path:
    model = TRM(tiny_config(hidden_size=16, num_heads=2, puzzle_emb_ndim=16, halt_max_steps=3, **config)).eval()
    options = ExportOptions(graphs, verify_n=4, opset=opset, quant=quant or QuantOptions())
    return export_bundle(model, {"task": "sudoku"}, path, options)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """Every form and every int8 route of a hidden-16 random TRM (MLP token mixer)."""
    routes = tuple(m for m in MODES if m != "int8")  # "int8" is the best of these for the model
    return _export(tmp_path_factory.mktemp("tiny") / "b", ("step", "loop", "unrolled"),
                   quant=QuantOptions(routes, calib=2, heldout=2, max_drop=100.0))


@pytest.fixture(scope="module")
def attention_bundle(tmp_path_factory):
    """The attention token mixer at opset 23, where the exporter writes ONNX's Attention op."""
    return _export(tmp_path_factory.mktemp("attn") / "b", ("step", "loop"), mlp_t=False, opset=23)


def hostile(bundle: Path, tmp_path: Path, graph: str, edit: Callable[[onnx.ModelProto], None]) -> Path:
    """A copy of the bundle whose graph `edit(model)` changed, its manifest rehashed as a hostile author would."""
    b = copy_of(bundle, tmp_path)
    m = onnx.load(str(b / graph))
    edit(m)
    (b / graph).write_bytes(m.SerializeToString())
    rehash(b)
    return b


def loop_node(m: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.op_type == "Loop")


def body(m: onnx.ModelProto) -> onnx.GraphProto:
    return loop_node(m).attribute[0].g


# -- the scanner reads what onnx reads ----------------------------------------------------------------------------

def test_the_structure_field_numbers_are_onnx_s():
    from onnx import onnx_pb

    messages = {"model": onnx_pb.ModelProto, "graph": onnx_pb.GraphProto, "value_info": onnx_pb.ValueInfoProto,
                "node": onnx_pb.NodeProto, "attribute": onnx_pb.AttributeProto, "tensor": onnx_pb.TensorProto}
    for kind, fields in FIELDS.items():
        assert {n: messages[kind].DESCRIPTOR.fields_by_name[n].number for n in fields} == fields, kind


def test_the_scanner_reads_the_graph_onnx_reads(tiny_bundle):
    """Every node (op, domain, name, inputs, outputs), subgraph, graph input and output and initializer of the loop
    graph, as the onnx package parses them; an int64 scalar's value is read, a weight's is not."""
    def same(ours, theirs: onnx.GraphProto):
        assert ours.inputs == tuple(i.name for i in theirs.input)
        assert ours.outputs == tuple(o.name for o in theirs.output)
        assert set(ours.constants) == {t.name for t in theirs.initializer}
        assert len(ours.nodes) == len(theirs.node)
        for a, b in zip(ours.nodes, theirs.node):
            assert (a.op_type, a.domain, a.name, a.inputs, a.outputs) == \
                (b.op_type, b.domain, b.name, tuple(b.input), tuple(b.output))
            subs = [x.g for x in b.attribute if x.type == onnx.AttributeProto.GRAPH]
            assert len(a.graphs) == len(subs)
            for s, t in zip(a.graphs, subs):
                same(s, t)

    m = onnx.load(str(tiny_bundle / "loop.onnx"))
    graph, extras = read_model(m.SerializeToString())
    same(graph, m.graph)
    assert not extras and graph.constants["zero_i64"] == 0 and graph.constants["H_init_vec"] is None
    assert next(n for n in graph.nodes if n.op_type == "Loop").graphs[0].constants == {"body/one": 1}


@pytest.mark.parametrize("fixture", ["tiny_bundle", "attention_bundle"])
def test_every_graph_we_export_passes(request, fixture):
    """The allow-list is not too strict: every graph the exporter writes, in every form and int8 route, loads."""
    b = request.getfixturevalue(fixture)
    graphs = sorted(p.name for p in b.glob("*.onnx"))
    assert {"step.onnx", "loop.onnx"} <= set(graphs)
    if fixture == "tiny_bundle":
        assert {"unrolled.onnx", "loop.int8-static.onnx", "step.int8-rows.onnx", "unrolled.int4-weights.onnx"} <= \
            set(graphs)
    for g in graphs:
        assert unexported((b / g).read_bytes(), MAX_STEPS) is None, g
    Bundle(b)


# -- refused at load ---------------------------------------------------------------------------------------------

def _constant_trip(value: int):
    def edit(m):
        m.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), "trip"))
        loop_node(m).input[0] = "trip"
    return edit


def _computed_trip(m):
    m.graph.initializer.append(numpy_helper.from_array(np.array(1 << 40, np.int64), "many"))
    m.graph.node.insert(0, helper.make_node("Mul", ["max_steps", "many"], ["trip"]))
    loop_node(m).input[0] = "trip"


def _shadowed_trip(m):
    """An initializer of the input's own name: ORT does not ask for it, so it is what the Loop gets."""
    m.graph.initializer.append(numpy_helper.from_array(np.array(1 << 62, np.int64), "max_steps"))


def _scan_output(m):
    body(m).output.append(helper.make_tensor_value_info("body/k", onnx.TensorProto.INT64, []))
    loop_node(m).output.append("k_per_step")


def _custom_op_in_the_body(m):
    body(m).node.insert(0, helper.make_node("Boom", ["body/iter"], ["body/boom"], domain="evil.ops"))


def _loop_in_the_body(m):
    inner = onnx.NodeProto()
    inner.CopyFrom(loop_node(m))
    inner.output[:] = [f"inner/{o}" for o in inner.output]
    body(m).node.append(inner)


def _second_loop(m):
    again = onnx.NodeProto()
    again.CopyFrom(loop_node(m))
    again.output[:] = [f"again/{o}" for o in again.output]
    m.graph.node.append(again)


@pytest.mark.parametrize("edit, message", [
    (_constant_trip(1 << 62), "Loop supervision_loop: trip count 'trip' = 4611686018427387904 is not the "
                              "max_steps input or a constant of at most 256"),
    (_computed_trip, "Loop supervision_loop: trip count 'trip' is computed"),
    (_shadowed_trip, "trip count 'max_steps' = 4611686018427387904"),
    (_scan_output, "Loop supervision_loop has scan outputs, which trm-edge never exports"),
    (_custom_op_in_the_body, "op evil.ops::Boom is not one trm-edge exports"),
    (_loop_in_the_body, "op ai.onnx::Loop inside a subgraph is not one trm-edge exports"),
    (_second_loop, "it has 2 Loops; trm-edge exports at most one"),
], ids=["constant-2^62", "computed", "shadowed", "scan-output", "custom-op", "nested-loop", "two-loops"])
def test_a_hostile_loop_graph_is_refused_at_load(capsys, tiny_bundle, tmp_path, edit, message):
    b = hostile(tiny_bundle, tmp_path, "loop.onnx", edit)
    t0 = time.perf_counter()
    line = refused(capsys, b, message)
    assert time.perf_counter() - t0 < 1.0
    assert f"{b / 'loop.onnx'}: " in line and line.endswith("; refused (re-export the bundle)")


def test_an_op_we_never_export_is_refused(capsys, tiny_bundle, tmp_path):
    def edit(m):
        m.graph.node.append(helper.make_node("Hardmax", ["logits"], ["unused"]))

    b = hostile(tiny_bundle, tmp_path, "step.onnx", edit)
    refused(capsys, b, "step.onnx: op ai.onnx::Hardmax is not one trm-edge exports; refused (re-export the bundle)")


def test_a_constant_trip_count_within_the_cap_runs(capsys, tiny_bundle, tmp_path):
    b = hostile(tiny_bundle, tmp_path, "loop.onnx", _constant_trip(3))
    code, out, err = run(capsys, "solve", str(b), PUZZLE, "--json", "--graph", "loop")
    assert code == 0 and json.loads(out)["n"] == 1, err


def test_the_solver_feeds_no_trip_count_over_the_cap(tiny_bundle):
    """A policy built in code skips HaltPolicy.parse: the loop graph's max_steps input is still bounded."""
    solver = open_solver(tiny_bundle, "ort", "loop")
    with pytest.raises(TRMEdgeError, match=f"need 1 <= min <= max <= {MAX_STEPS} steps"):
        solver.solve(np.zeros((1, 81), np.int64), HaltPolicy("learned", 1 << 62, threshold=-math.inf))


# -- an engine failing mid-run: one line, exit 1 ----------------------------------------------------------------

def test_an_op_failing_at_run_time_is_one_line(capfd, tiny_bundle, tmp_path):
    """Allowed ops, fine at load, failing on the data: a Gather of column 100 of the 81 tokens."""
    def edit(m):
        m.graph.initializer.append(numpy_helper.from_array(np.array([100], np.int64), "col100"))
        m.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "nought"))
        for n in m.graph.node:
            n.input[:] = ["tokens_checked" if i == "tokens" else i for i in n.input]
        m.graph.node.insert(0, helper.make_node("Gather", ["tokens", "col100"], ["col"], axis=1))
        m.graph.node.insert(1, helper.make_node("Mul", ["col", "nought"], ["col0"]))
        m.graph.node.insert(2, helper.make_node("Add", ["tokens", "col0"], ["tokens_checked"]))

    b = hostile(tiny_bundle, tmp_path, "step.onnx", edit)
    code, out, err = run(capfd, "solve", str(b), PUZZLE, "--json")  # capfd: ORT's own logging would show there
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("trm-edge: error: ort: running step.onnx failed (Gather node") and "idx=100" in err, err


@pytest.fixture
def openvino_bundle(tiny_bundle, tmp_path):
    """The tiny bundle with its step graph as OpenVINO IR, converted as export/format_openvino.py does."""
    ov = pytest.importorskip("openvino")
    b = copy_of(tiny_bundle, tmp_path)
    (b / "openvino").mkdir()
    ov.save_model(ov.convert_model(str(b / "step.onnx")), str(b / "openvino" / "step.xml"), compress_to_fp16=False)
    doc = json.loads((b / "manifest.json").read_text())
    doc["formats"] = {"openvino": {"engine": "openvino", "graphs": {"step": {"fp32": "openvino/step.xml"}}}}
    doc["files"].update({f"openvino/step.{x}": {"sha256": "", "bytes": 0} for x in ("xml", "bin")})
    (b / "manifest.json").write_text(json.dumps(doc))
    rehash(b)
    return b


def test_a_corrupt_openvino_ir_names_its_cause(capfd, openvino_bundle):
    """OpenVINO's error is a C++ trace whose first lines are source locations: the line shows the cause."""
    b = openvino_bundle
    data = (b / "openvino" / "step.bin").read_bytes()
    (b / "openvino" / "step.bin").write_bytes(data[: len(data) // 2])
    rehash(b)
    code, out, err = run(capfd, "solve", str(b), PUZZLE, "--json", "--backend", "openvino")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "OpenVINO cannot load this graph (Incorrect weights in bin file!)" in \
        lines[0], err


def test_openvino_failing_at_run_time_is_one_line(openvino_bundle):
    adapter = OpenVinoAdapter(openvino_bundle / "openvino" / "step.xml")
    z = np.zeros((1, 97, 16), np.float32)
    with pytest.raises(CheckFailed, match=r"^openvino: running step.xml failed \(ParameterMismatch: .*\{1, 80\}") as e:
        adapter.run({"tokens": np.zeros((1, 80), np.int64), "puzzle_ids": np.zeros(1, np.int64), "z_H": z, "z_L": z})
    assert "\n" not in str(e.value)


# -- fuzzing the scanner: a mutated graph is read or refused as Malformed, nothing else ---------------------------

@settings(max_examples=300, deadline=2000, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.data())
def test_mutated_graphs_are_read_or_malformed(tiny_bundle, data):
    good = (tiny_bundle / "loop.onnx").read_bytes()
    bad = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8))):
        bad[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(good) // 2, len(good)))
    for blob in (bytes(bad), bytes(bad[:cut])):
        try:
            why = unexported(blob, MAX_STEPS)
            external_locations(blob)
        except Malformed:
            continue
        assert why is None or isinstance(why, str)


# -- OpenVINO IR and LiteRT: the loops an engine would run as written ---------------------------------------------

def test_an_openvino_loop_beyond_the_step_cap_is_refused_at_load(tiny_bundle, tmp_path):
    """The loop graph as OpenVINO IR (as export/format_openvino.py converts it): ours loads; the same Loop given a
    constant trip count of 2^62 is refused before compiling."""
    ov = pytest.importorskip("openvino")
    from trm_edge.runtimes.openvino import unbounded_loop

    model = ov.convert_model(str(tiny_bundle / "loop.onnx"))
    assert unbounded_loop(model) is None
    loop = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Loop")
    loop.input(0).replace_source_output(ov.opset13.constant(np.array(1 << 62, np.int64)).output(0))
    ov.save_model(model, str(tmp_path / "loop.xml"), compress_to_fp16=False)
    t0 = time.perf_counter()
    with pytest.raises(TRMEdgeError, match=r"loop.xml: Loop .* runs a trip count \(Constant\) beyond the 256-step "
                                           r"cap; refused"):
        OpenVinoAdapter(tmp_path / "loop.xml")
    assert time.perf_counter() - t0 < 5


def test_a_tflite_graph_with_a_loop_is_refused():
    from trm_edge.runtimes.litert import looping_ops

    class Graph:
        def __init__(self, ops):
            self.ops = ops

        def _get_ops_details(self):
            return [{"op_name": name} for name in self.ops]

    assert looping_ops(Graph(["FULLY_CONNECTED", "WHILE", "ADD", "IF"])) == ["IF", "WHILE"]
    assert looping_ops(Graph(["FULLY_CONNECTED", "EMBEDDING_LOOKUP", "ARG_MAX"])) == []
