"""What an ONNX graph would make a runtime do, read straight from the protobuf wire format: the external-data files
it would open, and whether its structure is one trm-edge exports.

A device has ONNX Runtime but not the `onnx` package, and a hostile bundle rewrites its manifest's hashes, so
the bundle loader must see for itself where a graph's tensors point, and which ops it runs, before any runtime opens
it. Only the messages on the way to a tensor or a node are walked (model, graph, node, attribute, function, training
info, sparse tensor); weights' raw bytes are skipped, not copied.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# message -> {field number: message it holds}, from onnx.proto (ModelProto.graph = 7, ... TensorProto.external_data
# = 13); a test checks these numbers against the onnx package's descriptors.
CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
# message -> {field name: number} of the fields the structure check reads, from onnx.proto; a test checks them too
FIELDS = {
    "model": {"graph": 7, "training_info": 20, "functions": 25},
    "graph": {"node": 1, "initializer": 5, "input": 11, "output": 12},
    "value_info": {"name": 1},
    "node": {"input": 1, "output": 2, "name": 3, "op_type": 4, "attribute": 5, "domain": 7},
    "attribute": {"g": 6, "graphs": 11},
    "tensor": {"dims": 1, "data_type": 2, "int64_data": 7, "name": 8, "raw_data": 9},
}
_MAX_DEPTH = 64  # Loop bodies nest graphs; a crafted file could nest them without end
_INT64 = 7  # TensorProto.INT64
# (domain, op type) of every node our exporters write: export/graphs.py's step (torch.onnx dynamo, opsets 18-24: the
# Attention op from 23 on), loop and unrolled forms, and export/quantize.py's int8 routes (ORT's QDQ, dynamic,
# per-row and MatMulNBits quantizers); listed from the graphs of tiny models of each token mixer exported in every
# form and route, and held to them by tests/test_hostile_graphs.py. Reciprocal: an RMSNorm of unknown width that
# export.graphs._rms_norm_as_fusable leaves as exported (older bundles have it everywhere). Sub: HRM's halting logit.
EXPORTED_OPS = frozenset({("", op) for op in (
    "Add", "And", "ArgMax", "Attention", "Cast", "Concat", "DequantizeLinear", "Div", "DynamicQuantizeLinear",
    "Expand", "Gather", "GatherND", "Gemm", "Greater", "GreaterOrEqual", "Identity", "IsInf", "IsNaN", "Loop",
    "MatMul", "MatMulInteger", "Max", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "QuantizeLinear", "Reciprocal",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Split",
    "Sqrt", "Sub", "Sum", "Transpose", "Unsqueeze", "Where")} | {("com.microsoft", "MatMulIntegerToFloat"),
                                                           ("com.microsoft", "MatMulNBits")})
TRIP_INPUT = "max_steps"  # the loop graph's input that is its Loop's trip count (export.graphs.build_loop)


class Malformed(ValueError):
    """Not a well-formed protobuf message."""


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= end or shift > 63:
            raise Malformed("truncated varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return value, i


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, start, end) of each field of the message in buf[start:end]: the span of a varint,
    of a fixed-width value or of a length-delimited payload."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        wire, s = key & 7, i
        if wire == 0:
            _, i = _varint(buf, i, end)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n, s = _varint(buf, i, end)
            i = s + n
        else:
            raise Malformed(f"wire type {wire}")
        if i > end:
            raise Malformed("field runs past its message")
        yield key >> 3, wire, s, i


def external_locations(data: bytes) -> set[str]:
    """Every external-data `location` in a serialized ModelProto; raises Malformed on a broken file."""
    buf = memoryview(data)
    found: set[str] = set()

    def walk(kind: str, start: int, end: int, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise Malformed("graphs nested too deeply")
        if kind == "entry":
            entry = {f: bytes(buf[s:e]) for f, w, s, e in _fields(buf, start, end) if f in (1, 2) and w == 2}
            if entry.get(1) == b"location":
                try:
                    found.add(entry.get(2, b"").decode("utf-8"))
                except UnicodeDecodeError:
                    raise Malformed("location is not UTF-8") from None
            return
        children = CHILDREN[kind]
        for f, w, s, e in _fields(buf, start, end):
            if f in children and w == 2:
                walk(children[f], s, e, depth + 1)

    walk("model", 0, len(buf), 0)
    return found


@dataclass(frozen=True)
class Node:
    op_type: str
    domain: str  # "" for ONNX's default domain (also spelt "ai.onnx")
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    graphs: tuple[Graph, ...]  # its attributes' subgraphs: a Loop's body


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constants: dict[str, int | None]  # initializer name -> its value where it is one int64 held in the file


def _text(buf: memoryview, s: int, e: int) -> str:
    """A string field, losslessly (two different names never read as one)."""
    return bytes(buf[s:e]).decode("utf-8", "surrogateescape")


def _ints(buf: memoryview, s: int, e: int) -> list[int]:
    """The varints of a packed span (or the one varint of an unpacked one)."""
    out = []
    while s < e:
        v, s = _varint(buf, s, e)
        out.append(v)
    return out


def _tensor(buf: memoryview, start: int, end: int) -> tuple[str, int | None]:
    """An initializer's name, and its value where it holds one int64 in the file (a trip count)."""
    f_ = FIELDS["tensor"]
    name, dims, dtype, ints, raw = "", [], 0, [], None
    for f, w, s, e in _fields(buf, start, end):
        if f == f_["name"] and w == 2:
            name = _text(buf, s, e)
        elif f == f_["dims"] and w in (0, 2):
            dims += _ints(buf, s, e)
        elif f == f_["data_type"] and w == 0:
            dtype = _varint(buf, s, e)[0]
        elif f == f_["int64_data"] and w in (0, 2):
            ints += _ints(buf, s, e)
        elif f == f_["raw_data"] and w == 2:
            raw = (s, e)  # the last one counts, as in protobuf; copied only if it is 8 bytes
    if dtype != _INT64 or any(d != 1 for d in dims):
        return name, None
    if raw is not None:
        return name, struct.unpack("<q", buf[raw[0]:raw[1]])[0] if raw[1] - raw[0] == 8 else None
    return name, (ints[0] - (1 << 64) if ints[0] >> 63 else ints[0]) if len(ints) == 1 else None


