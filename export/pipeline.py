"""`trm-edge export`: model -> graphs -> verification -> bundle, all or nothing."""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from trm_edge import __version__
from trm_edge.atomic import claim
from trm_edge.bundle import write_bundle
from trm_edge.checkpoint import save, with_config
from trm_edge.errors import TRMEdgeError
from trm_edge.export.graphs import DEFAULT_OPSET, MAX_OPSET, build_loop, build_unrolled, export_step
from trm_edge.export.quantize import check_request, quantize_graphs
from trm_edge.export.verify import sample_puzzles, verify
from trm_edge.halting import HaltPolicy
from trm_edge.model import TRM
from trm_edge.runtimes.ort import OrtAdapter
from trm_edge.runtimes.solver import Solver
from trm_edge.spec import GRAPHS, io_spec
from trm_edge.tasks import codec_for

_PROTOBUF_LIMIT = 1_800_000_000  # bytes; larger graphs keep their weights in an external data file


def parse_graphs(text: str) -> list[str]:
    forms = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in forms if g not in GRAPHS]
    if bad or not forms:
        raise TRMEdgeError(f"--graph {text!r}: choose from {', '.join(GRAPHS)} (comma-separated)")
    return forms


def select_puzzle_ids(model: TRM, ids: list[int]) -> TRM:
    """Keep only these rows of the puzzle table (an ARC table is ~1.8 GB); the graph's puzzle_ids then index
    the kept rows in the given order."""
    n = model.config.num_puzzle_identifiers
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise TRMEdgeError(f"--puzzle-ids: {bad[:5]} outside the model's table of {n} rows")
    small = TRM(dataclasses.replace(model.config, num_puzzle_identifiers=len(ids)))
    state = dict(model.state_dict(), **{"puzzle_emb.weights": model.puzzle_emb.weights[ids].clone()})
    small.load_state_dict(state)
    return small.eval()


def export_bundle(model: TRM, meta: dict, out_dir: str | Path, graphs: list[str] = ("step", "loop"),
                  halt: str | None = None, max_steps: int | None = None, opset: int = DEFAULT_OPSET,
                  batch: int | None = None, puzzle_ids: list[int] | None = None, verify_n: int = 16,
                  quantize: list[str] = (), calib_n: int = 32, heldout_n: int = 128, max_drop: float = 1.0,
                  status: Callable[[str], None] = lambda s: None) -> Path:
    """Export, verify against the reference, quantize under the accuracy guard, and write the bundle
    atomically (nothing on failure)."""
    check_request(list(quantize), calib_n, heldout_n)
    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise TRMEdgeError(f"--opset {opset}: choose {DEFAULT_OPSET}-{MAX_OPSET} (the exporter's range)")
    claim(out_dir, "bundle")
    cfg = model.config
    if cfg.forward_dtype != "float32":
        model = with_config(model, dataclasses.replace(cfg, forward_dtype="float32")).eval()
        cfg = model.config
    if puzzle_ids:
        model = select_puzzle_ids(model, puzzle_ids)
        cfg = model.config
    policy = HaltPolicy.parse(halt or meta.get("recommended_halt") or "fixed", cfg.halt_max_steps)
    if policy.verify:
        raise TRMEdgeError(f"--halt {policy}: a bundle's policy runs in its loop graph, which cannot check answers; "
                           "give ',verify' to solve instead")
    if quantize and "step" not in graphs:
        graphs = ["step", *graphs]  # int8 graphs are built from the quantized step
    n_unrolled = max_steps or cfg.halt_max_steps
    codec = codec_for(meta.get("task"), cfg.seq_len, meta.get("source"))
    init = {"H_init": model.H_init.float().numpy(), "L_init": model.L_init.float().numpy()}
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    status("exporting the supervision step")
    step = export_step(model, opset, batch)
    times["step"] = time.perf_counter() - t0
    protos = {"step": step}
    if "loop" in graphs:
        t = time.perf_counter()
        status("building the loop graph")
        protos["loop"] = build_loop(step, init)
        times["loop"] = time.perf_counter() - t
    if "unrolled" in graphs:
        t = time.perf_counter()
        status(f"building the unrolled graph ({n_unrolled} steps)")
        protos["unrolled"] = build_unrolled(step, init, n_unrolled)
        times["unrolled"] = time.perf_counter() - t
    manifest = {
        "task": meta.get("task"), "config": cfg.to_dict(), "source": meta.get("source"),
        "halting": str(policy), "opset": opset, "batch": batch or "dynamic",
        "puzzle_ids": puzzle_ids, "init": "init.npz", "reference": "reference",
        "graphs": {g: {"files": {"fp32": f"{g}.onnx"}, "io": io_spec(g, cfg, batch),
                       **({"steps": n_unrolled} if g == "unrolled" else {})} for g in graphs},
        "versions": _versions(), "export_seconds": {k: round(v, 2) for k, v in times.items()},
    }

    def write(tmp: Path) -> None:
        for g in graphs:
            _save_graph(protos[g], tmp / f"{g}.onnx")
        np.savez(tmp / "init.npz", **init)
        save(model, tmp / "reference", task=meta.get("task"), source=meta.get("source"))
        status("verifying against the PyTorch reference")
        solvers = {}
        for g in graphs:
            t = time.perf_counter()
            adapter = OrtAdapter(tmp / f"{g}.onnx")
            ms = 1000 * (time.perf_counter() - t)
            manifest["graphs"][g]["session_init_ms"] = round(ms, 1)
            solvers[g] = Solver(adapter, g, cfg, codec, init, ms, n_unrolled if g == "unrolled" else None)
        puzzles = sample_puzzles(codec, verify_n)
        policies = list(dict.fromkeys([policy, HaltPolicy.parse("fixed", cfg.halt_max_steps),
                                       HaltPolicy.parse("learned:0", cfg.halt_max_steps)]))
        policies = [p for p in policies if "unrolled" not in graphs or p.max_steps <= n_unrolled]
        manifest["verification"] = dict(verify(model, solvers, puzzles, policies), passed=True)
        for mode in quantize:
            manifest.setdefault("quantization", {})[mode] = quantize_graphs(
                tmp, mode, solvers["step"], sample_puzzles(codec, calib_n, seed=1),
                sample_puzzles(codec, heldout_n, seed=2), policy, max_drop, status)
            q_step = onnx.load(str(tmp / f"step.{mode}.onnx"))
            for g in graphs:
                manifest["graphs"][g]["files"][mode] = f"{g}.{mode}.onnx"
                if g != "step":
                    _save_graph(build_loop(q_step, init) if g == "loop" else build_unrolled(q_step, init, n_unrolled),
                                tmp / f"{g}.{mode}.onnx")

    return write_bundle(out_dir, manifest, write)


def _save_graph(proto: onnx.ModelProto, path: Path) -> None:
    large = proto.ByteSize() > _PROTOBUF_LIMIT
    onnx.save_model(proto, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")


def _versions() -> dict:
    import onnxruntime

    return {"trm_edge": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
