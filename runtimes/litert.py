"""LiteRT adapter (ai-edge-litert's interpreter, else tflite-runtime's): what Android phones and most ARM boards
ship; XNNPACK runs it on CPU.

A .tflite graph has static shapes (litert-torch cannot lower our embedding with a dynamic batch), so a bundle's
step graph carries one signature per batch size, `b1`, `b8`, `b64` (weights stored once). A call of n rows runs as
chunks of those sizes (padded where real rows fill at least half of a larger signature). One
interpreter is not thread-safe: calls are serialized by a lock."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.runtimes import engine_missing
from trm_edge.runtimes.base import engine_cause, engine_run

_INT = ("tokens", "puzzle_ids", "pred")  # int32 inside LiteRT (int64 is not a mobile type), int64 outside


def _interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise engine_missing("litert", "LiteRT", "litert") from None
    return Interpreter


@contextlib.contextmanager
def quiet_native_output():
    """Silence what native code prints on fds 1 and 2 (LiteRT's 'Created TensorFlow Lite XNNPACK delegate',
    converter progress); the captured text is kept in `.text` for an error message."""
    class Captured:
        text = ""
    cap = Captured()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as f:
        try:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield cap
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            f.seek(0)
            cap.text = f.read().decode(errors="replace")


def looping_ops(interpreter) -> list[str]:
    """The control-flow ops of a .tflite graph (a WHILE runs as long as its condition says): ours have none, the
    halting loop runs on the host."""
    details = getattr(interpreter, "_get_ops_details", lambda: [])()
    return sorted({d["op_name"] for d in details} & {"WHILE", "IF", "CALL_ONCE"})


class LiteRtAdapter:
    name = "litert"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        Interpreter = _interpreter()
        self.path, self.threads = Path(path), threads
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            sigs = self.interpreter.get_signature_list()
        except Exception as e:  # a corrupt or hostile file
            raise TRMEdgeError(f"{path}: LiteRT cannot load this graph ({engine_cause(e)})") from None
        if loops := looping_ops(self.interpreter):
            raise TRMEdgeError(f"{path}: {', '.join(loops)} op in the graph; trm-edge's .tflite graphs are one "
                               "supervision step without loops; refused (re-export the bundle)")
        self.runners = {int(k[1:]): self.interpreter.get_signature_runner(k)
                        for k in sigs if re.fullmatch(r"b[1-9]\d*", k)}
        if not self.runners:
            raise TRMEdgeError(f"{path}: no batch signatures (b1, b8, ...) in this graph; re-export the bundle")
        self.version = getattr(__import__(Interpreter.__module__.split(".")[0]), "__version__", "")
        self._lock = threading.Lock()
        self._warm: set[int] = set()

    def chunks(self, n: int) -> list[int]:
        """Signature sizes that cover n rows: the next larger signature when real rows fill at least half of it
        (padding), else the largest that fits."""
        sizes, out = sorted(self.runners), []
        while n > 0:
            up = [b for b in sizes if b >= n]
            fit = [b for b in sizes if b <= n]
            b = up[0] if up and (up[0] <= 2 * n or not fit) else fit[-1]
            out.append(b)
            n -= b
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(feeds["tokens"])
        parts, start = [], 0
        with self._lock:
            for b in self.chunks(n):
                part = {k: _rows(feeds[k], start, b).astype(np.int32 if k in _INT else np.float32, copy=False)
                        for k in ("tokens", "puzzle_ids", "z_H", "z_L")}
                with engine_run("litert", self.path.name):
                    if b in self._warm:
                        res = self.runners[b](**part)
                    else:
                        with quiet_native_output():  # the first call creates the XNNPACK delegate and says so
                            res = self.runners[b](**part)
                        self._warm.add(b)
                parts.append({k: v[: min(b, n - start)].copy() for k, v in res.items()})
                start += b
        return {k: np.concatenate([p[k] for p in parts]).astype(np.int64 if k in _INT else np.float32, copy=False)
                for k in parts[0]}

    def io(self) -> dict[str, list]:
        r = self.runners[max(self.runners)]
        return {k: [None, *map(int, v["shape"][1:])]
                for d in (r.get_input_details(), r.get_output_details()) for k, v in d.items()}

    def describe(self) -> dict:
        return {"backend": "litert", "version": self.version, "threads": self.threads, "graph": self.path.name,
                "signatures": [f"b{b}" for b in sorted(self.runners)]}


def _rows(a: np.ndarray, start: int, b: int) -> np.ndarray:
    """Rows start..start+b, the last row repeated where the array ends (padding a chunk to its signature)."""
    part = a[start:start + b]
    if len(part) < b:
        part = np.concatenate([part, np.repeat(part[-1:], b - len(part), axis=0)])
    return part
