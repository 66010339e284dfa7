"""int8: the calibration collector, the accuracy guard's failure path, and int8 forms agreeing with each other."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_config

from trm_edge.errors import CheckFailed, TRMEdgeError
from trm_edge.export import ExportOptions, QuantOptions, export_bundle, guard, quantize
from trm_edge.export.quantize import calibration_feeds
from trm_edge.halting import HaltPolicy
from trm_edge.model import TRM
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.ort import OrtAdapter


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(3)
    return TRM(tiny_config(halt_max_steps=3)).eval()


def test_calibration_covers_every_step(tiny_model, tmp_path):
    path = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "b", ExportOptions(("step",)))
    solver = open_solver(path, "ort", "step")
    puzzles = solver.codec.sample(4)
    feeds = calibration_feeds(solver, puzzles, steps=3, batch=2)
    assert sorted({f["step"] for f in feeds}) == [1, 2, 3]
    first = [f for f in feeds if f["step"] == 1]
    later = [f for f in feeds if f["step"] == 3]
    assert all(np.allclose(f["z_H"], solver.H_init) for f in first)  # step 1 starts from the initial state
    assert all(not np.allclose(f["z_H"], solver.H_init) for f in later)  # later carries are real, drifted states
    assert len(feeds) == 2 * 3


def test_static_calibration_in_chunks_gives_the_ranges_of_one_pass(tiny_model, tmp_path, monkeypatch):
    """Large models are calibrated a few feeds at a time (ORT's calibrator holds all it is given in memory); the
    merged histograms must give the ranges of one pass, up to the histogram's resolution."""
    path = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "b", ExportOptions(("step",)))
    solver = open_solver(path, "ort", "step")
    feeds = calibration_feeds(solver, solver.codec.sample(4), steps=3, batch=2)
    ranges = {}
    for budget, chunk in ((1 << 40, len(feeds)), (1, 1)):
        monkeypatch.setattr(quantize, "CALIB_CHUNK_BYTES", budget)
        assert quantize.calib_chunk(onnx.load(str(path / "step.onnx")), feeds) == chunk
        cache = tmp_path / f"{chunk}.json"
        quantize.quantize_step(path / "step.onnx", tmp_path / f"{chunk}.onnx", "int8-static", feeds, [], cache)
        ranges[chunk] = {k: abs(v["lowest"]) for k, v in json.loads(cache.read_text())["data"].items()}
    one, chunked = ranges[len(feeds)], ranges[1]
    assert one.keys() == chunked.keys() and len(one) > 10
    assert max(abs(chunked[k] - one[k]) / one[k] for k in one) < 0.05


def test_calibration_takes_as_many_puzzles_as_its_budget_allows(tiny_model, tmp_path, monkeypatch):
    """--calib puzzles, or fewer where their steps would cost more than CALIB_TFLOP (ARC's size: 4 of 32), at
    least one; the manifest and the status line say how many."""
    from trm_edge.export import formats

    per_puzzle = tiny_model.config.halt_max_steps * tiny_model.config.flops_per_step() / 1e12
    for budget, n in ((2.5 * per_puzzle, 2), (0.0, 1)):
        monkeypatch.setattr(formats, "CALIB_TFLOP", budget)
        said: list[str] = []
        b = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / str(n), ExportOptions(
            ("step",), quant=QuantOptions(("int8-static",), calib=8, heldout=8, max_drop=100.0)), status=said.append)
        cal = json.loads((b / "manifest.json").read_text())["quantization"]["int8-static"]["calibration"]
        assert cal["puzzles"] == n and cal["steps_covered"] == list(range(1, tiny_model.config.halt_max_steps + 1))
        assert any(f"steps of {n} puzzles (of --calib 8" in line for line in said), said


def test_bad_int8_request_is_refused_before_export(tiny_model, tmp_path):
    for kw, msg in (({"modes": ("int4",)}, "choose from"), ({"calib": 0}, "at least 1 puzzle"),
                    ({"heldout": 0}, "at least 1 puzzle")):
        with pytest.raises(TRMEdgeError, match=msg):
            export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "o",
                          ExportOptions(("step",), quant=QuantOptions(**{"modes": ("int8",), **kw})))
    assert not (tmp_path / "o").exists()


