"""Runtimes: one adapter per engine behind one interface, and the shared Solver. No torch import here:
only the torch adapter imports it, when asked for."""

from __future__ import annotations

import os
import time

import numpy as np

from trm_edge.bundle import Bundle
from trm_edge.errors import TRMEdgeError
from trm_edge.runtimes.solver import Solver
from trm_edge.tasks import codec_for

BACKENDS = ("ort", "torch")


def open_solver(bundle: str | os.PathLike | Bundle, backend: str = "ort", graph: str = "step",
                precision: str = "fp32", threads: int | None = None, opt_level: str = "all") -> Solver:
    """A Solver over one graph of a bundle (hashes checked on load)."""
    b = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    init = dict(np.load(b.file(b.manifest["init"]), allow_pickle=False))
    t0 = time.perf_counter()
    if backend == "ort":
        from trm_edge.runtimes.ort import OrtAdapter

        adapter = OrtAdapter(b.graph_file(graph, precision), threads, opt_level)
    elif backend == "torch":
        if graph != "step" or precision != "fp32":
            raise TRMEdgeError("backend torch runs the fp32 reference step only (--graph step --precision fp32)")
        try:
            from trm_edge.checkpoint import load
            from trm_edge.runtimes.torch_adapter import TorchAdapter
        except ImportError:
            raise TRMEdgeError("backend torch needs PyTorch: pip install 'trm-edge[export]'") from None
        adapter = TorchAdapter(load(b.file(f"{b.manifest['reference']}/model.safetensors").parent)[0], threads)
    else:
        raise TRMEdgeError(f"unknown backend {backend!r} (have: {', '.join(BACKENDS)})")
    init_ms = 1000 * (time.perf_counter() - t0)
    steps = b.manifest["graphs"][graph].get("steps") if graph == "unrolled" else None
    return Solver(adapter, graph, b.config, codec_for(b.task, b.config.seq_len, b.path), init, init_ms, steps)


__all__ = ["BACKENDS", "Solver", "open_solver"]
