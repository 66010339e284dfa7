"""The command line as a user meets it: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FIXTURES, TOP95, official_with_rows
from conftest import cli as run

SUDOKU = FIXTURES / "sudoku_mlp_fp32"
PUZZLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"


def _need_fixtures():
    if not SUDOKU.is_dir():
        pytest.skip("fixtures missing")


def test_info_json(capsys):
    _need_fixtures()
    code, out, _ = run(capsys, "info", str(SUDOKU), "--json")
    res = json.loads(out)
    assert code == 0 and res["task"] == "sudoku" and res["config"]["hidden_size"] == 64
    assert res["flops_per_solve"] == res["flops_per_step"] * 4 and res["files"]["step_1234"] > 0


def test_export_keeps_the_puzzle_rows_asked_in_their_order(capsys, tmp_path):
    """`export --puzzle-ids 0,5,2` (the rows read alone at load): the bundle's ids 0, 1, 2 answer as the model's
    0, 5, 2, and its id 1 not as the model's 1."""
    from trm_edge.checkpoint import load_official
    from trm_edge.halting import HaltPolicy
    from trm_edge.model import Batch
    from trm_edge.runtimes import open_solver

    d = official_with_rows(tmp_path / "run", 8)
    code, _, err = run(capsys, "export", str(d), "--graph", "step", "--puzzle-ids", "0,5,2", "-o", str(tmp_path / "b"),
                       "--quiet")
    assert code == 0, err
    solver, (model, _) = open_solver(tmp_path / "b", "ort", "step"), load_official(d)
    assert solver.config.num_puzzle_identifiers == 3
    puzzles, policy = solver.codec.sample(3, 0), HaltPolicy.parse("fixed", 4)
    got = solver.solve(puzzles, policy, np.array([0, 1, 2]))
    want, other = (model.solve(Batch(torch.from_numpy(puzzles), torch.tensor(ids)), policy)
                   for ids in ([0, 5, 2], [0, 1, 2]))
    assert (got.tokens == want.tokens).mean() >= 0.99 and np.abs(got.q_halt - want.q_halt).max() < 1e-3
    assert np.abs(got.q_halt - other.q_halt)[1] > 1e-2


@pytest.mark.slow
def test_info_and_a_subset_export_never_read_the_puzzle_table(tmp_path):
    """An official checkpoint with a 391 MiB puzzle table (200,000 rows of 512, ARC's width) beside its 4-row twin:
    `info` and `export --puzzle-ids` peak within a tenth of the table above the twin's peak (measured: +0.2 and
    +2.6 MiB; reading the table, as before issue 35, cost twice it), and the bundle holds the rows asked."""
    from benchmarks.studies.hostile import child
    from trm_edge.checkpoint import OFFICIAL_PREFIXES, PUZZLE_TABLE, load

    twin = official_with_rows(tmp_path / "twin", 4, mlp_t=False, puzzle_emb_ndim=512)
    big = shutil.copytree(twin, tmp_path / "big")
    state = torch.load(big / "step_1", weights_only=True)
    table = state[OFFICIAL_PREFIXES[0] + PUZZLE_TABLE] = torch.randn(200_000, 512)
    torch.save(state, big / "step_1")
    del state
    for cmd, *rest in (["info", "--json"], ["export", "--graph", "step", "--puzzle-ids", "1,2,3", "--quiet", "-o"]):
        peaks = []
        for d in (twin, big):
            r = child([cmd, str(d), *rest] + ([str(tmp_path / f"bundle-{d.name}")] if cmd == "export" else []),
                      timeout=600)
            assert r["exit"] == 0, r
            peaks.append(r["peak_mb"])
        assert peaks[1] <= peaks[0] + 0.1 * table.numel() * 4 / 2**20, (cmd, peaks)
    kept, _ = load(tmp_path / "bundle-big" / "reference")
    assert torch.equal(kept.puzzle_emb.weights, table[[1, 2, 3]])