def test_guard_fails_on_impossible_budget_and_leaves_nothing(tiny_model, tmp_path):
    with pytest.raises(CheckFailed, match=r"int8 accuracy guard failed: exact-solve drop .* budget -1 pp"):
        export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "out",
                      ExportOptions(("step",), quant=QuantOptions(("int8",), calib=4, heldout=8, max_drop=-1.0)))
    assert list(tmp_path.iterdir()) == []


def test_int8_forms_agree_and_manifest_records_the_guard(tiny_model, tmp_path):
    path = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "b", ExportOptions(
        ("step", "loop"), quant=QuantOptions(("int8-static", "int8-dynamic", "int8-rows"), calib=4, heldout=8,
                                             max_drop=100.0)))
    mf = json.loads((path / "manifest.json").read_text())
    for mode in ("int8-static", "int8-dynamic", "int8-rows"):
        q = mf["quantization"][mode]
        if mode == "int8-static":  # dynamic int8 takes its ranges at run time
            assert q["calibration"]["steps_covered"] == [1, 2, 3]
        assert {"fp32_exact", "int8_exact", "exact_drop_pp", "answer_agreement", "int8_mean_steps"} <= set(q["guard"])
        assert {f["module"] for f in q["float_nodes"]} == {"model.q_head", "model.lm_head"}
        # weights shared by every call of a layer are still quantized for every MatMul but the two heads
        assert q["quantized_matmuls"] == q["matmuls"] - 2
        assert q["speed"]["step_ms_b1_fp32"] > 0 and q["speed"][f"step_ms_b1_{mode}"] > 0
        nodes = onnx.load(str(path / f"step.{mode}.onnx")).graph.node
        matmul_out = {o for n in nodes if n.op_type == "MatMul" for o in n.output}
        assert not [n.name for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] in matmul_out]
        step = open_solver(path, "ort", "step", mode)
        loop = open_solver(path, "ort", "loop", mode)
        x = step.codec.sample(6, 9)
        fixed = HaltPolicy.parse("fixed", step.config.halt_max_steps)
        a, b = step.solve(x, fixed), loop.solve(x, fixed)
        assert (a.tokens == b.tokens).mean() > 0.99 and np.array_equal(a.steps, b.steps)


def test_int8_slower_than_fp32_is_reported(tiny_model, tmp_path, monkeypatch):
    """The side-by-side speed check warns when int8 does not pay (timings faked: fp32 first, then int8)."""
    monkeypatch.setattr(guard, "step_ms", lambda solvers, feed: [1.0, 2.0][:len(solvers)])
    path = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "b", ExportOptions(
        ("step",), quant=QuantOptions(("int8-dynamic",), calib=4, heldout=8, max_drop=100.0)))
    q = json.loads((path / "manifest.json").read_text())["quantization"]["int8-dynamic"]
    assert q["speed"]["speedup"] == 0.5
    assert q["warnings"] and "2.0x SLOWER than fp32" in q["warnings"][0]


def test_step_ms_alternates_blocks_and_settles_only_after_a_switch():
    """Two solvers take turns block by block, each block's first runs untimed; one solver alone settles once."""
    calls = []

    def solver(name):
        return type("S", (), {"run": lambda self, feed: calls.append(name)})()  # Solver.run: a graph call

    a, b = solver("a"), solver("b")
    assert len(guard.step_ms([a, b], {"x": np.zeros(2)}, blocks=2, runs=2, settle=1)) == 2
    assert "".join(calls) == "aaabbbaaabbb"
    calls.clear()
    guard.step_ms([a], {"x": np.zeros(2)}, blocks=3, runs=2, settle=1)
    assert "".join(calls) == "a" * 7


def test_cli_int8_export_keeps_json_stdout_clean(tiny_model, tmp_path, capsys):
    """ORT's calibrator prints progress; `--json` output must stay parseable."""
    from test_cli import run

    from trm_edge.checkpoint import save

    src = save(tiny_model, tmp_path / "m", task="sudoku")
    code, out, _ = run(capsys, "export", str(src), "-o", str(tmp_path / "b"), "--graph", "step", "--quantize",
                       "int8-static", "--calib", "4", "--heldout", "8", "--max-drop", "100", "--json")
    assert code == 0
    rows = {r["precision"]: r for r in json.loads(out)["graphs"]}
    assert rows["fp32"]["session_init_ms"] > 0 and rows["int8-static"]["session_init_ms"] is None


