"""ONNX Runtime adapter (CPU; the same bundle runs on x86, ARM boards and, in ORT format, on Android)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.runtimes import engine_missing
from trm_edge.runtimes.base import engine_cause, engine_run

OPT_LEVELS = ("disable", "basic", "extended", "all")


class OrtAdapter:
    name = "ort"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, opt_level: str = "all"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise engine_missing("ort", "onnxruntime", "ort") from None
        if opt_level not in OPT_LEVELS:
            raise TRMEdgeError(f"ort: graph optimisation level {opt_level!r} is not one of {', '.join(OPT_LEVELS)}")
        so = ort.SessionOptions()
        so.log_severity_level = 4  # fatal only: an error comes back as an exception, said in one line by us
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{opt_level.upper()}"
                                              if opt_level != "disable" else "ORT_DISABLE_ALL")
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self.path, self.threads, self.version = Path(path), threads, ort.__version__
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own types for corrupt or hostile files
            raise TRMEdgeError(f"{path}: ONNX Runtime cannot load this graph ({engine_cause(e)})") from None
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with engine_run("ort", self.path.name):
            out = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        return dict(zip(self.outputs, out))

    def io(self) -> dict[str, list]:
        return {t.name: list(t.shape) for t in [*self.session.get_inputs(), *self.session.get_outputs()]}

    def describe(self) -> dict:
        return {"backend": "ort", "version": self.version, "threads": self.threads, "graph": self.path.name}


def to_ort_format(onnx_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """ORT format for mobile builds (onnxruntime-android / reduced-op builds)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(onnx_path),
                          "--output_dir", str(out)], capture_output=True, text=True)
    ort_files = sorted(out.glob(f"{Path(onnx_path).stem}*.ort"))
    if res.returncode or not ort_files:
        raise TRMEdgeError(f"{onnx_path}: conversion to ORT format failed ({(res.stderr or res.stdout)[-200:]})")
    return ort_files[0]
