"""HRM (the Hierarchical Reasoning Model, TRM's predecessor) through the same model, loader and exporter as TRM:
the official HRM code's own outputs (tests/data/hrm-official, made as its README says) reproduced at every step, our
format's round trip, the config's counts, the ONNX step graph under ORT against the official outputs, every form and
engine against the reference, int8 through the guard, a model without a puzzle table, and the CLI on HRM bundles."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import cli, tiny_config
from test_flops import counted_flops

from trm_edge.checkpoint import export_official, load, load_model, load_official, save
from trm_edge.config import TRMConfig
from trm_edge.errors import TRMEdgeError
from trm_edge.model import TRM, Batch, Carry

DATA = Path(__file__).parent / "data" / "hrm-official"
# fixture -> (H_layers, L_layers, puzzle-prefix slots, puzzle rows, mlp_t): what the loader must read from the files
FIXTURES = {"att_rope_fp32": (2, 2, 2, 3, False), "mlp_t_fp32": (1, 2, 1, 1, True)}


def _steps(model: TRM, exp) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(logits, q [B, 2] = halt, continue, z_H) at each of the model's supervision steps on the fixture's batch."""
    batch = Batch(torch.from_numpy(exp["inputs"]).long(), torch.from_numpy(exp["puzzle_identifiers"]).long())
    carry, out = model.initial_carry(len(exp["inputs"])), []
    with torch.no_grad():
        for _ in range(model.config.halt_max_steps):
            carry, logits, q = model.forward_q(carry, batch)
            out.append((logits.float().numpy(), q.numpy(), carry.z_H.float().numpy()))
    return out


def _assert_official(got, exp) -> None:
    """The TRM fixtures' tolerances (shared/fixtures/official/README.md); these run bit for bit here."""
    for k, (logits, q, z_H) in enumerate(got, 1):
        tol = 1e-4 if k == 1 else 1e-2
        assert np.abs(logits - exp[f"logits_step{k}"]).max() <= tol, f"logits, step {k}"
        assert np.abs(q[:, 0] - exp[f"q_halt_step{k}"]).max() <= tol, f"q_halt, step {k}"
        assert np.abs(q[:, 1] - exp[f"q_continue_step{k}"]).max() <= tol, f"q_continue, step {k}"
        assert np.abs(z_H - exp[f"z_H_step{k}"]).max() <= 10 * tol, f"z_H, step {k}"
        assert (logits.argmax(-1) == exp[f"logits_step{k}"].argmax(-1)).mean() >= 0.99, f"answers, step {k}"


@pytest.fixture(params=sorted(FIXTURES))
def fixture_dir(request) -> Path:
    return DATA / request.param


def test_official_hrm_reproduced_at_every_step(fixture_dir):
    model, meta = load_official(fixture_dir)
    c = model.config
    assert meta["format"] == "official" and c.family == "hrm"
    assert (c.H_layers, c.L_layers, c.prefix_len, c.num_puzzle_identifiers, c.mlp_t) == FIXTURES[fixture_dir.name]
    exp = np.load(fixture_dir / "expected.npz")
    assert f"logits_step{c.halt_max_steps}" in exp and f"logits_step{c.halt_max_steps + 1}" not in exp
    _assert_official(_steps(model, exp), exp)


def test_the_fixtures_tell_hrm_from_trm(fixture_dir):
    """Updating z_H with L_level (TRM's rule) on the same weights misses the official outputs at step 1: the parity
    test above can fail."""
    model, _ = load_official(fixture_dir)
    as_trm = TRM(dataclasses.replace(model.config, family="trm", H_layers=0)).eval()
    as_trm.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("H_level.")})
    exp = np.load(fixture_dir / "expected.npz")
    (logits, _, _), *_ = _steps(as_trm, exp)
    assert np.abs(logits - exp["logits_step1"]).max() > 0.1


@pytest.mark.parametrize("prefix", ["_orig_mod.model.inner.", "model.inner.", ""])
def test_published_layouts_load(tmp_path, prefix):
    """sapientinc's published repositories hold a file named `checkpoint` (no step_N) beside all_config.yaml; the
    prefix depends on torch.compile (DISABLE_COMPILE drops `_orig_mod.`)."""
    src = DATA / "att_rope_fp32"
    d = shutil.copytree(src, tmp_path / "run", ignore=shutil.ignore_patterns("step_*"))
    state = torch.load(src / "step_1234", weights_only=True)
    torch.save({prefix + k.removeprefix("_orig_mod.model.inner."): v for k, v in state.items()}, d / "checkpoint")
    model, meta = load_model(d)
    assert meta["source"] == str(d / "checkpoint")
    _assert_official(_steps(model, np.load(src / "expected.npz")), np.load(src / "expected.npz"))


