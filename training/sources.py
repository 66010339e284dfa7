"""Training data as random-access batch streams (batch i is a pure function of (seed, i)), so that
resumption and every DDP rank see exactly the batches a single uninterrupted run sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trm_edge.training import sudoku_gen
from trm_edge.training.trainer import IGNORE, Stream


def sudoku_pool(buckets: list[tuple[int, int, int]], seed: int, cache: Path | None = None, progress=None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Base puzzles with unique solutions, `n` per (lo, hi, n) givens bucket, cached as .npz."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return z["puzzles"], z["solutions"]
    parts = [sudoku_gen.generate(n, givens=(lo, hi), seed=seed * 1000 + k, progress=progress)
             for k, (lo, hi, n) in enumerate(buckets)]
    puzzles, solutions = np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, puzzles=puzzles, solutions=solutions)
        tmp.rename(cache)
    return puzzles, solutions


def sudoku_stream(puzzles: np.ndarray, solutions: np.ndarray, batch_size: int, seed: int) -> Stream:
    """Pool puzzles under a fresh official augmentation each time they are drawn."""

    def batch(i: int):
        rng = np.random.default_rng([seed, i])
        idx = rng.integers(0, len(puzzles), batch_size)
        p, s = sudoku_gen.augment_batch(puzzles[idx], solutions[idx], rng)
        return sudoku_gen.to_tokens(p).astype(np.int64), sudoku_gen.to_tokens(s).astype(np.int64), \
            np.zeros(batch_size, np.int64)

    return batch


def dataset_stream(inputs: np.ndarray, labels: np.ndarray, puzzle_ids: np.ndarray, batch_size: int,
                   seed: int) -> Stream:
    """Random examples of an official-layout dataset (label 0 is ignored, as the official loader does)."""

    def batch(i: int):
        idx = np.random.default_rng([seed, i]).integers(0, len(inputs), batch_size)
        lab = labels[idx].astype(np.int64)
        return inputs[idx].astype(np.int64), np.where(lab == 0, IGNORE, lab), puzzle_ids[idx].astype(np.int64)

    return batch
