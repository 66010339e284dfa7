"""The trainer: it learns, it resumes after a kill, and N gloo processes reproduce the 1-process run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, as_from_a_terminal, tiny_config

from trm_edge.checkpoint import load
from trm_edge.errors import TRMEdgeError
from trm_edge.tasks import sudoku_gen
from trm_edge.training.recipes import heldout_sudoku, run, torch_solver
from trm_edge.training.trainer import PACE_STEPS, RunOptions, TrainConfig, stablemax_cross_entropy, train


def _cfg(**kw) -> TrainConfig:
    model = tiny_config(halt_max_steps=2, H_cycles=1, L_cycles=1)
    base = dict(model=model, steps=10, batch_size=4, lr=3e-3, warmup_steps=5, eval_every=10**9,
                checkpoint_every=10**9, ema_rate=0.9, data={"buckets": [[30, 40, 40]], "pool_seed": 3, "eval_seed": 4,
                                                             "eval_n": 4})
    return dataclasses.replace(TrainConfig(**base), **kw)


def _fixed_stream(n: int):
    p, s = sudoku_gen.generate(n, givens=(34, 40), seed=11)
    x, y = sudoku_gen.to_tokens(p).astype(np.int64), sudoku_gen.to_tokens(s).astype(np.int64)
    return x, y, (lambda i: (x, y, np.zeros(n, np.int64)))


def test_stablemax_matches_definition():
    logits = torch.tensor([[[2.0, -1.0, 0.5]]])
    s = torch.tensor([3.0, 0.5, 1.5])
    expected = -torch.log(s[0] / s.sum())
    assert torch.allclose(stablemax_cross_entropy(logits, torch.tensor([[0]])).float(), expected.float())


def test_stablemax_gradient_is_finite_where_a_logit_is_exactly_one():
    logits = torch.tensor([[[1.0, -1.0, 0.5]]], dtype=torch.float64, requires_grad=True)
    stablemax_cross_entropy(logits, torch.tensor([[2]])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_a_step_with_a_non_finite_gradient_is_skipped_not_applied(tmp_path, monkeypatch):
    """One poisoned batch (its loss NaN) must leave the weights, the EMA and the saved model finite."""
    from trm_edge.training import trainer

    real, calls = trainer.act_losses, iter(range(10**6))

    def poisoned(logits, q_halt, labels, loss_type):
        lm, q, correct = real(logits, q_halt, labels, loss_type)
        return (lm * float("nan"), q, correct) if next(calls) == 3 else (lm, q, correct)

    monkeypatch.setattr(trainer, "act_losses", poisoned)
    logs = []
    path = train(_cfg(steps=6), tmp_path, _fixed_stream(4)[2], log=logs.append)
    assert [r["step"] for r in logs if r.get("event") == "skipped"] == [3]
    model, _ = load(path)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_tiny_model_overfits_a_handful_of_puzzles(tmp_path):
    x, y, stream = _fixed_stream(4)
    logs = []
    cfg = _cfg(steps=400, ema_rate=0.0, lr=3e-3, warmup_steps=20, lr_min_ratio=1.0,
               model=tiny_config(hidden_size=64, puzzle_emb_ndim=64, halt_max_steps=2, H_cycles=1, L_cycles=2))
    torch.set_num_threads(1)
    path = train(cfg, tmp_path, stream, log=logs.append)
    losses = [r["lm_loss"] for r in logs if "lm_loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    model, meta = load(path)
    sol = torch_solver(model, "fixed")(x)
    assert (sol.tokens == y).all(), f"exact on the training puzzles: {(sol.tokens == y).all(1).mean():.0%}"
    assert meta["trained_steps"] == 400


def test_a_time_budget_fits_the_run_length_and_a_resume_keeps_it(tmp_path):
    """--minutes: the length is fitted from the pace of the warm-up's steps 20-40, written to the state, and a run
    resumed with the budget again ends at that length instead of fitting a new one."""
    logs = []
    cfg, budget = _cfg(steps=10**6, warmup_steps=50), RunOptions(budget_s=1.0)  # the placeholder length must not matter
    path = train(cfg, tmp_path, _fixed_stream(4)[2], log=logs.append, options=budget)
    fit = next(r for r in logs if r.get("event") == "fitted")
    assert fit["step"] == 40 and fit["steps"] == max(41, int(1.0 / fit["s_per_step"])) < 10**6
    assert load(path)[1]["trained_steps"] == fit["steps"]
    assert torch.load(tmp_path / "state" / "train.pt", weights_only=True)["fitted_steps"] == fit["steps"]
    logs.clear()
    train(cfg, tmp_path, _fixed_stream(4)[2], log=logs.append, options=budget)
    assert [r.get("event") for r in logs] == ["resumed"] and load(path)[1]["trained_steps"] == fit["steps"]
    with pytest.raises(TRMEdgeError, match="needs at least 40 warm-up steps"):
        train(_cfg(), tmp_path / "short", _fixed_stream(4)[2], options=budget)
    # time spent evaluating (or saving) among the timed steps is not a step's pace: a 2 s evaluation at step 30
    # would otherwise add 0.1 s to each of the 20
    logs.clear()
    evals = []
    train(_cfg(steps=10**6, warmup_steps=50, eval_every=30), tmp_path / "aside", _fixed_stream(4)[2],
          lambda model: evals.append(time.sleep(0 if evals else 2.0)) or {}, log=logs.append, options=budget)
    fit = next(r for r in logs if r.get("event") == "fitted")
    assert evals and fit["s_per_step"] < 2.0 / PACE_STEPS


def test_a_damaged_data_cache_is_rebuilt_and_an_unwritable_run_is_one_error(tmp_path):
    """The run dir's data cache, damaged outside trm-edge, is rebuilt the same; a write that fails (here: `data` is a
    file, as a full disk or a read-only mount would fail it) is a TRMEdgeError naming the path, not a traceback."""
    data = run(_cfg(), tmp_path, data_only=True)
    with np.load(data / "pool.npz") as z:
        pool = z["puzzles"]
    (data / "pool.npz").write_bytes(b"not a zip")
    run(_cfg(), tmp_path, data_only=True)
    with np.load(data / "pool.npz") as z:
        assert (z["puzzles"] == pool).all()
    for f in data.iterdir():
        f.unlink()
    data.rmdir()
    data.write_text("in the way")
    with pytest.raises(TRMEdgeError, match=f"{data}: .*writing {tmp_path}"):
        run(_cfg(), tmp_path, data_only=True)


def test_the_prepared_gpu_command_trains_and_hands_back_the_model(tmp_path):
    """training/gpu_run.sh as the device tool runs it (here with DEVICE=cpu): the package laid out by hand, the data
    prepared beforehand by --data-only, a time budget, and the model, its config and the logs under $OUT."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_cfg(warmup_steps=50).to_dict()))
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    prep = subprocess.run([sys.executable, "-m", "trm_edge", "train", "--config", str(cfg), "-o", str(run_dir),
                           "--data-only"], capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0 and (run_dir / "data" / "heldout.npz").is_file(), prep.stderr[-1500:]
    res = subprocess.run(["bash", str(REPO / "training" / "gpu_run.sh"), "0.02", str(run_dir), str(cfg)], cwd=REPO,
                         env=dict(os.environ, DEVICE="cpu", OUT=str(out)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-1500:]
    assert {"model.safetensors", "config.json", "metrics.jsonl", "train.log"} <= {p.name for p in out.iterdir()}
    events = [json.loads(line).get("event") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "fitted" in events and "eval" in events and "resumed" not in events


def test_bf16_autocast_with_a_carry_bank_trains(tmp_path):
    """The large recipe's path (bf16 matmuls, a bank larger than the batch) on the CPU's autocast."""
    logs = []
    path = train(_cfg(steps=6, carry_bank=8, autocast_bf16=True), tmp_path, _fixed_stream(4)[2], log=logs.append)
    assert np.isfinite(logs[-1]["lm_loss"]) and load(path)[1]["trained_steps"] == 6


def test_heldout_puzzles_are_cached_in_the_run_directory(tmp_path):
    buckets = [[30, 40, 50], [24, 29, 60]]
    a = heldout_sudoku(4, 3, buckets, tmp_path / "heldout.npz")
    assert (tmp_path / "heldout.npz").is_file() and list(a) == ["givens_30-40", "givens_24-29"]
    p, s = sudoku_gen.generate(3, givens=(24, 29), seed=4001)  # bucket k: seed * 1000 + k, as the pool
    assert all((x == sudoku_gen.to_tokens(q)).all() and (y == sudoku_gen.to_tokens(r)).all()
               for (x, y), q, r in zip(a["givens_24-29"], p, s))
    b = heldout_sudoku(4, 3, buckets, tmp_path / "heldout.npz")
    assert all((x == u).all() for k in a for (x, _), (u, _) in zip(a[k], b[k]))


def _train_cmd(cfg_file, out, nproc=1):
    base = [sys.executable, "-m", "trm_edge", "train", "--config", str(cfg_file), "-o", str(out)]
    if nproc == 1:
        return base
    # --standalone: torchrun picks a free port (a fixed one collided with another test's listener once)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "trm_edge", *base[3:]]


def test_two_gloo_processes_match_one(tmp_path):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(_cfg(steps=6).to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name, n in (("one", 1), ("two", 2)):
        res = subprocess.run(_train_cmd(cfg_file, tmp_path / name, n), capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-1500:]
    a, _ = load(tmp_path / "one" / "model")
    b, _ = load(tmp_path / "two" / "model")
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-5), k


def test_two_gloo_processes_under_a_time_budget_stop_together(tmp_path):
    """Each rank measures its own pace; rank 0's length is broadcast, or the rank that would run longer waits forever
    in an all-reduce the other never joins."""
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(_cfg(warmup_steps=50).to_dict()))
    res = subprocess.run([*_train_cmd(cfg_file, tmp_path / "two", 2), "--minutes", "0.02"], capture_output=True,
                         text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert res.returncode == 0, res.stderr[-1500:]
    fit = [r for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
           if (r := json.loads(line)).get("event") == "fitted"]
    assert len(fit) == 1, "one metrics log for the run, written by rank 0 alone"
    assert load(tmp_path / "two" / "model")[1]["trained_steps"] == fit[0]["steps"]
    assert sorted(p.name for p in (tmp_path / "two" / "data").iterdir()) == ["heldout.npz", "pool.npz"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_resume_after_kill(tmp_path, sig):
    """SIGKILL: the run resumes from its last checkpoint. Ctrl-C or SIGTERM: the run first saves its state at the
    step it reached (here there is no periodic checkpoint at all), so an interruption loses no steps."""
    polite = sig != signal.SIGKILL
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(_cfg(steps=100_000, checkpoint_every=10**9 if polite else 3).to_dict()))
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(cfg_file, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)
    state, metrics = out / "state" / "train.pt", out / "metrics.jsonl"
    progress = metrics if polite else state  # the first log record is at step 50
    deadline = time.time() + 240
    while not progress.exists() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    assert state.exists(), "no training state was written"
    done = torch.load(state, weights_only=True)["step"]
    if polite:  # a clean exit, the state at the step reached, no temporary left beside it
        assert proc.returncode == 130 and "stopping after this step" in err, err[-1500:]
        assert not [p for p in out.rglob("*") if ".trm-edge-" in p.name]
        last = json.loads(metrics.read_text().splitlines()[-1])
        assert last["event"] == "interrupted" and last["step"] == done >= 50
    else:
        assert done >= 3 and done % 3 == 0
    cfg_file.write_text(json.dumps(_cfg(steps=done + 3, checkpoint_every=3).to_dict()))
    res = subprocess.run(_train_cmd(cfg_file, out), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-1500:]
    assert f'"event": "resumed", "step": {done}' in res.stderr
    _, meta = load(out / "model")
    assert meta["trained_steps"] == done + 3
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resumed" and r["step"] == done for r in lines)


def test_wise_ft_blend_is_the_weighted_mean_of_the_two_models(tmp_path):
    """benchmarks/studies/wise_ft.py blend: every float tensor is (1-alpha)*base + alpha*tuned; the blend loads as a
    model of the same architecture and says what it was blended from."""
    from benchmarks.studies.wise_ft import blend
    from trm_edge.checkpoint import save
    from trm_edge.model import TRM

    cfg = tiny_config(hidden_size=16, num_heads=2, puzzle_emb_ndim=16)
    torch.manual_seed(0)
    base = save(TRM(cfg), tmp_path / "base", task="sudoku", recommended_halt="learned:3")
    torch.manual_seed(1)
    tuned = save(TRM(cfg), tmp_path / "tuned", task="sudoku")
    (a, _), (b, _) = load(base), load(tuned)
    out, meta = load(blend(str(tuned), 0.25, str(tmp_path / "mix"), base=str(base)))
    assert out.config == cfg and meta["blend"]["alpha"] == 0.25 and meta["recommended_halt"] == "learned:3"
    sa, sb, so = a.state_dict(), b.state_dict(), out.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    for k in so:
        want = 0.75 * sa[k] + 0.25 * sb[k] if so[k].is_floating_point() else sa[k]
        assert torch.allclose(so[k], want) and so[k].dtype == sa[k].dtype
    other = save(TRM(tiny_config(hidden_size=32)), tmp_path / "other", task="sudoku")
    with pytest.raises(SystemExit, match="is not a fine-tune of"):
        blend(str(other), 0.5, str(tmp_path / "bad"), base=str(base))
    assert not (tmp_path / "bad").exists()
