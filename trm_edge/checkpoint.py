"""Reading and writing models: official checkpoints (torch.save state dicts + all_config.yaml) and our
own format (safetensors weights + JSON config, which never executes code on load)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from trm_edge.atomic import atomic_dir
from trm_edge.config import TRMConfig, find_dataset_seq_len, read_official_arch, run_dataset
from trm_edge.errors import TRMEdgeError
from trm_edge.extras import require
from trm_edge.model import TRM
from trm_edge.tasks import codec_for
from trm_edge.untrusted import check_regular, load_json

OUR_CONFIG, OUR_WEIGHTS = "config.json", "model.safetensors"
OFFICIAL_PREFIXES = ("_orig_mod.model.inner.", "model.inner.", "inner.")
_NON_PERSISTENT = re.compile(r"(^|\.)rotary_emb\.(cos|sin)_cached$")
_STEP = re.compile(r"^step_(\d+)$")
HRM_PUBLISHED = "checkpoint"
PUZZLE_TABLE = "puzzle_emb.weights"
DEFAULT_MODEL = Path(__file__).parent / "models" / "sudoku-default"


def load_model(path: str | os.PathLike | None = None, *, seq_len: int | None = None,
               dtype: str | None = None, depth: tuple[int, int] | None = None, rows: list[int] | None = None,
               weights: bool = True) -> tuple[TRM, dict[str, Any]]:
    """Any model a user may name: our format, an official run directory or step file, or (None) the
    bundled default. Returns the model in eval mode and its metadata (task, source, ...). `depth` runs the
    same weights with other (H_cycles, L_cycles) per supervision step: the recursion shares its weights.
    `rows` and `weights`: see `_build` (an official ARC puzzle table is ~1.8 GB of the file)."""
    p = Path(path) if path is not None else DEFAULT_MODEL
    if not p.exists():
        hint = " (no bundled default model in this install)" if path is None else ""
        raise TRMEdgeError(f"{p}: no such model file or directory{hint}")
    if (p / OUR_CONFIG).is_file():
        model, meta = load(p, rows, weights)
    else:
        model, meta = load_official(p, seq_len, rows, weights)
    changes = dict(H_cycles=depth[0], L_cycles=depth[1]) if depth else {}
    if dtype and dtype != model.config.forward_dtype:
        changes["forward_dtype"] = dtype
    if changes:
        model = with_config(model, dataclasses.replace(model.config, **changes))
    return model.eval(), meta


# -- official checkpoints ----------------------------------------------------------------------------

def load_official(path: str | os.PathLike, seq_len: int | None = None, rows: list[int] | None = None,
                  weights: bool = True) -> tuple[TRM, dict[str, Any]]:
    """An official `step_N` file, or the run directory holding it (the highest N is taken), memory-mapped: only
    what the model reads is read from disk (`_build`)."""
    p = Path(path)
    ckpt = p if p.is_file() else _latest_step(p)
    state = _strip_prefix(_torch_load(ckpt))
    arch = read_official_arch(ckpt.parent)
    cfg = _config_from_state(state, arch, ckpt, seq_len)
    task = codec_for(None, cfg.vocab_size, cfg.seq_len).name  # the first task whose shape fits
    dataset = run_dataset(ckpt.parent)
    return _build(cfg, state, ckpt, rows, weights), {"task": task, "source": str(ckpt), "format": "official",
                                                     "puzzle_ids": rows, "table_rows": _table_rows(state, cfg),
                                                     "dataset": dataset and str(dataset)}


def _latest_step(d: Path) -> Path:
    """The highest `step_N` of a run directory, or else its `checkpoint` (the name HRM's published weights have)."""
    steps = sorted((int(m.group(1)), f) for f in d.iterdir() if (m := _STEP.match(f.name)) and f.is_file())
    if not steps and (d / HRM_PUBLISHED).is_file():
        return d / HRM_PUBLISHED
    if not steps:
        raise TRMEdgeError(f"{d}: no checkpoint here (expected a trm-edge model with {OUR_CONFIG}, an official run "
                           "directory with step_N files, or an exported bundle with manifest.json)")
    return steps[-1][1]


def _torch_load(f: Path) -> dict[str, torch.Tensor]:
    if not zipfile.is_zipfile(f):  # torch.save writes a zip; anything else is truncated, corrupt, or no checkpoint
        raise TRMEdgeError(f"{f}: not a readable PyTorch checkpoint (no torch.save archive); is the file complete?")
    try:
        state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unsupported object"
        raise TRMEdgeError(f"{f}: refused: the file holds pickled objects, not only tensors ({first[:120]}); "
                           "only plain state dicts are loaded, and its code was not run") from None
    except Exception as e:
        raise TRMEdgeError(f"{f}: not a readable PyTorch checkpoint ({type(e).__name__}); is the file "
                           "complete?") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TRMEdgeError(f"{f}: not a state dict of tensors (an official step_N file is one)")
    return state


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in OFFICIAL_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            return {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def _config_from_state(state: dict[str, torch.Tensor], arch: dict[str, Any], ckpt: Path,
                       seq_len: int | None) -> TRMConfig:
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise TRMEdgeError(f"{ckpt}: missing weight {key}; is this a TRM checkpoint?")
        return tuple(state[key].shape)

    vocab, hidden = shape("embed_tokens.embedding_weight")
    rows, ndim = shape(PUZZLE_TABLE) if PUZZLE_TABLE in state else (1, arch.get("puzzle_emb_ndim", 0))
    hrm = any(k.startswith("H_level.layers.") for k in state)  # TRM has no H_level: its L_level also updates z_H
    stacks = {level: len({m.group(1) for k in state if (m := re.match(rf"{level}\.layers\.(\d+)\.", k))})
              for level in ("H_level", "L_level")}
    seen = dict(hidden_size=hidden, puzzle_emb_ndim=ndim, H_layers=stacks["H_level"])
    for name in ("hidden_size", "puzzle_emb_ndim", *(("H_layers",) if hrm else ())):
        if name in arch and arch[name] != seen[name]:
            raise TRMEdgeError(f"{ckpt}: all_config.yaml says {name} {arch[name]} but the weights have "
                               f"{seen[name]}: the config belongs to another run")
    has_mlp_t = any(".mlp_t." in k for k in state)
    if "mlp_t" in arch and bool(arch["mlp_t"]) != has_mlp_t:
        raise TRMEdgeError(f"{ckpt}: all_config.yaml says mlp_t={arch['mlp_t']} but the weights are the "
                           f"{'mlp_t' if has_mlp_t else 'attention'} variant: the config belongs to another run")
    # HRM's config has no puzzle_emb_len (its prefix is always ceil(ndim / hidden)); HRM's yaml omits vocab and rows
    fields = dict(arch, **seen, vocab_size=vocab, mlp_t=has_mlp_t, L_layers=stacks["L_level"] or 1,
                  num_puzzle_identifiers=rows, family="hrm" if hrm else "trm",
                  **({"puzzle_emb_len": 0} if hrm else {}))
    probe = TRMConfig(**dict(fields, seq_len=1))
    if has_mlp_t:
        fields["seq_len"] = shape("L_level.layers.0.mlp_t.gate_up_proj.weight")[1] - probe.prefix_len
    else:
        found = find_dataset_seq_len(ckpt.parent)
        fields["seq_len"] = found or seq_len
        if fields["seq_len"] is None:
            raise TRMEdgeError(f"{ckpt}: sequence length unknown: attention weights do not fix it and no "
                               "dataset.json was found beside or above the checkpoint; pass --seq-len "
                               "(81 for sudoku, 900 for maze/ARC)")
        if found and seq_len and found != seq_len:
            raise TRMEdgeError(f"{ckpt}: --seq-len {seq_len} contradicts dataset.json's seq_len {found}")
    return TRMConfig(**fields)


def _build(cfg: TRMConfig, state: dict[str, torch.Tensor], source: Path | str, rows: list[int] | None = None,
           weights: bool = True) -> TRM:
    """The model of these weights, in eval mode. `rows`: only these rows of its puzzle table, in this order (the
    graph's puzzle_ids then index them); from a memory-mapped file the others are never read. `weights=False`: its
    structure only, on the meta device (the weights' names and shapes checked, none read: what `info` needs)."""
    if rows is not None:
        n = _table_rows(state, cfg)
        if bad := [i for i in rows if not 0 <= i < n]:
            raise TRMEdgeError(f"--puzzle-ids: {bad[:5]} outside the model's table of {n} rows")
        cfg = dataclasses.replace(cfg, num_puzzle_identifiers=len(rows))
        if PUZZLE_TABLE in state:
            state = dict(state, **{PUZZLE_TABLE: state[PUZZLE_TABLE][list(rows)]})
    with contextlib.nullcontext() if weights else torch.device("meta"):
        model = TRM(cfg)
    _load_state(model, state, source, weights)
    return model.eval()


def _table_rows(state: dict[str, torch.Tensor], cfg: TRMConfig) -> int:
    """Rows of the checkpoint's whole puzzle table (its shape only: nothing is read)."""
    return len(state[PUZZLE_TABLE]) if PUZZLE_TABLE in state else cfg.num_puzzle_identifiers


def with_rows(model: TRM, rows: list[int]) -> TRM:
    """A model holding only these rows of `model`'s puzzle table (see `_build`), sharing its other weights."""
    return _build(model.config, model.state_dict(), "the model", rows)


def _load_state(model: TRM, state: dict[str, torch.Tensor], source: Path | str, weights: bool = True) -> None:
    expected = {k for k in model.state_dict()}
    missing = sorted(expected - set(state))
    unknown = sorted(k for k in set(state) - expected if not _NON_PERSISTENT.search(k))
    if missing or unknown:
        parts = ([f"missing {', '.join(missing[:6])}"] if missing else []) + \
                ([f"unknown {', '.join(unknown[:6])}"] if unknown else [])
        raise TRMEdgeError(f"{source}: weights do not match the config ({'; '.join(parts)})")
    own = model.state_dict()
    for k in expected:
        if tuple(state[k].shape) != tuple(own[k].shape):
            raise TRMEdgeError(f"{source}: {k} has shape {tuple(state[k].shape)}, the config expects "
                               f"{tuple(own[k].shape)}")
    if weights:  # assigned, not copied: a memory-mapped tensor stays on disk until read
        model.load_state_dict({k: state[k].to(own[k].dtype) for k in expected}, strict=True, assign=True)


def export_official(model: TRM, out_dir: str | os.PathLike, step: int = 0, task: str | None = None) -> Path:
    """Write `step_N`, `all_config.yaml` and `dataset.json` as the official trainer (TRM's or HRM's, by the model's
    family) and builders do."""
    c = model.config
    arch = {k: v for k, v in c.to_dict().items()
            if k not in ("vocab_size", "seq_len", "num_puzzle_identifiers", "family")}
    if c.family == "hrm":
        arch.pop("puzzle_emb_len")
        arch.update(name="hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1")
    else:
        arch.update(H_layers=0, no_ACT_continue=True, name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1")
    arch.update(loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"})
    init_dtype = getattr(torch, c.forward_dtype)
    state = {f"{OFFICIAL_PREFIXES[0]}{k}": (v.to(init_dtype) if k in ("H_init", "L_init") else v).clone()
             for k, v in model.state_dict().items()}
    dataset = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": c.vocab_size,
               "seq_len": c.seq_len, "num_puzzle_identifiers": c.num_puzzle_identifiers, "total_groups": 1,
               "mean_puzzle_examples": 1.0, "total_puzzles": 1, "sets": ["all"]}

    def write(tmp: Path) -> None:
        torch.save(state, tmp / f"step_{step}")
        (tmp / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "project_name": "trm-edge",
                                                             "data_paths": [task or "data"]}))
        (tmp / "dataset.json").write_text(json.dumps(dataset))

    return atomic_dir(out_dir, write, "official checkpoint")


# -- our format --------------------------------------------------------------------------------------

def save(model: TRM, out_dir: str | os.PathLike, graph: Path | None = None, **meta: Any) -> Path:
    """safetensors weights + config.json; `meta` (task, recipe, figures) is stored beside the config. `graph`: an
    ONNX file beside `out_dir` (a bundle's): each weight it already holds, as it is, transposed or in pieces, stays
    there only (a bundle carries its weights once) and config.json says where (`in_graph`)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    shared = _held_by(state, graph) if graph is not None else {}

    def write(tmp: Path) -> None:
        save_file({k: v for k, v in state.items() if k not in shared}, str(tmp / OUR_WEIGHTS))
        doc = {"format": "trm-edge-model", "version": 1, "config": model.config.to_dict(), "meta": meta}
        if shared:
            doc["in_graph"] = {"file": graph.name, "tensors": shared}
        (tmp / OUR_CONFIG).write_text(json.dumps(doc, indent=2))

    return atomic_dir(out_dir, write, "model")


def load(path: str | os.PathLike, rows: list[int] | None = None, weights: bool = True) -> tuple[TRM, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(path)
    doc = load_json(d / OUR_CONFIG, "trm-edge model config")
    try:
        cfg = TRMConfig.from_dict(doc["config"])
    except (ValueError, KeyError, TypeError):
        raise TRMEdgeError(f"{d / OUR_CONFIG}: not a trm-edge model config") from None
    try:
        state = load_file(str(d / OUR_WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise TRMEdgeError(f"{d / OUR_WEIGHTS}: unreadable weights ({str(e)[:100]}); re-save the model") from None
    if "in_graph" in doc:
        state.update(_from_graph(d, doc["in_graph"]))
    return _build(cfg, state, d / OUR_WEIGHTS, rows, weights), dict(doc.get("meta") or {}, source=str(d),
                                                                    format="trm-edge", puzzle_ids=rows)


# -- weights a bundle's graph already holds ------------------------------------------------------------

def _held_by(state: dict[str, torch.Tensor], graph: Path) -> dict[str, list[list]]:
    """name -> [[initializer, transposed], ...] for each weight of `state` that `graph`'s initializers hold bit
    for bit, whole or as pieces along its first axis (the exporter stores Linear weights transposed and SwiGLU's
    gate/up halves apart: export.graphs). The rest is left to the model's own file."""
    import hashlib

    import numpy as np
    import onnx

    def key(a: np.ndarray) -> tuple:  # hashed in place where contiguous (a whole ARC table is 1.8 GB)
        return a.shape, a.dtype.str, hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()

    def ways(a: np.ndarray) -> list[list[np.ndarray]]:
        return [[a], np.split(a, 2)] if a.ndim and len(a) % 2 == 0 else [[a]]

    arrays = {k: v.numpy() for k, v in state.items() if v.dtype == torch.float32}
    wanted = {p.shape for a in arrays.values() for pieces in ways(a) for p in pieces}
    proto = onnx.load(str(graph), load_external_data=False)
    found: dict[tuple, list] = {}
    for t in proto.graph.initializer:
        dims = tuple(t.dims)
        if t.data_type != onnx.TensorProto.FLOAT or (dims not in wanted and dims[::-1] not in wanted):
            continue
        a = _array(t, graph.parent)
        if dims in wanted:
            found.setdefault(key(a), [t.name, False])
        if a.ndim == 2 and dims[::-1] in wanted:
            found.setdefault(key(a.T), [t.name, True])
    held = {}
    for name, a in arrays.items():
        for pieces in ways(a):
            keys = [key(p) for p in pieces]
            if all(k in found for k in keys):
                held[name] = [found[k] for k in keys]
                break
    return held


def _array(t, base: Path):
    """An initializer's values, its external data (a plain file name in `base`) read where it has some."""
    from onnx import numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    if uses_external_data(t):
        load_external_data_for_tensor(t, str(base))
    return numpy_helper.to_array(t)


def _from_graph(d: Path, doc: Any) -> dict[str, torch.Tensor]:
    """The weights config.json's `in_graph` says a graph beside the model holds (see `_held_by`)."""
    bad = TRMEdgeError(f"{d / OUR_CONFIG}: its in_graph entry is not one trm-edge writes; re-export the bundle")
    try:
        file, tensors = doc["file"], doc["tensors"]
        pieces = {name: [(str(i), bool(t)) for i, t in parts] for name, parts in tensors.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise bad from None
    if not isinstance(file, str) or not re.fullmatch(r"[\w-][\w.-]*\.onnx", file) or not pieces:
        raise bad
    graph = d.parent / file
    if not graph.is_file():
        raise TRMEdgeError(f"{d}: its weights are partly in {graph}, which is missing; open the whole bundle")
    check_regular(graph, "graph")
    require("the weights in a bundle's graph", "export", "onnx")
    import numpy as np
    import onnx

    try:
        proto = onnx.load(str(graph), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's decode errors have no common public type
        raise TRMEdgeError(f"{graph}: not a valid ONNX graph ({str(e)[:80]}); re-export the bundle") from None
    inits = {t.name: t for t in proto.graph.initializer}
    out = {}
    for name, parts in pieces.items():
        arrays = []
        for init, transposed in parts:
            t = inits.get(init)
            if t is None:
                raise bad
            if any(e.key == "location" and not re.fullmatch(r"[\w-][\w.-]*", e.value) for e in t.external_data):
                raise bad
            a = _array(t, graph.parent)
            arrays.append(a.T if transposed and a.ndim == 2 else a)
        try:
            out[name] = torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays)))
        except ValueError:
            raise bad from None
    return out


def with_config(model: TRM, cfg: TRMConfig) -> TRM:
    """The same weights under another config (e.g. another forward dtype)."""
    new = TRM(cfg)
    new.load_state_dict(model.state_dict())
    return new
