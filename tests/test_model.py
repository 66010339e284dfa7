"""The reference model against the official code's own outputs, and our I/O round trips."""

from __future__ import annotations

import dataclasses
import pickle
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import FIXTURES, bf16_official, official_with_rows, tiny_config

from trm_edge.checkpoint import export_official, load, load_model, load_official, save, with_rows
from trm_edge.config import TRMConfig
from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy
from trm_edge.model import TRM, Batch


def _run_steps(model: TRM, inputs: np.ndarray, ids: np.ndarray, n: int):
    batch = Batch(torch.from_numpy(inputs).long(), torch.from_numpy(ids).long())
    carry = model.initial_carry(len(inputs))
    outs = []
    with torch.no_grad():
        for _ in range(n):
            carry, logits, q = model.forward_q(carry, batch)
            outs.append((logits.float().numpy(), q.numpy(), carry.z_H.float().numpy()))
    return outs


def test_official_parity(official_dir):
    """Logits and q within 1e-4 at step 1, 1e-2 later, >= 99% identical answer tokens at every step."""
    model, meta = load_official(official_dir)
    assert meta["format"] == "official"
    exp = np.load(official_dir / "expected.npz")
    outs = _run_steps(model, exp["inputs"], exp["puzzle_identifiers"], model.config.halt_max_steps)
    for k, (logits, q, z_H) in enumerate(outs, 1):
        tol = 1e-4 if k == 1 else 1e-2
        assert np.abs(logits - exp[f"logits_step{k}"]).max() <= tol
        assert np.abs(q[:, 0] - exp[f"q_halt_step{k}"]).max() <= tol
        assert np.abs(q[:, 1] - exp[f"q_continue_step{k}"]).max() <= tol
        assert np.abs(z_H - exp[f"z_H_step{k}"]).max() <= 10 * tol
        assert (logits.argmax(-1) == exp[f"logits_step{k}"].argmax(-1)).mean() >= 0.99


def test_official_run_dir_and_step_file_agree(official_dir):
    a, _ = load_official(official_dir)
    b, _ = load_official(official_dir / "step_1234")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_bfloat16_checkpoint_runs_in_bf16(tmp_path):
    """A bf16 official checkpoint runs with a bf16 carry and stays close to its fp32 twin at step 1 (bf16
    rounding on random weights moves some near-tied argmaxes; a wrong cast or norm moves everything)."""
    src = FIXTURES / "sudoku_mlp_fp32"
    model, _ = load_official(bf16_official(tmp_path))
    assert model.config.forward_dtype == "bfloat16"
    exp = np.load(src / "expected.npz")
    (logits, _, _), = _run_steps(model, exp["inputs"], exp["puzzle_identifiers"], 1)
    carry = model.initial_carry(2)
    assert carry.z_H.dtype == torch.bfloat16
    ref = exp["logits_step1"]
    assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.99
    assert (logits.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("prefix", ["_orig_mod.model.inner.", "model.inner.", "inner.", ""])
def test_key_prefixes(tmp_path, prefix):
    src = FIXTURES / "sudoku_mlp_fp32"
    if not src.is_dir():
        pytest.skip("fixtures missing")
    d = tmp_path / "run"
    shutil.copytree(src, d)
    state = torch.load(src / "step_1234", weights_only=True)
    torch.save({prefix + k.removeprefix("_orig_mod.model.inner."): v for k, v in state.items()}, d / "step_1234")
    ref, _ = load_official(src)
    got, _ = load_official(d)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k])


def _copy_run(tmp_path, name="sudoku_mlp_fp32"):
    src = FIXTURES / name
    if not src.is_dir():
        pytest.skip("fixtures missing")
    d = tmp_path / name
    shutil.copytree(src, d)
    return d


def test_unknown_and_missing_keys_are_named(tmp_path):
    d = _copy_run(tmp_path)
    state = torch.load(d / "step_1234", weights_only=True)
    state["_orig_mod.model.inner.extra.weight"] = torch.zeros(1)
    del state["_orig_mod.model.inner.lm_head.weight"]
    torch.save(state, d / "step_1234")
    with pytest.raises(TRMEdgeError, match=r"missing lm_head\.weight.*unknown extra\.weight"):
        load_official(d)


def test_rotary_cache_keys_are_tolerated(tmp_path):
    d = _copy_run(tmp_path, "maze_att_fp32")
    state = torch.load(d / "step_1234", weights_only=True)
    state["_orig_mod.model.inner.rotary_emb.cos_cached"] = torch.zeros(80, 16)
    torch.save(state, d / "step_1234")
    load_official(d)