def test_config_that_belongs_to_another_run_is_named(tmp_path):
    d = shutil.copytree(DATA / "att_rope_fp32", tmp_path / "run")
    doc = yaml.safe_load((d / "all_config.yaml").read_text())
    doc["arch"]["H_layers"] = 4
    (d / "all_config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TRMEdgeError, match=r"all_config.yaml says H_layers 4 but the weights have 2: the config "
                                           r"belongs to another run$"):
        load_official(d)


def test_our_format_and_official_export_round_trip(tmp_path):
    src = DATA / "att_rope_fp32"
    model, meta = load_official(src)
    save(model, tmp_path / "ours", task=meta["task"])
    doc = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (doc["config"]["family"], doc["config"]["H_layers"]) == ("hrm", 2)
    ours, _ = load(tmp_path / "ours")
    export_official(ours, tmp_path / "official", step=7)
    arch = yaml.safe_load((tmp_path / "official" / "all_config.yaml").read_text())["arch"]
    assert arch["name"].endswith("@HierarchicalReasoningModel_ACTV1") and "puzzle_emb_len" not in arch
    back, _ = load_official(tmp_path / "official")
    assert ours.config == back.config == model.config
    exp = np.load(src / "expected.npz")
    want = _steps(model, exp)
    for m in (ours, back):
        for a, b in zip(want, _steps(m, exp), strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_trm_configs_and_manifests_are_unchanged():
    """A TRM config's dict has no family fields (its manifests and bundles read as before), an old dict loads as TRM,
    and an HRM config round-trips."""
    trm = tiny_config()
    assert "family" not in trm.to_dict() and "H_layers" not in trm.to_dict()
    assert TRMConfig.from_dict(trm.to_dict()) == trm and trm.family == "trm"
    hrm = tiny_config(family="hrm", H_layers=3)
    assert TRMConfig.from_dict(json.loads(json.dumps(hrm.to_dict()))) == hrm
    for bad, match in ((dict(family="hrm"), "H_layers 0 for family hrm"),
                       (dict(H_layers=2), "H_layers 2 for family trm"),
                       (dict(family="xrm", H_layers=1), "family 'xrm' is not one of"),
                       (dict(family="hrm", H_layers=1, puzzle_emb_len=16), "puzzle_emb_len 16 for HRM")):
        with pytest.raises(TRMEdgeError, match=match):
            tiny_config(**bad)


def test_hrm_counts_from_the_config():
    """The published HRM (sudoku: hidden 512, 4 + 4 layers, H 2 x L 2, seq 81 + 1 prefix slot), counted by hand:
    per block 2*82*(3*512*1536 + 4*512*512) = 558,891,008 linear + 4*82^2*512 = 13,770,752 attention; per step
    2 * (2*4 + 4) = 24 block applications (the paper's HRM 'depth 24') + lm_head 2*82*512*11 + q_head 2*512*2.
    Parameters: 8 blocks of 3,407,872 + embeddings and heads 11*512*2 + 2*512 + 2 = 27,275,266 ('27M')."""
    cfg = TRMConfig(vocab_size=11, seq_len=81, family="hrm", H_layers=4, L_layers=4, H_cycles=2, L_cycles=2,
                    puzzle_emb_len=0)
    assert cfg.prefix_len == 1
    assert cfg.flops_per_step() == 24 * (558_891_008 + 13_770_752) + 2 * 82 * 512 * 11 + 2 * 512 * 2
    assert cfg.param_count() == 27_275_266
    small = tiny_config(mlp_t=False, family="hrm", H_layers=3)  # torch's count of the products, on the meta device
    for c in (small, dataclasses.replace(small, mlp_t=True, pos_encodings="none")):
        assert c.param_count() == sum(p.numel() for p in TRM(c).parameters())
        assert c.flops_per_step() == counted_flops(c) > 0


def test_hrm_gradient_is_one_step():
    """In training, HRM's gradient reaches only its last z_L and z_H updates (the official 1-step gradient): the
    first layer of L_level gets one call's gradient, so it is unchanged when earlier calls are cut off."""
    torch.manual_seed(0)
    model = TRM(tiny_config(mlp_t=False, family="hrm", H_layers=1, seq_len=8)).train()
    batch = Batch(torch.randint(0, 11, (2, 8)), torch.zeros(2, dtype=torch.long))
    _, logits, _ = model.step(model.initial_carry(2), batch)
    logits.square().sum().backward()
    assert all(p.grad is not None for p in model.H_level.parameters())
    hrm_grads = [p.grad.clone() for p in model.L_level.parameters()]
    model.zero_grad()
    short = TRM(dataclasses.replace(model.config, H_cycles=1, L_cycles=1)).train()
    short.load_state_dict(model.state_dict())
    with torch.no_grad():  # the carry the official code feeds its graph: all but the last z_L and z_H updates
        c, x, cos_sin = model.config, model.embed(batch), model.rotary_emb()
        z_H, z_L = model.initial_carry(2)
        for h in range(c.H_cycles):
            for i in range(c.L_cycles):
                if (h, i) != (c.H_cycles - 1, c.L_cycles - 1):
                    z_L = model.L_level(z_L, z_H + x, cos_sin)
            if h < c.H_cycles - 1:
                z_H = model.H_level(z_H, z_L, cos_sin)
    _, logits, _ = short.step(Carry(z_H, z_L), batch)
    logits.square().sum().backward()
    for a, p in zip(hrm_grads, short.L_level.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_learned_halting_is_hrms_own_rule(fixture_dir):
    """`learned:0` halts a row at the first step where the official q_halt exceeds q_continue (HRM's ACT rule), and
    answers with that step's tokens."""
    from trm_edge.halting import HaltPolicy

    model, _ = load_official(fixture_dir)
    exp, n = np.load(fixture_dir / "expected.npz"), model.config.halt_max_steps
    batch = Batch(torch.from_numpy(exp["inputs"]).long(), torch.from_numpy(exp["puzzle_identifiers"]).long())
    with torch.no_grad():
        sol = model.solve(batch, HaltPolicy.parse("learned:0", n))
    halts = np.stack([exp[f"q_halt_step{k}"] > exp[f"q_continue_step{k}"] for k in range(1, n + 1)], 1)
    halts[:, -1] = True
    want = halts.argmax(1) + 1
    assert np.array_equal(sol.steps, want)
    for row, k in enumerate(want):
        assert np.array_equal(sol.tokens[row], exp[f"logits_step{k}"][row].argmax(-1))



# -- every form, engine and precision, as TRM's (tests/test_export.py, tests/test_engines.py, tests/test_quantize.py) --

ENGINES = [("ort", "step"), ("ort", "loop"), ("ort", "unrolled"), ("openvino", "step"), ("openvino", "loop"),
           ("openvino", "unrolled"), ("litert", "step")]
INT8 = [("ort", "step", "int8"), ("ort", "loop", "int8-static"), ("ort", "unrolled", "int8"),
        ("openvino", "step", "int8"), ("litert", "step", "int8"), ("litert", "step", "int8-static")]


@pytest.fixture(scope="module")
def every_engine(tmp_path_factory):
    """The attention fixture (RoPE, 2-slot prefix, 3 puzzle rows) exported once in every form and format, with int8
    for each format that offers it (the guard's budget wide open: random weights are chaotic). LiteRT with b1 and b8
    only (its conversion is the slow part), as test_export.py does."""
    from trm_edge.export import ExportOptions, QuantOptions, export_bundle, format_litert

    model, meta = load_official(DATA / "att_rope_fp32")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(format_litert, "BATCHES", (1, 8))
        path = export_bundle(model, meta, tmp_path_factory.mktemp("hrm") / "b", ExportOptions(
            ("step", "loop", "unrolled"), formats=("openvino", "litert"), verify_n=4,
            quant=QuantOptions(("int8", "int8-static"), calib=4, heldout=8, max_drop=100.0)))
    return path, model


def _puzzles(model: TRM) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's 5 rows and 7 more random ones (12: chunks of 8 + 4 x 1 on LiteRT), over all puzzle rows."""
    exp, c = np.load(DATA / "att_rope_fp32" / "expected.npz"), model.config
    rng = np.random.default_rng(0)
    tokens = np.concatenate([exp["inputs"], rng.integers(0, c.vocab_size, (7, c.seq_len))]).astype(np.int64)
    ids = np.concatenate([exp["puzzle_identifiers"], rng.integers(0, c.num_puzzle_identifiers, 7)]).astype(np.int64)
    return tokens, ids


@pytest.mark.parametrize("backend,graph", ENGINES)
def test_every_form_and_engine_answers_as_the_reference(every_engine, backend, graph):
    """Identical answers and steps to PyTorch's under the official policy and HRM's own halting rule (learned:0),
    at batch 1 and 12, with each row's puzzle embedding."""
    from trm_edge.halting import HaltPolicy
    from trm_edge.runtimes import open_solver

    path, model = every_engine
    solver = open_solver(path, backend, graph)
    tokens, ids = _puzzles(model)
    for text in ("fixed", "learned:0"):
        policy = solver.policy(HaltPolicy.parse(text, model.config.halt_max_steps))
        with torch.no_grad():
            ref = model.solve(Batch(torch.from_numpy(tokens), torch.from_numpy(ids)), policy)
        for sl in (slice(0, 1), slice(0, 12)):
            got = solver.solve(tokens[sl], policy, puzzle_ids=ids[sl])
            assert np.array_equal(got.tokens, ref.tokens[sl]) and np.array_equal(got.steps, ref.steps[sl]), text
            assert np.abs(got.q_halt - ref.q_halt[sl]).max() < 1e-3
        if text != "fixed":
            assert len(set(ref.steps.tolist())) > 1, "rows should halt at different steps"


@pytest.mark.parametrize("backend,graph,precision", INT8)
def test_int8_forms_pass_the_guard_and_solve(every_engine, backend, graph, precision):
    """Each int8 route went through the guard (its figures in the manifest) and its graphs solve: the step graph
    and the in-graph loop of the same route agree, as they do for TRM."""
    from trm_edge.bundle import Bundle
    from trm_edge.halting import HaltPolicy
    from trm_edge.runtimes import open_solver

    path, model = every_engine
    mf = Bundle(path).manifest
    q = (mf if backend == "ort" else mf["formats"][backend])["quantization"][precision]
    assert q["guard"]["passed"] and {"fp32_exact", "int8_exact", "exact_drop_pp", "answer_agreement"} <= set(q["guard"])
    tokens, ids = _puzzles(model)
    policy = HaltPolicy.parse("learned:0", model.config.halt_max_steps)
    got = open_solver(path, backend, graph, precision).solve(tokens, policy, puzzle_ids=ids)
    assert got.tokens.shape == tokens.shape and ((got.steps >= 1) & (got.steps <= 3)).all()
    if graph != "step":
        step = open_solver(path, backend, "step", precision).solve(tokens, policy, puzzle_ids=ids)
        assert np.array_equal(step.steps, got.steps) and (step.tokens == got.tokens).mean() >= 0.95


def test_learned_int8_ranges_fit_hrms_call_sites(tmp_path):
    """QAT's ranges, one per call of each stack in a step (L_level H_cycles x L_cycles times, H_level H_cycles
    times), fit the exported step graph's call sites: the static route takes them (a miscount is refused there)."""
    from trm_edge.export import ExportOptions, QuantOptions, export_bundle
    from trm_edge.training import qat

    model, meta = load_official(DATA / "att_rope_fp32")
    c = model.config
    tokens, _ = _puzzles(model)
    _, sites = qat.detach(qat.attach(copy.deepcopy(model), qat.calibrate(model, tokens)))
    assert {len(v) for k, v in sites.items() if k.startswith("H_level.")} == {c.H_cycles}
    assert {len(v) for k, v in sites.items() if k.startswith("L_level.")} == {c.H_cycles * c.L_cycles}
    path = export_bundle(model, dict(meta, int8_sites=sites), tmp_path / "b", ExportOptions(
        ("step",), verify_n=2, quant=QuantOptions(("int8",), heldout=4, max_drop=100.0)))
    q = json.loads((path / "manifest.json").read_text())["quantization"]["int8"]
    calls = sum(map(len, sites.values()))
    assert q["route"] == "int8-static" and q["calibration"]["method"] == f"learned by QAT ({calls} call sites)"


def test_onnx_step_graph_answers_as_the_official_code(every_engine):
    """The exported step graph under ORT, fed the fixture's batch and its own carries, gives the official HRM's
    logits, halting logit and z_H at every step (rope, a 2-slot puzzle prefix, 3 puzzle rows)."""
    from trm_edge.runtimes import open_solver

    src = DATA / "att_rope_fp32"
    path, model = every_engine
    solver = open_solver(path, "ort", "step")
    assert solver.config == model.config
    exp = np.load(src / "expected.npz")
    z_H, z_L = solver.carry(len(exp["inputs"]))
    for k in range(1, model.config.halt_max_steps + 1):
        out = solver.adapter.run({"tokens": exp["inputs"].astype(np.int64), "z_H": z_H, "z_L": z_L,
                                  "puzzle_ids": exp["puzzle_identifiers"].astype(np.int64)})
        z_H, z_L = out["z_H_out"], out["z_L_out"]
        tol = 1e-4 if k == 1 else 1e-2
        assert np.abs(out["logits"] - exp[f"logits_step{k}"]).max() <= tol
        # the graph's halting logit is HRM's rule, q_halt - q_continue > 0
        assert np.abs(out["q_halt"] - (exp[f"q_halt_step{k}"] - exp[f"q_continue_step{k}"])).max() <= tol
        assert np.abs(z_H - exp[f"z_H_step{k}"]).max() <= 10 * tol


# -- puzzle_emb_ndim 0 (HRM's default): no table, no prefix; the CLI on such a model -----------------------------------

@pytest.fixture(scope="module")
def tableless(tmp_path_factory) -> Path:
    """A random sudoku HRM without a puzzle table, in our format."""
    torch.manual_seed(0)
    model = TRM(tiny_config(mlp_t=False, family="hrm", H_layers=1, L_layers=1, puzzle_emb_ndim=0, puzzle_emb_len=0,
                            halt_max_steps=3))
    with torch.no_grad():  # an input-dependent halting head, so rows halt at different steps
        model.q_head.weight.normal_(0, 0.5)
    return save(model.eval(), tmp_path_factory.mktemp("tableless") / "m", task="sudoku")


def test_a_model_without_a_puzzle_table_has_no_prefix(tableless, tmp_path):
    """As the official code: no `puzzle_emb` (so no `puzzle_emb.weights` in the checkpoint), the tokens alone; both
    formats round-trip it; a TRM prefix with nothing to fill it is refused, as the official code cannot run it."""
    model, _ = load(tableless)
    assert model.puzzle_emb is None and model.config.prefix_len == 0
    assert not any(k.startswith("puzzle_emb") for k in model.state_dict())
    back, _ = load_official(export_official(model, tmp_path / "official", step=1))
    assert back.config == model.config
    batch = Batch(torch.randint(0, 11, (3, 81)), torch.zeros(3, dtype=torch.long))
    with torch.no_grad():
        (_, a, _), (_, b, _) = model.step(model.initial_carry(3), batch), back.step(back.initial_carry(3), batch)
    assert torch.equal(a, b) and a.shape == (3, 81, 11)
    with pytest.raises(TRMEdgeError, match=r"puzzle_emb_len 16 with puzzle_emb_ndim 0: no puzzle embedding fills "
                                           r"the prefix \(give puzzle_emb_len 0\)$"):
        tiny_config(puzzle_emb_ndim=0)
    assert tiny_config(puzzle_emb_ndim=0, puzzle_emb_len=0).prefix_len == 0


def test_training_without_a_puzzle_table(tmp_path):
    """The trainer's sparse SignSGD step has no table to update, and skips it."""
    from trm_edge.training.trainer import TrainConfig, train

    cfg = TrainConfig(model=tiny_config(family="hrm", H_layers=1, L_layers=1, puzzle_emb_ndim=0, halt_max_steps=2,
                                        H_cycles=1, L_cycles=1), steps=2, batch_size=2, warmup_steps=1,
                      eval_every=10**9, checkpoint_every=10**9)
    x = torch.randint(1, 11, (2, 81)).numpy()
    model, _ = load(train(cfg, tmp_path, lambda i: (x, x, np.zeros(2, np.int64)), log=lambda r: None))
    assert model.puzzle_emb is None and model.config.family == "hrm"


def test_cli_exports_evals_and_benches_an_hrm(tableless, tmp_path, capsys):
    """`info` names the family; `export --quantize int8` through the guard, then `eval` and `bench` on the bundle
    at fp32 and int8, under the official policy and HRM's own halting rule."""
    code, out, _ = cli(capsys, "info", str(tableless), "--json")
    assert code == 0 and json.loads(out)["config"]["family"] == "hrm"
    b = tmp_path / "b"
    code, _, err = cli(capsys, "export", str(tableless), "-o", str(b), "--graph", "step,loop", "--quantize", "int8",
                       "--heldout", "8", "--max-drop", "100", "--quiet")
    assert code == 0, err
    code, out, err = cli(capsys, "eval", str(b), "--data", "builtin", "--limit", "8", "--halt", "fixed", "--halt",
                         "learned:0", "--json")
    assert code == 0, err
    code, out, err = cli(capsys, "bench", str(b), "--precision", "fp32,int8", "--graph", "step,loop", "--halt",
                         "fixed,learned:0", "-n", "4", "--warmup", "0", "--energy", "none", "--idle-seconds", "0",
                         "-o", str(tmp_path / "o"), "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert len(runs) == 8 and {r["precision"] for r in runs} == {"fp32", "int8"}
