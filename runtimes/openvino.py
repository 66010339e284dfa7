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
from trm_edge.halting import MAX_STEPS
from trm_edge.runtimes import engine_missing
from trm_edge.runtimes.base import engine_cause, engine_run


def _openvino():
    try:
        import openvino
    except ImportError:
        raise engine_missing("openvino", "OpenVINO", "openvino") from None
    return openvino


def unbounded_loop(model) -> str | None:
    """Why an IR's loops are not the one trm-edge exports, or None. OpenVINO runs what the IR says, so as for ONNX
    graphs (trm_edge.onnxscan): at most one Loop, no TensorIterator, no loop in a loop body, a trip count that is the
    max_steps input or a constant within the step cap, and no concatenated (scan) outputs, which grow each step."""
    loops = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Loop", "TensorIterator")]
    if len(loops) > 1 or any(op.get_type_name() == "TensorIterator" for op in loops):
        return f"{len(loops)} loops ({', '.join(op.get_type_name() for op in loops)}); trm-edge exports one Loop"
    for op in loops:
        trip = op.input_value(0).get_node()
        kind = trip.get_type_name()
        if kind == "Constant" and int(trip.get_data().max()) > MAX_STEPS or kind not in ("Constant", "Parameter"):
            return f"Loop {op.get_friendly_name()} runs a trip count ({kind}) beyond the {MAX_STEPS}-step cap"
        if any(o.get_type_name() in ("Loop", "TensorIterator") for o in op.get_function().get_ordered_ops()):
            return f"Loop {op.get_friendly_name()} holds another loop"
        if any(type(d).__name__ != "BodyOutputDescription" for d in op.get_output_descriptions()):
            return f"Loop {op.get_friendly_name()} accumulates scan outputs"
    return None


class OpenVinoAdapter:
    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        ov = _openvino()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            model = core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line C++ trace
            raise TRMEdgeError(f"{path}: OpenVINO cannot load this graph ({engine_cause(e)})") from None
        if why := unbounded_loop(model):
            raise TRMEdgeError(f"{path}: {why}; refused (re-export the bundle)")
        try:
            compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
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
