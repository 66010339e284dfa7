"""Runtimes: one adapter per engine behind one interface, and the shared Solver. No torch import here:
only the torch adapter imports it, when asked for. A further engine is one adapter file plus one line in ENGINES.

Threads: a Solver keeps no state between calls, and every adapter may be called from many threads at once (an ORT
InferenceSession's `run` is thread-safe; OpenVINO gets one infer request per thread; a LiteRT interpreter is not
thread-safe, so its adapter locks; the torch reference runs in inference mode without module state);
tests/test_reliability.py and tests/test_engines.py hold 8 threads to the single-thread answers."""

from __future__ import annotations

import importlib
import os
import platform
import time

import numpy as np

from trm_edge.bundle import Bundle
from trm_edge.errors import TRMEdgeError
from trm_edge.extras import missing_error, require
from trm_edge.halting import HaltPolicy
from trm_edge.runtimes.solver import Solver
from trm_edge.spec import io_spec
from trm_edge.untrusted import load_arrays

# backend -> (the bundle format it runs, module, adapter class taking (path, threads))
ENGINES = {
    "ort": ("onnx", "trm_edge.runtimes.ort", "OrtAdapter"),
    "openvino": ("openvino", "trm_edge.runtimes.openvino", "OpenVinoAdapter"),
    "litert": ("litert", "trm_edge.runtimes.litert", "LiteRtAdapter"),
}
BACKENDS = (*ENGINES, "torch")
ARM32 = ("armv6l", "armv7l", "armv8l")  # 32-bit ARM userlands (older Raspberry Pi OS): no engine ships wheels for them


def platform_problem(machine: str | None = None) -> str | None:
    """Why no engine can install on this machine at all, or None."""
    machine = machine or platform.machine()
    if machine in ARM32:
        return (f"this is a 32-bit ARM system ({machine}): ONNX Runtime, OpenVINO and LiteRT publish no wheels for it; "
                "install the 64-bit Raspberry Pi OS (then `uname -m` says aarch64)")
    return None


def engine_missing(backend: str, what: str, extra: str) -> TRMEdgeError:
    """The one line for an engine that is not installed: the extra to install, or why none can be."""
    if problem := platform_problem():
        return TRMEdgeError(f"backend {backend}: {problem}")
    return missing_error(f"backend {backend}", what, extra)


def open_solver(bundle: str | os.PathLike | Bundle, backend: str = "ort", graph: str = "step",
                precision: str = "fp32", threads: int | None = None, opt_level: str = "all") -> Solver:
    """A Solver over one graph of a bundle (hashes checked on load). `opt_level` is ORT's graph optimisation."""
    b = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    init = initial_state(b)
    t0 = time.perf_counter()
    if backend in ENGINES:
        fmt, module, cls = ENGINES[backend]
        path = b.graph_file(graph, precision, fmt)
        adapter_cls = getattr(importlib.import_module(module), cls)
        adapter = adapter_cls(path, threads, opt_level) if backend == "ort" else adapter_cls(path, threads)
    elif backend == "torch":
        if graph != "step" or precision != "fp32":
            raise TRMEdgeError("backend torch runs the fp32 reference step only (--graph step --precision fp32)")
        require("backend torch", "export", "torch")
        from trm_edge.checkpoint import load
        from trm_edge.runtimes.torch_adapter import TorchAdapter

        adapter = TorchAdapter(load(b.file(f"{b.manifest['reference']}/model.safetensors").parent)[0], threads)
    else:
        raise TRMEdgeError(f"unknown backend {backend!r} (have: {', '.join(BACKENDS)})")
    init_ms = 1000 * (time.perf_counter() - t0)
    _check_io(b, graph, precision, adapter.io(), backend)
    steps = b.manifest["graphs"][graph].get("steps") if graph == "unrolled" else None
    return Solver(adapter, graph, b.config, b.codec, init, init_ms, steps,
                  HaltPolicy.parse(b.halting, b.config.halt_max_steps))


def initial_state(b: Bundle) -> dict[str, np.ndarray]:
    """H_init and L_init, each one vector of the config's hidden size, their shapes checked before they are read
    (a stranger's init.npz may declare gigabytes in a few compressed bytes)."""
    f = b.file(b.manifest["init"])
    return load_arrays(f, {k: (b.config.hidden_size,) for k in ("H_init", "L_init")}, "bundle's initial state")


def _check_io(b: Bundle, graph: str, precision: str, have: dict[str, list], backend: str = "ort") -> None:
    """Every input and output the spec names, with the config's sizes: weights that do not match the manifest's
    config are refused at load, not met as a shape error in the middle of a solve."""
    batch = b.manifest.get("batch")
    want = io_spec(graph, b.config, batch if isinstance(batch, int) else None)
    for side in ("inputs", "outputs"):
        for t in want[side]:
            got = have.get(t["name"])
            if got is None or len(got) != len(t["shape"]) or any(
                    isinstance(g, int) and isinstance(w, int) and g != w for g, w in zip(got, t["shape"])):
                fmt = ENGINES.get(backend, ("onnx",))[0]
                raise TRMEdgeError(f"{b.graph_file(graph, precision, fmt)}: {side[:-1]} {t['name']} is "
                                   f"{'missing' if got is None else got}, the manifest's config needs {t['shape']}: "
                                   "the graph does not match the config; re-export the bundle")


__all__ = ["BACKENDS", "Solver", "initial_state", "open_solver"]
