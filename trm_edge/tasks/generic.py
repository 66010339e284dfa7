"""A task trm-edge does not know: a TRM trained with the official code on a user's own dataset. Its tokens go in and
come out as they are (vocabulary and length from the model, or the dataset it names), a puzzle a line: a JSON list of
ints, ints separated by spaces or commas, or {"input": [...], "label": [...]} for a labelled one; or an .npy array.

There are no rules to check an answer by: answers are scored against labels, and int8 is judged by agreement with
fp32 on puzzles drawn from the dataset's test split (as for ARC). A task with rules and symmetries is a plugin
(docs/tasks.md).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.base import Codec, Pair, content_lines, parse_lines

_SEPARATED = re.compile(r"[\s,]+")
_INT = re.compile(r"-?[0-9]+")
_FORMS = 'a JSON list of ints, ints separated by spaces or commas, or {"input": [...], "label": [...]}'


class GenericCodec(Codec):
    """`dataset`: the official-layout dataset directory whose test split `sample` draws from (None: no draws)."""

    name = "generic"
    rules = False

    def __init__(self, vocab_size: int, seq_len: int, dataset: str | os.PathLike | None = None):
        if vocab_size < 2 or seq_len < 1:
            raise TRMEdgeError(f"generic task: a model of {seq_len} tokens over {vocab_size} values is not one")
        self.vocab_size, self.seq_len = int(vocab_size), int(seq_len)
        self.dataset = None if dataset is None else Path(dataset)

    @classmethod
    def fits(cls, vocab_size: int, seq_len: int) -> GenericCodec:
        """Every shape: the task of a model no other codec claims."""
        return cls(vocab_size, seq_len)

    def with_dataset(self, dataset: str | os.PathLike | None) -> GenericCodec:
        return GenericCodec(self.vocab_size, self.seq_len, dataset)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n test inputs of the dataset drawn by seed (verification, calibration and the guard draw apart), or all of
        them if it holds fewer: a puzzle counted twice would overstate what the guard saw."""
        from trm_edge.training.datasets import read_dataset

        if self.dataset is None:
            raise TRMEdgeError("generic task: verification and the int8 guard draw puzzles from the model's dataset "
                               "(its test split); pass --dataset DIR, or keep the dataset where the run's "
                               "all_config.yaml data_paths says")
        ds = read_dataset(self.dataset, "test", mmap=True)
        self.check_dataset(ds.metadata, self.dataset)
        if not len(ds.inputs):
            raise TRMEdgeError(f"{self.dataset}: the test split holds no examples to draw puzzles from")
        rows = np.random.default_rng(10_000 + seed).permutation(len(ds.inputs))
        return np.asarray(ds.inputs[np.sort(rows[:n])], np.int64)

    def parse(self, text: str) -> np.ndarray:
        return self.parse_line(text.strip())[0]

    def parse_line(self, line: str) -> Pair:
        if line.startswith(("[", "{")):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise TRMEdgeError(f"generic: not JSON ({e.msg} at column {e.colno}); give {_FORMS}") from None
        else:
            doc = [int(x) if _INT.fullmatch(x) else x for x in _SEPARATED.split(line) if x]
        if isinstance(doc, dict):
            if set(doc) - {"input", "label"} or "input" not in doc:
                raise TRMEdgeError(f"generic: a labelled puzzle is {{\"input\": [...], \"label\": [...]}}, got keys "
                                   f"{', '.join(map(repr, doc))}")
            label = doc.get("label")
            return self._tokens(doc["input"], "input"), None if label is None else self._tokens(label, "label")
        return self._tokens(doc, "puzzle"), None

    def parse_text(self, text: str) -> list[Pair]:
        return parse_lines(self, content_lines(text))

    def _tokens(self, values: object, what: str) -> np.ndarray:
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise TRMEdgeError(f"generic: a {what} is a list of integer tokens; give {_FORMS}")
        if len(values) != self.seq_len:
            raise TRMEdgeError(f"generic: the {what} has {len(values)} tokens, the model reads {self.seq_len} (pad to "
                               "that length as the dataset does)")
        if (i := next((i for i, v in enumerate(values) if not 0 <= v < self.vocab_size), None)) is not None:
            raise self.outside(values[i], i)  # before numpy, which cannot hold 10**30
        return np.array(values, np.int64)

    def render(self, tokens: np.ndarray) -> str:
        return " ".join(str(int(t)) for t in np.asarray(tokens).ravel())

    def check(self, puzzle: np.ndarray, answer: np.ndarray) -> bool:
        raise TRMEdgeError("generic: the task has no rules to check an answer by; give labelled puzzles "
                           '({"input": [...], "label": [...]} lines, or a dataset directory), and for --halt '
                           "...,verify or views a task plugin with rules (docs/tasks.md)")
