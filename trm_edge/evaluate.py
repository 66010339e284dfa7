"""Task-level metrics of a solver on puzzles: what trm-edge reports everywhere (eval, export guard, bench).

Torch-free: `solve` is any callable from a token batch to a `Solution`, on any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from trm_edge.halting import Solution
from trm_edge.tasks import Codec, Pair
from trm_edge.tasks.arc import decode_grid, invert_variant, parse_variant

SolveFn = Callable[[np.ndarray], Solution]


def row_scores(codec: Codec, puzzles: np.ndarray, labels: Sequence[np.ndarray | None], answers: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per row: exactly solved (against the label, or by the task's rules where there is none) and token
    accuracy over labelled cells (NaN without a label). Pad labels (0) are ignored, as officially."""
    exact = np.zeros(len(puzzles), bool)
    tok = np.full(len(puzzles), np.nan)
    for i, (pz, lab) in enumerate(zip(puzzles, labels)):
        pred = answers[i]
        if lab is None:
            exact[i] = codec.check(pz, pred)
        else:
            valid = lab != 0
            if not valid.any():  # a label of pad only (an fp32 answer the guard judges int8 by): all of it must match
                valid[:] = True
            hits = pred[valid] == lab[valid]
            exact[i], tok[i] = bool(hits.all()), float(hits.mean())
    return exact, tok


def summarize(exact: np.ndarray, tok: np.ndarray, steps: np.ndarray) -> dict:
    steps = np.asarray(steps)
    hist = np.bincount(steps, minlength=int(steps.max(initial=0)) + 1)
    return {
        "n": int(len(exact)),
        "exact_accuracy": float(np.mean(exact)) if len(exact) else float("nan"),
        "token_accuracy": float(np.nanmean(tok)) if np.isfinite(tok).any() else None,
        "mean_steps": float(steps.mean()) if len(steps) else float("nan"),
        "median_steps": float(np.median(steps)) if len(steps) else float("nan"),
        "steps_histogram": {int(k): int(v) for k, v in enumerate(hist) if v},
    }


def evaluate(solve: SolveFn, codec: Codec, pairs: Sequence[Pair], batch_size: int = 64,
             advance: Callable[[int], None] | None = None) -> tuple[dict, Solution]:
    """Solve every puzzle in batches and score it; returns the summary and the joined solutions."""
    puzzles = np.stack([p for p, _ in pairs]).astype(np.int64)
    labels = [lab for _, lab in pairs]
    sol = in_batches(lambda rows: solve(puzzles[rows]), len(puzzles), batch_size, advance)
    return score(codec, puzzles, labels, sol), sol


def in_batches(solve: Callable[[slice], Solution], n: int, batch_size: int,
               advance: Callable[[int], None] | None = None) -> Solution:
    """`solve(rows)` over consecutive slices of n rows, joined; `advance(k)` after each."""
    parts = []
    for i in range(0, n, batch_size):
        parts.append(solve(slice(i, i + batch_size)))
        if advance:
            advance(len(parts[-1].steps))
    return Solution.concat(parts)


def score(codec: Codec, puzzles: np.ndarray, labels: Sequence[np.ndarray | None], sol: Solution) -> dict:
    """The summary every evaluation reports for solved puzzles."""
    exact, tok = row_scores(codec, puzzles, labels, sol.tokens)
    return dict(summarize(exact, tok, sol.steps), faults=int((sol.fault > 0).sum()),
                mean_view_steps=float(sol.view_steps.mean()))


def paired_drop(reference: np.ndarray, other: np.ndarray) -> dict:
    """The exact-solve drop of `other` against `reference` on the same puzzles (percentage points), with its 95%
    interval (`paired_interval`)."""
    ref, oth = np.asarray(reference, bool), np.asarray(other, bool)
    n, b, c = len(ref), int((ref & ~oth).sum()), int((~ref & oth).sum())
    if not n:
        raise ValueError("paired_drop: no puzzles")
    return {"n": n, "lost": b, "gained": c, "drop_pp": 100 * (b - c) / n,
            "ci95_pp": [round(v, 2) for v in paired_interval(b, c, n, 1.96)]}


