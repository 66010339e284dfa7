"""OpenVINO adapter (CPU plugin): what Intel laptops run fastest.

The CPU plugin infers in bf16 by default on CPUs with AVX512-BF16 or AMX (step-1 logits then differ from ORT by
~0.5 on the bundled model), so an fp32 graph is compiled with INFERENCE_PRECISION_HINT f32, always. Each thread
gets its own infer request (one request is not safe to share), so a Solver may be called from many threads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.runtimes import engine_missing
from trm_edge.runtimes.base import engine_cause, engine_run


def _openvino():
    try:
        import openvino
    except ImportError:
        raise engine_missing("openvino", "OpenVINO", "openvino") from None
    return openvino


class OpenVinoAdapter:
    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        ov = _openvino()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line C++ trace
            raise TRMEdgeError(f"{path}: OpenVINO cannot load this graph ({engine_cause(e)})") from None
        self.compiled, self.graph, self.threads = compiled, Path(path).name, threads
        self.version = ov.__version__.split("-")[0]  # '2026.4.1-22982-...'
        self.inputs = {p.get_any_name() for p in compiled.inputs}
        self.outputs = [(p.get_any_name(), p) for p in compiled.outputs]
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        with engine_run("openvino", self.graph):
            res = request.infer({k: v for k, v in feeds.items() if k in self.inputs})
        return {name: np.array(res[port]) for name, port in self.outputs}  # a copy: the request reuses its buffers

    def io(self) -> dict[str, list]:
        return {p.get_any_name(): [d.get_length() if d.is_static else None for d in p.get_partial_shape()]
                for p in [*self.compiled.inputs, *self.compiled.outputs]}

    def describe(self) -> dict:
        return {"backend": "openvino", "version": self.version, "threads": self.threads, "graph": self.graph,
                "inference_precision": "f32"}
