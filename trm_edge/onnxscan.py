"""The external-data files an ONNX graph would make a runtime open, read straight from the protobuf wire format.

A device has ONNX Runtime but not the `onnx` package, and a hostile bundle rewrites its manifest's hashes, so
the bundle loader must see for itself where a graph's tensors point before any runtime opens it. Only the
messages on the way to a tensor are walked (model, graph, node, attribute, function, training info, sparse
tensor); weights' raw bytes are skipped, not copied.
"""

from __future__ import annotations

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
_MAX_DEPTH = 64  # Loop bodies nest graphs; a crafted file could nest them without end


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
    """(field number, start, end) of each length-delimited field of the message in buf[start:end]."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        wire = key & 7
        if wire == 0:
            _, i = _varint(buf, i, end)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise Malformed("field runs past its message")
            yield key >> 3, i, i + n
            i += n
        else:
            raise Malformed(f"wire type {wire}")
    if i != end:
        raise Malformed("truncated field")


def external_locations(data: bytes) -> set[str]:
    """Every external-data `location` in a serialized ModelProto; raises Malformed on a broken file."""
    buf = memoryview(data)
    found: set[str] = set()

    def walk(kind: str, start: int, end: int, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise Malformed("graphs nested too deeply")
        if kind == "entry":
            entry = {f: bytes(buf[s:e]) for f, s, e in _fields(buf, start, end) if f in (1, 2)}
            if entry.get(1) == b"location":
                try:
                    found.add(entry.get(2, b"").decode("utf-8"))
                except UnicodeDecodeError:
                    raise Malformed("location is not UTF-8") from None
            return
        children = CHILDREN[kind]
        for f, s, e in _fields(buf, start, end):
            if f in children:
                walk(children[f], s, e, depth + 1)

    walk("model", 0, len(buf), 0)
    return found
