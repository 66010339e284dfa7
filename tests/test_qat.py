"""Quantization-aware fine-tuning: the simulation is the shipped int8 arithmetic, and fine-tuning through it pays."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from trm_edge.errors import TRMEdgeError
from trm_edge.export import quantize
from trm_edge.export.graphs import export_step
from trm_edge.int8 import calls_per_step
from trm_edge.model import TRM
from trm_edge.tasks import get_codec
from trm_edge.training import qat


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A tiny model with calibrated sites, its plain export, and the static int8 graph built from its sites."""
    torch.manual_seed(4)
    model = TRM(tiny_config(halt_max_steps=3)).eval()
    tokens = get_codec("sudoku").sample(6, 1)
    sim = qat.attach(copy.deepcopy(model), qat.calibrate(model, tokens))
    plain, sites = qat.detach(sim)
    d = tmp_path_factory.mktemp("qat")
    onnx.save(export_step(plain), str(d / "step.onnx"))
    proto = onnx.load(str(d / "step.onnx"))
    overrides = quantize.site_overrides(proto, sites)
    carry = plain.initial_carry(len(tokens))
    feed = {"tokens": tokens, "puzzle_ids": np.zeros(len(tokens), np.int64), "z_H": carry.z_H.numpy(),
            "z_L": carry.z_L.numpy()}
    heads = [n.name for n in quantize.matmul_nodes(proto) if quantize.module_of(n) in quantize.DEFAULT_FLOAT_MODULES]
    quantize.quantize_step(d / "step.onnx", d / "int8.onnx", "int8-static", [dict(feed, step=1)], heads, None,
                           overrides)
    return sim, sites, proto, overrides, feed, d


def test_every_call_site_gets_its_own_learned_range(simulated):
    sim, sites, proto, overrides, _, d = simulated
    n = calls_per_step(sim.config)
    assert len(sites) == len(qat.quantized_modules(sim)) == 4 * sim.config.L_layers and \
        all(len(v) == n for v in sites.values())
    assert len(overrides) == n * len(sites)  # one distinct activation tensor per call
    q = onnx.load(str(d / "int8.onnx"))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    placed = {n.input[0]: (float(init[n.input[1]]), int(init[n.input[2]]))
              for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in overrides}
    assert placed == {t: (float(o[0]["scale"]), int(o[0]["zero_point"])) for t, o in overrides.items()}
    assert quantize._count_quantized(d / "int8.onnx") == len(quantize.matmul_nodes(proto)) - 2


def test_fake_quant_forward_equals_the_int8_graph_call_by_call(simulated):
    """Each call site, fed the int8 graph's own input for that call, computes the graph's MatMul output to float
    rounding. (A whole step cannot be compared that tightly: an input a float rounding away from a quantization
    boundary rounds the other way, and the next layers mix that one quantum into every element.)"""
    sim, sites, proto, overrides, feed, d = simulated
    calls: dict[str, list[tuple[str, list[str]]]] = {}
    for n in quantize.matmul_nodes(proto):
        mod = quantize.module_of(n).removeprefix("model.")
        if mod in sites:
            seen = calls.setdefault(mod, [])
            hit = [outs for t, outs in seen if t == n.input[0]]
            hit[0].append(n.output[0]) if hit else seen.append((n.input[0], [n.output[0]]))
    names = [t for v in calls.values() for t, outs in v for t in (t, *outs)]
    vals = quantize._probe(d / "int8.onnx", names, d / "probe.onnx")(feed)
    modules = dict(sim.named_modules())
    worst = 0.0
    for mod, seen in calls.items():
        m = modules[mod]
        for k, (t, outs) in enumerate(seen):
            x = torch.from_numpy(vals[t])
            with torch.no_grad():
                y = F.linear(qat.fake_quant_act(x, m.sites.lo[k], m.sites.hi[k]), qat.fake_quant_weight(m.weight))
            got = np.concatenate([vals[o] for o in outs], -1)
            worst = max(worst, float(np.linalg.norm(y.numpy() - got) / np.linalg.norm(got)))
    assert worst < 1e-5, f"worst relative error over {len(names)} tensors: {worst:.2e}"


