"""A bundle exported with a static batch (`--batch B`) solves any number of puzzles in its step graph: B rows a
call, the last call padded (Solver.run), the same answers as a dynamic-batch bundle of the same model. (A loop
graph's outside stays dynamic.)"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config

from trm_edge.export import ExportOptions, export_bundle
from trm_edge.halting import HaltPolicy
from trm_edge.model import TRM
from trm_edge.runtimes import open_solver


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    model = TRM(tiny_config(hidden_size=16, num_heads=2, puzzle_emb_ndim=16, halt_max_steps=3)).eval()
    d = tmp_path_factory.mktemp("static")
    return {b: export_bundle(model, {"task": "sudoku"}, d / str(b), ExportOptions(("step",), verify_n=2, batch=b))
            for b in (None, 4)}


@pytest.mark.parametrize("n", [1, 4, 11])
def test_a_static_batch_bundle_solves_any_number_of_puzzles(bundles, n):
    dynamic, static = (open_solver(bundles[b], "ort", "step", "fp32") for b in (None, 4))
    assert static.batch == 4 and dynamic.batch is None
    puzzles = dynamic.codec.sample(n, 3)
    for halt in ("fixed", "learned:0"):
        policy = HaltPolicy.parse(halt, dynamic.config.halt_max_steps)
        a, b = dynamic.solve(puzzles, policy), static.solve(puzzles, policy)
        s = static.solve_stream(puzzles, policy, slots=3)
        for got in (b, s):
            assert len(got.tokens) == n and np.array_equal(a.tokens, got.tokens) and np.array_equal(a.steps, got.steps)
