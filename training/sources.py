"""Training data as random-access batch streams (batch i is a pure function of (seed, i)), so that
resumption and every DDP rank see exactly the batches a single uninterrupted run sees."""

from __future__ import annotations

import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks import sudoku_gen
from trm_edge.training.trainer import IGNORE, Stream


def bucket_spec(bucket) -> tuple[int, int, int, bool | None]:
    """(lo, hi, n) or (lo, hi, n, "hard") -> (lo, hi, n, singles_only): "hard" keeps only puzzles that naked and
    hidden singles cannot finish, the ones that need search (where a model fails, and what top95 is made of)."""
    lo, hi, n, *rest = bucket
    if rest not in ([], ["hard"]):
        raise TRMEdgeError(f"a sudoku bucket is [lo, hi, n] or [lo, hi, n, \"hard\"], got {list(bucket)!r}")
    return lo, hi, n, (False if rest else None)


def bucket_name(bucket) -> str:
    lo, hi, _, singles_only = bucket_spec(bucket)
    return f"givens_{lo}-{hi}" + ("-hard" if singles_only is False else "")


def sudoku_pool(buckets: list, seed: int, cache: Path | None = None, progress=None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Base puzzles with unique solutions, `n` per givens bucket (see bucket_spec), cached as .npz; large buckets
    are generated on every core (hard ones take 0.03-0.3 s a puzzle)."""
    if cache is not None and cache.is_file():
        try:
            with np.load(cache) as z:
                return z["puzzles"], z["solutions"]
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged outside trm-edge: rebuilt below
            pass
    parts = [sudoku_gen.generate(n, givens=(lo, hi), seed=seed * 1000 + k, singles_only=singles_only,
                                 workers=(os.cpu_count() or 1) if n >= 1000 else 1, progress=progress)
             for k, (lo, hi, n, singles_only) in enumerate(map(bucket_spec, buckets))]
    puzzles, solutions = np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}-{os.getpid()}-{secrets.token_hex(4)}.npz")  # this writer's own
        try:
            np.savez(tmp, puzzles=puzzles, solutions=solutions)
            os.replace(tmp, cache)
        except BaseException:  # Ctrl-C or a full disk: no half-written file left behind
            tmp.unlink(missing_ok=True)
            raise
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