def test_solve_string_file_and_stdin(capsys, tmp_path, monkeypatch):
    _need_fixtures()
    f = tmp_path / "p.txt"
    f.write_text(f"# two puzzles\n{PUZZLE}\n\n{PUZZLE.replace('4', '0', 1)}\n")
    code, out, _ = run(capsys, "solve", str(SUDOKU), PUZZLE, str(f), "--json", "--halt", "fixed:2")
    res = json.loads(out)
    assert code == 0 and res["n"] == 3 and all(r["steps"] == 2 for r in res["results"])
    assert all(r["checked_by"] == "rules" for r in res["results"])
    monkeypatch.setattr(sys, "stdin", open(f))
    code, out, _ = run(capsys, "solve", str(SUDOKU), "-", "--json")
    assert code == 0 and json.loads(out)["n"] == 2


@pytest.mark.parametrize("args, message", [
    (["solve", str(SUDOKU), "12345"], "expected 81 cells, got 5"),
    (["solve", str(SUDOKU), "x" * 81], "illegal character"),
    (["solve", str(SUDOKU), PUZZLE, "--halt", "soon"], "halting policy 'soon' not understood"),
    (["solve", str(SUDOKU)], "is a model: give at least one PUZZLE"),
    (["solve", str(SUDOKU), "missing/puzzles.txt"], "no such file"),
    (["info", "/no/such/model"], "no such model file or directory"),
    (["solve", "--bogus"], "No such option"),
    (["eval", str(SUDOKU), "--data", "/no/file.txt"], "no such data file"),
])
def test_errors_exit_2_with_one_line(capsys, args, message):
    _need_fixtures()
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("trm-edge: error:")


def test_pickled_checkpoint_exit_2_and_code_never_runs(capsys, tmp_path, monkeypatch):
    _need_fixtures()
    d = tmp_path / "run"
    shutil.copytree(SUDOKU, d)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    state = torch.load(d / "step_1234", weights_only=True)
    state["evil"] = Evil()
    torch.save(state, d / "step_1234", pickle_module=pickle)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "info", str(d))
    assert code == 2 and "refused" in err and not (tmp_path / "PWNED").exists()


def test_eval_reports_labels(capsys, tmp_path):
    _need_fixtures()
    if not TOP95.is_file():
        pytest.skip("top95 missing")
    f = tmp_path / "labelled.txt"
    puzzle = TOP95.read_text().split()[0]
    f.write_text(f"{puzzle},{puzzle}\n")  # a 'label' the random model cannot match
    code, out, _ = run(capsys, "eval", str(SUDOKU), "--data", str(f), "--halt", "fixed:2", "--json")
    r = json.loads(out)["runs"][0]
    assert code == 0 and r["n"] == 1 and r["exact_accuracy"] == 0.0 and 0 <= r["token_accuracy"] <= 1
    assert r["steps_histogram"] == {"2": 1}


def test_python_m_matches_console_script():
    _need_fixtures()
    a = subprocess.run([sys.executable, "-m", "trm_edge", "solve", str(SUDOKU), "123"], capture_output=True, text=True)
    assert a.returncode == 2 and "expected 81 cells" in a.stderr and "Traceback" not in a.stderr
    exe = shutil.which("trm-edge")
    if exe:
        b = subprocess.run([exe, "solve", str(SUDOKU), "123"], capture_output=True, text=True)
        assert (b.returncode, b.stderr) == (a.returncode, a.stderr)


def test_eval_table_fits_80_columns(capsys):
    code, out, _ = run(capsys, "eval", "--limit", "3", "--views", "1", "--views", "2", "--halt", "learned:3,min=2")
    assert code == 0 and "…" not in out and max(len(line) for line in out.splitlines()) <= 80, out
    words = out.split()
    assert words.count("givens24-29") == words.count("givens30-40") == 2 and "min=2" in words


def test_solve_numbers_views_the_same_in_text_and_json(capsys, tiny_bundle):
    from conftest import TINY_PUZZLE

    args = ["solve", str(tiny_bundle), TINY_PUZZLE, "--views", "3", "--halt", "fixed:2"]
    code, text, _ = run(capsys, *args)
    code_json, out, _ = run(capsys, *args, "--json")
    shown = int(re.search(r"view (\d+)/3", text)[1])
    assert code == code_json == 0 and 1 <= shown <= 3 and json.loads(out)["results"][0]["view"] == shown


