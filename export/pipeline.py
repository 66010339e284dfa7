"""`trm-edge export`: model -> ONNX graphs -> each further format -> verification -> bundle, all or nothing."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trm_edge import __version__
from trm_edge.atomic import claim
from trm_edge.bundle import write_bundle
from trm_edge.checkpoint import save, with_config
from trm_edge.errors import TRMEdgeError
from trm_edge.export.formats import Context, format_module
from trm_edge.export.options import ExportOptions
from trm_edge.extras import require
from trm_edge.halting import HaltPolicy
from trm_edge.model import TRM
from trm_edge.tasks import codec_for


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


def offered(options: ExportOptions) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """The int8 modes each format will quantize, and a note for each requested mode a format does not offer (a mode
    asked of one format by name that it does not offer is refused)."""
    modes, notes = {}, []
    for name in options.formats:
        fmt = format_module(name)
        asked = [(spec, spec.rpartition(":")[2]) for spec in options.quant.modes
                 if spec.rpartition(":")[0] in ("", name)]
        for spec, m in asked:
            if m not in fmt.MODES:
                if ":" in spec:
                    raise TRMEdgeError(f"--quantize {spec}: {name} does not offer {m} ({fmt.MODES_NOTE})")
                notes.append(f"{name}: {m} is not offered ({fmt.MODES_NOTE})")
        modes[name] = tuple(dict.fromkeys(m for _, m in asked if m in fmt.MODES))
        if missing := [g for g in options.graphs if g not in fmt.GRAPHS]:
            notes.append(f"{name}: no {', '.join(missing)} graph ({fmt.GRAPHS_NOTE})")
    return modes, notes


def export_bundle(model: TRM, meta: dict, out_dir: str | Path, options: ExportOptions = ExportOptions(),
                  status: Callable[[str], None] = lambda s: None) -> Path:
    """Export every requested format, verify each against the reference, quantize under the accuracy guard, and
    write the bundle atomically (nothing on failure)."""
    claim(out_dir, "bundle")
    for name in options.formats:  # a missing converter is found before minutes of work
        fmt = format_module(name)
        require(f"--format {name}", fmt.EXTRA, *fmt.REQUIRES)
    modes, notes = offered(options)
    cfg = model.config
    if cfg.forward_dtype != "float32":
        model = with_config(model, dataclasses.replace(cfg, forward_dtype="float32")).eval()
        cfg = model.config
    if options.puzzle_ids:
        model = select_puzzle_ids(model, list(options.puzzle_ids))
        cfg = model.config
    policy = HaltPolicy.parse(options.halt or meta.get("recommended_halt") or "fixed", cfg.halt_max_steps)
    if policy.verify:
        raise TRMEdgeError(f"--halt {policy}: a bundle's policy runs in its loop graph, which cannot check answers; "
                           "give ',verify' to solve instead")
    n_unrolled = options.max_steps or cfg.halt_max_steps
    policies = list(dict.fromkeys([policy, HaltPolicy.parse("fixed", cfg.halt_max_steps),
                                   HaltPolicy.parse("learned:0", cfg.halt_max_steps)]))
    if "unrolled" in options.graphs:
        policies = [p for p in policies if p.max_steps <= n_unrolled]
    manifest = {
        "task": meta.get("task"), "config": cfg.to_dict(), "source": meta.get("source"),
        "halting": str(policy), "opset": options.opset, "batch": options.batch or "dynamic",
        "puzzle_ids": list(options.puzzle_ids) if options.puzzle_ids else None, "init": "init.npz",
        "reference": "reference", "versions": _versions(options.formats), "notes": notes,
    }

    def write(tmp: Path) -> None:
        ctx = Context(model, options, policy, codec_for(meta.get("task"), cfg.seq_len, meta.get("source")),
                      {"H_init": model.H_init.float().numpy(), "L_init": model.L_init.float().numpy()}, n_unrolled,
                      tmp, status, policies, int8_sites=meta.get("int8_sites"))
        np.savez(tmp / "init.npz", **ctx.init)
        save(model, tmp / "reference", task=meta.get("task"), source=meta.get("source"))
        for name in options.formats:
            section = format_module(name).write(ctx, modes[name])
            if name == "onnx":
                manifest.update(section)
            else:
                manifest.setdefault("formats", {})[name] = section

    return write_bundle(out_dir, manifest, write)


def _versions(formats: tuple[str, ...]) -> dict:
    v = {"trm_edge": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in formats:
        v.update(format_module(name).versions())
    return v
