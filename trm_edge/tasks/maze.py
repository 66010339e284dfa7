"""Mazes in the official TRM encoding: '#' 1, ' ' 2, 'S' 3, 'G' 4, 'o' 5 (path), 0 pad; vocab 6.

The model was trained on a 30x30 canvas, so a smaller maze sits top-left and the rest is padded. Trailing
spaces are open cells: lines are never stripped inside.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.base import Codec, Pair, View

OFFICIAL_SIZE = 30
PAD, WALL, OPEN, START, GOAL, PATH = range(6)
_CHARS = "?# SGo"  # indexed by token; pad inside a maze shows as '?', as only a model's output holds it
_TOKENS = {ch: t for t, ch in enumerate(_CHARS) if t != PAD}


def _endpoints(grid: np.ndarray) -> tuple[int, int]:
    """Flat indices of S and G; anything but exactly one of each has no answer."""
    found = []
    for token, what in ((START, "'S' (start)"), (GOAL, "'G' (goal)")):
        cells = np.flatnonzero(grid == token)
        if cells.size != 1:
            raise TRMEdgeError(f"maze: expected exactly one {what}, found {cells.size}")
        found.append(int(cells[0]))
    return found[0], found[1]


def _bfs(passable: np.ndarray, start: int) -> list[int]:
    """Predecessor of each flat cell on a shortest route from start (start: itself, unreached: -1)."""
    n_rows, n_cols = passable.shape
    free = passable.ravel().tolist()
    prev = [-1] * len(free)
    prev[start] = start
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        r, c = divmod(cell, n_cols)
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            nxt = nr * n_cols + nc
            if 0 <= nr < n_rows and 0 <= nc < n_cols and free[nxt] and prev[nxt] < 0:
                prev[nxt] = cell
                queue.append(nxt)
    return prev


def _neighbour_count(on: np.ndarray) -> np.ndarray:
    """How many of each cell's 4 neighbours are on."""
    p = np.pad(on, 1).astype(np.int64)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


class MazeCodec(Codec):
    """size is the canvas side; the official checkpoints use 30."""

    name = "maze"
    vocab_size = 6
    generated = True

    def __init__(self, size: int = OFFICIAL_SIZE):
        if not isinstance(size, int) or size < 1:
            raise TRMEdgeError(f"maze: size must be a positive integer, got {size!r}")
        self.size = size
        self.seq_len = size * size

    @classmethod
    def fits(cls, vocab_size: int, seq_len: int) -> MazeCodec | None:
        """A square canvas of any side."""
        side = math.isqrt(seq_len)
        return cls(side) if vocab_size == cls.vocab_size and side * side == seq_len else None

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        from trm_edge.tasks.maze_gen import generate

        return generate(n, size=self.size, seed=10_000 + seed, canvas=self.size)[0].astype(np.int64)

    def parse(self, text: str) -> np.ndarray:
        """Rows of '#', ' ', 'S', 'G' (and 'o', so labels parse); surrounding newlines are ignored."""
        rows = text.strip("\r\n").splitlines()
        if not rows:
            raise TRMEdgeError(
                "maze: empty input; give rows of '#' walls and ' ' open cells with one 'S' and one 'G'"
            )
        width = len(rows[0])
        for i, row in enumerate(rows, 1):
            if len(row) != width:
                raise TRMEdgeError(
                    f"maze: row {i} has {len(row)} characters but row 1 has {width}"
                    " (rows must be equally wide; trailing spaces count)"
                )
        height = len(rows)
        if height > self.size or width > self.size:
            hint = (
                f"the official TRM maze is at most {OFFICIAL_SIZE}x{OFFICIAL_SIZE}"
                if max(height, width) > OFFICIAL_SIZE
                else f"use a codec of size {max(height, width)} or more"
            )
            raise TRMEdgeError(
                f"maze: grid is {height}x{width}, larger than this codec's {self.size}x{self.size} ({hint})"
            )
        grid = np.zeros((self.size, self.size), np.int64)
        for r, row in enumerate(rows):
            for c, ch in enumerate(row):
                if ch not in _TOKENS:
                    raise TRMEdgeError(
                        f"maze: illegal character {ch!r} at row {r + 1}, column {c + 1}"
                        " (use '#', ' ', 'S', 'G' or 'o')"
                    )
                grid[r, c] = _TOKENS[ch]
        _endpoints(grid)
        return grid.ravel()

    def parse_text(self, text: str) -> list[Pair]:
        """A maze given to be solved: one that has no route from S to G is refused (parse() takes any grid)."""
        puzzle = self.parse(text)
        start, goal = _endpoints(puzzle.reshape(self.size, self.size))
        if _bfs(puzzle.reshape(self.size, self.size) >= OPEN, start)[goal] < 0:
            raise TRMEdgeError("maze: no path leads from 'S' to 'G' through open cells; there is nothing to solve")
        return [(puzzle, None)]

    def views(self, n: int, rng: np.random.Generator) -> list[View]:
        """The dihedral symmetries of the square canvas (8: rotations and reflections), identity first."""
        grid = np.arange(self.seq_len).reshape(self.size, self.size)
        group = [np.rot90(g, k) for g in (grid, grid.T) for k in range(4)]  # group[0] is the identity
        order = [0, *(1 + rng.permutation(7))]
        if n > len(order):
            raise TRMEdgeError(f"maze: a square has 8 symmetries; --views {n} asks for more")
        return [View(group[i].ravel().copy(), np.arange(self.vocab_size)) for i in order[:n]]

    def render(self, tokens: np.ndarray) -> str:
        """The maze rows, with the pad cropped away."""
        grid = self.as_tokens(tokens).reshape(self.size, self.size)
        rows, cols = np.nonzero(grid)
        if rows.size == 0:
            return ""
        return "\n".join("".join(_CHARS[t] for t in row[: cols.max() + 1]) for row in grid[: rows.max() + 1])

    def check(self, puzzle: np.ndarray, answer: np.ndarray) -> bool:
        """Only open cells may turn 'o', and S, the 'o' cells and G form one simple 4-connected path.

        Each 'o' has exactly two neighbours among S/G/'o' and S and G one each; a flood from S must then reach
        every one of them, which rules out separate loops. The path need not be shortest.
        """
        given = self.as_tokens(puzzle).reshape(self.size, self.size)
        filled = self.as_tokens(answer).reshape(self.size, self.size)
        start, _ = _endpoints(given)
        free = given == OPEN
        if (filled[~free] != given[~free]).any() or not np.isin(filled[free], (OPEN, PATH)).all():
            return False
        on = np.isin(filled, (START, GOAL, PATH))
        degree = _neighbour_count(on)
        ends = (filled == START) | (filled == GOAL)
        if not ((degree[ends] == 1).all() and (degree[filled == PATH] == 2).all()):
            return False
        reached = sum(p >= 0 for p in _bfs(on, start))
        return reached == np.count_nonzero(on)


def shortest_path(puzzle: np.ndarray) -> np.ndarray | None:
    """The puzzle with a shortest S-to-G path marked 'o' (labels made this way are optimal), or None if G is
    unreachable. The canvas side is taken from the token count, which must be a square."""
    side = math.isqrt(np.asarray(puzzle).size)
    grid = MazeCodec(max(side, 1)).as_tokens(puzzle).reshape(side, side)
    start, goal = _endpoints(grid)
    prev = _bfs(grid >= OPEN, start)
    if prev[goal] < 0:
        return None
    answer = grid.ravel().copy()
    cell = prev[goal]
    while cell != start:
        answer[cell] = PATH
        cell = prev[cell]
    return answer


MAZE = MazeCodec()