def test_solve_json_has_exactly_the_fields_docs_json_md_documents(capsys, tiny_bundle):
    """docs/json.md's solve table is the contract: every documented field is present and none is undocumented;
    `answer` is `tokens` in the puzzle's own notation, and `halt` is the text's policy written in full."""
    import re
    from pathlib import Path

    import numpy as np
    from conftest import TINY_PUZZLE

    from trm_edge.halting import HaltPolicy
    from trm_edge.tasks import SUDOKU

    doc = (Path(__file__).parents[1] / "docs" / "json.md").read_text()
    section = doc.split("\n## solve\n", 1)[1].split("\n## ", 1)[0]
    fields = re.findall(r"^\| `([\w\[\].]+)` \|", section, re.M)
    top = {f for f in fields if "." not in f}
    per_puzzle = {f.removeprefix("results[].") for f in fields if f.startswith("results[].")}
    args = ["solve", str(tiny_bundle), TINY_PUZZLE, "--views", "2", "--halt", "learned:0,max=2"]
    code, out, _ = run(capsys, *args, "--json")
    res = json.loads(out)
    assert code == 0 and set(res) == top and all(set(r) == per_puzzle for r in res["results"]), (top, per_puzzle)
    r = res["results"][0]
    assert SUDOKU.compact(np.array(r["tokens"])) == r["answer"] and SUDOKU.compact(SUDOKU.parse(TINY_PUZZLE)) == \
        r["puzzle"]
    code, text, _ = run(capsys, *args)
    shown = re.search(r"per puzzle, (\S+),", text)[1]
    assert code == 0 and HaltPolicy.parse(shown, 2) == HaltPolicy.parse(res["halt"], 2)


def _commands(cmd, path=()):
    """Every leaf command of the CLI, as the user reaches it (`data build`), with its click object."""
    subs = getattr(cmd, "commands", {})
    if not subs:
        yield path, cmd
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


def test_help_reads_well_at_80_columns():
    """No `<bool>`/`<str>` type tags, no word cut with an ellipsis, no line over 80, whole usage lines."""
    import typer

    from trm_edge.cli import app

    for path, _ in [((), None), *_commands(typer.main.get_command(app))]:
        res = subprocess.run([sys.executable, "-m", "trm_edge", *path, "--help"], capture_output=True, text=True,
                             env={**os.environ, "COLUMNS": "80", "TERM": "dumb"}, timeout=60)
        text = res.stdout
        assert res.returncode == 0 and text.strip(), (path, res.stderr)
        assert not re.search(r"<(bool|str|int|float|list)", text) and "…" not in text, (path, text)
        assert max(map(len, text.splitlines())) <= 80 and "{" not in text.split("\n\n")[0], (path, text)


def test_every_option_has_a_long_name_and_every_output_a_default():
    import typer

    from trm_edge.cli import app

    for path, cmd in _commands(typer.main.get_command(app)):
        for p in cmd.params:
            if isinstance(p, typer.core.TyperOption):
                assert any(o.startswith("--") for o in p.opts), (path, p.opts)
                if "-o" in p.opts and path != ("serve-web",):  # serve-web builds into a temporary folder by default
                    assert p.default, (path, "an -o without a default")


def test_a_mistyped_bundle_is_a_missing_path_not_a_puzzle(capsys):
    code, _, err = run(capsys, "solve", "trm-sudok", PUZZLE)
    assert code == 2 and err.strip() == "trm-edge: error: trm-sudok: no such bundle, model or puzzle file"
    code, _, err = run(capsys, "web", "trm-sudok")
    assert code == 2 and err.strip() == "trm-edge: error: trm-sudok: no such bundle directory"


def test_options_that_do_not_apply_are_refused(capsys, tiny_bundle):
    code, _, err = run(capsys, "solve", str(tiny_bundle), PUZZLE, "--task", "maze")
    assert code == 2 and "--task applies to models" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "solve", PUZZLE, "--graph", "loop")
    assert code == 2 and "--graph applies to exported bundles; the bundled model is a model" in err