def test_ranges_that_do_not_fit_the_graph_are_refused(simulated):
    _, sites, proto, _, _, _ = simulated
    short = dict(sites, **{k: v[:-1] for k, v in list(sites.items())[:1]})
    with pytest.raises(TRMEdgeError, match="do not fit its step graph"):
        quantize.site_overrides(proto, short)



def test_cli_finetune_qat_writes_a_model_with_its_ranges_and_policy(tmp_path, capsys):
    from test_cli import run
    from test_train import _cfg

    from trm_edge.checkpoint import load, save

    cfg = _cfg()
    src = save(TRM(cfg.model), tmp_path / "m", task="sudoku", recipe=cfg.to_dict(), recommended_halt="learned:1")
    code, out, err = run(capsys, "finetune", str(src), "--qat", "--steps", "3", "-o", str(tmp_path / "run"))
    assert code == 0, err
    model, meta = load(tmp_path / "run" / "model")
    assert meta["recommended_halt"] == "learned:1" and meta["recipe"]["qat"] and meta["recipe"]["init"]
    assert set(meta["int8_sites"]) == set(qat.quantized_modules(model)) and "--quantize int8" in out
    code, _, err = run(capsys, "finetune", str(tmp_path / "nowhere"), "-o", str(tmp_path / "run2"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    other = save(TRM(tiny_config(hidden_size=64, puzzle_emb_ndim=64)), tmp_path / "m2", task="sudoku",
                 recipe=cfg.to_dict())
    code, _, err = run(capsys, "finetune", str(other), "-o", str(tmp_path / "run3"))
    assert code == 2 and "architecture differs" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_short_qat_of_the_bundled_model_lowers_int8_disagreement(tmp_path):
    """A short fine-tune through the int8 arithmetic: on held-out puzzles, the shipped int8 graph (learned ranges,
    through the real export) disagrees less with its own fp32 graph than the same export with the ranges QAT starts
    from (the calibration) does with the bundled fp32: the share of answer tokens that differ when both graphs get
    the fp32 graph's carry at each of the 16 steps. (A random tiny model cannot show this: fitting it changes what
    it answers.)"""
    from trm_edge.checkpoint import DEFAULT_MODEL, load, load_model
    from trm_edge.export import ExportOptions, QuantOptions, export_bundle
    from trm_edge.runtimes import open_solver
    from trm_edge.training import sources
    from trm_edge.training.trainer import TrainConfig, train

    if not DEFAULT_MODEL.is_dir():
        pytest.skip("no bundled model in this checkout")
    model, meta = load_model()
    puzzles, solutions = sources.sudoku_pool([(24, 29, 256)], seed=77)
    stream = sources.sudoku_stream(puzzles, solutions, 16, seed=0)
    cfg = TrainConfig(model.config, steps=100, batch_size=16, lr=1e-4, warmup_steps=5, ema_rate=0.0, lr_min_ratio=1.0,
                      eval_every=10**9, checkpoint_every=10**9, carry_bank=128, init=str(DEFAULT_MODEL), qat=True)
    _, start = qat.detach(qat.attach(copy.deepcopy(model), qat.calibrate(model, stream(0)[0][:32])))
    tuned, tuned_meta = load(train(cfg, tmp_path / "run", stream, log=lambda r: None))
    heldout = get_codec("sudoku").sample(48, 23)

    def disagreement(m, m_meta, name):
        opts = ExportOptions(("step",), verify_n=2, quant=QuantOptions(("int8",), heldout=4, max_drop=100.0))
        b = export_bundle(m, dict(m_meta, task="sudoku"), tmp_path / name, opts)
        fp32, int8 = open_solver(b, "ort", "step"), open_solver(b, "ort", "step", "int8")
        feeds = quantize.calibration_feeds(fp32, heldout, m.config.halt_max_steps, batch=48)
        diff = [fp32.adapter.run(f)["pred"] != int8.adapter.run(f)["pred"]
                for f in ({k: v for k, v in feed.items() if k != "step"} for feed in feeds)]
        return float(np.mean(diff))

    before = disagreement(model, dict(meta, int8_sites=start), "b0")
    after = disagreement(tuned, tuned_meta, "b1")
    assert after < before, f"int8 vs its fp32, answer tokens differing per step: {before:.3%} -> {after:.3%}"
