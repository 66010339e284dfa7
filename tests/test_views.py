"""Multi-view solving and verified halting: symmetries round-trip, checking commutes with them, an answer the rules
reject is never reported as solved, and views stop as soon as one verifies."""

from __future__ import annotations

import numpy as np
import pytest

from trm_edge.halting import HaltPolicy, Solution, halting_loop
from trm_edge.tasks import SUDOKU, MazeCodec, maze_gen, sudoku_gen
from trm_edge.views import solve_views

MAZE = MazeCodec(12)


def _sudokus(n, seed=0, singles=True):
    p, s = sudoku_gen.generate(n, givens=(30, 36), seed=seed, singles_only=singles)
    return sudoku_gen.to_tokens(p).astype(np.int64), sudoku_gen.to_tokens(s).astype(np.int64)


def _mazes(n, seed=0):
    puzzles, solutions = maze_gen.generate(n, size=12, seed=seed, canvas=12)[:2]
    return puzzles.astype(np.int64), solutions.astype(np.int64)


@pytest.mark.parametrize("codec, data", [(SUDOKU, _sudokus), (MAZE, _mazes)])
def test_every_view_round_trips_and_checking_commutes(codec, data):
    puzzles, solutions = data(6)
    rng = np.random.default_rng(0)
    for p, s in zip(puzzles, solutions):
        views = codec.views(8, rng)
        assert np.array_equal(views[0].cells, np.arange(codec.seq_len))  # view 0 is the puzzle itself
        broken = s.copy()  # one answer cell undone: a blank in a sudoku, a gap in a maze's path
        gap = np.flatnonzero(p != s)[0]
        broken[gap] = p[gap]
        for v in views:
            for grid in (p, s, broken, rng.integers(0, codec.vocab_size, codec.seq_len)):
                assert np.array_equal(v.back(v.forward(grid)), grid)
            for answer in (s, broken):  # a mapped-back answer passes iff it passes in the view's frame
                assert codec.check(v.forward(p), v.forward(answer)) == codec.check(p, answer)
        assert codec.check(p, s) and not codec.check(p, broken)
    if codec is SUDOKU:
        assert len({v.forward(puzzles[0]).tobytes() for v in codec.views(16, rng)}) == 16  # distinct views


def _singles_model(solvable_in_view):
    """A stand-in model: it solves a sudoku (by singles) only in the frames `solvable_in_view` accepts, else
    answers the puzzle unchanged (which breaks the rules); every call costs 3 supervision steps."""
    def solve(x, policy):
        out = np.stack([sudoku_gen.to_tokens(sudoku_gen.solve_singles(r - 1)) if solvable_in_view(r) else r
                        for r in x]).astype(np.int64)
        return Solution(out, np.full(len(x), 3), np.zeros(len(x), np.float32))
    return solve


def test_the_first_verified_view_wins_and_the_rest_never_run():
    puzzles, solutions = _sudokus(12, seed=1)
    calls = []

    def picky(row):  # solvable only when the top-left cell is a given in this frame
        calls.append(1)
        return row[0] > 1

    sol = solve_views(_singles_model(picky), SUDOKU, puzzles, HaltPolicy.parse("fixed:3", 16), views=16)
    for i, p in enumerate(puzzles):
        assert SUDOKU.check(p, sol.tokens[i]) and np.array_equal(sol.tokens[i], solutions[i])
        assert sol.view_steps[i] == 3 * (sol.view[i] + 1)  # one view per round until the winner, none after
        assert (sol.view[i] == 0) == (p[0] > 1)
    assert len(calls) == sol.view_steps.sum() // 3 and sol.view.max() > 0


def test_an_answer_the_rules_reject_is_never_reported_solved():
    from trm_edge.evaluate import row_scores

    puzzles, _ = _sudokus(8, seed=2)
    sol = solve_views(_singles_model(lambda r: False), SUDOKU, puzzles, HaltPolicy.parse("fixed:3", 16), views=4)
    exact, _ = row_scores(SUDOKU, puzzles, [None] * 8, sol.tokens)
    assert not exact.any() and (sol.view == 0).all() and (sol.view_steps == 12).all()
    assert np.array_equal(sol.tokens, puzzles)  # view 0's own answer comes back, mapped to the puzzle's frame


def test_views_are_the_same_whatever_the_batch():
    puzzles, _ = _sudokus(6, seed=3)
    seen = {}

    def record(x, policy):
        for r in x:
            seen.setdefault(r.tobytes(), 0)
        return Solution(x.copy(), np.ones(len(x), np.int64), np.zeros(len(x), np.float32))

    pol = HaltPolicy.parse("fixed:1", 16)
    solve_views(record, SUDOKU, puzzles, pol, views=3)
    first = set(seen)
    seen.clear()
    for i in (5, 3, 1, 0, 2, 4):  # one at a time, in another order
        solve_views(record, SUDOKU, puzzles[i:i + 1], pol, views=3)
    assert len(first) == 18 and set(seen) == first
    seen.clear()
    solve_views(record, SUDOKU, puzzles, pol, views=3, seed=1)
    assert len(set(seen) & first) == 6  # another seed: the same view 0, other views


