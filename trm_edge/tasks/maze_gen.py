"""Mazes with several routes between S and G, labelled with the shortest one.

A recursive backtracker makes a perfect maze (one route between any two cells); opening a fraction of
the walls between two corridors adds loops, so the model must find the shortest route rather than the
only one. Grids are built directly in the official token encoding (pad 0, '#' 1, ' ' 2, S 3, G 4,
path 'o' 5), N x N placed top-left on a `canvas` x `canvas` board.
"""

from __future__ import annotations

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.arc import dihedral
from trm_edge.tasks.maze import GOAL, OFFICIAL_SIZE, OPEN, PATH, START, WALL, shortest_path
from trm_edge.tasks.sudoku_gen import Progress

_TRIES = 100


def _perfect(size: int, rng: np.random.Generator) -> np.ndarray:
    """Open cells of a recursive-backtracker maze on the even lattice (an even size leaves the last
    row and column as wall)."""
    grid = np.full((size, size), WALL, dtype=np.uint8)
    stack = [(0, 0)]
    grid[0, 0] = OPEN
    steps = ((-2, 0), (2, 0), (0, -2), (0, 2))
    while stack:
        r, c = stack[-1]
        nxt = [(r + dr, c + dc) for dr, dc in steps
               if 0 <= r + dr < size and 0 <= c + dc < size and grid[r + dr, c + dc] == WALL]
        if not nxt:
            stack.pop()
            continue
        nr, nc = nxt[int(rng.integers(len(nxt)))]
        grid[(r + nr) // 2, (c + nc) // 2] = OPEN
        grid[nr, nc] = OPEN
        stack.append((nr, nc))
    return grid


def _open_loops(grid: np.ndarray, loops: float, rng: np.random.Generator) -> None:
    """Open each wall that separates two corridors with probability `loops`."""
    walls = grid == WALL
    between = np.zeros_like(walls)
    between[:, 1:-1] |= (grid[:, :-2] == OPEN) & (grid[:, 2:] == OPEN)
    between[1:-1, :] |= (grid[:-2, :] == OPEN) & (grid[2:, :] == OPEN)
    grid[walls & between & (rng.random(grid.shape) < loops)] = OPEN


def _place(grid: np.ndarray, canvas: int) -> np.ndarray:
    board = np.zeros((canvas, canvas), dtype=np.uint8)
    board[: grid.shape[0], : grid.shape[1]] = grid
    return board.reshape(-1)


def _one(size: int, rng: np.random.Generator, min_path_len: int, loops: float
         ) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(_TRIES):
        grid = _perfect(size, rng)
        _open_loops(grid, loops, rng)
        cells = np.flatnonzero(grid == OPEN)
        s, g = rng.choice(cells, size=2, replace=False)
        grid.flat[s], grid.flat[g] = START, GOAL
        labels = shortest_path(grid.reshape(-1))
        if labels is not None and np.count_nonzero(labels == PATH) + 1 >= min_path_len:
            return grid, labels.reshape(size, size)
    raise TRMEdgeError(f"no {size}x{size} maze with a shortest path of >= {min_path_len} steps in {_TRIES} "
                       "tries: lower min_path_len or raise size")


def generate(n: int, size: int = OFFICIAL_SIZE, seed: int = 0, min_path_len: int = 0,
             canvas: int = OFFICIAL_SIZE, loops: float = 0.1, start: int = 0, progress: Progress | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """`n` mazes as (inputs, labels) uint8 [n, canvas**2]; maze i depends only on (seed, start + i).

    The path length is counted in steps from S to G; mazes shorter than `min_path_len` are redrawn.
    `loops` is the chance that a wall between two corridors is opened.
    """
    if not 4 <= size <= OFFICIAL_SIZE or not size <= canvas <= OFFICIAL_SIZE:
        raise TRMEdgeError(f"maze size must be in 4..30 and canvas in size..30, got size={size}, "
                           f"canvas={canvas}")
    if n < 0 or not 0.0 <= loops <= 1.0:
        raise TRMEdgeError(f"generate needs n >= 0 and loops in [0, 1], got n={n}, loops={loops}")
    inputs = np.zeros((n, canvas * canvas), dtype=np.uint8)
    labels = np.zeros_like(inputs)
    indices = range(n) if progress is None else progress(range(n), n)
    for i in indices:
        grid, answer = _one(size, np.random.default_rng([seed, start + i]), min_path_len, loops)
        inputs[i], labels[i] = _place(grid, canvas), _place(answer, canvas)
    return inputs, labels


def augment(inputs: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Dihedral transform k (0..7, as `trm_edge.tasks.arc.dihedral`) of mazes [..., canvas**2].

    The transform acts on the N x N maze (N = extent of the non-pad cells) and the result is placed
    top-left again, so padding stays where the official encoding puts it.
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    side = int(round(inputs.shape[-1] ** 0.5))
    if side * side != inputs.shape[-1] or inputs.shape != labels.shape:
        raise TRMEdgeError(f"maze augment needs matching [..., side**2] arrays, got {inputs.shape}, "
                           f"{labels.shape}")
    boards = inputs.reshape(-1, side, side)
    used = np.flatnonzero(boards.any(axis=(0, 1)) | boards.any(axis=(0, 2)))
    size = int(used[-1]) + 1 if used.size else 0

    def move(a: np.ndarray) -> np.ndarray:
        b = a.reshape(-1, side, side).copy()
        b[:, :size, :size] = dihedral(b[:, :size, :size], k)
        return b.reshape(a.shape)

    return move(inputs), move(labels)