def test_int8_is_the_best_route_the_model_allows(tiny_model, tmp_path):
    """`--quantize int8`: per-row activation scales without learned ranges (no calibration run), static with them."""
    from trm_edge.training import qat

    plain = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "a", ExportOptions(
        ("step",), quant=QuantOptions(("int8",), heldout=8, max_drop=100.0)))
    q = json.loads((plain / "manifest.json").read_text())["quantization"]["int8"]
    assert q["route"] == "int8-rows" and "calibration" not in q["calibration"]["method"]
    assert any(n.op_type == "MatMulIntegerToFloat" for n in onnx.load(str(plain / "step.int8.onnx")).graph.node)
    x = open_solver(plain, "ort", "step").codec.sample(8, 3)
    _, sites = qat.detach(qat.attach(copy.deepcopy(tiny_model), qat.calibrate(tiny_model, x)))
    learned = export_bundle(tiny_model, {"task": "sudoku", "int8_sites": sites}, tmp_path / "b", ExportOptions(
        ("step",), quant=QuantOptions(("int8",), heldout=8, max_drop=100.0)))
    q = json.loads((learned / "manifest.json").read_text())["quantization"]["int8"]
    assert q["route"] == "int8-static" and q["calibration"]["method"].startswith("learned by QAT")
    assert q["quantized_matmuls"] == q["matmuls"] - 2


def _bundled_step_case(bundle):
    """The bundled model's step graph, its MatMuls, the two heads, the carry of step 4 for 8 puzzles (a trained
    model: a random one amplifies any rounding through the recursion) and fp32's outputs on it."""
    src = bundle / "step.onnx"
    matmuls = quantize.matmul_nodes(onnx.load(str(src)))
    heads = [n.name for n in matmuls if quantize.module_of(n) in quantize.DEFAULT_FLOAT_MODULES]
    fp32 = open_solver(bundle, "ort", "step")
    feed = quantize.calibration_feeds(fp32, fp32.codec.sample(8, 5), steps=4, batch=8)[-1]
    feed.pop("step")
    return src, matmuls, heads, feed, fp32.adapter.run(feed)


def test_weight_only_routes_put_every_matmul_but_the_heads_in_nbits(bundled_step_bundle, tmp_path):
    """int8-weights / int4-weights on the bundled model's step: MatMulNBits everywhere but the heads, and close
    to fp32 on a fixed input."""
    src, matmuls, heads, feed, ref = _bundled_step_case(bundled_step_bundle)
    # relative error of the step's logits, measured 0.0048 and 0.036 (ORT 1.32, x86)
    for mode, tol in (("int8-weights", 0.02), ("int4-weights", 0.15)):
        dst = tmp_path / f"{mode}.onnx"
        quantize.quantize_step(src, dst, mode, [], heads)
        nodes = onnx.load(str(dst)).graph.node
        assert sum(n.op_type == "MatMulNBits" for n in nodes) == quantize._count_quantized(dst) == len(matmuls) - 2
        assert sorted(n.name for n in nodes if n.op_type in ("MatMul", "Gemm")) == sorted(heads)
        assert {a.i for n in nodes if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"} == \
            {quantize.WEIGHT_BITS[mode]}
        got = OrtAdapter(dst).run(feed)
        err = np.linalg.norm(got["logits"] - ref["logits"]) / np.linalg.norm(ref["logits"])
        assert 0 < err < tol, f"{mode}: relative logits error {err:.4f}"


def test_row_route_scales_each_token_and_beats_the_per_tensor_route(bundled_step_bundle, tmp_path):
    """int8-rows on the bundled model's step: every MatMul but the heads integer, and the step's logits far closer
    to fp32 than ORT's per-tensor dynamic int8 on the same input (what the per-row scale is for)."""
    src, matmuls, heads, feed, ref = _bundled_step_case(bundled_step_bundle)
    err = {}
    for mode in ("int8-rows", "int8-dynamic"):
        dst = tmp_path / f"{mode}.onnx"
        quantize.quantize_step(src, dst, mode, [], heads)
        got = OrtAdapter(dst).run(feed)["logits"]
        err[mode] = np.linalg.norm(got - ref["logits"]) / np.linalg.norm(ref["logits"])
    nodes = onnx.load(str(tmp_path / "int8-rows.onnx")).graph.node
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in nodes) == len(matmuls) - 2
    assert quantize._count_quantized(tmp_path / "int8-rows.onnx") == len(matmuls) - 2
    assert sorted(n.name for n in nodes if n.op_type in ("MatMul", "Gemm")) == sorted(heads)
    # relative logits error at step 4, batch 8: rows 0.0090 (7-bit weights), dynamic 0.076 (ORT 1.32, x86, VNNI)
    assert 0 < err["int8-rows"] < 0.03 and err["int8-rows"] < err["int8-dynamic"] / 3, err


