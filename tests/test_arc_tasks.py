"""ARC by task: `export --tasks` keeps and names a few tasks' rows of an official checkpoint, `solve BUNDLE task.json`
finds the task (by name or by its demonstrations) and votes over its variants as the official evaluation does, and
`eval` on the dataset uses the rows the bundle carries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, copy_of, edit_manifest, tiny_config

from trm_edge.tasks.arc import dihedral, encode_grid, variant_name

RNG = np.random.default_rng(7)
# two tasks without symmetry (a wrong inverse shows): demonstrations, then one test pair each
TASKS = {
    "t1": ([(RNG.integers(0, 10, (3, 4)), RNG.integers(0, 10, (2, 5))) for _ in range(2)],
           [(RNG.integers(0, 10, (4, 3)), RNG.integers(0, 10, (3, 2)))]),
    "t2": ([(RNG.integers(0, 10, (2, 3)), RNG.integers(0, 10, (3, 3))) for _ in range(3)],
           [(RNG.integers(0, 10, (5, 2)), RNG.integers(0, 10, (1, 4)))]),
}
VARIANTS = [(0, np.arange(10)), (1, np.array([0, 3, 1, 2, 5, 4, 7, 6, 9, 8])), (6, np.array([0, 9, 8, 7, 6, 5, 4, 3,
                                                                                             2, 1])),
            (5, np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 9]))]


def task_json(name: str, with_answers: bool = True) -> dict:
    demos, tests = TASKS[name]
    return {"train": [{"input": x.tolist(), "output": y.tolist()} for x, y in demos],
            "test": [{"input": x.tolist(), **({"output": y.tolist()} if with_answers else {})} for x, y in tests]}


def variant_of(name: str, k: int, colours: np.ndarray) -> str:
    return name if k == 0 else variant_name(name, k, colours)


@pytest.fixture(scope="module")
def arc_run(tmp_path_factory) -> Path:
    """An official ARC run (random weights, rows that differ) beside the dataset its data_paths names: each task's
    identity and three variants, demonstrations in train (one translated, as the official builder does), tests in
    test."""
    import torch

    from trm_edge.checkpoint import export_official
    from trm_edge.model import TRM
    from trm_edge.training import datasets

    root = tmp_path_factory.mktemp("arc")
    names = ["<blank>"]
    splits = {s: {"inputs": [], "labels": [], "puzzle_identifiers": [], "puzzle_indices": [0],
                  "group_indices": [0]} for s in ("train", "test")}
    for task, (demos, tests) in TASKS.items():
        for k, colours in VARIANTS:
            names.append(variant_of(task, k, colours))
            for split, pairs in (("train", demos), ("test", tests)):
                s = splits[split]
                for j, (x, y) in enumerate(pairs):
                    at = (1, 2) if split == "train" and j == 1 else (0, 0)
                    s["inputs"].append(encode_grid(dihedral(colours[x], k), at).astype(np.uint8))
                    s["labels"].append(encode_grid(dihedral(colours[y], k), at).astype(np.uint8))
                s["puzzle_identifiers"].append(len(names) - 1)
                s["puzzle_indices"].append(len(s["inputs"]))
        for s in splits.values():
            s["group_indices"].append(len(s["puzzle_identifiers"]))
    for split, s in splits.items():
        datasets.write_dataset(root / "arc", split, {k: np.array(v) for k, v in s.items()}, 12, len(names), names)
    torch.manual_seed(0)
    model = TRM(tiny_config(mlp_t=False, vocab_size=12, seq_len=900, hidden_size=16, num_heads=2, puzzle_emb_ndim=16,
                            num_puzzle_identifiers=len(names), halt_max_steps=3, H_cycles=1, L_cycles=1))
    with torch.no_grad():
        model.puzzle_emb.weights.normal_()
        model.q_head.weight.normal_(0, 0.5)
    return export_official(model, root / "run", step=1, task="arc")


@pytest.fixture(scope="module")
def arc_bundle(arc_run, tmp_path_factory) -> Path:
    from trm_edge.cli import main

    out = tmp_path_factory.mktemp("b") / "bundle"
    with pytest.raises(SystemExit) as e:
        main(["export", str(arc_run), "--tasks", "t2,t1", "--augmentations", "3", "--graph", "step", "-o", str(out),
              "--quiet"])
    assert e.value.code == 0
    return out


def test_export_keeps_and_names_the_tasks_rows(arc_bundle, arc_run):
    import torch

    from trm_edge import api
    from trm_edge.bundle import Bundle
    from trm_edge.halting import HaltPolicy
    from trm_edge.model import Batch

    ids = json.loads((arc_run.parent / "arc" / "identifiers.json").read_text())
    b = Bundle(arc_bundle)
    want = [variant_of(t, k, c) for t in ("t2", "t1") for k, c in VARIANTS[:3]]
    assert list(b.arc_rows.names) == want and b.manifest["puzzle_ids"] == [ids.index(n) for n in want]
    assert b.arc_rows.pairs["t1"] and b.arc_rows.tasks == ["t2", "t1"]
    assert api.bundle_summary(arc_bundle)["arc_tasks"] == {"t2": 3, "t1": 3}
    # the bundle on its kept rows = the full checkpoint on the original rows, answers and q_halt at every step
    full = api.open_model(str(arc_run)).model
    loaded = api.open_model(str(arc_bundle))
    x = np.stack([encode_grid(TASKS["t1"][1][0][0])] * 6).astype(np.int64)
    for steps in (1, 2, 3):
        policy = HaltPolicy.parse(f"fixed:{steps}", 3)
        mine = loaded.solve(x, policy, np.arange(6))
        ref = full.solve(Batch(torch.from_numpy(x), torch.tensor(b.manifest["puzzle_ids"])), policy)
        assert np.array_equal(mine.tokens, ref.tokens)
        np.testing.assert_allclose(mine.q_halt, ref.q_halt, atol=1e-4)


def test_solve_finds_the_task_and_votes(arc_bundle, tmp_path, capsys):
    from trm_edge import api

    by_name = tmp_path / "t1.json"
    by_name.write_text(json.dumps(task_json("t1")))
    by_content = tmp_path / "mystery.json"
    by_content.write_text(json.dumps(task_json("t2", with_answers=False)))
    code, out, _ = cli(capsys, "solve", str(arc_bundle), str(by_name), str(by_content), "--json")
    assert code == 0
    sub = json.loads(out)
    assert list(sub) == ["t1", "t2"] and all(set(a) == {"attempt_1", "attempt_2"} for t in sub.values() for a in t)
    # an oracle answering in each variant's frame: right under the identity and variant 1, wrong under variant 6;
    # the vote maps each answer back, so the truth wins 2 to 1 and the wrong grid (mapped back) comes second
    loaded = api.open_model(str(arc_bundle))
    y, wrong = TASKS["t1"][1][0][1], TASKS["t1"][1][0][1][::-1]

    def oracle(tokens, policy, ids):
        out = []
        for i in ids:
            k, colours = VARIANTS[int(i) % 3]
            out.append(encode_grid(dihedral(colours[wrong if i % 3 == 2 else y], k)))
        n = len(ids)
        return api.Solution(np.stack(out), np.ones(n, np.int64), np.zeros(n, np.float32))

    loaded.solve = oracle
    heard = []
    res = api.solve_arc_tasks(loaded, [str(by_name)], batch_size=2, progress=lambda *a: heard.append(a))
    assert heard == [("t1: 3 solves (test inputs x variants)", k, 3) for k in (2, 3)]
    pair = res["tasks"][0]["pairs"][0]
    assert res["tasks"][0]["task"] == "t1" and pair["votes"] == [2, 1] and pair["correct"]
    assert pair["attempts"] == [y.tolist(), wrong.tolist()]
    assert api.submission(res) == {"t1": [{"attempt_1": y.tolist(), "attempt_2": wrong.tolist()}]}


def test_a_task_the_bundle_lacks_is_one_line(arc_bundle, arc_run, tmp_path, capsys):
    other = dict(task_json("t1"), train=[{"input": [[1]], "output": [[2]]}])
    f = tmp_path / "other.json"
    f.write_text(json.dumps(other))
    code, _, err = cli(capsys, "solve", str(arc_bundle), str(f))
    assert code == 2 and "carries t2, t1" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "solve", str(arc_bundle), str(f), "--task-name", "t9")
    assert code == 2 and "--task-name t9" in err
    code, _, err = cli(capsys, "export", str(arc_run), "--tasks", "t1,t7", "-o", str(tmp_path / "x"))
    assert code == 2 and "t7 not among" in err and not (tmp_path / "x").exists()


def test_eval_on_the_dataset_uses_the_rows_the_bundle_carries(arc_bundle, arc_run, capsys):
    code, out, _ = cli(capsys, "eval", str(arc_bundle), "--data", str(arc_run.parent / "arc"), "--json")
    assert code == 0
    run = json.loads(out)["runs"][0]
    assert run["n"] == 6 and run["vote"]["rows"] == 6 and run["vote"]["tasks"] == 2
    code, out, _ = cli(capsys, "eval", str(arc_bundle), "--data", str(arc_run.parent / "arc"), "--augmentations", "2",
                       "--json")
    assert code == 0 and json.loads(out)["runs"][0]["vote"]["rows"] == 4
    code, out, _ = cli(capsys, "eval", str(arc_run), "--data", str(arc_run.parent / "arc"), "--augmentations", "3",
                       "--json")  # the whole checkpoint: its 4 variants a task, cut to 3
    assert code == 0 and json.loads(out)["runs"][0]["vote"]["rows"] == 6


@pytest.mark.parametrize("bad", [{"names": ["t1"]}, {"names": "t1"}, {"names": ["t1|||t9|||0"] * 6},
                                 {"names": ["t1"] * 6, "pairs": {"t1": ["00"]}}])
def test_a_forged_row_listing_is_refused(arc_bundle, tmp_path, capsys, bad):
    b = copy_of(arc_bundle, tmp_path)
    edit_manifest(b, lambda doc: doc.update(arc_rows=bad))
    f = tmp_path / "t1.json"
    f.write_text(json.dumps(task_json("t1")))
    code, out, err = cli(capsys, "solve", str(b), str(f))
    assert code == 2 and out == "" and "arc_rows" in err and len(err.strip().splitlines()) == 1


def test_names_of_another_dataset_are_warned_of(arc_run, tmp_path, capsys):
    names = json.loads((arc_run.parent / "arc" / "identifiers.json").read_text())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "identifiers.json").write_text(json.dumps(names + ["t3"]))
    code, _, err = cli(capsys, "export", str(arc_run), "--tasks", "t1", "--augmentations", "1", "--dataset",
                       str(tmp_path / "other"), "--graph", "step", "-o", str(tmp_path / "b"), "--quiet")
    assert code == 0 and f"names {len(names) + 1} puzzle rows but the checkpoint has {len(names)}" in err
