"""OpenVINO and LiteRT beside ONNX Runtime: one export of the bundled model in every format, the loop graph on
OpenVINO against the host loop, threads, LiteRT's batch signatures, the manifest, and missing engines.
(Every engine against the PyTorch reference on both token mixers, and torch-free, is in test_export.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from trm_edge.api import builtin_data
from trm_edge.bundle import Bundle
from trm_edge.checkpoint import DEFAULT_MODEL
from trm_edge.halting import HaltPolicy
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.litert import LiteRtAdapter
from trm_edge.tasks import SUDOKU, read_puzzles

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_dir(), reason="no bundled model in this checkout")
FIXED, LEARNED3 = HaltPolicy.parse("fixed", 16), HaltPolicy.parse("learned:3", 16)  # the bundled model: 16 steps


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from trm_edge.checkpoint import load_model
    from trm_edge.export import ExportOptions, export_bundle

    model, meta = load_model()
    return export_bundle(model, meta, tmp_path_factory.mktemp("engines") / "b",
                         ExportOptions(("step", "loop"), formats=("openvino", "litert"), verify_n=8))


@pytest.fixture(scope="module")
def puzzles():
    return np.stack([p for p, _ in read_puzzles(SUDOKU, str(builtin_data("sudoku")[0]))[:24]])  # 24-29 givens


def test_openvino_loop_graph_equals_host_loop(bundle, puzzles):
    """OpenVINO runs our ONNX Loop (converted to IR): answers and step counts identical to its step graph driven
    by the host loop, under the bundle's learned policy (rows halt at different steps) and fixed:16."""
    loop, step = open_solver(bundle, "openvino", "loop"), open_solver(bundle, "openvino", "step")
    for halt, x in ((step.halt, puzzles), (FIXED, puzzles[:6])):
        a, b = loop.solve(x, halt), step.solve(x, halt)
        assert np.array_equal(a.steps, b.steps) and np.array_equal(a.tokens, b.tokens), halt
    assert len(set(step.solve(puzzles, step.halt).steps.tolist())) > 1


@pytest.mark.parametrize("backend", ["openvino", "litert"])
def test_engines_agree_with_ort_and_across_threads(bundle, puzzles, backend):
    """Another engine reaches ORT's outcome: every row halts at the same step, the same puzzles are solved, with the
    same answers. A wrong answer after 16 recursive steps may differ in a near-tie cell, since the recursion
    amplifies rounding (the bundled model of 2026-12-04: 1-3 cells of 1-3 unsolved rows of 24); within an engine,
    threads change nothing."""
    ort = open_solver(bundle, "ort", "step").solve(puzzles, LEARNED3)
    solver = open_solver(bundle, backend, "step", threads=1)
    alone = solver.solve(puzzles, LEARNED3)
    solved = np.array([SUDOKU.check(p, t) for p, t in zip(puzzles, ort.tokens)], bool)
    assert np.array_equal(alone.steps, ort.steps) and solved.any()
    assert np.array_equal([SUDOKU.check(p, t) for p, t in zip(puzzles, alone.tokens)], solved)
    assert np.array_equal(alone.tokens[solved], ort.tokens[solved]) and (alone.tokens != ort.tokens).mean() < 0.01
    rows = [puzzles[i:i + 3] for i in range(0, len(puzzles), 3)]
    with ThreadPoolExecutor(8) as pool:  # one solver, 8 threads at once
        parts = list(pool.map(lambda x: solver.solve(x, LEARNED3), rows))
    assert np.array_equal(np.concatenate([p.tokens for p in parts]), alone.tokens)
    assert np.array_equal(np.concatenate([p.steps for p in parts]), alone.steps)


def test_litert_batch_signatures_cover_any_batch(bundle, puzzles):
    """A .tflite graph has static shapes: b1, b8 and b64 signatures, a call split and padded across them."""
    solver = open_solver(bundle, "litert", "step")
    adapter = solver.adapter
    assert isinstance(adapter, LiteRtAdapter) and sorted(adapter.runners) == [1, 8, 64]
    for n in range(1, 140):
        sizes = adapter.chunks(n)
        assert sum(sizes) >= n and sum(sizes) - n < sizes[-1] and all(b in adapter.runners for b in sizes), n
    assert adapter.chunks(70) == [64, 8] and adapter.chunks(3) == [1, 1, 1] and adapter.chunks(5) == [8]
    ort = open_solver(bundle, "ort", "step")
    z = solver.carry(11)
    feeds = {"tokens": puzzles[:11], "puzzle_ids": np.zeros(11, np.int64), "z_H": z[0], "z_L": z[1]}
    a, b = adapter.run(feeds), ort.adapter.run(feeds)  # 11 rows: b8 + 3 x b1
    assert a["pred"].dtype == np.int64 and a["pred"].shape == (11, 81)
    assert np.array_equal(a["pred"], b["pred"]) and np.abs(a["logits"] - b["logits"]).max() < 1e-3