def test_verified_halting_stops_a_row_at_its_first_accepted_answer():
    puzzles, solutions = _sudokus(3, seed=4)
    right_at = np.array([2, 5, 99])  # the step at which each row's answer becomes right (never for row 2)

    def step(k):
        pred = np.where((k + 1 >= right_at)[:, None], solutions, puzzles)
        return k + 1, pred, np.full(3, -10, np.float32), np.ones(3, bool)

    plain = halting_loop(step, 0, HaltPolicy.parse("learned:3", 16))
    verified = halting_loop(step, 0, HaltPolicy.parse("learned:3,max=8,verify", 16), SUDOKU.checker(puzzles))
    assert plain.steps.tolist() == [16, 16, 16]
    assert verified.steps.tolist() == [2, 5, 8]
    assert [SUDOKU.check(p, a) for p, a in zip(puzzles, verified.tokens)] == [True, True, False]
    assert str(HaltPolicy.parse("learned:3,max=8,verify", 16)) == "learned:3,min=1,max=8,verify"


def test_verify_needs_a_checker_and_the_step_graph(tmp_path):
    from trm_edge.errors import TRMEdgeError

    with pytest.raises(TRMEdgeError, match="no checker"):
        halting_loop(lambda k: (k, None, None, None), 0, HaltPolicy.parse("fixed,verify", 4))
    with pytest.raises(TRMEdgeError, match="views are not supported"):
        from trm_edge.tasks import ARC

        solve_views(lambda x, p: None, ARC, np.zeros((1, 900), np.int64), HaltPolicy.parse("fixed", 4), views=2)


def test_depth_is_a_knob_on_the_same_weights(capsys):
    import torch

    from trm_edge import api
    from trm_edge.checkpoint import load_model, with_config
    from trm_edge.cli import main
    from trm_edge.model import Batch

    base, _ = load_model()
    shallow, _ = load_model(depth=(1, 1))
    assert (shallow.config.H_cycles, shallow.config.L_cycles) == (1, 1)
    twin = with_config(base, __import__("dataclasses").replace(base.config, H_cycles=1, L_cycles=1)).eval()
    x = torch.from_numpy(_sudokus(4, seed=5)[0])
    batch = Batch(x, torch.zeros(4, dtype=torch.long))
    fixed3 = HaltPolicy.parse("fixed:3", 16)
    a, b = shallow.solve(batch, fixed3), twin.solve(batch, fixed3)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.q_halt, b.q_halt)
    assert not np.array_equal(a.q_halt, base.solve(batch, fixed3).q_halt)  # the depth did change the model
    assert api.open_model(None, api.Opening(depth="2,3")).config.L_cycles == 3
    for bad in ("2", "0,2", "a,b"):
        with pytest.raises(SystemExit) as e:
            main(["solve", "." * 81, "--depth", bad])
        assert e.value.code == 2 and "--depth" in capsys.readouterr().err


def test_continuous_batching_runs_the_views_the_rounds_run(bundled_step_bundle):
    """The same answers, winning views and view-steps as rounds (the bundled model, real ORT steps), with a
    solved puzzle's slot handed on: view 0's winners cost their own steps only, and progress counts puzzles."""
    from trm_edge.api import builtin_data
    from trm_edge.runtimes import open_solver
    from trm_edge.tasks import read_puzzles
    from trm_edge.views import view_policy

    solver = open_solver(str(bundled_step_bundle), "ort", "step", "fp32", 1)
    hard = [f for f in builtin_data("sudoku") if "24-29" in f.name][0]
    puzzles = np.stack([p for p, _ in read_puzzles(SUDOKU, str(hard))[:14]])
    policy = view_policy(HaltPolicy.parse("learned:3", 16), 4)
    rounds = solve_views(solver.solve, SUDOKU, puzzles, policy, views=4)
    finished = []
    stream = solver.solve_stream(puzzles, policy, slots=3, views=4, advance=finished.append)
    for field in ("tokens", "steps", "view", "view_steps", "fault"):
        assert np.array_equal(getattr(stream, field), getattr(rounds, field)), field
    assert np.allclose(stream.q_halt, rounds.q_halt, atol=1e-5)
    assert (stream.view == 0).any() and (stream.view > 0).any()  # both kinds of puzzle are in the test
    first = stream.view == 0
    assert np.array_equal(stream.view_steps[first], stream.steps[first])
    assert sum(finished) == len(puzzles)
    learned3 = HaltPolicy.parse("learned:3", 16)
    one = solver.solve_stream(puzzles, learned3, slots=4)  # one view: the plain stream, view 0 throughout
    batch = []  # one batch reports its rows once, when its last row halts
    assert np.array_equal(one.tokens, solver.solve(puzzles, learned3, advance=batch.append).tokens)
    assert not one.view.any() and batch == [len(puzzles)]
