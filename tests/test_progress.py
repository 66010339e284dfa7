"""Progress of the long commands: on a terminal a live display; elsewhere timestamped lines on stderr at stage changes
and at most every 10 s; none with --quiet."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from trm_edge.progress import Reporter

STAMP = r"\d\d:\d\d:\d\d"
# what would make rich take a pipe for a terminal
ENV = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def reporter(command: str, quiet: bool = False, stage: str | None = None) -> tuple[Reporter, Clock, io.StringIO]:
    clock, buf = Clock(), io.StringIO()
    console = Console(file=buf, force_terminal=False, width=300)
    return Reporter(command, console, quiet=quiet, stage=stage, clock=clock), clock, buf


def lines(buf: io.StringIO) -> list[str]:
    """Each line without its timestamp, which must lead it."""
    out = buf.getvalue().splitlines()
    assert all(re.match(f"{STAMP} ", line) for line in out), out
    return [line[9:] for line in out]


def test_a_line_at_a_stage_change_then_at_most_every_10_s_with_count_and_time_left():
    rep, clock, buf = reporter("bench")
    stage = "ort/fp32/step fixed:16"
    rep.progress(stage, 0, 64)
    assert lines(buf) == [f"bench: {stage}: 0/64"]
    for done in range(1, 32):  # 7.75 s of updates: no line
        clock.t += 0.25
        rep.progress(stage, done, 64)
    assert len(lines(buf)) == 1
    clock.t += 2.25  # 10 s after the last line, at 3.2 a second
    rep.progress(stage, 32, 64)
    assert lines(buf)[1:] == [f"bench: {stage}: 32/64, ~10 s left"]
    clock.t += 1
    rep.progress("ort/fp32/step learned:0", 36, 64)  # a new stage: its line at once, the count goes on
    assert lines(buf)[2:] == ["bench: ort/fp32/step learned:0: 36/64, ~9 s left"]


def test_quiet_prints_nothing():
    rep, clock, buf = reporter("bench", quiet=True)
    for done in range(0, 64, 4):
        clock.t += 5
        rep.progress("ort/fp32/step fixed:16", done, 64)
        rep.status("verifying ort against the PyTorch reference")
        rep.heartbeat()
    assert buf.getvalue() == ""


def test_a_count_in_a_status_text_is_a_count_not_a_stage():
    """export's int8 guard counts in its status text ("HEAD 300/512 held-out")."""
    rep, clock, buf = reporter("export")
    rep.status("int8-rows: int8 0/512 held-out")
    clock.t += 5
    rep.status("int8-rows: int8 256/512 held-out")
    assert lines(buf) == ["export: int8-rows: int8 512 held-out: 0/512"]
    clock.t += 5
    rep.status("int8-rows: int8 384/512 held-out")
    rep.status("verifying ort against the PyTorch reference")
    assert lines(buf)[1:] == ["export: int8-rows: int8 512 held-out: 384/512, ~3 s left",
                              "export: verifying ort against the PyTorch reference"]


def test_a_stage_without_news_shows_every_10_s_and_the_opening_stage_waits_for_the_work():
    """The opening stage is the command's, set before the work checks its input: its line waits for the work's first
    news (or 10 s), so that an error found at once is the only line."""
    rep, clock, buf = reporter("web", stage="building the site")
    clock.t += 9
    rep.heartbeat()
    assert lines(buf) == []
    clock.t += 1
    rep.heartbeat()
    clock.t += 10
    rep.heartbeat()
    assert lines(buf) == ["web: building the site", "web: building the site: 20 s so far"]
    rep, clock, buf = reporter("eval", stage="solving")
    rep.advance(64)
    rep.advance(64)
    assert lines(buf) == ["eval: solving: 64 done"]


def test_a_tracker_counts_the_items_it_passes_on():
    rep, clock, buf = reporter("data build")
    assert list(rep.tracker("sudoku train")(iter("abc"), 3)) == ["a", "b", "c"]
    assert lines(buf) == ["data build: sudoku train: 0/3"] and rep.done == 3


# -- the commands, their stderr a pipe ---------------------------------------------------------------------------

def trm(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(ENV, XDG_CACHE_HOME=os.environ["XDG_CACHE_HOME"])  # the test's own cache (conftest.own_cache)
    res = subprocess.run([sys.executable, "-m", "trm_edge", *args], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def progress_lines(stderr: str, command: str) -> list[str]:
    return re.findall(f"^{STAMP} {command}: .*$", stderr, re.M)


def test_eval_and_bench_print_progress_lines_and_none_when_quiet(tiny_bundle, tmp_path, monkeypatch):
    b = str(tiny_bundle)
    res = trm(tmp_path, "eval", b, "--data", "builtin", "--limit", "64")
    assert re.search(f"^{STAMP} eval: solving: 64 done$", res.stderr, re.M), res.stderr
    res = trm(tmp_path, "eval", b, "--data", "builtin", "--limit", "64", "--quiet")
    assert not re.search(f"^{STAMP} ", res.stderr, re.M), res.stderr
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no peak measured yet
    res = trm(tmp_path, "bench", b, "-n", "4", "--halt", "fixed:2", "--out", "r1")
    shown = progress_lines(res.stderr, "bench")
    assert re.fullmatch(rf"{STAMP} bench: measuring this machine's matrix-multiply peak .*", shown[0]), res.stderr
    assert re.fullmatch(rf"{STAMP} bench: fp32 reference: \d+/8", shown[1]), res.stderr
    assert any(re.fullmatch(rf"{STAMP} bench: ort/fp32/step fixed:2 x1: \d+/8.*", s) for s in shown), res.stderr
    res = trm(tmp_path, "bench", b, "-n", "4", "--halt", "fixed:2", "--out", "r2")
    assert "peak" not in res.stderr and progress_lines(res.stderr, "bench")  # measured once: cached
    res = trm(tmp_path, "bench", b, "-n", "4", "--halt", "fixed:2", "--out", "r3", "-q")
    assert not re.search(f"^{STAMP} ", res.stderr, re.M), res.stderr


def test_export_prints_its_stages(tmp_path):
    from conftest import tiny_config

    from trm_edge.checkpoint import save
    from trm_edge.model import TRM

    model = save(TRM(tiny_config(hidden_size=16, num_heads=2, puzzle_emb_ndim=16, halt_max_steps=3)).eval(),
                 tmp_path / "m", task="sudoku")
    res = trm(tmp_path, "export", str(model), "-o", "out", "--graph", "step")
    stages = [re.sub(f"^{STAMP} ", "", s) for s in progress_lines(res.stderr, "export")]
    assert "export: exporting the supervision step" in stages, res.stderr
    assert any(s.startswith("export: verifying ONNX Runtime against the PyTorch reference on 16 of 16 puzzles")
               for s in stages), stages
