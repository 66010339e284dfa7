"""Multi-view solving: a puzzle is solved in several symmetric frames (digit relabelling, transposes and shuffles
for sudoku; the square's symmetries for mazes), each answer is mapped back, and the first one the task's rules
accept is returned. Views run in rounds: round v solves view v of every puzzle still unsolved, so a puzzle that
view 0 solves costs one view. Works over any backend's `solve(tokens, policy)`; torch-free."""

from __future__ import annotations

import dataclasses
import zlib
from collections import deque
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


def _frames(codec: Codec, puzzle: np.ndarray, views: int, seed: int) -> list:
    """A puzzle's views, drawn from its own tokens and the seed: the same whatever the batch or file."""
    return codec.views(views, np.random.default_rng([seed, zlib.crc32(puzzle.tobytes())]))


def _check_views(codec: Codec, views: int, seed: int) -> None:
    if not 1 <= views <= MAX_VIEWS:
        raise TRMEdgeError(f"--views {views}: choose 1-{MAX_VIEWS}")
    if views > 1:
        codec.views(views, np.random.default_rng(seed))  # a task without views (or with fewer) says so now


def solve_views(solve: Callable[[np.ndarray, HaltPolicy], Solution], codec: Codec, puzzles: np.ndarray,
                policy: HaltPolicy, views: int, seed: int = 0) -> Solution:
    """Per puzzle: the first view whose mapped-back answer passes codec.check (its index in `view`), else view 0's
    answer; `view_steps` counts the supervision steps of every view tried. A puzzle's views are drawn from its own
    tokens and the seed, so they are the same whatever the batch or the file it comes in."""
    _check_views(codec, views, seed)
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
            frames.update({i: _frames(codec, puzzles[i], views, seed) for i in pending if i not in frames})
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


class ViewJobs:
    """A multi-view solve as jobs for continuous batching (`Solver.solve_stream`): a job is one view of one
    puzzle. A puzzle's next view is queued only when its current one ends without an answer the rules accept,
    and it goes ahead of puzzles not yet started: every view that runs is one the rounds of `solve_views` would
    run too (same views, same answers), while the slots of a solved puzzle go to the next one at once."""

    def __init__(self, codec: Codec, puzzles: np.ndarray, views: int = 1, seed: int = 0,
                 puzzle_ids: np.ndarray | None = None, advance: Callable[[int], None] | None = None):
        _check_views(codec, views, seed)
        self.codec, self.views, self.seed, self.advance = codec, views, seed, advance
        self.puzzles = np.ascontiguousarray(puzzles, dtype=np.int64)
        n = len(self.puzzles)
        self.pids = np.zeros(n, np.int64) if puzzle_ids is None else np.asarray(puzzle_ids, np.int64)
        self.frames: dict[int, list] = {}
        self.retry: deque[tuple[int, int]] = deque()
        self.started = 0
        self.jobs: list[tuple[int, int]] = []  # job id -> (puzzle, view)
        self.out = Solution(np.zeros_like(self.puzzles), np.zeros(n, np.int64), np.zeros(n, np.float32),
                            np.zeros(n, np.int64), view_steps=np.zeros(n, np.int64))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to n new jobs: (job ids, their tokens, their puzzle ids); none left when the ids are empty."""
        new = []
        while len(new) < n and (self.retry or self.started < len(self.puzzles)):
            if self.retry:
                new.append(self.retry.popleft())
            else:
                new.append((self.started, 0))
                self.started += 1
        ids = np.arange(len(self.jobs), len(self.jobs) + len(new))
        self.jobs += new
        tokens = np.array([self._tokens(i, v) for i, v in new], np.int64).reshape(len(new), self.puzzles.shape[1])
        return ids, tokens, self.pids[[i for i, _ in new]]

    def _tokens(self, i: int, v: int) -> np.ndarray:
        if v == 0:
            return self.puzzles[i]
        if i not in self.frames:
            self.frames[i] = _frames(self.codec, self.puzzles[i], self.views, self.seed)
        return self.frames[i][v].forward(self.puzzles[i])

    def finish(self, ids: np.ndarray, pred: np.ndarray, steps: np.ndarray, q_halt: np.ndarray,
               fault: np.ndarray) -> None:
        """Jobs that halted: view 0 answers every puzzle (until a view's mapped-back answer passes the rules);
        a puzzle with views left and no accepted answer queues its next view."""
        out, done = self.out, 0
        for j, a, k, q, f in zip(ids, pred, steps, q_halt, fault):
            i, v = self.jobs[j]
            a = self.frames[i][v].back(a) if v else a
            out.view_steps[i] += k
            accepted = self.views > 1 and not f and self.codec.check(self.puzzles[i], a)
            if v == 0 or accepted:
                out.tokens[i], out.steps[i], out.q_halt[i], out.fault[i], out.view[i] = 0 if f else a, k, q, f, v
            if accepted or v + 1 == self.views:
                done += 1
            else:
                self.retry.append((i, v + 1))
        if self.advance and done:
            self.advance(done)

    def result(self) -> Solution:
        return self.out