def test_manifest_lists_every_format_with_its_verification(bundle):
    b = Bundle(bundle)
    mf = b.manifest
    assert set(b.formats()) == {"onnx", "openvino", "litert"}
    assert b.formats()["openvino"] == {"step": {"fp32": "openvino/step.xml"}, "loop": {"fp32": "openvino/loop.xml"}}
    assert b.formats()["litert"] == {"step": {"fp32": "litert/step.tflite"}}
    for name in ("openvino", "litert"):
        sec = mf["formats"][name]
        assert sec["verification"]["passed"] and sec["engine"] == name
        assert all(f in mf["files"] for forms in sec["graphs"].values() for f in forms.values())
    assert "openvino/step.bin" in mf["files"]  # the weights beside each .xml are hashed too
    assert {"openvino", "nncf", "litert-torch", "ai-edge-quantizer", "ai-edge-litert"} <= set(mf["versions"])
    assert any("litert: no loop graph" in n for n in mf["notes"])


def test_tampered_openvino_weights_are_refused(bundle, tmp_path):
    import shutil

    from trm_edge.errors import TRMEdgeError

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "openvino" / "step.bin").read_bytes())
    data[100] ^= 1
    (copy / "openvino" / "step.bin").write_bytes(bytes(data))
    with pytest.raises(TRMEdgeError, match=r"step.bin: does not match its sha256"):
        open_solver(copy, "openvino")


def test_bundle_without_a_format_names_the_export_flag(bundle, tmp_path):
    import shutil

    from test_reliability import rehash

    from trm_edge.errors import TRMEdgeError

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    mf = json.loads((copy / "manifest.json").read_text())
    del mf["formats"]["litert"]
    (copy / "manifest.json").write_text(json.dumps(mf))
    rehash(copy)
    with pytest.raises(TRMEdgeError, match="no litert graphs in this bundle .*--format litert"):
        open_solver(copy, "litert")
    with pytest.raises(TRMEdgeError, match="no openvino unrolled graph"):
        open_solver(copy, "openvino", "unrolled")


def _cli_with_hidden(modules: list[str], args: list[str]) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {modules!r}:
                    raise ImportError(name + " is hidden in this test")
        sys.meta_path.insert(0, Block())
        from trm_edge.cli import main
        sys.argv = ["trm-edge", *{args!r}]
        main()
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))


@pytest.mark.parametrize("backend,hidden,extra", [("openvino", ["openvino"], "openvino"),
                                                  ("litert", ["ai_edge_litert", "tflite_runtime"], "litert")])
def test_missing_engine_exits_2_with_the_install_hint(bundle, backend, hidden, extra):
    res = _cli_with_hidden(hidden, ["solve", str(bundle), "1" * 81, "--backend", backend])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"pip install 'trm-edge[{extra}]'" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_converter_is_refused_before_any_work(tmp_path):
    res = _cli_with_hidden(["litert_torch"], ["export", "-o", str(tmp_path / "b"), "--format", "litert"])
    assert res.returncode == 2 and "pip install 'trm-edge[litert-export]'" in res.stderr
    assert not (tmp_path / "b").exists()


def test_quantize_for_one_format_is_checked_before_any_work(tmp_path):
    from trm_edge.errors import TRMEdgeError
    from trm_edge.export import ExportOptions, QuantOptions, export_bundle
    from trm_edge.export.pipeline import offered

    with pytest.raises(TRMEdgeError, match="'tflite:int8'.*FORMAT:MODE"):
        QuantOptions(("tflite:int8",))
    with pytest.raises(TRMEdgeError, match="add openvino to --format"):
        ExportOptions(quant=QuantOptions(("openvino:int8",)))
    with pytest.raises(TRMEdgeError, match="openvino does not offer int8-dynamic"):
        export_bundle(None, {}, tmp_path / "b",
                      ExportOptions(formats=("openvino",), quant=QuantOptions(("openvino:int8-dynamic",))))
    assert not (tmp_path / "b").exists()
    modes, notes = offered(ExportOptions(("step", "loop"), formats=("openvino", "litert"),
                                         quant=QuantOptions(("int8", "int8-weights", "litert:int8-dynamic"))))
    assert modes == {"onnx": ("int8", "int8-weights"), "openvino": ("int8",), "litert": ("int8", "int8-dynamic")}
    assert notes == ["openvino: int8-weights is not offered (NNCF quantizes with calibrated static ranges: ask for "
                     "int8)", "litert: int8-weights is not offered (LiteRT int8 is ai-edge-quantizer's: int8 (= "
                     "int8-dynamic, the accurate one) or int8-static)", "litert: no loop graph (litert-torch cannot "
                     "lower a while_loop: LiteRT runs the step with the host loop)"]


