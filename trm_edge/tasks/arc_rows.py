"""ARC the official way from a few rows of the puzzle table: which rows belong to which task, which task a JSON is,
and the vote over a task's augmented variants (evaluate.arc_vote).

An official ARC checkpoint learns one puzzle-embedding row per augmented puzzle, named in its dataset's
`identifiers.json` ('<task>|||t<k>|||<colour permutation>', the bare task id for the identity). Row 0 is the blank
identifier, on which a TRM scores ~0%: a task must be solved under its own rows. numpy and the stdlib only: a bundle's
rows are read on the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.arc import COLOUR0, SEPARATOR, SIDE, dihedral, encode_grid, parse_variant
from trm_edge.untrusted import check_npy, load_json

MAX_NAME = 256  # characters of one row name read from a bundle


def grid_at(tokens: np.ndarray) -> np.ndarray:
    """The grid on a canvas wherever it sits (a training example may be translated): every grid cell is a colour
    token and nothing around it is, so its bounding box is the grid."""
    canvas = np.asarray(tokens).reshape(SIDE, SIDE)
    rows, cols = np.flatnonzero((canvas >= COLOUR0).any(1)), np.flatnonzero((canvas >= COLOUR0).any(0))
    if not len(rows):
        return np.zeros((0, 0), np.int64)
    return canvas[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1].astype(np.int64) - COLOUR0


def pair_digest(x: np.ndarray, y: np.ndarray) -> str:
    """A demonstration pair's fingerprint: what finds a task in a bundle by content, whatever its file is named."""
    h = hashlib.sha256()
    for g in (x, y):
        g = np.ascontiguousarray(g, np.uint8)
        h.update(np.asarray(g.shape, np.int64).tobytes() + g.tobytes())
    return h.hexdigest()[:32]


def first_variants(names: Sequence[str], per_task: int) -> np.ndarray:
    """Per name, whether it is among its task's first `per_task` in this order (row 0, the blank, never is)."""
    seen: dict[str, int] = {}
    keep = np.zeros(len(names), bool)
    for i, name in enumerate(names):
        if i or name != "<blank>":
            task = name.split(SEPARATOR, 1)[0]
            keep[i] = seen.get(task, 0) < per_task
            seen[task] = seen.get(task, 0) + 1
    return keep


def select_rows(identifiers: Sequence[str], tasks: Sequence[str], per_task: int) -> list[int]:
    """The table rows of each task's first `per_task` variants in identifier order (the official builder numbers a
    task's identity first, then its augmentations), task by task."""
    by_task: dict[str, list[int]] = {}
    for i in np.flatnonzero(first_variants(identifiers, per_task)):
        by_task.setdefault(identifiers[i].split(SEPARATOR, 1)[0], []).append(int(i))
    if missing := [t for t in tasks if t not in by_task]:
        raise TRMEdgeError(f"--tasks: {', '.join(missing[:5])} not among the dataset's {len(identifiers)} puzzle "
                           "identifiers (check the task ids, and that the dataset is the one this checkpoint was "
                           "trained on)")
    return [i for t in dict.fromkeys(tasks) for i in by_task[t]]


@dataclass(frozen=True)
class TaskRows:
    """The names of a bundle's puzzle-table rows (names[i] names row i), and per task the fingerprints of its
    demonstration pairs as the dataset held them (empty when the dataset had only its identifiers)."""

    names: tuple[str, ...]
    pairs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @cached_property
    def _by_task(self) -> dict[str, list[int]]:
        """Each task's rows, in row order: the names parsed once."""
        by_task: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            by_task.setdefault(parse_variant(n)[0], []).append(i)
        return by_task

    @property
    def tasks(self) -> list[str]:
        return list(self._by_task)

    def rows_of(self, task: str) -> list[int]:
        return self._by_task.get(task, [])

    def to_manifest(self) -> dict:
        return {"names": list(self.names), "pairs": {t: list(p) for t, p in self.pairs.items()}}

    @classmethod
    def from_manifest(cls, doc: Any, rows: int) -> TaskRows:
        """A bundle's `arc_rows`, checked: a stranger's manifest is untrusted."""
        ok = isinstance(doc, dict) and isinstance(doc.get("names"), list) and isinstance(doc.get("pairs", {}), dict)
        names = doc["names"] if ok else []
        ok = ok and len(names) == rows and all(isinstance(n, str) and len(n) <= MAX_NAME for n in names)
        pairs = doc.get("pairs", {}) if ok else {}
        ok = ok and all(isinstance(t, str) and isinstance(p, list) and all(isinstance(d, str) and len(d) == 32
                                                                           for d in p) for t, p in pairs.items())
        if not ok:
            raise TRMEdgeError(f"bundle manifest: arc_rows must name each of the {rows} puzzle rows and map tasks to "
                               "pair fingerprints; re-export the bundle")
        try:
            for n in names:
                parse_variant(n)
        except TRMEdgeError as e:
            raise TRMEdgeError(f"bundle manifest: arc_rows: {e}; re-export the bundle") from None
        return cls(tuple(names), {t: tuple(p) for t, p in pairs.items()})

    def find(self, demos: Sequence[tuple[np.ndarray, np.ndarray]], name: str | None, stem: str | None) -> str:
        """The task a JSON is: `name` if given, else its file's stem if the bundle carries that task, else the task
        whose demonstration pairs include all of the JSON's."""
        carried = self.tasks
        if name is not None:
            if name not in carried:
                raise TRMEdgeError(f"--task-name {name}: this bundle carries the rows of {_listing(carried)} only; "
                                   "re-export with --tasks to add it")
            return name
        if stem in carried:
            return stem
        mine = {pair_digest(x, y) for x, y in demos}
        found = [t for t in carried if mine and mine <= set(self.pairs.get(t, ()))]
        if len(found) == 1:
            return found[0]
        how = "several tasks match its demonstrations" if found else "no task's demonstrations match it" if \
            self.pairs else "this bundle holds no demonstration fingerprints to match it by"
        raise TRMEdgeError(f"which task is this? {how}; this bundle carries {_listing(carried)}: pass --task-name")


