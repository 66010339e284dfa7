"""Sudoku puzzles with a verified unique solution, a singles-only difficulty knob, and the official
augmentation (digit relabelling, transpose, band/stack and row/column shuffles).

Digit grids are uint8 [81] row-major with 0 for a blank; the model's tokens are digit + 1.
The solver is pure Python on 9-bit candidate masks (bit d-1 for digit d): it is small, exact, and
fast enough (well under a millisecond per uniqueness check on typical puzzles) to verify every
generated puzzle.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from multiprocessing import get_context

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.sudoku import BLANK, apply_transforms, random_transforms

Progress = Callable[[Iterable, int], Iterable]
FULL = 0x1FF
_ROW = [i // 9 for i in range(81)]
_COL = [9 + i % 9 for i in range(81)]  # offsets into the 27 unit masks: rows, columns, boxes
_BOX = [18 + (i // 27) * 3 + (i % 9) // 3 for i in range(81)]
_UNITS = [[i for i in range(81) if u in (_ROW[i], _COL[i], _BOX[i])] for u in range(27)]
_POP = [bin(m).count("1") for m in range(512)]
_BITS = [[b for b in range(9) if m >> b & 1] for m in range(512)]


def _load(grid) -> tuple[list[int], list[int], bool]:
    """Cells and the 27 used-digit masks; the flag is False when two givens clash."""
    a = np.asarray(grid)
    if a.size != 81 or not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 9:
        raise TRMEdgeError(f"a sudoku grid needs 81 integer digits in 0..9 (0 = blank), got shape {a.shape}")
    cells = [int(v) for v in a.reshape(81)]
    used = [0] * 27
    for i, v in enumerate(cells):
        if v:
            bit = 1 << (v - 1)
            if (used[_ROW[i]] | used[_COL[i]] | used[_BOX[i]]) & bit:
                return cells, used, False
            used[_ROW[i]] |= bit
            used[_COL[i]] |= bit
            used[_BOX[i]] |= bit
    return cells, used, True


def _search(cells: list[int], used: list[int], empties: list[int], limit: int,
            rng: random.Random | None = None) -> int:
    """Count completions up to `limit`, branching on the most constrained cell.

    With `rng` the digit order is shuffled (to draw a random full grid) and the first completion is
    left in `cells`; otherwise `cells` is restored on return.
    """
    best, best_n, best_m = -1, 10, 0
    for i in empties:
        if cells[i]:
            continue
        m = FULL & ~(used[_ROW[i]] | used[_COL[i]] | used[_BOX[i]])
        n = _POP[m]
        if n < best_n:
            if n == 0:
                return 0
            best, best_n, best_m = i, n, m
            if n == 1:
                break
    if best < 0:
        return 1
    r, c, b = _ROW[best], _COL[best], _BOX[best]
    digits = _BITS[best_m]
    if rng is not None:
        digits = digits[:]
        rng.shuffle(digits)
    total = 0
    for d in digits:
        bit = 1 << d
        cells[best] = d + 1
        used[r] |= bit
        used[c] |= bit
        used[b] |= bit
        total += _search(cells, used, empties, limit - total, rng)
        if rng is not None and total:
            return total
        used[r] ^= bit
        used[c] ^= bit
        used[b] ^= bit
        cells[best] = 0
        if total >= limit:
            break
    return total


def count_solutions(grid, limit: int = 2) -> int:
    """Solutions of `grid`, counted up to `limit` (limit=2 answers "is it unique?")."""
    if limit < 1:
        raise TRMEdgeError(f"count_solutions needs limit >= 1, got {limit}")
    cells, used, ok = _load(grid)
    if not ok:
        return 0
    return _search(cells, used, [i for i in range(81) if not cells[i]], limit)


def _singles(cells: list[int], used: list[int]) -> None:
    """Fill naked and hidden singles in place until neither applies (the "easy" solving strategy)."""
    progress = True
    while progress:
        progress = False
        for i in range(81):
            if not cells[i]:
                m = FULL & ~(used[_ROW[i]] | used[_COL[i]] | used[_BOX[i]])
                if _POP[m] == 1:
                    _place(cells, used, i, _BITS[m][0])
                    progress = True
        if progress:
            continue
        for unit in _UNITS:
            once = twice = 0
            for i in unit:
                if not cells[i]:
                    m = FULL & ~(used[_ROW[i]] | used[_COL[i]] | used[_BOX[i]])
                    twice |= once & m
                    once |= m
            single = once & ~twice
            for i in unit:
                if single and not cells[i]:
                    m = single & ~(used[_ROW[i]] | used[_COL[i]] | used[_BOX[i]])
                    if m:
                        _place(cells, used, i, _BITS[m][0])
                        single &= ~m
                        progress = True


def _place(cells: list[int], used: list[int], i: int, d: int) -> None:
    bit = 1 << d
    cells[i] = d + 1
    used[_ROW[i]] |= bit
    used[_COL[i]] |= bit
    used[_BOX[i]] |= bit


def solve_singles(grid) -> np.ndarray:
    """The grid after naked + hidden singles; any 0 left means singles alone do not solve it."""
    cells, used, ok = _load(grid)
    if ok:
        _singles(cells, used)
    return np.array(cells, dtype=np.uint8)


def _singles_solve(cells: list[int]) -> bool:
    work = cells[:]
    used = [0] * 27
    for i, v in enumerate(work):
        if v:
            _place(work, used, i, v - 1)
    _singles(work, used)
    return 0 not in work


def _unique_without(cells: list[int], used: list[int], i: int) -> bool:
    """Whether the puzzle stays unique with cell i blanked: no completion may put another digit there."""
    v = cells[i]
    bit = 1 << (v - 1)
    used[_ROW[i]] ^= bit
    used[_COL[i]] ^= bit
    used[_BOX[i]] ^= bit
    cells[i] = 0
    empties = [j for j in range(81) if not cells[j]]
    others = FULL & ~(used[_ROW[i]] | used[_COL[i]] | used[_BOX[i]] | bit)
    unique = True
    for d in _BITS[others]:
        _place(cells, used, i, d)
        found = _search(cells, used, empties, 1)
        _unplace(cells, used, i, d)
        if found:
            unique = False
            break
    _place(cells, used, i, v - 1)
    return unique


def _unplace(cells: list[int], used: list[int], i: int, d: int) -> None:
    bit = 1 << d
    cells[i] = 0
    used[_ROW[i]] ^= bit
    used[_COL[i]] ^= bit
    used[_BOX[i]] ^= bit


def _full_grid(rng: random.Random) -> list[int]:
    cells, used = [0] * 81, [0] * 27
    _search(cells, used, list(range(81)), 1, rng)
    return cells


def _carve(rng: random.Random, target: int, singles_only: bool | None) -> tuple[list[int], list[int]]:
    """One puzzle: blank cells of a random full grid in random order while the puzzle stays unique
    (or, for singles_only=True, stays solvable by singles, which implies unique), stopping at `target`
    givens. When the order runs out first the puzzle keeps more givens than asked; `_one` retries."""
    solution = _full_grid(rng)
    cells = solution[:]
    used = [0] * 27
    for i, v in enumerate(cells):
        _place(cells, used, i, v - 1)
    order = list(range(81))
    rng.shuffle(order)
    givens = 81
    for i in order:
        if givens == target:
            break
        if singles_only:
            v = cells[i]
            _unplace(cells, used, i, v - 1)
            if _singles_solve(cells):
                givens -= 1
            else:
                _place(cells, used, i, v - 1)
        elif _unique_without(cells, used, i):
            _unplace(cells, used, i, cells[i] - 1)
            givens -= 1
    return cells, solution


_ATTEMPTS = 50


def _one(seed: int, index: int, givens: tuple[int, int], singles_only: bool | None):
    """Puzzle `index` of stream `seed`, from its own RNG so chunks and workers give identical output.

    The target number of givens is drawn uniformly in [lo, hi]. A carve that gets stuck above the target
    or fails the singles filter is retried from a new full grid; after _ATTEMPTS tries the puzzle with
    the fewest givens (>= target) that passes the filter is kept.
    """
    state = np.random.SeedSequence([seed, index]).generate_state(2)
    rng = random.Random(int(state[0]) << 32 | int(state[1]))
    target = rng.randint(*givens)
    best = None
    for _ in range(_ATTEMPTS):
        cells, solution = _carve(rng, target, singles_only)
        if singles_only is False and _singles_solve(cells):
            continue
        n = 81 - cells.count(0)
        if best is None or n < best[0]:
            best = (n, cells, solution)
        if n == target:
            break
    if best is None:
        raise TRMEdgeError(f"no puzzle that singles cannot solve came out of {_ATTEMPTS} tries at "
                           f"{target} givens: lower the givens range (e.g. 22-28) or drop singles_only=False")
    return best[1], best[2]


def _chunk(args) -> list:
    seed, indices, givens, singles_only = args
    return [_one(seed, i, givens, singles_only) for i in indices]


_CHUNK = 25  # puzzles per task handed to a worker and per progress step


def generate(n: int, givens: tuple[int, int] = (24, 29), seed: int = 0, singles_only: bool | None = None,
             start: int = 0, workers: int = 1, progress: Progress | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """`n` unique-solution puzzles and their solutions, uint8 [n, 81] digits with 0 blank.

    Puzzle i depends only on (seed, start + i), so chunks and workers give the same output and a test
    set drawn with `start` past the train set never overlaps it by construction of the stream.
    singles_only=True keeps puzzles that naked + hidden singles solve, False those they do not.
    The number of givens is drawn uniformly in [lo, hi]; when uniqueness stops the removal above it
    (rare down to ~24), fresh full grids are tried and at worst the nearest larger count is kept.
    `progress(chunks, total)` may wrap the chunk iterator (e.g. a rich progress bar).
    """
    lo, hi = givens
    if n < 0 or not 17 <= lo <= hi <= 81:
        raise TRMEdgeError(f"generate needs n >= 0 and 17 <= lo <= hi <= 81 givens, got n={n}, "
                           f"givens={givens}")
    if workers < 1:
        raise TRMEdgeError(f"workers must be >= 1, got {workers}")
    jobs = [(seed, range(s, min(s + _CHUNK, start + n)), (lo, hi), singles_only)
            for s in range(start, start + n, _CHUNK)]
    with get_context("spawn").Pool(workers) if workers > 1 else nullcontext() as pool:
        parts = pool.imap(_chunk, jobs) if pool else map(_chunk, jobs)
        if progress is not None:
            parts = progress(parts, len(jobs))
        pairs = [pair for part in parts for pair in part]
    puzzles = np.array([p for p, _ in pairs], dtype=np.uint8).reshape(n, 81)
    solutions = np.array([s for _, s in pairs], dtype=np.uint8).reshape(n, 81)
    return puzzles, solutions


def to_tokens(digits: np.ndarray) -> np.ndarray:
    """Digit grids (0 blank) to model tokens, the sudoku codec's encoding."""
    return np.asarray(digits).astype(np.uint8) + BLANK


def augment_batch(puzzles: np.ndarray, solutions: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One fresh random symmetry per row, the same for a puzzle and its solution."""
    puzzles, solutions = np.asarray(puzzles), np.asarray(solutions)
    if puzzles.ndim != 2 or puzzles.shape[1] != 81 or puzzles.shape != solutions.shape:
        raise TRMEdgeError(f"augment_batch needs two [n, 81] digit arrays, got {puzzles.shape} and "
                           f"{solutions.shape}")
    maps = random_transforms(len(puzzles), rng)
    return apply_transforms(puzzles, *maps), apply_transforms(solutions, *maps)


def augment(puzzle: Sequence[int], solution: Sequence[int], rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    p, s = augment_batch(np.asarray(puzzle).reshape(1, 81), np.asarray(solution).reshape(1, 81), rng)
    return p[0], s[0]
