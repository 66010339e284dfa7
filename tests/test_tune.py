"""`trm-edge tune`: the routes it may time (guard passed, runnable here), the choice it remembers, and that solve,
bench and doctor take that choice only while it is fresh (same bundle, same machine)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_PUZZLE, cli, rehash
from trm_edge.benchmarks import machine, tune
from trm_edge.benchmarks.harness import BenchOptions, run_bench
from trm_edge.bundle import Bundle
from trm_edge.runtimes import open_solver


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tune, "PAUSE_S", 0.0)  # the tiny bundle's single-threaded sessions do not spin for long
    return tmp_path / "cache" / "trm-edge"


@pytest.fixture
def routed(tiny_bundle, tmp_path) -> Path:
    """The tiny bundle with two more precisions of its step graph (copies of the fp32 one): int8, whose guard passed,
    and int8-static, whose guard failed (an export would not ship it; a hand-made bundle might), and a LiteRT step
    graph that no engine can open."""
    b = shutil.copytree(tiny_bundle, tmp_path / "routed")
    for mode in ("int8", "int8-static"):
        shutil.copy(b / "step.onnx", b / f"step.{mode}.onnx")
    (b / "litert").mkdir()
    (b / "litert" / "step.tflite").write_bytes(b"not a flatbuffer")
    doc = json.loads((b / "manifest.json").read_text())
    doc["graphs"]["step"]["files"].update({m: f"step.{m}.onnx" for m in ("int8", "int8-static")})
    doc["quantization"] = {"int8": {"guard": {"passed": True}}, "int8-static": {"guard": {"passed": False}}}
    doc["formats"] = {"litert": {"graphs": {"step": {"fp32": "litert/step.tflite"}}}}
    for name in ("step.int8.onnx", "step.int8-static.onnx", "litert/step.tflite"):
        doc["files"][name] = {"sha256": "", "bytes": 0}
    (b / "manifest.json").write_text(json.dumps(doc))
    rehash(b)
    return b


def _slow_except(fast: tune.Route, opened: list):
    """A factory that opens real solvers, records each route it is asked for, and slows every route but `fast`."""
    def factory(b, backend, graph, precision, threads):
        route = tune.Route(backend, precision, graph, threads)
        opened.append(route)
        s = open_solver(b, backend, graph, precision, threads)
        if route != fast:
            real = s.solve

            def slow(*a, **kw):
                time.sleep(0.01)
                return real(*a, **kw)
            s.solve = slow
        return s
    return factory


def test_routes_are_those_whose_guard_passed(routed):
    b = Bundle(routed)
    got = tune.routes(b, (1, 2))
    assert {(r.backend, r.precision) for r in got} == {("ort", "fp32"), ("ort", "int8"), ("litert", "fp32")}
    assert {r.threads for r in got} == {1, 2} and {r.graph for r in got} == {"step"}
    assert {r.graph for r in tune.routes(b, (1,), ("step", "loop"))} == {"step", "loop"}


def test_tune_remembers_the_fastest_and_solve_bench_doctor_take_it(routed, cache, capsys, monkeypatch):
    fast, opened = tune.Route("ort", "int8", "step", 1), []
    doc = tune.tune(routed, n=4, threads=(1, 2), solver_factory=_slow_except(fast, opened))
    assert tune.Route("ort", "int8-static", "step", 1) not in opened  # never even opened: its guard failed
    assert doc["choice"] == {"backend": "ort", "precision": "int8", "graph": "step", "threads": 1}
    assert {s["backend"] for s in doc["skipped"]} == {"litert"}  # cannot open here: said, never chosen
    assert [r["vs_fastest"] for r in doc["routes"]] == sorted(r["vs_fastest"] for r in doc["routes"])
    assert doc["saved"] and Path(doc["saved"]).is_relative_to(cache)
    assert tune.tuned(Bundle(routed)) == fast

    code, out, err = cli(capsys, "solve", str(routed), TINY_PUZZLE, "--views", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["model"].startswith("ort ") and "step int8 (tuned)" in json.loads(out)["model"]
    code, out, _ = cli(capsys, "solve", str(routed), TINY_PUZZLE, "--views", "1", "--backend", "ort", "--json")
    assert "(tuned)" not in json.loads(out)["model"] and "fp32" in json.loads(out)["model"]

    rep = run_bench(str(routed), BenchOptions(backends=("auto",), halts=("fixed",), n=2, energy="none"))
    (run,) = rep["runs"]
    assert (run["backend"], run["precision"], run["threads"], run["tuned"]) == ("ort", "int8", 1, True)
    rep = run_bench(str(routed), BenchOptions(backends=("auto",), precisions=("int8",), halts=("fixed",), n=2,
                                              energy="none"))
    assert rep["runs"][0]["tuned"] is False  # a precision named: the route named

    monkeypatch.setattr("trm_edge.benchmarks.peak.peak", lambda refresh=False: {"fp32": None, "int8": None})
    assert [t["route"] for t in machine.doctor()["tuned"]] == [str(fast)]


def test_a_stale_choice_is_ignored(routed, cache, monkeypatch):
    tune.tune(routed, n=2, threads=(1,))
    assert tune.tuned(Bundle(routed)) is not None
    monkeypatch.setattr(machine, "machine_key", lambda engines=(): "another machine")
    assert tune.tuned(Bundle(routed)) is None
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent))
    doc = json.loads((routed / "manifest.json").read_text())
    doc["notes"] = ["re-exported"]
    (routed / "manifest.json").write_text(json.dumps(doc))  # the same path, another bundle
    assert tune.tuned(Bundle(routed)) is None and tune.remembered() == []
    (cache / "tune").mkdir(exist_ok=True)
    for f in (cache / "tune").iterdir():
        f.write_text("{broken")
    assert tune.tuned(Bundle(routed)) is None


def test_cli_tune_table_and_one_line_errors(routed, cache, capsys):
    code, out, err = cli(capsys, "tune", str(routed), "-n", "2", "--threads", "1", "--quiet")
    assert code == 0, err
    assert "chosen: ort/" in out and "remembered in" in out and "skipped litert/fp32/step x1t" in err
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out, err = cli(capsys, "tune", str(routed), "--graph", "unrolled")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no unrolled graph" in err
    code, _, err = cli(capsys, "tune", str(routed), "--threads", "0")
    assert code == 2 and "--threads" in err
