"""Sudoku in the official TRM encoding: 0 pad, 1 blank, digit d -> d + 1; 81 cells row-major, vocab 11.

Puzzles come as one 81-character line ('.' or '0' for blanks, the form of most collections) or as a 9-line
grid in which spaces and the box rules '|', '-', '+' are ignored, so a rendered grid pastes back in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.base import Codec, Pair, View, content_lines, parse_lines

PAD, BLANK = 0, 1
_CHARS = "?.123456789"  # indexed by token; pad shows as '?', as only a model's output holds it
_DIGITS = {".": 0, "0": 0, **{str(d): d for d in range(1, 10)}}
_SEPARATORS = " \t|-+"
_BLANK_HINT = "(use '.' or '0' for blanks)"
_ROW_RULE = "------+-------+------"
# A 9-cell grid row, even with separators, is far shorter than an 81-cell puzzle line.
_GRID_ROW_MAX = 40


def _units(grid: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """The 27 rows, columns and boxes, named as a user finds them in the grid."""
    for i in range(9):
        yield f"row {i + 1}", grid[i]
    for i in range(9):
        yield f"column {i + 1}", grid[:, i]
    for b in range(9):
        r, c = 3 * (b // 3), 3 * (b % 3)
        yield (
            f"box {b + 1} (rows {r + 1}-{r + 3}, columns {c + 1}-{c + 3})",
            grid[r : r + 3, c : c + 3].ravel(),
        )


def _digit_counts(values: np.ndarray) -> np.ndarray:
    """How often each digit 1..9 occurs in a unit (blanks, 0, not counted)."""
    return np.bincount(values, minlength=10)[1:]


def _cells(text: str) -> str:
    """The 81 cell characters of either accepted layout."""
    s = text.strip()
    if "\n" not in s:
        if len(s) != 81:
            raise TRMEdgeError(f"sudoku: expected 81 cells, got {len(s)} {_BLANK_HINT}")
        return s
    rows = [
        cells for line in s.splitlines() if (cells := "".join(ch for ch in line if ch not in _SEPARATORS))
    ]
    if len(rows) != 9:
        raise TRMEdgeError(
            f"sudoku: expected 9 grid rows, got {len(rows)} (lines of only '-', '+', '|' are rules)"
        )
    for i, row in enumerate(rows, 1):
        if len(row) != 9:
            raise TRMEdgeError(f"sudoku: grid row {i} has {len(row)} cells, expected 9 {_BLANK_HINT}")
    return "".join(rows)


class SudokuCodec(Codec):
    """Parse rejects contradictory clues, since no answer could then pass check()."""

    name = "sudoku"
    vocab_size = 11
    seq_len = 81
    default_views = 16  # 24-29 givens: 88% with one view, 100% with 16; top95: 25% / 73% (RESULTS.md, "Solve more")
    generated = True

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        from trm_edge.tasks.sudoku_gen import generate, to_tokens

        return to_tokens(generate(n, givens=(24, 40), seed=10_000 + seed)[0]).astype(np.int64)

    def parse(self, text: str) -> np.ndarray:
        digits = np.zeros(81, np.int64)
        for i, ch in enumerate(_cells(text)):
            if ch not in _DIGITS:
                raise TRMEdgeError(
                    f"sudoku: illegal character {ch!r} at position {i + 1}"
                    f" (row {i // 9 + 1}, column {i % 9 + 1}); use 1-9 for clues {_BLANK_HINT}"
                )
            digits[i] = _DIGITS[ch]
        for unit, values in _units(digits.reshape(9, 9)):
            counts = _digit_counts(values)
            if counts.max() > 1:
                raise TRMEdgeError(
                    f"sudoku: contradictory clues: digit {counts.argmax() + 1}"
                    f" appears {counts.max()} times in {unit}"
                )
        return digits + BLANK

    def parse_line(self, line: str) -> Pair:
        """`puzzle[,solution[,ignored...]]`, the layout of the common CSV puzzle sets."""
        fields = line.split(",")
        label = self.parse(fields[1]) if len(fields) > 1 and fields[1].strip() else None
        return self.parse(fields[0]), label

    def parse_text(self, text: str) -> list[Pair]:
        """One puzzle a line, or a whole text that is a single 9-line grid (every line short, no commas)."""
        lines = content_lines(text)
        if len(lines) > 1 and all(len(s) <= _GRID_ROW_MAX and "," not in s for _, s in lines):
            return [(self.parse("\n".join(s for _, s in lines)), None)]
        return parse_lines(self, lines)

    def render(self, tokens: np.ndarray) -> str:
        grid = self.as_tokens(tokens).reshape(9, 9)
        lines = []
        for r, row in enumerate(grid):
            if r in (3, 6):
                lines.append(_ROW_RULE)
            cells = [_CHARS[t] for t in row]
            lines.append(" | ".join(" ".join(cells[c : c + 3]) for c in (0, 3, 6)))
        return "\n".join(lines)

    def compact(self, tokens: np.ndarray) -> str:
        """81 characters, '.' for a blank: the one-line form puzzle collections use."""
        return "".join(_CHARS[t] for t in self.as_tokens(tokens))

    def views(self, n: int, rng: np.random.Generator) -> list[View]:
        """Digit relabelling, transpose, band/stack and row/column-within-band shuffles: 3.4 million symmetries
        (x 9!), so views drawn at random are distinct."""
        digit_maps, cell_maps = random_transforms(n - 1, rng)
        token_maps = np.concatenate([np.zeros((n - 1, 1), np.int64), digit_maps.astype(np.int64) + BLANK], axis=1)
        return [self.identity(), *(View(c.astype(np.int64), t) for c, t in zip(cell_maps, token_maps))]

    def check(self, puzzle: np.ndarray, answer: np.ndarray) -> bool:
        """Filled, every unit a permutation of 1..9, and every given kept."""
        given, filled = self.as_tokens(puzzle), self.as_tokens(answer)
        kept = filled[given > BLANK] == given[given > BLANK]
        if (filled <= BLANK).any() or not kept.all():
            return False
        grid = (filled - BLANK).reshape(9, 9)
        return all((_digit_counts(values) == 1).all() for _, values in _units(grid))


def random_transforms(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` random symmetries of sudoku as (digit_maps [n, 10] with 0 -> 0, cell_maps [n, 81]).

    A transformed grid is digit_maps[k][grid[cell_maps[k]]]; keeping the two parts as arrays lets the
    same symmetry act on tokens (see `apply_transforms`) as well as on digits.
    """
    digit_maps = np.zeros((n, 10), dtype=np.uint8)
    digit_maps[:, 1:] = np.argsort(rng.random((n, 9)), axis=1) + 1
    transpose = rng.random(n) < 0.5

    def lines() -> np.ndarray:
        outer = np.argsort(rng.random((n, 3)), axis=1)
        inner = np.argsort(rng.random((n, 3, 3)), axis=2)
        return (outer[:, :, None] * 3 + inner).reshape(n, 9)

    rows, cols = lines(), lines()
    straight = rows[:, :, None] * 9 + cols[:, None, :]
    flipped = cols[:, None, :] * 9 + rows[:, :, None]
    cell_maps = np.where(transpose[:, None, None], flipped, straight).reshape(n, 81)
    return digit_maps, cell_maps


def apply_transforms(grids: np.ndarray, value_maps: np.ndarray, cell_maps: np.ndarray) -> np.ndarray:
    """Apply per-row symmetries to a batch [n, 81]; value_maps index the grid's values (digits or tokens)."""
    moved = np.take_along_axis(np.asarray(grids), cell_maps, axis=1)
    return np.take_along_axis(value_maps, moved.astype(np.intp), axis=1).astype(np.asarray(grids).dtype)


SUDOKU = SudokuCodec()
