"""The host side every adapter shares: the halting loop over a step graph, one call of a loop or unrolled
graph, and continuous batching for throughput."""

from __future__ import annotations

import numpy as np

from trm_edge.config import TRMConfig
from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy, Solution, finite_rows, halting_loop
from trm_edge.runtimes.base import Adapter
from trm_edge.tasks import Codec


class Solver:
    def __init__(self, adapter: Adapter, graph: str, config: TRMConfig, codec: Codec, init: dict[str, np.ndarray],
                 init_ms: float = 0.0, max_unrolled: int | None = None, halt: str = "fixed"):
        self.adapter, self.graph, self.config, self.codec = adapter, graph, config, codec
        self.halt = halt  # the policy the bundle recommends (its manifest's `halting`)
        self.H_init = np.asarray(init["H_init"], np.float32)
        self.L_init = np.asarray(init["L_init"], np.float32)
        self.init_ms, self.max_unrolled = init_ms, max_unrolled

    def describe(self) -> dict:
        return dict(self.adapter.describe(), graph_form=self.graph)

    def policy(self, halt: HaltPolicy | str) -> HaltPolicy:
        p = halt if isinstance(halt, HaltPolicy) else HaltPolicy.parse(halt, self.config.halt_max_steps)
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
        o = self.adapter.run({"tokens": tokens, "puzzle_ids": pids, "z_H": z_H, "z_L": z_L})
        ok = finite_rows(o["z_H_out"], o["z_L_out"], o["q_halt"], o["logits"])
        return o["z_H_out"], o["z_L_out"], o["pred"], o["q_halt"], ok

    def solve(self, tokens: np.ndarray, halt: HaltPolicy | str = "fixed", puzzle_ids: np.ndarray | None = None
              ) -> Solution:
        """One batch: every row starts together; the batch ends when its last row halts."""
        policy = self.policy(halt)
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        pids = np.zeros(len(tokens), np.int64) if puzzle_ids is None else np.asarray(puzzle_ids, np.int64)
        if self.graph != "step":
            o = self.adapter.run({"tokens": tokens, "puzzle_ids": pids, **policy.graph_inputs()})
            return Solution(o["pred"], o["steps"], o["q_halt"], o["fault"])

        def step(carry):
            z_H, z_L, pred, q, ok = self.step(tokens, pids, *carry)
            return (z_H, z_L), pred, q, ok

        check = self.codec.checker(tokens) if policy.verify else None
        return halting_loop(step, self.carry(len(tokens)), policy, check)

    def solve_stream(self, tokens: np.ndarray, halt: HaltPolicy | str = "fixed", slots: int = 64,
                     puzzle_ids: np.ndarray | None = None) -> Solution:
        """Continuous batching: a row that halts is refilled at once with the next puzzle (its carry reset),
        so throughput follows the mean number of steps, not the slowest row's. Step graph only."""
        if self.graph != "step":
            raise TRMEdgeError("continuous batching needs the step graph (--graph step)")
        policy = self.policy(halt)
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        pids_all = np.zeros(len(tokens), np.int64) if puzzle_ids is None else np.asarray(puzzle_ids, np.int64)
        n = len(tokens)
        check = self.codec.checker(tokens) if policy.verify else None
        out = Solution(np.zeros_like(tokens), np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, np.int64))
        row = np.full(slots, -1)  # puzzle index held by each slot
        k = np.zeros(slots, np.int64)
        z_H, z_L = self.carry(slots)
        fresh_H, fresh_L = self.carry(1)
        nxt = 0
        while True:
            free = np.flatnonzero(row < 0)[: n - nxt]
            row[free], k[free] = np.arange(nxt, nxt + len(free)), 0
            z_H[free], z_L[free] = fresh_H, fresh_L
            nxt += len(free)
            act = np.flatnonzero(row >= 0)
            if not len(act):
                return out
            idx = row[act]
            h, l, pred, q, ok = self.step(tokens[idx], pids_all[idx], z_H[act], z_L[act])
            z_H[act], z_L[act] = h, l
            k[act] += 1
            done = policy.halted(k[act], q) | ~ok
            if policy.verify:
                done[~done] = check(idx[~done], pred[~done])
            fin = idx[done]
            out.tokens[fin], out.steps[fin], out.q_halt[fin] = pred[done], k[act][done], q[done]
            out.fault[idx[~ok]], out.tokens[idx[~ok]] = k[act][~ok], 0
            row[act[done]] = -1