def paired_interval(lost: int, gained: int, n: int, z: float) -> tuple[float, float]:
    """The drop's interval in percentage points at `z` (1.96: 95%). Paired: only the puzzles one solves and the other
    does not carry information (lost, gained). The score interval (Tango 1998: the drops d whose score test at `z`
    does not reject) stays honest when they are few, where a Wald-type interval claims a drop under 1 pp from
    256 puzzles with none lost, which a 1.1% loss rate gives 6% of the time."""
    def bound(side: int) -> float:
        lo, hi = (-1.0, (lost - gained) / n) if side < 0 else ((lost - gained) / n, 1.0)
        for _ in range(60):  # score(d) falls as d rises: bisect for score = -side * z
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (paired_score(lost, gained, n, mid) > -side * z) else (lo, mid)
        return 100 * (lo + hi) / 2

    return bound(-1), bound(1)


def paired_score(lost, gained, n: int, d: float):
    """The score statistic of a drop `d` (a fraction): (lost - gained - n d) over its standard deviation with the
    cells at their maximum likelihood under a true drop d (a root of a quadratic). Negative: the drop is below d.
    Counts may be arrays (a simulation's runs)."""
    lost, gained = np.asarray(lost, float), np.asarray(gained, float)
    b = lost * (1 - d) + gained * (1 - 3 * d) - 2 * (n - lost - gained) * d
    q = (b + np.sqrt(np.maximum(b * b + 8 * n * gained * d * (1 - d), 0.0))) / (4 * n)  # P(gained) under d
    q = np.clip(q, max(0.0, -d), (1 - d) / 2)
    return (lost - gained - n * d) / np.sqrt(np.maximum(n * (2 * q + d - d * d), 1e-300))


def grid_key(grid: np.ndarray) -> bytes:
    g = np.ascontiguousarray(grid, dtype=np.uint8)
    return np.asarray(g.shape, np.int64).tobytes() + g.tobytes()


def arc_vote(names: Sequence[str], inputs: np.ndarray, preds: np.ndarray, q_halt: np.ndarray
             ) -> dict[tuple[str, bytes], list[tuple[np.ndarray, int, float]]]:
    """The official ARC vote over augmented views. Each row is one variant's test input (`names`: its puzzle's
    identifier name, '<task>|||t<k>|||<colours>'); its predicted grid is cropped and mapped back to the task's frame,
    and the de-augmented input says which test pair it answers. Per (task, input key): the distinct answers as
    (grid, votes, mean sigmoid(q_halt)), most votes first, ties by the higher mean."""
    pairs: dict[tuple[str, bytes], dict[bytes, list]] = {}
    for name, x, p, q in zip(names, inputs, preds, q_halt):
        task, k, colours = parse_variant(name)
        back_x, back_p = (invert_variant(decode_grid(g), k, colours) for g in (x, p))
        vote = pairs.setdefault((task, grid_key(back_x)), {}).setdefault(grid_key(back_p), [back_p, 0, 0.0])
        vote[1] += 1
        vote[2] += float(1 / (1 + np.exp(-np.float64(q))))
    return {key: sorted(((g, n, s / n) for g, n, s in votes.values()), key=lambda v: (-v[1], -v[2]))
            for key, votes in pairs.items()}


def arc_pass_at(names: Sequence[str], inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                q_halt: np.ndarray, ks: Sequence[int] = (1, 2)) -> dict:
    """ARC's official score (arc_vote): a test pair passes at K when its true output is among its top K answers;
    a task scores the fraction of its pairs that pass, and pass@K averages over tasks: those with rows here (the
    official evaluator also counts a task or pair of its test_puzzles.json without predictions, as failed; the same
    wherever every pair has rows, as on a whole test split; tests/test_vote.py holds the two to each other)."""
    truth = {}
    for name, x, y in zip(names, inputs, labels):
        task, k, colours = parse_variant(name)
        truth[(task, grid_key(invert_variant(decode_grid(x), k, colours)))] = \
            grid_key(invert_variant(decode_grid(y), k, colours))
    tasks: dict[str, list[list[bool]]] = {}
    for (task, x), ranked in arc_vote(names, inputs, preds, q_halt).items():
        keys = [grid_key(g) for g, _, _ in ranked]
        tasks.setdefault(task, []).append([truth[(task, x)] in keys[:k] for k in ks])
    score = {f"pass@{k}": float(np.mean([np.mean([p[j] for p in ps]) for ps in tasks.values()]))
             for j, k in enumerate(ks)}
    return {"tasks": len(tasks), "pairs": len(truth), "rows": len(names), **score}
