"""The host side every adapter shares: the halting loop over a step graph, one call of a loop or unrolled
graph, and continuous batching for throughput."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from trm_edge.config import TRMConfig
from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy, Solution, finite_rows, halting_loop
from trm_edge.runtimes.base import Adapter
from trm_edge.tasks import Codec
from trm_edge.views import ViewJobs


class Solver:
    def __init__(self, adapter: Adapter, graph: str, config: TRMConfig, codec: Codec, init: dict[str, np.ndarray],
                 init_ms: float = 0.0, max_unrolled: int | None = None, halt: HaltPolicy | None = None):
        self.adapter, self.graph, self.config, self.codec = adapter, graph, config, codec
        # the policy the bundle recommends (its manifest's `halting`; none: the official fixed steps)
        self.halt = halt or HaltPolicy("fixed", config.halt_max_steps)
        self.H_init = np.asarray(init["H_init"], np.float32)
        self.L_init = np.asarray(init["L_init"], np.float32)
        self.init_ms, self.max_unrolled = init_ms, max_unrolled
        rows = adapter.io().get("tokens", [None])[0]
        self.batch = rows if isinstance(rows, int) else None  # a graph exported with --batch B takes B rows a call

    def describe(self) -> dict:
        return dict(self.adapter.describe(), graph_form=self.graph)

    def policy(self, p: HaltPolicy) -> HaltPolicy:
        """`p`, refused where this graph cannot run it."""
        if self.max_unrolled is not None and p.max_steps > self.max_unrolled:
            raise TRMEdgeError(f"the unrolled graph has {self.max_unrolled} steps; policy {p} needs {p.max_steps}")
        if p.verify and self.graph != "step":
            raise TRMEdgeError(f"halting policy {p}: checking answers between steps needs the step graph "
                               "(--graph step)")
        return p

    def carry(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The initial carry for n rows."""
        shape = (n, self.config.total_len, self.config.hidden_size)
        return np.broadcast_to(self.H_init, shape).copy(), np.broadcast_to(self.L_init, shape).copy()

    def step(self, tokens, pids, z_H, z_L):
        """One supervision step on numpy arrays: (z_H, z_L, predicted tokens, q_halt, rows all finite)."""
        o = self.run({"tokens": tokens, "puzzle_ids": pids, "z_H": z_H, "z_L": z_L})
        ok = finite_rows(o["z_H_out"], o["z_L_out"], o["q_halt"], o["logits"])
        return o["z_H_out"], o["z_L_out"], o["pred"], o["q_halt"], ok

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One graph call on any number of rows: a static-batch graph gets its B rows a call, the last call padded
        with copies of its first row and the outputs cut back."""
        n, b = len(feeds["tokens"]), self.batch
        if b is None or n == b:
            return self.adapter.run(feeds)
        parts = []
        for i in range(0, n, b):
            part = {k: v[i:i + b] if np.ndim(v) and len(v) == n else v for k, v in feeds.items()}
            m = len(part["tokens"])
            part = {k: np.concatenate([v, np.repeat(v[:1], b - m, 0)]) if np.ndim(v) and len(v) == m else v
                    for k, v in part.items()}
            parts.append({k: v[:m] for k, v in self.adapter.run(part).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def solve(self, tokens: np.ndarray, halt: HaltPolicy, puzzle_ids: np.ndarray | None = None,
              advance: Callable[[int], None] | None = None) -> Solution:
        """One batch: every row starts together; the batch ends when its last row halts (then `advance(rows)`, as
        `solve_stream` reports puzzles finishing)."""
        policy = self.policy(halt)
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        pids = np.zeros(len(tokens), np.int64) if puzzle_ids is None else np.asarray(puzzle_ids, np.int64)
        if self.graph != "step":
            o = self.run({"tokens": tokens, "puzzle_ids": pids, **policy.graph_inputs()})
            sol = Solution(o["pred"], o["steps"], o["q_halt"], o["fault"])
        else:
            def step(carry):
                z_H, z_L, pred, q, ok = self.step(tokens, pids, *carry)
                return (z_H, z_L), pred, q, ok

            check = self.codec.checker(tokens) if policy.verify else None
            sol = halting_loop(step, self.carry(len(tokens)), policy, check)
        if advance:
            advance(len(tokens))
        return sol

    def solve_stream(self, tokens: np.ndarray, halt: HaltPolicy, slots: int = 64,
                     puzzle_ids: np.ndarray | None = None, views: int = 1, seed: int = 0,
                     advance: Callable[[int], None] | None = None) -> Solution:
        """Continuous batching: a row that halts is refilled at once with the next job (its carry reset), so
        throughput follows the mean number of steps, not the slowest row's. A job is one view of a puzzle
        (`views.ViewJobs`): with several views, a puzzle whose view the rules accept frees its slot for the next
        puzzle. Step graph only; `advance(n)` as puzzles finish."""
        if self.graph != "step":
            raise TRMEdgeError("continuous batching needs the step graph (--graph step)")
        policy = self.policy(halt)
        jobs = ViewJobs(self.codec, tokens, views, seed, puzzle_ids, advance)
        slots = max(1, min(slots, len(tokens)))  # a carry per slot; a puzzle runs one view at a time
        job = np.full(slots, -1)  # the job each slot holds
        k, pid = np.zeros(slots, np.int64), np.zeros(slots, np.int64)
        tok = np.zeros((slots, jobs.puzzles.shape[1]), np.int64)
        check = self.codec.checker(tok) if policy.verify else None  # reads the slots' tokens as they change
        z_H, z_L = self.carry(slots)
        fresh_H, fresh_L = self.carry(1)
        while True:
            free = np.flatnonzero(job < 0)
            ids, new_tok, new_pid = jobs.take(len(free))
            free = free[:len(ids)]
            job[free], tok[free], pid[free], k[free] = ids, new_tok, new_pid, 0
            z_H[free], z_L[free] = fresh_H, fresh_L
            act = np.flatnonzero(job >= 0)
            if not len(act):
                return jobs.result()
            h, l, pred, q, ok = self.step(tok[act], pid[act], z_H[act], z_L[act])
            z_H[act], z_L[act] = h, l
            k[act] += 1
            done = policy.halted(k[act], q) | ~ok
            if policy.verify:
                done[~done] = check(act[~done], pred[~done])
            fin = act[done]
            jobs.finish(job[fin], pred[done], k[fin], q[done], np.where(ok[done], 0, k[fin]))
            job[fin] = -1
