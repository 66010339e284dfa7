"""6x6 sudoku for trm-edge: a complete task plugin (docs/tasks.md).

Encoding, as the official sudoku's: 0 pad, 1 blank, digit d -> d + 1, so vocab 8; 36 cells row-major. The grid has
six rows, six columns and six boxes of 2 rows x 3 columns, each holding 1-6 once.

What trm-edge gets from it: puzzles read and drawn (`parse`, `render`, `compact`), the rules (`check`: `--halt
...,verify` stops a row once its answer passes, `solve` reports "solved (rules)"), puzzles of its own (`sample`: export
verifies and guards int8 on them) and symmetries (`views`: `solve --views K` solves K frames of a puzzle at once).
"""

from __future__ import annotations

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks import Codec, Pair, View
from trm_edge.tasks.base import content_lines, parse_lines

SIDE, BOX_ROWS, BOX_COLS = 6, 2, 3
PAD, BLANK = 0, 1
_CHARS = "?.123456"  # indexed by token
_DIGITS = {".": 0, "0": 0, **{str(d): d for d in range(1, SIDE + 1)}}
_RULES = " \t\r\n|-+"


def units(grid: np.ndarray) -> list[np.ndarray]:
    """The 18 rows, columns and boxes of a 6x6 grid."""
    boxes = [grid[r:r + BOX_ROWS, c:c + BOX_COLS].ravel() for r in range(0, SIDE, BOX_ROWS)
             for c in range(0, SIDE, BOX_COLS)]
    return [*grid, *grid.T, *boxes]


def lines(rng: np.random.Generator, groups: int, size: int) -> np.ndarray:
    """A random order of 6 rows (columns) that keeps each band (stack) of `size` together: the groups shuffled,
    and the lines within each group."""
    return np.concatenate([g * size + rng.permutation(size) for g in rng.permutation(groups)])


class Sudoku6Codec(Codec):
    name = "sudoku6"
    vocab_size = SIDE + 2
    seq_len = SIDE * SIDE
    generated = True  # sample() makes new puzzles for every seed

    def parse(self, text: str) -> np.ndarray:
        """36 cells on one line ('.' or 0 for blanks), or a 6-line grid whose spaces and | - + rules are ignored."""
        cells = "".join(ch for ch in text.strip() if ch not in _RULES)
        if len(cells) != self.seq_len:
            raise TRMEdgeError(f"sudoku6: expected 36 cells, got {len(cells)} (use '.' or '0' for blanks)")
        digits = np.zeros(self.seq_len, np.int64)
        for i, ch in enumerate(cells):
            if ch not in _DIGITS:
                raise TRMEdgeError(f"sudoku6: illegal character {ch!r} at cell {i + 1}; use 1-6, and . for blanks")
            digits[i] = _DIGITS[ch]
        return digits + BLANK

    def parse_line(self, line: str) -> Pair:
        """`puzzle[,solution]`."""
        fields = line.split(",")
        return self.parse(fields[0]), self.parse(fields[1]) if len(fields) > 1 and fields[1].strip() else None

    def parse_text(self, text: str) -> list[Pair]:
        """One puzzle a line, or one 6-line grid."""
        found = content_lines(text)
        if len(found) > 1 and all(len(s) < self.seq_len and "," not in s for _, s in found):
            return [(self.parse("".join(s for _, s in found)), None)]
        return parse_lines(self, found)

    def render(self, tokens: np.ndarray) -> str:
        out = []
        for r, row in enumerate(self.as_tokens(tokens).reshape(SIDE, SIDE)):
            if r and r % BOX_ROWS == 0:
                out.append("------+------")
            out.append(" | ".join(" ".join(_CHARS[t] for t in row[c:c + BOX_COLS]) for c in range(0, SIDE, BOX_COLS)))
        return "\n".join(out)

    def compact(self, tokens: np.ndarray) -> str:
        return "".join(_CHARS[t] for t in self.as_tokens(tokens))

    def check(self, puzzle: np.ndarray, answer: np.ndarray) -> bool:
        """Filled, every unit holding 1-6 once, every given kept."""
        given, filled = self.as_tokens(puzzle), self.as_tokens(answer)
        if (filled <= BLANK).any() or (filled[given > BLANK] != given[given > BLANK]).any():
            return False
        grid = (filled - BLANK).reshape(SIDE, SIDE)
        return all(np.array_equal(np.sort(u), np.arange(1, SIDE + 1)) for u in units(grid))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n puzzles of 12-20 givens, each a solved grid under a random symmetry with cells blanked."""
        rng = np.random.default_rng(10_000 + seed)
        r, c = np.divmod(np.arange(self.seq_len), SIDE)
        solved = (BOX_COLS * (r % BOX_ROWS) + r // BOX_ROWS + c) % SIDE + 1 + BLANK  # a valid grid, as tokens
        out = np.empty((n, self.seq_len), np.int64)
        for i in range(n):
            view = self._view(rng)
            grid = view.forward(solved)
            grid[rng.permutation(self.seq_len)[:self.seq_len - rng.integers(12, 21)]] = BLANK
            out[i] = grid
        return out

    def views(self, n: int, rng: np.random.Generator) -> list[View]:
        """Digit relabelling, band and stack shuffles and row/column shuffles within them (6! x 3!2^3 x 2!3!^2)."""
        return [self.identity(), *(self._view(rng) for _ in range(n - 1))]

    def _view(self, rng: np.random.Generator) -> View:
        rows, cols = lines(rng, SIDE // BOX_ROWS, BOX_ROWS), lines(rng, SIDE // BOX_COLS, BOX_COLS)
        values = np.concatenate([[PAD, BLANK], BLANK + 1 + rng.permutation(SIDE)])
        return View((rows[:, None] * SIDE + cols[None, :]).ravel(), values)
