"""Task plugins (issue 36 item 2): a package registers a task (a Codec, the interface trm-edge's own tasks
implement) under the `trm_edge.tasks` entry points and gets export, views and verified halting without a change to
trm-edge. The example plugin (examples/task-plugin, 6x6 sudoku) is made visible here through a test entry point: a
dist-info folder on sys.path, which is what `pip install` leaves behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, cli, tiny_config

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks import BUILT_IN, GROUP, Codec, codec_for, get_codec, plugins, registered

EXAMPLE = REPO / "examples" / "task-plugin"


def install(site: Path, dist: str, entries: dict[str, str]) -> None:
    """What pip leaves for a package with these entry points: its dist-info (metadata and entry_points.txt)."""
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site folder on sys.path with the example plugin installed in it; the registry read afresh."""
    root = tmp_path / "site"
    install(root, "trm-edge-sudoku6", {"sudoku6": "trm_sudoku6:Sudoku6Codec"})
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(root))
    plugins.cache_clear()
    yield root
    plugins.cache_clear()
    sys.modules.pop("trm_sudoku6", None)


def test_built_in_tasks_implement_the_plugin_interface():
    assert list(registered()) == ["arc", "maze", "sudoku", "generic"] and set(registered().values()) == {"trm-edge"}
    for name, cls in BUILT_IN.items():
        assert issubclass(cls, Codec) and "fits" in vars(Codec) and get_codec(name).name == name


def test_a_plugin_is_found_and_told_by_its_shape(site):
    assert codec_for(None, 8, 36).name == "sudoku6" and get_codec("SUDOKU6").seq_len == 36
    assert codec_for(None, 11, 81).name == "sudoku" and codec_for(None, 9, 36).name == "generic"
    assert registered() == {"arc": "trm-edge", "maze": "trm-edge", "sudoku": "trm-edge", "sudoku6": "trm-edge-sudoku6",
                            "generic": "trm-edge"}


def test_a_plugin_never_replaces_a_built_in_task(site):
    from trm_edge.tasks.sudoku import SudokuCodec

    install(site, "trm-edge-impostor", {"sudoku": "trm_sudoku6:Sudoku6Codec", "generic": "trm_sudoku6:Sudoku6Codec"})
    plugins.cache_clear()
    assert type(get_codec("sudoku")) is SudokuCodec and codec_for("generic", 8, 36).name == "generic"


def test_a_broken_plugin_is_named_in_one_line_and_only_when_tried(site, monkeypatch):
    """A plugin that fails (to import, to be a Codec, on a model's shape) is named with its package, and only when it
    is asked for or tried: the built-ins fit their models first, so a sudoku model never imports a plugin."""
    def broken(cls, vocab_size, seq_len):
        raise ValueError("oops")

    with monkeypatch.context() as m:
        m.setattr(type(get_codec("sudoku6")), "fits", classmethod(broken))
        with pytest.raises(TRMEdgeError, match=r"task 'sudoku6': its codec failed on a model of 36 tokens over 8 "
                                               r"values \(ValueError: oops\); fix or uninstall it"):
            codec_for(None, 8, 36)
    install(site, "trm-edge-broken", {"broken": "no_such_module:Codec", "wrong": "json:loads"})
    plugins.cache_clear()
    assert codec_for(None, 11, 81).name == "sudoku"  # no plugin is imported for it
    with pytest.raises(TRMEdgeError, match=r"task 'broken' \(no_such_module:Codec, from trm-edge-broken\) failed to "
                                           r"load \(ModuleNotFoundError"):
        codec_for(None, 8, 36)  # plugins are tried by name: a broken one is not skipped to call the model generic
    with pytest.raises(TRMEdgeError, match="task 'wrong' .* is not a trm_edge.tasks.Codec subclass"):
        get_codec("wrong")
    with pytest.raises(TRMEdgeError, match="unknown task 'chess' .*sudoku6"):
        get_codec("chess")


def test_the_example_plugin_keeps_its_own_promises(site):
    """Its symmetries map answers as they map puzzles, and its rules accept exactly valid answers."""
    codec = get_codec("sudoku6")
    puzzles = codec.sample(6, seed=3)
    r, c = np.divmod(np.arange(36), 6)
    grid = (3 * (r % 2) + r // 2 + c) % 6 + 2
    blank = np.ones(36, np.int64)
    for view in codec.views(8, np.random.default_rng(0)):
        assert codec.check(view.forward(blank), view.forward(grid))
        assert np.array_equal(view.back(view.forward(puzzles)), puzzles)
    bad = grid.copy()
    bad[[0, 1]] = bad[[1, 0]]
    assert not codec.check(blank, bad)
    for p in puzzles:
        assert np.array_equal(codec.parse(codec.render(p)), p) and 12 <= (p > 1).sum() <= 20


def test_a_plugin_task_exports_and_solves_with_views_and_verified_halting(site, tmp_path, capsys, monkeypatch):
    """A model of the plugin's shape: its task is told from the weights, export verifies on the plugin's puzzles, and
    `solve` draws the plugin's views and halts by its rules, on ONNX Runtime."""
    import torch

    from trm_edge.checkpoint import save
    from trm_edge.model import TRM

    torch.manual_seed(0)
    save(TRM(tiny_config(vocab_size=8, seq_len=36, halt_max_steps=3)), tmp_path / "model")  # no task recorded
    bundle = tmp_path / "bundle"
    code, out, err = cli(capsys, "export", str(tmp_path / "model"), "-o", str(bundle), "--graph", "step", "--json")
    assert code == 0, err
    assert json.loads((bundle / "manifest.json").read_text())["task"] == "sudoku6"

    codec_cls = type(get_codec("sudoku6"))
    calls = {"check": 0, "views": 0}
    check, views = codec_cls.check, codec_cls.views

    def counted(name, f):
        def wrapper(*args):
            calls[name] += 1
            return f(*args)
        return wrapper

    monkeypatch.setattr(codec_cls, "check", counted("check", check))
    monkeypatch.setattr(codec_cls, "views", counted("views", views))
    (tmp_path / "p.txt").write_text("\n".join(map(codec_cls().compact, codec_cls().sample(3, seed=9))))
    code, out, err = cli(capsys, "solve", str(bundle), str(tmp_path / "p.txt"), "--views", "4", "--halt",
                         "learned:0,verify", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 3 and res["views"] == 4 and {r["checked_by"] for r in res["results"]} == {"rules"}
    assert calls["views"] >= 1 and calls["check"] >= 3 * 4  # every view's answer judged by the plugin's rules

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    plugins.cache_clear()
    code, out, err = cli(capsys, "solve", str(bundle), str(tmp_path / "p.txt"))
    assert code == 2 and "unknown task 'sudoku6'" in err and "entry points" in err
