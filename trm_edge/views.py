"""Multi-view solving: a puzzle is solved in several symmetric frames (digit relabelling, transposes and shuffles
for sudoku; the square's symmetries for mazes), each answer is mapped back, and the first one the task's rules
accept is returned. Views run in rounds: round v solves view v of every puzzle still unsolved, so a puzzle that
view 0 solves costs one view. Works over any backend's `solve(tokens, policy)`; torch-free."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy, Solution
from trm_edge.tasks import Codec

MAX_VIEWS = 256
# With several views, a view whose answer has not passed the rules after this many supervision steps gives way to
# the next view: on held-out sudokus 95% of the answers a view ever gets right pass by step 6, while a view that is
# still wrong rarely recovers (RESULTS.md, "Solve more").
PATIENCE = 6


def view_policy(policy: HaltPolicy, views: int, between_steps: bool = True) -> HaltPolicy:
    """The default policy under several views: the model's own, stopping at a verified answer (where answers can
    be checked between steps: the host loop, not a loop graph), and moving on to the next view after PATIENCE
    steps."""
    if views == 1:
        return policy
    steps = min(policy.max_steps, PATIENCE)
    return dataclasses.replace(policy, verify=between_steps, max_steps=steps, min_steps=min(policy.min_steps, steps))


def solve_views(solve: Callable[[np.ndarray, HaltPolicy], Solution], codec: Codec, puzzles: np.ndarray,
                policy: HaltPolicy, views: int, seed: int = 0) -> Solution:
    """Per puzzle: the first view whose mapped-back answer passes codec.check (its index in `view`), else view 0's
    answer; `view_steps` counts the supervision steps of every view tried. A puzzle's views are drawn from its own
    tokens and the seed, so they are the same whatever the batch or the file it comes in."""
    if not 1 <= views <= MAX_VIEWS:
        raise TRMEdgeError(f"--views {views}: choose 1-{MAX_VIEWS}")
    if views > 1:
        codec.views(views, np.random.default_rng(seed))  # a task without views (or with fewer) says so now
    puzzles = np.asarray(puzzles, np.int64)
    frames: dict[int, list] = {}  # drawn when a puzzle first needs view 1: most never do
    best: Solution | None = None
    spent = np.zeros(len(puzzles), np.int64)
    pending = np.arange(len(puzzles))
    for v in range(views):
        if v == 0:
            sol = solve(puzzles, policy)
            answers = sol.tokens.copy()
        else:
            frames.update({i: codec.views(views, np.random.default_rng([seed, zlib.crc32(puzzles[i].tobytes())]))
                           for i in pending if i not in frames})
            sol = solve(np.stack([frames[i][v].forward(puzzles[i]) for i in pending]), policy)
            answers = np.stack([frames[i][v].back(a) for i, a in zip(pending, sol.tokens)])
        spent[pending] += sol.steps
        if best is None:  # view 0 answers every puzzle no view verifies
            best = Solution(answers, sol.steps.copy(), sol.q_halt.copy(), sol.fault.copy())
        ok = codec.checker(puzzles)(pending, answers) & (sol.fault == 0) if views > 1 else np.zeros(len(pending), bool)
        won = pending[ok]
        best.tokens[won], best.steps[won], best.q_halt[won] = answers[ok], sol.steps[ok], sol.q_halt[ok]
        best.fault[won], best.view[won] = 0, v
        pending = pending[~ok]
        if not len(pending):
            break
    best.view_steps = spent
    return best
