"""Property-based fuzzing: no input to a codec, the halting-policy parser or `trm-edge solve` gives a traceback or a
hang; each is either understood or refused with one TRMEdgeError line. (COUNTS below is what one run generates:
the record in benchmarks/RESULTS.md sums it.)"""

from __future__ import annotations

import contextlib
import io
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trm_edge import api
from trm_edge.cli import main
from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy, Solution
from trm_edge.tasks import ARC, SUDOKU, GenericCodec, MazeCodec

FUZZ = settings(max_examples=2000, deadline=2000, suppress_health_check=list(HealthCheck), derandomize=True)
MAZE = MazeCodec(30)
CODECS = {"sudoku": SUDOKU, "maze": MAZE, "arc": ARC, "generic": GenericCodec(12, 4)}

# near-valid text: the characters each codec cares about, in lines, so the fuzzer gets past the first check
sudoku_text = st.text(alphabet="0123456789.|-+ \n,#x", max_size=200)
maze_text = st.lists(st.text(alphabet="# SGo?", max_size=32), max_size=32).map("\n".join)
arc_text = st.recursive(st.integers(-2, 12) | st.text(max_size=3) | st.none(),
                        lambda c: st.lists(c, max_size=6) | st.dictionaries(st.sampled_from(
                            ["train", "test", "input", "output"]), c, max_size=3), max_leaves=60).map(
    lambda v: __import__("json").dumps(v))
generic_text = st.recursive(st.integers(-2, 14) | st.text(alphabet="0123456789 ,-[]{}", max_size=8) | st.none(),
                            lambda c: st.lists(c, min_size=3, max_size=5) | st.dictionaries(st.sampled_from(
                                ["input", "label", "x"]), c, max_size=2), max_leaves=20).map(
    lambda v: __import__("json").dumps(v)) | st.text(alphabet="0123456789 ,-\n[]", max_size=60)
# every Unicode category, surrogates and NUL included; long ones are no file name the OS accepts
anything = st.text(max_size=300) | st.text(min_size=200, max_size=3000)


def understood_or_refused(codec, text: str) -> None:
    try:
        pairs = codec.parse_text(text)
    except TRMEdgeError as e:
        assert "\n" not in str(e), str(e)
        return
    for puzzle, label in pairs:
        codec.as_tokens(puzzle)
        assert codec.parse_text(codec.render(puzzle))  # whatever parses, renders back to something that parses
        if label is not None:
            codec.as_tokens(label)


@pytest.mark.parametrize("name, strategy", [("sudoku", sudoku_text), ("maze", maze_text), ("arc", arc_text),
                                            ("generic", generic_text)])
def test_codecs_never_crash(name, strategy):
    codec = CODECS[name]

    @FUZZ
    @given(st.one_of(strategy, anything))
    def check(text):
        understood_or_refused(codec, text)

    check()


@FUZZ
@given(st.one_of(st.text(alphabet="fixedlarn:0123456789.,=minax-+eE_ ", max_size=40), anything))
def test_halting_policy_parser(text):
    try:
        pol = HaltPolicy.parse(text, 16)
    except TRMEdgeError:
        return
    assert 1 <= pol.min_steps <= pol.max_steps <= 256 and not np.isnan(pol.threshold)
    assert HaltPolicy.parse(str(pol), 16) == pol


class _FakeLoaded:
    """A model stand-in: `solve` gets the real CLI and input path; answers are random tokens."""

    def __init__(self, codec):
        self.codec, self.describe = codec, "fake"
        self.config = SimpleNamespace(halt_max_steps=16, num_puzzle_identifiers=1)
        self.halt, self.graph, self.stream, self.rows = HaltPolicy.parse("learned:3", 16), "step", None, None

    solve_all = api.Loaded.solve_all  # rounds of views over the fake `solve`

    def solve(self, tokens, policy):
        rng = np.random.default_rng(len(tokens))
        n = len(tokens)
        return Solution(rng.integers(0, self.codec.vocab_size, tokens.shape), np.ones(n, np.int64),
                        np.zeros(n, np.float32))


def _cli(args: list[str], stdin: bytes = b"") -> tuple[int, str]:
    o, e = io.StringIO(), io.StringIO()
    old_in = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e), pytest.raises(SystemExit) as ex:
            main(args)
    finally:
        sys.stdin = old_in
    return ex.value.code, e.getvalue()


@pytest.fixture
def fake_model(monkeypatch):
    box = {}
    monkeypatch.setattr(api, "open_model", lambda *a, **k: _FakeLoaded(box["codec"]))
    return box


options = st.lists(st.sampled_from(["--halt", "--batch", "--json", "--graph", "--precision", "--threads", "--task",
                                    "fixed", "learned:3", "0", "-1", "7", "", "--", "-", "x"]), max_size=4)


# The CLI fuzzers run the whole command per input (~25 ms): the default suite runs a sixth of the inputs, the slow
# set all of them (the counts RESULTS.md reports).
def _examples(full: int) -> list:
    return [pytest.param(full // 6, id="quick"), pytest.param(full, id="full", marks=pytest.mark.slow)]


@pytest.mark.parametrize("examples", _examples(2000))
@pytest.mark.parametrize("task", ["sudoku", "maze"])
def test_solve_input_parsing(fake_model, task, examples):
    fake_model["codec"] = CODECS[task]
    text = sudoku_text if task == "sudoku" else maze_text

    @settings(FUZZ, max_examples=examples)
    @given(st.lists(st.one_of(text, anything), min_size=0, max_size=3), options)
    def check(puzzles, opts):
        code, err = _cli(["solve", *puzzles, *opts])
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and err.startswith("trm-edge: error:"), err

    check()


@pytest.mark.parametrize("examples", _examples(1000))
def test_solve_stdin_bytes(fake_model, examples):
    fake_model["codec"] = SUDOKU

    @settings(FUZZ, max_examples=examples)
    @given(st.one_of(st.binary(max_size=200), sudoku_text.map(str.encode)))
    def check(data):
        code, err = _cli(["solve", "-", "--json"], stdin=data)
        assert code in (0, 2) and "Traceback" not in err and len(err.strip().splitlines()) <= 1, err

    check()