def _listing(tasks: list[str]) -> str:
    return ", ".join(tasks[:6]) + (f" and {len(tasks) - 6} more" if len(tasks) > 6 else "")


def variant_rows(rows: TaskRows, task: str, test_inputs: Sequence[np.ndarray], per_task: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list]:
    """Every test input under the first `per_task` (default: every) variants the bundle carries for `task`: (tokens
    [n, 900], the rows' puzzle ids, their names), the input recoloured then turned as the variant's puzzles were, at
    the canvas' corner."""
    tokens, ids, names = [], [], []
    for x in test_inputs:
        for r in rows.rows_of(task)[:per_task]:
            _, k, colours = parse_variant(rows.names[r])
            tokens.append(encode_grid(dihedral(colours[np.asarray(x)], k)))
            ids.append(r)
            names.append(rows.names[r])
    return np.stack(tokens).astype(np.int64), np.asarray(ids, np.int64), names


def from_dataset(root: Path, tasks: Sequence[str], per_task: int) -> tuple[list[int], TaskRows, int]:
    """The rows to keep for `tasks` (select_rows), their TaskRows and the number of rows the dataset names, from a
    dataset in the official layout: its
    identifiers.json, and where its train split is there, the identity puzzles' demonstrations (memory-mapped: an
    official ARC training split is gigabytes, of which this reads a few examples)."""
    ids_file = root / "identifiers.json"
    if not ids_file.is_file():
        raise TRMEdgeError(f"{root}: no identifiers.json, which names the checkpoint's puzzle rows; rebuild it with "
                           "`trm-edge data build arc --knob names_only=true` (the official builder's order and seed)")
    identifiers = load_json(ids_file, "identifiers.json", 256 << 20)
    if not isinstance(identifiers, list) or not all(isinstance(n, str) and len(n) <= MAX_NAME for n in identifiers):
        raise TRMEdgeError(f"{ids_file}: not a list of puzzle names; rebuild the dataset")
    rows = select_rows(identifiers, tasks, per_task)
    index = {n: i for i, n in enumerate(identifiers)}
    return rows, TaskRows(tuple(identifiers[i] for i in rows),
                          _demo_pairs(root / "train", {t: index[t] for t in tasks if t in index})), len(identifiers)


def _demo_pairs(split: Path, identity: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Per task, the fingerprints of the examples its identity puzzles hold in this split ({} without the arrays)."""
    files = {k: split / f"all__{k}.npy" for k in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices")}
    if not all(f.is_file() for f in files.values()):
        return {}
    try:
        for f in files.values():
            check_npy(f, "dataset array")
        arr = {k: np.load(f, mmap_mode="r") for k, f in files.items()}
        pid, start = np.asarray(arr["puzzle_identifiers"]), np.asarray(arr["puzzle_indices"])
        if start.shape != (len(pid) + 1,) or arr["inputs"].shape != arr["labels"].shape or \
                arr["inputs"].shape[1:] != (SIDE * SIDE,) or start.min(initial=0) < 0 or \
                start.max(initial=0) > len(arr["inputs"]):
            raise ValueError("array shapes disagree")
        pairs = {}
        for task, ident in identity.items():
            examples = [e for p in np.flatnonzero(pid == ident) for e in range(start[p], start[p + 1])]
            pairs[task] = tuple(dict.fromkeys(pair_digest(grid_at(arr["inputs"][e]), grid_at(arr["labels"][e]))
                                              for e in examples))
        return pairs
    except (OSError, ValueError) as e:
        raise TRMEdgeError(f"{split}: unreadable dataset split ({e}); rebuild it") from None
