"""The codec contract, so the CLI, training and runtimes handle sudoku, mazes and ARC alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from trm_edge.errors import TRMEdgeError

Pair = tuple[np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class View:
    """A symmetry of a task: position i of the view holds `values[tokens[cells[i]]]`. A puzzle's answer is the
    same symmetry of its view's answer undone (`back`), so one model solves a puzzle in several frames."""

    cells: np.ndarray  # [seq_len] the source position of each position
    values: np.ndarray  # [vocab] a permutation of the tokens

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        return self.values[np.asarray(tokens)[..., self.cells]]

    def back(self, tokens: np.ndarray) -> np.ndarray:
        return np.argsort(self.values)[np.asarray(tokens)[..., np.argsort(self.cells)]]


class Codec(ABC):
    """Puzzle text <-> int64 tokens of shape [seq_len], plus the task's own notion of a correct answer."""

    name: str
    vocab_size: int
    seq_len: int
    default_views: int = 1  # what `trm-edge solve` tries per puzzle unless told (measured per task)
    generated: bool = False  # whether sample() makes new puzzles for every seed (ARC's are a fixed set)
    rules: bool = True  # whether check() judges an answer without a label (ARC and generic tasks have no rules)

    @classmethod
    def fits(cls, vocab_size: int, seq_len: int) -> Codec | None:
        """This task's codec for a model of this shape, or None: how a model's task is told from its weights and how
        `--task NAME` is checked against them. A task whose size varies (a maze's side) overrides it."""
        return cls() if (cls.vocab_size, cls.seq_len) == (vocab_size, seq_len) else None

    @abstractmethod
    def parse(self, text: str) -> np.ndarray:
        """One puzzle to tokens; raises TRMEdgeError on bad input."""

    @abstractmethod
    def render(self, tokens: np.ndarray) -> str:
        """Tokens to text that parse() reads back."""

    @abstractmethod
    def check(self, puzzle: np.ndarray, answer: np.ndarray) -> bool:
        """Whether answer solves puzzle by the task's rules (no label needed)."""

    def checker(self, puzzles: np.ndarray):
        """check() for rows of a batch: (row indices, their answers) -> which pass (a halting.Checker)."""
        return lambda rows, answers: np.array([self.check(puzzles[r], a) for r, a in zip(rows, answers)], bool)

    @abstractmethod
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n real puzzles of the task as [n, seq_len] tokens, for verification, calibration and the int8 guard: the
        task's own generator (no data files), seeds apart from the trainers' (10,000 on)."""

    def views(self, n: int, rng: np.random.Generator) -> list[View]:
        """The identity, then n - 1 random symmetries of the task (as the official augmentation draws them)."""
        raise TRMEdgeError(f"{self.name}: views are not supported for this task")

    def identity(self) -> View:
        return View(np.arange(self.seq_len), np.arange(self.vocab_size))

    def compact(self, tokens: np.ndarray) -> str:
        """The task's own plain notation, for programs (`--json`); render() may draw for people."""
        return self.render(tokens)

    def parse_line(self, line: str) -> Pair:
        """One line of a puzzle file: tasks whose puzzles span lines have no such form."""
        raise TRMEdgeError(f"{self.name}: puzzles have no one-line form; give a file holding one puzzle")

    def parse_text(self, text: str) -> list[Pair]:
        """Every (puzzle, label) in a file's text; by default the whole text is one unlabelled puzzle."""
        return [(self.parse(text), None)]

    def as_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Model output arrives from outside: reject the wrong shape or vocabulary before indexing with it."""
        arr = np.asarray(tokens)
        if arr.shape != (self.seq_len,):
            raise TRMEdgeError(
                f"{self.name}: expected {self.seq_len} tokens, got an array of shape {arr.shape}"
            )
        if arr.dtype.kind not in "iu":
            raise TRMEdgeError(f"{self.name}: tokens must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= self.vocab_size)
        if bad.any():
            i = int(np.argmax(bad))
            raise self.outside(arr[i], i)
        return arr.astype(np.int64)

    def outside(self, token: int, i: int) -> TRMEdgeError:
        return TRMEdgeError(f"{self.name}: token {token} at position {i} is outside the vocabulary "
                            f"0-{self.vocab_size - 1}")

    def check_dataset(self, metadata: dict, where: object) -> None:
        """A dataset (official layout) of another shape would feed the model tokens it never saw: refused by name."""
        if (metadata["seq_len"], metadata["vocab_size"]) != (self.seq_len, self.vocab_size):
            raise TRMEdgeError(f"{where}: a dataset of {metadata['seq_len']} tokens over {metadata['vocab_size']} "
                               f"values; the model reads {self.seq_len} over {self.vocab_size} ({self.name})")


def content_lines(text: str) -> list[tuple[int, str]]:
    """Numbered, stripped lines that hold data: blank lines and '#' comments are skipped."""
    return [
        (n, s) for n, line in enumerate(text.splitlines(), 1) if (s := line.strip()) and not s.startswith("#")
    ]


def parse_lines(codec: Codec, lines: list[tuple[int, str]]) -> list[Pair]:
    """One puzzle a line, with the line number in any error so the user can find it."""
    pairs = []
    for n, line in lines:
        try:
            pairs.append(codec.parse_line(line))
        except TRMEdgeError as e:
            raise TRMEdgeError(f"line {n}: {e}") from None
    return pairs