@pytest.mark.parametrize("fmt,mode,match", [
    pytest.param("litert", "int8-dynamic", r"litert int8-dynamic accuracy guard failed: .* with the heads in float, "
                 r"still .* with int8 weights only; budget -1 pp", marks=pytest.mark.slow),  # 31 s: suite time
    pytest.param("litert", "int8-static", r"litert int8-static accuracy guard failed: .* with the heads in float, "
                 r"still .* with the down projections also in float; budget -1 pp", marks=pytest.mark.slow),
    ("openvino", "int8", r"openvino int8 accuracy guard failed: exact-solve drop .* with the heads in float, still "
                         r".* with the down projections also in float; budget -1 pp")])
def test_engine_int8_guard_fails_with_the_numbers_and_leaves_nothing(tmp_path, fmt, mode, match):
    """An impossible budget walks the whole fallback (LiteRT's and OpenVINO's ladders) and then refuses."""
    from conftest import tiny_config

    from trm_edge.errors import CheckFailed
    from trm_edge.export import ExportOptions, QuantOptions, export_bundle
    from trm_edge.model import TRM

    model = TRM(tiny_config(hidden_size=16, num_heads=2, puzzle_emb_ndim=16, halt_max_steps=3)).eval()
    with pytest.raises(CheckFailed, match=match):
        export_bundle(model, {"task": "sudoku"}, tmp_path / "out", ExportOptions(
            ("step",), formats=(fmt,), verify_n=4,
            quant=QuantOptions((f"{fmt}:{mode}",), calib=2, heldout=4, max_drop=-1.0)))
    assert list(tmp_path.iterdir()) == []


def test_openvino_int8_stores_each_weight_once(tmp_path):
    """A step applies each weight several times (H_cycles x L_cycles). NNCF's SmoothQuant rescaled the weight for
    each MatMul that uses it, so the int8 IR held a copy per use and outgrew the fp32 one (12.7 MB vs 2.8 on the
    bundled model); with it off, the int8 IR is the smaller file, as int8 should be."""
    from conftest import tiny_config

    from trm_edge.export import ExportOptions, QuantOptions, export_bundle
    from trm_edge.model import TRM

    model = TRM(tiny_config(hidden_size=64, num_heads=4, puzzle_emb_ndim=64, halt_max_steps=3)).eval()
    path = export_bundle(model, {"task": "sudoku"}, tmp_path / "out", ExportOptions(
        ("step",), formats=("openvino",), verify_n=4,
        quant=QuantOptions(("openvino:int8",), calib=2, heldout=4, max_drop=100.0)))
    fp32, int8 = ((path / "openvino" / f"{name}.bin").stat().st_size for name in ("step", "step.int8"))
    assert int8 < 0.6 * fp32, (int8, fp32)


def test_litert_static_int8_quantizes_the_matmuls_and_stays_close(tmp_path):
    """A tiny model's LiteRT int8-static: the projections run in int8 (int8 weights and activations), the heads
    stay float, the I/O stays float, and one step stays near the fp32 graph's on the same inputs. Min/max ranges
    and int8 matmul outputs make it coarse (relative error ~0.6 on this random model, int8-dynamic's ~0.12); the
    bounds catch a broken calibration (zero or missing ranges give an error of 1 and unrelated answers)."""
    import torch
    from ai_edge_litert.interpreter import Interpreter
    from conftest import tiny_config

    from trm_edge.export import ExportOptions, QuantOptions, export_bundle
    from trm_edge.model import TRM

    torch.manual_seed(0)
    model = TRM(tiny_config(halt_max_steps=3)).eval()
    path = export_bundle(model, {"task": "sudoku"}, tmp_path / "b", ExportOptions(
        ("step",), formats=("litert",), verify_n=8, batch=8,
        quant=QuantOptions(("litert:int8-static",), calib=8, heldout=8, max_drop=100.0)))
    q = Bundle(path).manifest["formats"]["litert"]["quantization"]["int8-static"]
    assert q["calibration"]["method"] == "min/max" and q["float_modules"] == ["model.q_head", "model.lm_head"]
    details = Interpreter(str(path / "litert" / "step.int8-static.tflite")).get_tensor_details()
    int8 = [d for d in details if d["dtype"] == np.int8]
    weights = [d for d in int8 if d["name"].startswith("arith.constant")]
    assert len(weights) == 8 and len(int8) > 2 * len(weights)  # gate_up + down of both mixers, 2 layers; activations
    assert all(d["dtype"] == np.float32 for d in details if "head" in d["name"] and len(d["shape"]) == 2)
    fp32, static = (open_solver(path, "litert", "step", p) for p in ("fp32", "int8-static"))
    x = fp32.codec.sample(8, 5)
    z_H, z_L = fp32.carry(len(x))
    feeds = {"tokens": x, "puzzle_ids": np.zeros(len(x), np.int64), "z_H": z_H, "z_L": z_L}
    a, b = fp32.adapter.run(feeds), static.adapter.run(feeds)
    assert b["z_H_out"].dtype == np.float32
    err = np.linalg.norm(a["z_H_out"] - b["z_H_out"]) / np.linalg.norm(a["z_H_out"])
    assert 0 < err < 0.8 and (a["pred"] == b["pred"]).mean() > 0.3, err