def test_int8_routes_pairs_every_route_against_the_reference(tiny_model, tmp_path):
    """The routes benchmark: one row per quantized step graph and halting rule, its statistics consistent with the
    paired counts; a second bundle's fp32 graph, the same model, gives the reference's answers (drop 0)."""
    from benchmarks.studies.int8_routes import measure

    path = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "b", ExportOptions(
        ("step",), quant=QuantOptions(("int8-dynamic",), calib=4, heldout=8, max_drop=100.0)))
    same = export_bundle(tiny_model, {"task": "sudoku"}, tmp_path / "c", ExportOptions(("step",)))
    rows = measure([str(path), str(same)], 24, ["fixed", "learned:0"], threads=1, slots=8)
    assert [(r["bundle"], r["precision"], r["halt"]) for r in rows] == [
        (str(path), "int8-dynamic", "fixed"), (str(path), "int8-dynamic", "learned:0"),
        (str(same), "fp32", "fixed"), (str(same), "fp32", "learned:0")]
    for r in rows:
        assert r["n"] == 24 and r["drop_pp"] == pytest.approx(100 * (r["fp32_exact"] - r["exact"]))
        assert r["drop_pp"] == pytest.approx(100 * (r["lost"] - r["gained"]) / 24)
        assert r["ci95_pp"][0] <= r["drop_pp"] <= r["ci95_pp"][1] and r["file_mb"] > 0
    for r in rows[2:]:
        assert (r["lost"], r["gained"], r["answers_equal"]) == (0, 0, 1.0)
        assert r["mean_steps"] == r["fp32_mean_steps"]


def test_rows_counts_the_matmuls_it_can_quantize_and_ranks_them_a_piece_at_a_time(tmp_path, monkeypatch):
    """On an attention model int8-rows leaves attention's products of two activations float, so its ladder and its
    manifest count the weight MatMuls only (floating an attention product would change nothing). The sensitivity
    ranking holds one piece of a feed at a time (PROBE_MB): cut to one puzzle a piece it ranks the same MatMuls."""
    model = TRM(tiny_config(mlp_t=False)).eval()
    b = export_bundle(model, {"task": "sudoku"}, tmp_path / "b", ExportOptions(
        ("step",), verify_n=2, quant=QuantOptions(("int8-rows",), heldout=8, max_drop=100.0)))
    q = json.loads((b / "manifest.json").read_text())["quantization"]["int8-rows"]
    proto = onnx.load(str(b / "step.onnx"))
    weights = quantize.matmul_nodes(proto, weights_only=True)
    assert len(weights) < len(quantize.matmul_nodes(proto))
    assert q["matmuls"] == len(weights) == q["quantized_matmuls"] + len(q["float_nodes"])
    solver = open_solver(b, "ort", "step")
    feeds = calibration_feeds(solver, solver.codec.sample(8, 3), steps=2, batch=4)
    names = [n.name for n in weights]
    ranked = {}
    for mb in (1024, 1e-6):
        monkeypatch.setattr(quantize, "PROBE_MB", mb)
        (tmp_path / str(mb)).mkdir()
        ranked[mb] = quantize.sensitivity(b / "step.onnx", feeds, names, "int8-rows", tmp_path / str(mb))
    assert sorted(ranked[1024]) == sorted(ranked[1e-6]) == sorted(names)