def _graph(buf: memoryview, spans: list[tuple[int, int]], depth: int) -> Graph:
    """A graph from every occurrence of its field (protobuf merges repeated occurrences of one message field)."""
    if depth > _MAX_DEPTH:
        raise Malformed("graphs nested too deeply")
    f_ = FIELDS["graph"]
    nodes, inputs, outputs, constants = [], [], [], {}
    for start, end in spans:
        for f, w, s, e in _fields(buf, start, end):
            if w != 2:
                continue
            if f == f_["node"]:
                nodes.append(_node(buf, s, e, depth))
            elif f == f_["initializer"]:
                name, value = _tensor(buf, s, e)
                constants[name] = value
            elif f in (f_["input"], f_["output"]):
                names = [_text(buf, a, b) for g, x, a, b in _fields(buf, s, e)
                         if g == FIELDS["value_info"]["name"] and x == 2]
                (inputs if f == f_["input"] else outputs).append(names[-1] if names else "")
    return Graph(tuple(nodes), tuple(inputs), tuple(outputs), constants)


def _node(buf: memoryview, start: int, end: int, depth: int) -> Node:
    a_ = FIELDS["attribute"]
    text = {"op_type": "", "domain": "", "name": ""}
    io: dict[str, list[str]] = {"input": [], "output": []}
    graphs = []
    for f, w, s, e in _fields(buf, start, end):
        key = _NODE_FIELD.get(f) if w == 2 else None
        if key in text:
            text[key] = _text(buf, s, e)
        elif key in io:
            io[key].append(_text(buf, s, e))
        elif key == "attribute":
            body = [(a, b) for g, x, a, b in _fields(buf, s, e) if g == a_["g"] and x == 2]
            graphs += [_graph(buf, body, depth + 1)] if body else []
            graphs += [_graph(buf, [(a, b)], depth + 1) for g, x, a, b in _fields(buf, s, e)
                       if g == a_["graphs"] and x == 2]
    domain = "" if text["domain"] == "ai.onnx" else text["domain"]
    return Node(text["op_type"], domain, text["name"], tuple(io["input"]), tuple(io["output"]), tuple(graphs))


