"""One library function per CLI command: the CLI only parses options and calls these."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trm_edge import hub
from trm_edge.bundle import MANIFEST, Bundle
from trm_edge.config import find_dataset_seq_len
from trm_edge.errors import TRMEdgeError
from trm_edge.evaluate import arc_pass_at, evaluate, in_batches, row_scores, score
from trm_edge.extras import require
from trm_edge.halting import HaltPolicy, Solution
from trm_edge.tasks import Codec, Pair, codec_for, looks_like_a_path, read_puzzles, read_source
from trm_edge.tasks.arc_rows import TaskRows
from trm_edge.views import solve_views, view_policy

BUILTIN_DATA = Path(__file__).parent / "data"


def is_model_path(arg: str) -> bool:
    """A model is a directory (ours, an official run, a bundle), an official `step_N` file or a run on the hub
    (hf://); puzzles never are."""
    # os.path's tests, unlike Path's, answer False for names the OS refuses (too long, NUL bytes)
    return bool(arg) and (hub.is_reference(arg) or os.path.isdir(arg) or (
        os.path.isfile(arg) and re.fullmatch(r"step_\d+", Path(arg).name) is not None))


def is_bundle(source: str | None) -> bool:
    return bool(source) and os.path.exists(os.path.join(source, MANIFEST))  # a FIFO there is refused by Bundle


@dataclass
class Loaded:
    """A model ready to solve, whatever it was loaded from."""

    config: Any
    meta: dict
    codec: Codec
    solve: Callable[[np.ndarray, HaltPolicy], Solution]
    describe: str
    halt: HaltPolicy  # the halting policy the model recommends (its metadata, or the bundle's manifest), parsed
    graph: str = "step"  # the form that runs: only the step graph's host loop checks answers between steps
    model: Any = None  # the PyTorch reference (what export starts from); None for a bundle
    # continuous batching over views (Solver.solve_stream): a bundle's step graph; None where there is none
    stream: Callable[..., Solution] | None = None
    rows: TaskRows | None = None  # an ARC bundle's named puzzle rows (export --tasks)

    def solve_all(self, puzzles: np.ndarray, policy: HaltPolicy, views: int, batch: int,
                  advance: Callable[[int], None] | None = None) -> Solution:
        """Every puzzle in up to `views` views, `batch` rows at a time: continuous batching where the model has
        it (a solved puzzle's slot goes to the next puzzle), else rounds of views over batches of puzzles."""
        if self.stream:
            return self.stream(puzzles, policy, slots=batch, views=views, advance=advance)
        return in_batches(lambda rows: solve_views(self.solve, self.codec, puzzles[rows], policy, views), len(puzzles),
                          batch, advance)


@dataclass(frozen=True)
class Opening:
    """How to open what a path names. A model: its task and sequence length where its files do not say, its depth
    ("H,L": cycles per supervision step), and the only puzzle-table rows to read (the model's puzzle ids then index
    them in this order), and its dataset (official layout: its sequence length when the model's files do not say, and
    the puzzles of a task trm-edge does not know). A bundle: the engine (ORT by default), the graph form, the precision
    and the threads."""
    task: str | None = None
    seq_len: int | None = None
    depth: str | None = None
    puzzle_ids: tuple[int, ...] | None = None
    backend: str | None = None
    graph: str = "step"
    precision: str = "fp32"
    threads: int | None = None
    dataset: str | None = None


def open_model(source: str | None, how: Opening = Opening()) -> Loaded:
    """Whatever a path names: a bundle (run by `how.backend`), a model (the PyTorch reference), or the bundled
    default model when `source` is None, or a run on the hub (hf://, fetched first); what does not apply to it is
    refused."""
    source = hub.resolve(source)
    task, seq_len, depth, puzzle_ids = how.task, how.seq_len, how.depth, how.puzzle_ids
    backend, graph, precision, threads = how.backend, how.graph, how.precision, how.threads
    _refuse_what_does_not_apply(source, {"--task": task, "--seq-len": seq_len, "--depth": depth,
                                         "--puzzle-ids": puzzle_ids},
                                {"--graph": graph != "step" and graph, "--precision": precision != "fp32" and precision,
                                 "--threads": threads})
    if is_bundle(source):
        from trm_edge.benchmarks.tune import pick
        from trm_edge.runtimes import open_solver

        b = Bundle(source)
        route, was_tuned = pick(b, backend, graph, precision, threads)
        solver = open_solver(b, route.backend, route.graph, route.precision, route.threads)
        d, graph = solver.describe(), route.graph
        what = f"{d['backend']} {d.get('version', '')} {graph} {route.precision}" + (" (tuned)" if was_tuned else "")
        return Loaded(solver.config, {"task": solver.codec.name, "source": source}, solver.codec, solver.solve,
                      f"{what} ({source})", solver.halt, graph,
                      stream=solver.solve_stream if graph == "step" else None, rows=b.arc_rows)
    if backend not in (None, "torch", "auto"):
        raise TRMEdgeError(f"--backend {backend} runs exported bundles; export this model first (trm-edge export)")
    needs_torch(source)
    import torch

    from trm_edge.checkpoint import load_model
    from trm_edge.model import Batch

    rows = list(puzzle_ids) if puzzle_ids else None
    if how.dataset and seq_len is None:
        seq_len = find_dataset_seq_len(Path(how.dataset))
    model, meta = load_model(source, seq_len=seq_len, depth=parse_depth(depth) if depth else None, rows=rows)
    if fetched := hub.origin(meta["source"]):  # where the weights came from, as an exported bundle's source says
        meta = dict(meta, source=fetched)
    meta = dict(meta, dataset=how.dataset or meta.get("dataset"))
    cfg = model.config
    codec = codec_for(task or meta.get("task"), cfg.vocab_size, cfg.seq_len, source, meta["dataset"])

    def solve(tokens: np.ndarray, policy: HaltPolicy, puzzle_ids: np.ndarray | None = None) -> Solution:
        t = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
        ids = torch.zeros(len(t), dtype=torch.long) if puzzle_ids is None else torch.from_numpy(
            np.asarray(puzzle_ids, np.int64))
        return model.solve(Batch(t, ids), policy, codec.checker(t.numpy()) if policy.verify else None)

    return Loaded(cfg, meta, codec, solve, f"torch reference ({meta.get('source')})",
                  HaltPolicy.parse(meta.get("recommended_halt") or "fixed", cfg.halt_max_steps), model=model)


def _refuse_what_does_not_apply(source: str | None, for_models: dict, for_bundles: dict) -> None:
    """An option meant for the other kind of source would be silently ignored: it is refused instead."""
    bundle = is_bundle(source)
    given = [k for k, v in (for_models if bundle else for_bundles).items() if v]
    if given and bundle:
        raise TRMEdgeError(f"{given[0]} applies to models; {source} is an exported bundle, whose task, sequence "
                           "length, depth and puzzle rows were fixed by its export (re-export the model to change "
                           "them)")
    if given:
        raise TRMEdgeError(f"{given[0]} applies to exported bundles; {source or 'the bundled model'} is a model, run "
                           "on the PyTorch reference (trm-edge export makes a bundle)")


# -- info --------------------------------------------------------------------------------------------

def needs_torch(source: str | None) -> None:
    """A model (unlike a bundle) runs on the PyTorch reference, which a device's runtime-only install lacks."""
    require(f"{source or 'the bundled model'} (a model, not an exported bundle)", "export", "torch")


def info(source: str | None, seq_len: int | None = None) -> dict:
    """`info`: a bundle's manifest (read without torch, as on a device), else a model's config, size and FLOPs."""
    source = hub.resolve(source)
    if not is_bundle(source):
        return dict(model_info(source, seq_len), kind="model")
    if seq_len is not None:
        raise TRMEdgeError(f"{source}: --seq-len is for checkpoints; a bundle's sequence length is in its manifest")
    return dict(bundle_summary(source), kind="bundle")


def model_info(source: str | None, seq_len: int | None = None) -> dict:
    """Read from the config and the weights' shapes alone: an official ARC file is ~1.8 GB of puzzle table."""
    needs_torch(source)
    from trm_edge.checkpoint import load_model

    model, meta = load_model(source, seq_len=seq_len, weights=False)
    cfg = model.config
    src = Path(meta["source"])
    files = [src] if src.is_file() else sorted(f for f in src.iterdir() if f.is_file())
    per_step = cfg.flops_per_step()
    return {
        "source": str(src), "format": meta.get("format"), "task": meta.get("task"),
        "config": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "puzzle_embedding_rows": cfg.num_puzzle_identifiers if cfg.puzzle_emb_ndim else 0,  # none without a table
        "flops_per_step": per_step,
        "flops_per_solve": per_step * cfg.halt_max_steps,
        "module_calls_per_step": cfg.H_cycles * (cfg.L_cycles + 1),
        "files": {f.name: f.stat().st_size for f in files},
    }


def split_list(text: str | None) -> list[str]:
    """`a,b, c` -> ['a', 'b', 'c']."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TRMEdgeError(f"{option} {text!r}: expected comma-separated integers") from None


def parse_depth(text: str) -> tuple[int, int]:
    """`--depth H,L`: H_cycles and L_cycles per supervision step."""
    vals = parse_int_list(text, "--depth")
    if len(vals) != 2 or not all(1 <= v <= 64 for v in vals):
        raise TRMEdgeError(f"--depth {text!r}: give H,L cycles, each 1-64 (the official Sudoku-MLP uses 3,6)")
    return vals[0], vals[1]


def bundle_summary(bundle: str | os.PathLike | Bundle) -> dict:
    """The manifest a person reads (export prints it, `info BUNDLE` shows it without torch): task, recommended halting,
    config, files per format, graph and precision, each format's verification and quantization, the export's notes.
    A Bundle already opened is not read again (opening one hashes every file)."""
    b = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    m = b.manifest
    sections = b.sections()
    init_ms = {("onnx", g): info.get("session_init_ms") for g, info in m["graphs"].items()}
    init_ms.update({(f, g): ms for f, sec in m.get("formats", {}).items()
                    for g, ms in sec.get("session_init_ms", {}).items()})
    rows = [{"format": fmt, "graph": g, "precision": prec, "file": f, "mb": b.graph_bytes(g, prec, fmt) / 1e6,
             "session_init_ms": init_ms.get((fmt, g)) if prec == "fp32" else None}  # measured on fp32
            for fmt, forms in b.formats().items() for g, files in forms.items() for prec, f in files.items()]
    return {"path": str(b.path), "task": b.task, "halting": b.halting, "config": b.config.to_dict(), "graphs": rows,
            "verification": {fmt: sec.get("verification", {}) for fmt, sec in sections.items()},
            "quantization": {f"{fmt} {mode}": q for fmt, sec in sections.items()
                             for mode, q in sec.get("quantization", {}).items()},
            "notes": m.get("notes", []), **({"trained_dtype": m["trained_dtype"]} if "trained_dtype" in m else {}),
            **({"arc_tasks": {t: len(named.rows_of(t)) for t in named.tasks}} if (named := b.arc_rows) else {})}


# -- solve -------------------------------------------------------------------------------------------

def split_model_and_puzzles(args: list[str]) -> tuple[str | None, list[str]]:
    """`[MODEL] PUZZLE...`: the first argument is the model when it names one."""
    if args and is_model_path(args[0]):
        if len(args) == 1:
            raise TRMEdgeError(f"{args[0]} is a model: give at least one PUZZLE after it (a string, a file, or -)")
        return args[0], args[1:]
    if len(args) > 1 and not os.path.exists(args[0]) and looks_like_a_path(args[0]):
        raise TRMEdgeError(f"{args[0]}: no such bundle, model or puzzle file")
    if not args:
        raise TRMEdgeError("give at least one PUZZLE: a puzzle string, a file with one puzzle a line, or -")
    return None, args


def _policy(loaded: Loaded, halt: str | None, views: int) -> HaltPolicy:
    """The policy asked for, else the model's recommended one (with several views, its verifying form)."""
    if halt:
        return HaltPolicy.parse(halt, loaded.config.halt_max_steps)
    return view_policy(loaded.halt, views, loaded.graph == "step")


def solve_puzzles(loaded: Loaded, sources: list[str], halt: str | None = None, batch_size: int = 64,
                  views: int | None = None) -> dict:
    """Answers to every puzzle; `views` defaults to the task's (16 for sudoku: RESULTS.md, "Solve more")."""
    views = views or loaded.codec.default_views
    policy = _policy(loaded, halt, views)
    pairs: list[Pair] = [pair for s in sources for pair in read_puzzles(loaded.codec, s)]
    puzzles = np.stack([p for p, _ in pairs])
    t0 = time.perf_counter()
    sol = loaded.solve_all(puzzles, policy, views, batch_size)
    elapsed = time.perf_counter() - t0
    codec = loaded.codec
    by = ["label" if lab is not None else "rules" if codec.rules else None for _, lab in pairs]  # None: unjudged
    judged = np.array([b is not None for b in by])
    exact = np.zeros(len(pairs), bool)
    exact[judged] = row_scores(codec, puzzles[judged], [lab for (_, lab), j in zip(pairs, judged) if j],
                               sol.tokens[judged])[0]
    results = [{"puzzle": codec.compact(p), "answer": None if sol.fault[i] else codec.compact(sol.tokens[i]),
                "tokens": None if sol.fault[i] else sol.tokens[i].tolist(),
                "solved": bool(exact[i]) if judged[i] else None, "checked_by": by[i],
                "steps": int(sol.steps[i]), "q_halt": float(sol.q_halt[i]) if np.isfinite(sol.q_halt[i]) else None,
                "fault_step": int(sol.fault[i]) or None, "view": int(sol.view[i]) + 1,
                "view_steps": int(sol.view_steps[i])} for i, p in enumerate(puzzles)]
    return {"model": loaded.describe, "halt": str(policy), "views": views, "n": len(results),
            "solved": int(exact.sum()), "judged": int(judged.sum()),
            "faults": int((sol.fault > 0).sum()), "seconds": elapsed, "ms_per_puzzle": 1000 * elapsed / len(results),
            "results": results}


# -- eval --------------------------------------------------------------------------------------------

def builtin_data(task: str) -> list[Path]:
    files = sorted(BUILTIN_DATA.glob(f"{task}-*.txt"))
    if not files:
        raise TRMEdgeError(f"no builtin {task} data in this install; pass --data FILE")
    return files


def dataset_among(data: list[str] | None) -> str | None:
    """The first of `--data` that is a dataset in the official layout: what a model reads its shape from."""
    return next((d for d in data or [] if (Path(d) / "test" / "dataset.json").is_file()), None)


def eval_model(loaded: Loaded, data: list[str], halts: list[str] | None = None, batch_size: int = 64,
               limit: int | None = None, advance: Callable[[int], None] | None = None, views: list[int] = (1,),
               per_task: int | None = None) -> dict:
    """Exact-solve rate, token accuracy and steps per data file, halting policy and number of views."""
    files = [p for d in data for p in (builtin_data(loaded.codec.name) if d == "builtin" else [Path(d)])]
    runs = []
    for f in files:
        if (f / "test" / "dataset.json").is_file():
            if set(views) != {1}:
                raise TRMEdgeError(f"{f}: a dataset is evaluated on the variants it holds; --views applies to "
                                   "puzzle files")
            runs += [eval_dataset(loaded, f, h, batch_size, advance, per_task) for h in halts or [None]]
            continue
        if not f.is_file():
            raise TRMEdgeError(f"{f}: {'is a directory, not' if f.is_dir() else 'no such'} data file")
        pairs = read_puzzles(loaded.codec, os.fspath(f))[:limit]
        for h, k in itertools.product(halts or [None], views):
            policy = _policy(loaded, h, k)
            t0 = time.perf_counter()
            summary, _ = evaluate(lambda x, p=policy, k=k: loaded.solve_all(x, p, k, batch_size, advance),
                                  loaded.codec, pairs, max(len(pairs), 1))
            runs.append(dict(summary, data=f.name, halt=str(policy), views=k,
                             seconds=round(time.perf_counter() - t0, 2)))
    return {"model": loaded.describe, "runs": runs}


def eval_dataset(loaded: Loaded, root: Path, halt: str | None, batch_size: int,
                 advance: Callable[[int], None] | None = None, per_task: int | None = None) -> dict:
    """The test split of a dataset in the official layout (trm-edge data build, or the official builders), each
    row under its puzzle identifier; for ARC also pass@1/pass@2 by the official vote over the augmented variants
    (evaluate.arc_pass_at)."""
    from trm_edge.training.datasets import read_dataset

    ds = read_dataset(root, "test")
    loaded.codec.check_dataset(ds.metadata, root)
    ids = np.repeat(ds.puzzle_identifiers, np.diff(ds.puzzle_indices)).astype(np.int64)
    inputs, labels = np.asarray(ds.inputs, np.int64), np.asarray(ds.labels, np.int64)
    if loaded.rows is not None:  # a bundle of some tasks' rows: the dataset's rows it carries, by name
        at = {n: i for i, n in enumerate(loaded.rows.names)}
        keep = np.array([ds.identifiers[i] in at for i in ids], bool)
        if not keep.any():
            raise TRMEdgeError(f"{root}: none of its test rows is among the bundle's, which carries "
                               f"{', '.join(loaded.rows.tasks[:5])}; evaluate the dataset it was exported from")
        ids, inputs, labels = np.array([at[ds.identifiers[i]] for i in ids[keep]], np.int64), inputs[keep], labels[keep]
    names = list(loaded.rows.names) if loaded.rows is not None else ds.identifiers
    if per_task is not None and loaded.codec.name == "arc":  # each task's first K variants, in identifier order
        from trm_edge.tasks.arc_rows import first_variants

        keep = first_variants(names, per_task)[ids]
        ids, inputs, labels = ids[keep], inputs[keep], labels[keep]
    rows = getattr(loaded.config, "num_puzzle_identifiers", 1)
    if len(ids) and ids.max() >= rows:
        raise TRMEdgeError(f"{root}: puzzle identifiers reach {ids.max()}, but the model has {rows} puzzle "
                           "embeddings: evaluate a dataset built for this model (same identifiers.json)")
    policy = _policy(loaded, halt, 1)
    t0 = time.perf_counter()
    sol = in_batches(lambda rows: loaded.solve(inputs[rows], policy, ids[rows]), len(inputs), batch_size, advance)
    run = dict(score(loaded.codec, inputs, list(labels), sol), data=root.name, halt=str(policy), views=1,
               seconds=round(time.perf_counter() - t0, 2))
    if loaded.codec.name == "arc":
        run["vote"] = arc_pass_at([names[i] for i in ids], inputs, labels, sol.tokens, sol.q_halt)
    return run


# -- ARC by task -------------------------------------------------------------------------------------

def arc_export_rows(source: str | None, tasks: str, per_task: int, dataset: str | None
                    ) -> tuple[tuple[int, ...], TaskRows, int]:
    """`export --tasks`: the puzzle rows of those tasks' first `per_task` variants, their names, and how many rows the
    dataset names, from the dataset that names the checkpoint's rows (`dataset`, else the official run's
    data_paths)."""
    from trm_edge.config import official_dataset
    from trm_edge.tasks.arc_rows import from_dataset

    wanted = split_list(tasks)
    if not wanted:
        raise TRMEdgeError("--tasks: give ARC task ids, comma-separated (e.g. 00576224,009d5c81)")
    if dataset is not None:
        root = Path(dataset)
        if not root.is_dir():
            raise TRMEdgeError(f"--dataset {dataset}: no such dataset directory")
    else:
        src = Path(source) if source else None
        run = None if src is None else src if src.is_dir() else src.parent
        root = official_dataset(run, "identifiers.json") if run and (run / "all_config.yaml").is_file() else None
        if root is None:
            raise TRMEdgeError("--tasks needs the dataset that names the checkpoint's puzzle rows (its "
                               "identifiers.json): pass --dataset DIR, or rebuild it with `trm-edge data build arc "
                               "--knob names_only=true`")
    rows, named, total = from_dataset(root, wanted, per_task)
    return tuple(rows), named, total


def solve_arc_tasks(loaded: Loaded, sources: list[str], task_name: str | None = None, halt: str | None = None,
                    batch_size: int = 64, per_task: int | None = None,
                    progress: Callable[[str, int, int], None] = lambda what, done, total: None) -> dict:
    """ARC the official way on a bundle of named rows: each task's test inputs under every variant the bundle carries
    for it (or its first `per_task`), recoloured and turned as its puzzles were; the answers mapped back and voted on
    (evaluate.arc_vote); the two most voted are its attempts, as ARC Prize's submission.json holds them. `progress`
    hears each task's solves as they finish (minutes a task at ARC Prize's size)."""
    from trm_edge.evaluate import arc_vote, grid_key
    from trm_edge.tasks.arc import task_grids
    from trm_edge.tasks.arc_rows import variant_rows

    if loaded.rows is None or loaded.codec.name != "arc":
        raise TRMEdgeError("solving a task by its variants needs an ARC bundle exported with --tasks")
    if task_name and len(sources) > 1:
        raise TRMEdgeError("--task-name names one task: give one task file with it")
    policy = _policy(loaded, halt, 1)
    tasks = []
    t0 = time.perf_counter()
    for source in sources:
        text, origin = read_source(source)
        try:
            demos, tests = task_grids(text)
        except TRMEdgeError as e:
            raise TRMEdgeError(f"{origin or 'input'}: {e}") from None
        stem = Path(origin).stem if origin not in (None, "<stdin>") else None
        task = loaded.rows.find(demos, task_name, stem)
        tokens, ids, names = variant_rows(loaded.rows, task, [x for x, _ in tests], per_task)
        what, done = f"{task}: {len(tokens)} solves (test inputs x variants)", [0]

        def advance(n: int, what=what, done=done, total=len(tokens)) -> None:
            done[0] += n
            progress(what, done[0], total)

        sol = in_batches(lambda r, t=tokens, i=ids: loaded.solve(t[r], policy, i[r]), len(tokens), batch_size,
                         advance)
        ok = sol.fault == 0
        votes = arc_vote([n for n, good in zip(names, ok) if good], tokens[ok], sol.tokens[ok], sol.q_halt[ok])
        pairs = []
        for x, y in tests:
            ranked = votes.get((task, grid_key(x)), [])[:2]
            pairs.append({"attempts": [g.tolist() for g, _, _ in ranked], "votes": [n for _, n, _ in ranked],
                          "mean_halt": [round(q, 4) for _, _, q in ranked],
                          "correct": None if y is None else any(np.array_equal(g, y) for g, _, _ in ranked)})
        tasks.append({"task": task, "source": origin or "<text>", "variants": len(tokens) // len(tests),
                      "pairs": pairs, "mean_steps": float(sol.steps.mean()), "faults": int((~ok).sum())})
    return {"model": loaded.describe, "halt": str(policy), "seconds": time.perf_counter() - t0, "tasks": tasks}


def submission(result: dict) -> dict:
    """ARC Prize's submission.json: per task, per test input, attempt_1 and attempt_2 (the first answer twice where
    the vote found one answer; [[0]] where no variant gave one)."""
    def attempts(pair: dict) -> dict:
        found = pair["attempts"] or [[[0]]]
        return {"attempt_1": found[0], "attempt_2": found[-1] if len(found) > 1 else found[0]}

    return {t["task"]: [attempts(p) for p in t["pairs"]] for t in result["tasks"]}
