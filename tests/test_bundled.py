"""The bundled default model: it loads, it still solves what its manifest says it solves, and its int8
bundles stay within the accuracy budget on a fixed held-out file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trm_edge.api import builtin_data, eval_model, open_model
from trm_edge.checkpoint import DEFAULT_MODEL
from trm_edge.evaluate import paired_drop
from trm_edge.halting import HaltPolicy
from trm_edge.tasks import SUDOKU, read_puzzles

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_dir(), reason="no bundled model in this checkout")
N = 100  # puzzles per builtin file: the recorded figures are on the first 100 of each
MARGIN = 0.03  # sampling noise on 100 puzzles is ~1-2 pp at these rates; a broken model file misses by far more


def _recorded() -> dict:
    return json.loads((DEFAULT_MODEL / "config.json").read_text())["meta"]["figures"]


@pytest.mark.slow  # 55-80 s of torch solving: suite time (the device, views and int8 tests run the bundled model too)
def test_default_model_accuracy_at_least_recorded():
    loaded = open_model(None)
    assert loaded.codec.name == "sudoku" and loaded.config.mlp_t
    res = eval_model(loaded, ["builtin"], ["fixed", "learned:0"], limit=N)
    rec = _recorded()
    for run in res["runs"]:
        key = f"{run['data']}/{run['halt'].split(',')[0]}"
        assert run["exact_accuracy"] >= rec[key]["exact_accuracy"] - MARGIN, (key, run, rec[key])


@pytest.mark.parametrize("backend,mode", [pytest.param("ort", "int8-dynamic", marks=pytest.mark.slow),
                                          pytest.param("ort", "int8", marks=pytest.mark.slow),
                                          pytest.param("litert", "int8", marks=pytest.mark.slow),
                                          pytest.param("openvino", "int8", marks=pytest.mark.slow)])
def test_int8_bundle_within_budget(tmp_path, backend, mode):
    """The guarded int8 bundle is written and its drop, re-measured here on a fixed held-out file, fits the budget.
    Static int8 recalibrates (percentile) at each of the guard's ~10 attempts, OpenVINO's and LiteRT's exports may
    climb their ladders (LiteRT converts three batch signatures each time): minutes, so those are marked slow
    (test_engines walks both engines' guards on a tiny model). ORT's int8-dynamic joined them when the device tests
    came (98 s; the default suite stays under 15 minutes; the guard's logic is tested on tiny models in
    test_quantize)."""
    from trm_edge.checkpoint import load_model
    from trm_edge.export import ExportOptions, QuantOptions, export_bundle
    from trm_edge.runtimes import ENGINES, open_solver

    fmt = ENGINES[backend][0]
    model, meta = load_model()
    path = export_bundle(model, meta, tmp_path / "b", ExportOptions(
        ("step",), formats=(fmt,), quant=QuantOptions((f"{fmt}:{mode}",), calib=16, heldout=64, max_drop=1.0)))
    mf = json.loads((path / "manifest.json").read_text())
    q = (mf if fmt == "onnx" else mf["formats"][fmt])["quantization"][mode]
    assert q["guard"]["exact_drop_pp"] <= 1.0 and q.get("quantized_matmuls", 1) >= 1
    routes = {("ort", "int8"): "int8-rows", ("ort", "int8-dynamic"): "int8-dynamic",
              ("litert", "int8"): "int8-dynamic", ("openvino", "int8"): "nncf-int8"}
    assert q.get("route") == routes.get((backend, mode)), q.get("route")  # int8: each engine's best route
    pairs = read_puzzles(SUDOKU, str(builtin_data("sudoku")[-1]))[:64]  # 30-40 givens
    x = np.stack([p for p, _ in pairs])
    solved = {}
    for precision in ("fp32", mode):
        sol = open_solver(path, backend, "step", precision).solve(x, HaltPolicy.parse("fixed", 16))
        solved[precision] = np.array([SUDOKU.check(p, a) for p, a in zip(x, sol.tokens)])
    # 64 puzzles cannot resolve 1 pp: by the guard's own rule, the drop's 95% interval must not lie above the budget
    # (the bundled model of 2026-12-04 lost 2 and gained 0 here with int8-rows, while the main job's guard measured
    # -0.59 pp [-1.79, +0.62] on 512)
    drop = paired_drop(solved["fp32"], solved[mode])
    assert drop["ci95_pp"][0] <= 1.0, drop
