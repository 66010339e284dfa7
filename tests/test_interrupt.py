"""Interruptions: `export` (also with --quantize), `bench` and `train` killed at chosen points (SIGINT and SIGKILL)
leave either the previous complete output or nothing loadable; Ctrl-C leaves no temporaries; the next run cleans
what a SIGKILL left; `train` resumes from its last checkpoint (both signals by default in test_train.py, 20 kills
in the slow set here). A few points run by default, many in the slow set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import as_from_a_terminal, tiny_config

from trm_edge.errors import TRMEdgeError

RECORD = os.environ.get("TRM_EDGE_INTERRUPT_LOG")  # where the slow run appends its trials, for the record


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from trm_edge.checkpoint import save
    from trm_edge.model import TRM

    return save(TRM(tiny_config(hidden_size=16, num_heads=2, puzzle_emb_ndim=16, halt_max_steps=3)).eval(),
                tmp_path_factory.mktemp("model") / "tiny", task="sudoku")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trm_edge", *args]


def _run_and_kill(cmd: list[str], after: float, sig: int, cwd: Path) -> int:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=as_from_a_terminal)
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    return proc.wait(timeout=300)


def _bundle_state(out: Path) -> str | None:
    """The manifest of a complete bundle at `out`, or None if nothing loadable is there."""
    from trm_edge.bundle import Bundle

    try:
        return json.dumps(Bundle(out).manifest, sort_keys=True)
    except TRMEdgeError:
        return None


def _report_state(out: Path) -> str | None:
    from trm_edge.benchmarks.report import load_report

    try:
        return json.dumps(load_report(out / "report.json"), sort_keys=True)
    except (TRMEdgeError, OSError):
        return None


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.trm-edge-"))


def _trials(cmd: list[str], out: Path, state, points: int, sigs: tuple[int, ...], seed: int) -> list[dict]:
    """Run `cmd` once whole (the previous output), then kill it at `points` moments spread over its duration."""
    t0 = time.perf_counter()
    assert subprocess.run(cmd, cwd=out.parent, capture_output=True).returncode == 0
    full = time.perf_counter() - t0
    previous = state(out)
    assert previous is not None
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(points):
        sig = sigs[i % len(sigs)]
        after = full * (i + rng.random()) / points
        code = _run_and_kill(cmd, after, sig, out.parent)
        now = state(out)
        # the previous output, a new complete one (the run finished first), or nothing loadable
        outcome = "previous" if now == previous else "nothing loadable" if now is None else "new complete"
        if now is not None:
            previous = now
        left = _leftovers(out)
        rows.append({"signal": signal.Signals(sig).name, "after_s": round(after, 2), "exit": code,
                     "outcome": outcome, "temporaries_left": len(left)})
        if sig == signal.SIGINT:  # -2: Ctrl-C before the interpreter set up its handler
            assert code in (0, 130, -signal.SIGINT) and not left, rows[-1]
        if outcome == "new complete":
            assert code in (0, -sig) or (code == 130 and sig == signal.SIGINT), rows[-1]
    assert subprocess.run(cmd, cwd=out.parent, capture_output=True).returncode == 0
    assert _leftovers(out) == [] and state(out) is not None  # the next run cleaned what SIGKILL left
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(json.dumps({"command": " ".join(cmd[3:]), "full_s": round(full, 2), "trials": rows}) + "\n")
    return rows


def _export_cmd(model, out, *extra):
    return _cli("export", str(model), "-o", str(out), "--graph", "step,loop", *extra)


def test_export_interrupted(tiny_model, tmp_path):
    rows = _trials(_export_cmd(tiny_model, tmp_path / "b"), tmp_path / "b", _bundle_state, 2,
                   (signal.SIGINT, signal.SIGKILL), seed=0)
    assert len(rows) == 2


@pytest.fixture(scope="module")
def tiny_bundle_dir(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    assert subprocess.run(_export_cmd(tiny_model, out), capture_output=True).returncode == 0
    return out


def _bench_cmd(bundle, out):
    return _cli("bench", str(bundle), "--out", str(out), "-n", "8", "--halt", "fixed,learned:0", "--energy", "none",
                "--idle-seconds", "0", "--graph", "step,loop")


def test_bench_interrupted(tiny_bundle_dir, tmp_path):
    _trials(_bench_cmd(tiny_bundle_dir, tmp_path / "r"), tmp_path / "r", _report_state, 2,
            (signal.SIGKILL, signal.SIGINT), seed=1)


# -- the slow set: at least 20 points per command ------------------------------------------------------------

SIGS = (signal.SIGINT, signal.SIGKILL)


@pytest.mark.slow
def test_export_interrupted_at_24_points(tiny_model, tmp_path):
    _trials(_export_cmd(tiny_model, tmp_path / "b"), tmp_path / "b", _bundle_state, 24, SIGS, seed=10)


@pytest.mark.slow
def test_quantized_export_interrupted_at_24_points(tiny_model, tmp_path):
    cmd = _export_cmd(tiny_model, tmp_path / "q", "--quantize", "int8,int8-dynamic", "--max-drop", "100",
                      "--calib", "4", "--heldout", "8")
    _trials(cmd, tmp_path / "q", _bundle_state, 24, SIGS, seed=11)


@pytest.mark.slow
def test_bench_interrupted_at_24_points(tiny_bundle_dir, tmp_path):
    _trials(_bench_cmd(tiny_bundle_dir, tmp_path / "r"), tmp_path / "r", _report_state, 24, SIGS, seed=12)


@pytest.mark.slow
def test_train_killed_at_20_points_resumes_each_time(tmp_path):
    """Kill a training run again and again (both signals), each time at a random moment after it has made progress;
    every restart resumes from the last checkpoint, and the run ends with all its steps. (The carries of the puzzles
    in flight are not checkpointed, so the result is not bitwise an uninterrupted run's.)"""
    import torch
    from test_train import _cfg, _train_cmd

    from trm_edge.checkpoint import load

    total, every = 2000, 7
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(_cfg(steps=total, checkpoint_every=every).to_dict()))
    out, state = tmp_path / "run", tmp_path / "run" / "state" / "train.pt"
    rows, rng = [], np.random.default_rng(13)

    def step() -> int:
        try:
            return torch.load(state, weights_only=True)["step"]
        except (OSError, RuntimeError, EOFError):  # not there yet
            return 0

    for i in range(20):
        sig, before = SIGS[i % 2], step()
        proc = subprocess.Popen(_train_cmd(cfg_file, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=as_from_a_terminal)
        deadline = time.time() + 120
        while step() == before and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.random() * 0.5)
        proc.send_signal(sig)
        err = proc.communicate(timeout=120)[1]
        after = step()
        assert after > before, (before, after)
        if sig == signal.SIGKILL:  # from the last checkpoint; a Ctrl-C saves the step it reached first
            assert after % every == 0, (before, after)
        else:
            assert f"'event': 'interrupted', 'step': {after}," in err
        if before:
            assert f"'event': 'resumed', 'step': {before}" in err
        rows.append({"signal": signal.Signals(sig).name, "exit": proc.returncode, "checkpoint_step": after,
                     "resumed_from": before, "temporaries_left": len(_leftovers(out / "state"))})
    res = subprocess.run(_train_cmd(cfg_file, out), capture_output=True, text=True)
    assert res.returncode == 0 and f"'event': 'resumed', 'step': {rows[-1]['checkpoint_step']}" in res.stderr
    assert load(out / "model")[1]["trained_steps"] == total and _leftovers(out / "state") == []
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(json.dumps({"command": f"train (tiny recipe, {total} steps, checkpoint every {every})",
                                "trials": rows}) + "\n")
