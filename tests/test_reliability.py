"""Reliability: outputs never cost a user's files, respect the umask, survive Ctrl-C between renames, and
leave no temporaries behind that a later write does not clean."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest
from conftest import tiny_config

from trm_edge import atomic
from trm_edge.atomic import MARKER, atomic_dir, claim, clean_stale, read_marker
from trm_edge.cli import main
from trm_edge.errors import TRMEdgeError


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def user_folder(tmp_path, name="mydata"):
    d = tmp_path / name
    d.mkdir()
    (d / "notes.txt").write_text("hi\n")
    return d


def never(*a, **k):
    raise AssertionError("work started before the output path was checked")


def assert_refused(code, err, folder):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(folder) in lines[0] and "refusing" in lines[0], err
    assert (folder / "notes.txt").read_text() == "hi\n" and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert not [p for p in folder.parent.iterdir() if ".trm-edge-" in p.name]


# -- every command that writes refuses a folder it did not make, before any work -------------------------------

def test_export_refuses_a_user_folder_before_loading(capsys, tmp_path, monkeypatch):
    d = user_folder(tmp_path)
    monkeypatch.setattr("trm_edge.api.open_model", never)
    assert_refused(*run(capsys, "export", "-o", str(d))[::2], d)


def test_export_library_refuses_too(tmp_path, monkeypatch):
    from trm_edge.export import export_bundle, pipeline
    from trm_edge.model import TRM

    d = user_folder(tmp_path)
    monkeypatch.setattr(pipeline, "export_step", never)
    with pytest.raises(TRMEdgeError, match="refusing"):
        export_bundle(TRM(tiny_config()), {"task": "sudoku"}, d)


def test_bench_refuses_before_opening_the_bundle(capsys, tmp_path, monkeypatch):
    d = user_folder(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    monkeypatch.setattr("trm_edge.benchmarks.harness._default_factory", never)
    assert_refused(*run(capsys, "bench", str(bundle), "--out", str(d), "--energy", "none")[::2], d)


def test_compare_refuses_before_reading_reports(capsys, tmp_path):
    d = user_folder(tmp_path)
    assert_refused(*run(capsys, "compare", str(tmp_path / "a.json"), "-o", str(d))[::2], d)


def test_train_refuses_before_building_data(capsys, tmp_path, monkeypatch):
    d = user_folder(tmp_path)
    monkeypatch.setattr("trm_edge.training.sources.sudoku_pool", never)
    assert_refused(*run(capsys, "train", "-o", str(d), "--steps", "1")[::2], d)


def test_data_build_refuses_before_generating(capsys, tmp_path, monkeypatch):
    from trm_edge.training import datasets

    d = user_folder(tmp_path)
    monkeypatch.setitem(datasets._BUILDERS, "sudoku", never)
    assert_refused(*run(capsys, "data", "build", "sudoku", "-o", str(d))[::2], d)


def test_a_file_or_another_kind_of_ours_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(TRMEdgeError, match="not a directory"):
        claim(f, "bundle")
    run_dir = tmp_path / "run"
    atomic.claim_live(run_dir, "training run")
    with pytest.raises(TRMEdgeError, match="already holds a trm-edge training run; refusing"):
        atomic_dir(run_dir, lambda tmp: None, "bundle")
    link = tmp_path / "link"
    link.symlink_to(user_folder(tmp_path))
    with pytest.raises(TRMEdgeError, match="not a directory"):
        claim(link, "bundle")


def test_missing_empty_and_ours_are_replaced(tmp_path):
    out = tmp_path / "out"
    for version in ("a", "b"):  # missing, then ours
        atomic_dir(out, lambda tmp, v=version: (tmp / "v").write_text(v), "report")
        assert (out / "v").read_text() == version and read_marker(out) == "report"
    empty = tmp_path / "empty"
    empty.mkdir()
    atomic_dir(empty, lambda tmp: (tmp / "v").write_text("c"), "report")
    assert (empty / "v").read_text() == "c"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]


def test_a_folder_that_appears_during_the_work_is_kept(tmp_path):
    out = tmp_path / "out"

    def write(tmp):
        user_folder(tmp_path, "out")  # the user made it while we were exporting

    with pytest.raises(TRMEdgeError, match="refusing"):
        atomic_dir(out, write, "bundle")
    assert (out / "notes.txt").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- permissions follow the umask ----------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_respect_the_umask(tmp_path, mask):
    import torch  # noqa: F401  (save writes safetensors, which creates its files 0600)

    from trm_edge.checkpoint import save
    from trm_edge.model import TRM

    old = os.umask(mask)
    try:
        out = save(TRM(tiny_config()), tmp_path / "model")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes == {"model": 0o777 & ~mask, MARKER: 0o666 & ~mask, "config.json": 0o666 & ~mask,
                     "model.safetensors": 0o666 & ~mask}
    assert atomic.umask() == old


# -- stale temporaries: ours are cleaned, nothing else ------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_ours_are_cleaned_only(tmp_path):
    out = tmp_path / "b"
    dead = _dead_pid()
    ours = tmp_path / f".b.trm-edge-tmp-{dead}-0123abcd"
    ours.mkdir()
    (ours / MARKER).write_text('{"kind": "bundle"}')
    (ours / "step.onnx").write_text("half")
    bare = tmp_path / f".b.trm-edge-old-{dead}-0123abce"  # killed before the marker was written
    bare.mkdir()
    lookalike = tmp_path / f".b.trm-edge-tmp-{dead}-0123abcf"  # the name, but not our marker: a user's
    lookalike.mkdir()
    (lookalike / "notes.txt").write_text("hi")
    alive = tmp_path / f".b.trm-edge-tmp-{os.getpid()}-0123abd0"  # a write in progress
    alive.mkdir()
    (alive / MARKER).write_text('{"kind": "bundle"}')
    other = tmp_path / f".c.trm-edge-tmp-{dead}-0123abd1"  # another target's
    other.mkdir()
    (other / MARKER).write_text('{"kind": "bundle"}')
    atomic_dir(out, lambda tmp: None, "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b", lookalike.name, alive.name, other.name])
    assert clean_stale(tmp_path / "c") == [other]


def test_sigint_during_the_swap_keeps_a_whole_output(tmp_path, monkeypatch):
    """Ctrl-C between the two renames would leave neither copy; the swap defers it until both are done."""
    out = tmp_path / "b"
    atomic_dir(out, lambda tmp: (tmp / "v").write_text("old"), "bundle")
    real = os.replace

    def replace_then_interrupt(a, b):
        real(a, b)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_dir(out, lambda tmp: (tmp / "v").write_text("new"), "bundle")
    monkeypatch.undo()
    assert (out / "v").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_an_error_while_writing_leaves_the_previous_output(tmp_path):
    out = tmp_path / "b"
    atomic_dir(out, lambda tmp: (tmp / "v").write_text("old"), "bundle")

    def fail(tmp):
        (tmp / "v").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_dir(out, fail, "bundle")
    assert (out / "v").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
