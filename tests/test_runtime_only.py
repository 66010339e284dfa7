"""A device's install (`pip install "trm-edge[ort]"`: numpy + ONNX Runtime, no torch, matplotlib or psutil) runs
every command the README shows for it, and every command that needs more exits 2 with one line naming the extra.

The CLI runs in a subprocess whose sitecustomize hides those packages as an install without them would: `import`
fails, `find_spec` answers None and their metadata is gone; so a run that exits 0 never needed them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_PUZZLE

ABSENT = ("torch", "matplotlib", "psutil", "onnx", "openvino", "ai_edge_litert")

SITECUSTOMIZE = '''
import os, sys
from importlib.machinery import PathFinder

ABSENT = set(os.environ["TRM_TEST_ABSENT"].split(","))


def _name(dist) -> str:
    return (dist.metadata["Name"] or "").lower().replace("-", "_")


class Absent(PathFinder):
    """PathFinder, less the packages of ABSENT: not found, and no metadata (doctor reads versions from it)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in ABSENT else super().find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, context=None):
        return (d for d in super().find_distributions(context) if _name(d) not in ABSENT)


sys.meta_path[:] = [Absent if f is PathFinder else f for f in sys.meta_path]
'''


@pytest.fixture(scope="module")
def device_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a runtime-only install: this interpreter with ABSENT hidden."""
    site = tmp_path_factory.mktemp("device-site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, TRM_TEST_ABSENT=",".join(ABSENT), COLUMNS="200")


def trm(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(env, XDG_CACHE_HOME=os.environ["XDG_CACHE_HOME"])  # the test's own cache (conftest.own_cache)
    return subprocess.run([sys.executable, "-m", "trm_edge", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_the_packages_are_absent_as_on_a_device(device_env, tmp_path):
    """The premise of this file: hidden packages cannot be imported, found or versioned; the engine still can."""
    code = f"""
import importlib.util, sys
from importlib import metadata
for m in {ABSENT!r}:
    assert importlib.util.find_spec(m) is None, m
    try:
        __import__(m)
    except ModuleNotFoundError:
        pass
    else:
        sys.exit(m + " imported")
    try:
        metadata.version(m.replace("_", "-"))
    except metadata.PackageNotFoundError:
        pass
    else:
        sys.exit(m + " has metadata")
import onnxruntime, trm_edge
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=device_env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def test_doctor(device_env, tmp_path):
    res = trm(device_env, tmp_path, "doctor", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["runtimes"]["onnxruntime"] and not doc["runtimes"]["torch"] and not doc["problems"]
    assert doc["peak"]["fp32"]["engine"] == "ort" and doc["peak"]["fp32"]["gflop_per_s"] > 0


def test_tune_then_solve_takes_the_choice(device_env, tmp_path, tiny_bundle, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = trm(device_env, tmp_path, "tune", str(tiny_bundle), "-n", "2", "--threads", "1", "--json")
    assert res.returncode == 0, res.stderr
    choice = json.loads(res.stdout)["choice"]
    assert choice == {"backend": "ort", "precision": "fp32", "graph": "step", "threads": 1}
    res = trm(device_env, tmp_path, "solve", str(tiny_bundle), TINY_PUZZLE, "--json")
    assert res.returncode == 0 and "step fp32 (tuned)" in json.loads(res.stdout)["model"], res.stderr


def test_a_task_trm_edge_does_not_know_on_a_device(device_env, tmp_path):
    """A generic bundle (a 24-token sorting task) on the device install: eval against its dataset's labels and solve
    token lines, torch-free, as the export machine does."""
    from test_generic import LEN, export_sort_bundle, sort_pairs

    from trm_edge.api import Opening, eval_model, open_model

    bundle = export_sort_bundle(tmp_path, seed=2)
    data = tmp_path / "data"
    res = trm(device_env, tmp_path, "eval", str(bundle), "--data", str(data), "--json")
    assert res.returncode == 0, res.stderr
    here = eval_model(open_model(str(bundle), Opening(backend="ort")), [str(data)])["runs"][0]
    run = json.loads(res.stdout)["runs"][0]
    assert (run["n"], run["exact_accuracy"], run["token_accuracy"]) == (here["n"], here["exact_accuracy"],
                                                                         here["token_accuracy"])
    puzzle = " ".join(map(str, sort_pairs(1, 5)[0][0]))
    res = trm(device_env, tmp_path, "solve", str(bundle), puzzle, "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)["results"][0]
    assert got["checked_by"] is None and len(got["answer"].split()) == LEN


def test_doctor_without_an_engine_names_the_extra(device_env, tmp_path):
    """The line a Pi without an engine gets (rich once read `[ort]` in it as markup and printed `trm-edge (or , )`)."""
    env = dict(device_env, TRM_TEST_ABSENT=f"{device_env['TRM_TEST_ABSENT']},onnxruntime")
    res = trm(env, tmp_path, "doctor")
    assert res.returncode == 1
    assert "pip install 'trm-edge[ort]' (or [openvino], [litert])" in res.stderr, res.stderr


def test_solve_eval_and_info_on_a_bundle(device_env, tmp_path, tiny_bundle):
    res = trm(device_env, tmp_path, "solve", str(tiny_bundle), TINY_PUZZLE, "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["results"][0]["answer"]) == 81
    res = trm(device_env, tmp_path, "eval", str(tiny_bundle), "--data", "builtin", "--limit", "8", "--json")
    assert res.returncode == 0, res.stderr
    assert all(r["n"] == 8 for r in json.loads(res.stdout)["runs"])
    res = trm(device_env, tmp_path, "info", str(tiny_bundle), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["kind"], doc["task"], doc["config"]["hidden_size"]) == ("bundle", "sudoku", 16)
    assert {(g["format"], g["graph"], g["precision"]) for g in doc["graphs"]} == {("onnx", "step", "fp32"),
                                                                                ("onnx", "loop", "fp32")}
    assert doc["verification"]["onnx"]["puzzles"] == 4
    res = trm(device_env, tmp_path, "info", str(tiny_bundle))
    assert res.returncode == 0 and "step.onnx" in res.stdout and "hidden_size" in res.stdout, res.stderr


def test_bench_writes_its_report_without_plots(device_env, tmp_path, tiny_bundle):
    """The README's Pi bench: the report without plots, and one line up front saying how to get them."""
    res = trm(device_env, tmp_path, "bench", str(tiny_bundle), "--halt", "learned:3", "-n", "4", "--out", "rep")
    assert res.returncode == 0, res.stderr
    note = "plots skipped: drawing them needs matplotlib: pip install 'trm-edge[bench]'"
    assert res.stderr.splitlines()[0] == note
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == [".trm-edge", "report.json", "report.md"]
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["data"]["n"] == 4 and report["reference"]["backend"] == "ort"  # the fp32 reference: no torch
    md = (tmp_path / "rep" / "report.md").read_text()
    assert note in md and ".png" not in md
    assert "report.md and plots" not in res.stdout and "report written to rep/report.json, report.md" in res.stdout


@pytest.mark.parametrize("args,extra", [
    (["export", "-o", "out"], "export"),
    (["solve", TINY_PUZZLE], "export"),  # no bundle: the bundled model, on the PyTorch reference
    (["info"], "export"),
    (["eval", "--limit", "1"], "export"),
    (["solve", "--backend", "torch", "BUNDLE", TINY_PUZZLE], "export"),
    (["train", "-o", "out"], "train"),
    (["finetune", "-o", "out"], "train"),
], ids=["export", "solve-model", "info-model", "eval-model", "backend-torch", "train", "finetune"])
def test_what_needs_torch_says_so_in_one_line(device_env, tmp_path, tiny_bundle, args, extra):
    args = [str(tiny_bundle) if a == "BUNDLE" else a for a in args]
    res = trm(device_env, tmp_path, *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("trm-edge: error: ") and f"needs torch: pip install 'trm-edge[{extra}]'" in res.stderr
    assert not (tmp_path / "out").exists()


def test_data_build_needs_no_torch(device_env, tmp_path):
    """Datasets are numpy work: a device (or a CPU box preparing a GPU run) builds them without torch."""
    res = trm(device_env, tmp_path, "data", "build", "sudoku", "-o", "data", "--knob", "n_train=8", "--knob",
              "n_test=8")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "data" / "test" / "dataset.json").read_text())["seq_len"] == 81