def test_config_mismatch_is_named(tmp_path):
    d = _copy_run(tmp_path)
    doc = yaml.safe_load((d / "all_config.yaml").read_text())
    doc["arch"]["hidden_size"] = 128
    (d / "all_config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(TRMEdgeError, match="hidden_size 128 but the weights have 64"):
        load_official(d)


def test_missing_yaml_and_no_checkpoint(tmp_path):
    d = _copy_run(tmp_path)
    (d / "all_config.yaml").unlink()
    with pytest.raises(TRMEdgeError, match="no all_config.yaml"):
        load_official(d)
    with pytest.raises(TRMEdgeError, match="no checkpoint here"):
        load_official(tmp_path)


def test_seq_len_sources_for_attention(tmp_path):
    """Attention weights do not fix seq_len: dataset.json beside or above, else --seq-len, else an error."""
    d = _copy_run(tmp_path, "maze_att_fp32")
    assert load_official(d)[0].config.seq_len == 64
    (d / "dataset.json").rename(tmp_path / "dataset.json")  # above the run directory
    assert load_official(d)[0].config.seq_len == 64
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(TRMEdgeError, match="pass --seq-len"):
        load_official(d)
    assert load_official(d, seq_len=64)[0].config.seq_len == 64


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickled_object_is_refused_and_never_runs(tmp_path, monkeypatch):
    d = _copy_run(tmp_path)
    state = torch.load(d / "step_1234", weights_only=True)
    state["_orig_mod.model.inner.evil"] = _Evil()
    with open(d / "step_1234", "wb") as f:
        torch.save(state, f, pickle_module=pickle)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TRMEdgeError, match="refused: the file holds pickled objects"):
        load_official(d)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_checkpoint(tmp_path):
    d = _copy_run(tmp_path)
    data = (d / "step_1234").read_bytes()
    (d / "step_1234").write_bytes(data[: len(data) // 2])
    with pytest.raises(TRMEdgeError, match="not a readable PyTorch checkpoint"):
        load_official(d)


def test_ours_official_ours_round_trip(tmp_path, official_dir):
    model, meta = load_official(official_dir)
    save(model, tmp_path / "ours", task=meta["task"])
    ours, meta2 = load(tmp_path / "ours")
    assert meta2["task"] == meta["task"] and ours.config == model.config
    export_official(ours, tmp_path / "official", step=7, task=meta["task"])
    back, _ = load_official(tmp_path / "official")
    assert back.config == model.config
    again, _ = load_model(tmp_path / "ours")
    exp = np.load(official_dir / "expected.npz")
    ref = _run_steps(model, exp["inputs"], exp["puzzle_identifiers"], 2)
    for m in (ours, back, again):
        got = _run_steps(m, exp["inputs"], exp["puzzle_identifiers"], 2)
        for (a, qa, _), (b, qb, _) in zip(ref, got):
            assert np.array_equal(a, b) and np.array_equal(qa, qb)


def test_kept_puzzle_rows_equal_the_whole_table_on_those_rows(tmp_path):
    """Rows 0, 5, 2 of 8, read alone at load (and kept from a loaded model, as export does for a library caller), as
    ids 0, 1, 2: the answers and q_halt of the whole table under ids 0, 5, 2 at every step in fp32, and not those of
    its rows 0, 1, 2."""
    d = official_with_rows(tmp_path / "run", 8)
    full, _ = load_official(d)
    kept, meta = load_model(d, rows=[0, 5, 2])
    assert kept.config.num_puzzle_identifiers == 3 and meta["puzzle_ids"] == [0, 5, 2]
    tokens = torch.randint(1, 11, (3, 81), generator=torch.Generator().manual_seed(1))

    def steps(model: TRM, ids: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        carry, batch, out = model.initial_carry(3), Batch(tokens, torch.tensor(ids)), []
        with torch.no_grad():
            for _ in range(model.config.halt_max_steps):
                carry, _, answers, q_halt, _ = model.halting_step(carry, batch)
                out.append((answers, q_halt))
        return out

    want = steps(full, [0, 5, 2])
    for got in (steps(kept, [0, 1, 2]), steps(with_rows(full, [0, 5, 2]), [0, 1, 2])):
        for (a, q), (b, r) in zip(want, got, strict=True):
            assert np.array_equal(a, b) and np.array_equal(q, r)
    assert not all(np.array_equal(q, r) for (_, q), (_, r) in zip(want, steps(full, [0, 1, 2])))  # rows matter
    with pytest.raises(TRMEdgeError, match=r"^--puzzle-ids: \[8, -1\] outside the model's table of 8 rows$"):
        load_model(d, rows=[0, 8, -1])


def test_the_structure_alone_is_the_model_without_its_weights(official_dir):
    """What `info` reads (weights=False: the meta device, nothing read): the loaded model's config, names, shapes
    and parameter count."""
    from trm_edge.api import model_info

    full, _ = load_official(official_dir)
    bare, _ = load_model(official_dir, weights=False)
    assert bare.config == full.config and all(v.is_meta for v in bare.state_dict().values())
    assert {k: v.shape for k, v in bare.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    assert model_info(str(official_dir))["parameters"] == sum(p.numel() for p in full.parameters())


def test_corrupt_safetensors_refused(tmp_path):
    save(TRM(tiny_config()), tmp_path / "m", task="sudoku")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(TRMEdgeError, match="unreadable weights"):
        load(tmp_path / "m")


def test_halting_learned_inf_equals_fixed_and_rows_halt_independently():
    torch.manual_seed(0)
    model = TRM(tiny_config(halt_max_steps=6)).eval()
    with torch.no_grad():  # make q_halt depend on the input so rows differ
        model.q_head.weight.normal_(0, 1.0)
        model.q_head.bias.zero_()
    tokens = torch.randint(1, 11, (8, 81))
    batch = Batch(tokens, torch.zeros(8, dtype=torch.long))
    policy = lambda text: HaltPolicy.parse(text, 6)  # noqa: E731
    fixed = model.solve(batch, policy("fixed"))
    inf = model.solve(batch, policy("learned:inf"))
    assert np.array_equal(fixed.tokens, inf.tokens) and np.array_equal(fixed.steps, inf.steps)
    assert (fixed.steps == 6).all()
    qs = [model.solve(Batch(tokens[i:i + 1], batch.puzzle_ids[:1]), policy("fixed:1")).q_halt[0] for i in range(8)]
    tau = float(np.median(qs))
    learned = model.solve(batch, policy(f"learned:{tau}"))
    assert len(set(learned.steps.tolist())) > 1  # rows halted at different steps
    for i in range(8):  # each row's answer equals solving it alone: frozen rows are not disturbed
        alone = model.solve(Batch(tokens[i:i + 1], batch.puzzle_ids[:1]), policy(f"learned:{tau}"))
        assert alone.steps[0] == learned.steps[i]
        assert np.array_equal(alone.tokens[0], learned.tokens[i])


def test_halt_policy_parse_and_errors():
    assert str(HaltPolicy.parse("fixed", 16)) == "fixed:16"
    p = HaltPolicy.parse("learned:0.5,min=2,max=8", 16)
    assert (p.threshold, p.min_steps, p.max_steps) == (0.5, 2, 8)
    assert p.halted(1, np.array([9.0])).tolist() == [False]  # below min
    assert p.halted(2, np.array([0.6, 0.4])).tolist() == [True, False]
    assert p.halted(8, np.array([-9.0])).tolist() == [True]
    for bad in ("sometimes", "fixed:x", "learned:0,foo=1", "learned:0,min=5,max=2"):
        with pytest.raises(TRMEdgeError, match="halting policy"):
            HaltPolicy.parse(bad, 16)


def test_flops_match_reference_table():
    """trm-reference §7: Sudoku-MLP 25.63 GFLOP per step, Maze-Att 238.9; parameter counts measured."""
    sud = TRMConfig(vocab_size=11, seq_len=81, mlp_t=True, pos_encodings="none")
    maze = TRMConfig(vocab_size=6, seq_len=900, L_cycles=4)
    assert sud.param_count() == 5_028_866 and maze.param_count() == 6_822_914
    assert abs(sud.flops_per_step() / 1e9 - 25.63) < 0.01
    assert abs(maze.flops_per_step() / 1e9 - 238.9) < 0.1


def test_param_count_matches_module():
    for cfg in (tiny_config(), tiny_config(mlp_t=False)):
        assert cfg.param_count() == sum(p.numel() for p in TRM(cfg).parameters())


def test_config_errors():
    with pytest.raises(TRMEdgeError, match="forward_dtype"):
        dataclasses.replace(tiny_config(), forward_dtype="float16")
    with pytest.raises(TRMEdgeError, match="unknown field"):
        TRMConfig.from_dict({**tiny_config().to_dict(), "bogus": 1})