_NODE_FIELD = {number: name for name, number in FIELDS["node"].items()}


def read_model(data: bytes) -> tuple[Graph, bool]:
    """A serialized ModelProto's main graph, and whether it also carries model-local functions or training graphs;
    raises Malformed on a broken file."""
    buf = memoryview(data)
    f_ = FIELDS["model"]
    spans, extras = [], False
    for f, w, s, e in _fields(buf, 0, len(buf)):
        if f == f_["graph"] and w == 2:
            spans.append((s, e))
        extras |= f in (f_["functions"], f_["training_info"])
    return _graph(buf, spans, 0), extras


def unexported(data: bytes, max_trip: int) -> str | None:
    """Why a serialized ModelProto is not a graph trm-edge exports, or None: every node's op must be one of
    EXPORTED_OPS; at most one Loop, in the main graph (nested or repeated Loops multiply the steps), whose trip count
    is the graph input `max_steps` (which the Solver feeds from a bounded policy) or a constant of at most `max_trip`,
    and which has no scan outputs (each would grow by one tensor a step); model-local functions and training graphs
    are never exported. Raises Malformed on a broken file."""
    graph, extras = read_model(data)
    if extras:
        return "it carries model-local functions or training graphs, which trm-edge never exports"
    loops = [n for n in graph.nodes if n.op_type == "Loop"]
    if len(loops) > 1:
        return f"it has {len(loops)} Loops; trm-edge exports at most one"
    return _op_refusal(graph, nested=False) or (_loop_refusal(loops[0], graph, max_trip) if loops else None)


def _op_refusal(graph: Graph, nested: bool) -> str | None:
    """The first node of `graph` or of its subgraphs whose op trm-edge does not export there."""
    for node in graph.nodes:
        loop_inside = nested and node.op_type == "Loop"
        if loop_inside or (node.domain, node.op_type) not in EXPORTED_OPS:
            return f"op {node.domain or 'ai.onnx'}::{node.op_type}{' inside a subgraph' if loop_inside else ''} is " \
                   "not one trm-edge exports"
        for sub in node.graphs:
            if why := _op_refusal(sub, nested=True):
                return why
    return None


def _loop_refusal(node: Node, graph: Graph, max_trip: int) -> str | None:
    """The main graph's Loop must be bounded by our trip count and carry only loop state (body outputs: the condition
    and the carried values)."""
    what, carried = f"Loop {node.name or '(unnamed)'}", len(node.inputs) - 2
    if len(node.outputs) > carried or any(len(g.outputs) > 1 + carried for g in node.graphs):
        return f"{what} has scan outputs, which trm-edge never exports"
    trip = node.inputs[0] if node.inputs else ""
    bounded = f"is not the {TRIP_INPUT} input or a constant of at most {max_trip}"
    if any(trip in n.outputs for n in graph.nodes):
        return f"{what}: trip count {trip!r} is computed; it {bounded}"
    if trip in graph.constants:  # before the inputs: ORT does not ask for an input an initializer backs
        value = graph.constants[trip]
        return None if value is not None and 0 <= value <= max_trip else \
            f"{what}: trip count {trip!r} = {'?' if value is None else value} {bounded}"
    return None if trip == TRIP_INPUT and trip in graph.inputs else f"{what}: trip count {trip!r} {bounded}"
