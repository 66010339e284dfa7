"""A task trm-edge has never seen (issue 36 item 1): a 24-token sorting task over 12 values, trained (here: random
weights) with the official code's layout, goes from its run directory to a verified bundle without --task or
--seq-len, and is evaluated against its labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import cli, tiny_config

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks import GenericCodec, codec_for, read_puzzles

VOCAB, LEN = 12, 24


def sort_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits (tokens 2-11) in, the same digits sorted out."""
    x = np.random.default_rng(seed).integers(2, VOCAB, (n, LEN))
    return x, np.sort(x, axis=1)


def write_sort_dataset(root: Path, n_test: int = 40) -> Path:
    from trm_edge.training.datasets import write_dataset

    for split, n, seed in (("train", 64, 0), ("test", n_test, 1)):
        x, y = sort_pairs(n, seed)
        write_dataset(root, split, {"inputs": x, "labels": y, "puzzle_identifiers": np.zeros(n),
                                    "puzzle_indices": np.arange(n + 1), "group_indices": np.arange(n + 1)},
                      VOCAB, 1)
    return root


def export_sort_bundle(root: Path, seed: int) -> Path:
    """A random sorting model's step graph as a generic bundle, its puzzles from the dataset written beside it."""
    import torch

    from trm_edge.export import ExportOptions, export_bundle
    from trm_edge.model import TRM

    torch.manual_seed(seed)
    model = TRM(tiny_config(vocab_size=VOCAB, seq_len=LEN, halt_max_steps=3)).eval()
    return export_bundle(model, {"task": "generic", "dataset": str(write_sort_dataset(root / "data"))},
                         root / "bundle", ExportOptions(("step",), verify_n=2))


@pytest.fixture(scope="module")
def sort_run(tmp_path_factory) -> Path:
    """An official run directory whose all_config.yaml names its dataset (data_paths, relative to where the trainer
    ran), no dataset.json beside the checkpoint: an attention model's length is then only in the dataset."""
    import torch

    from trm_edge.checkpoint import export_official
    from trm_edge.model import TRM

    base = tmp_path_factory.mktemp("sort")
    write_sort_dataset(base / "data" / "sort-24")
    torch.manual_seed(0)
    model = TRM(tiny_config(mlp_t=False, vocab_size=VOCAB, seq_len=LEN, halt_max_steps=3))
    run = export_official(model, base / "checkpoints" / "run1", step=50)
    (run / "dataset.json").unlink()
    doc = yaml.safe_load((run / "all_config.yaml").read_text())
    (run / "all_config.yaml").write_text(yaml.safe_dump(dict(doc, data_paths=["data/sort-24"])))
    return run


# -- the codec ---------------------------------------------------------------------------------------

def test_codec_round_trips_every_form():
    codec = GenericCodec(VOCAB, LEN)
    x, y = sort_pairs(3, 5)
    for row in x:
        assert np.array_equal(codec.parse(codec.render(row)), row)
        assert np.array_equal(codec.parse(json.dumps(row.tolist())), row)
        assert np.array_equal(codec.parse(",".join(map(str, row))), row)
    text = "# sorted digits\n" + "\n".join(json.dumps({"input": a.tolist(), "label": b.tolist()}) for a, b in zip(x, y))
    pairs = codec.parse_text(text)
    assert [(p.tolist(), lab.tolist()) for p, lab in pairs] == [(a.tolist(), b.tolist()) for a, b in zip(x, y)]


@pytest.mark.parametrize("line, says", [
    ("[1, 2, 3]", "has 3 tokens, the model reads 24"),
    (json.dumps([12] * LEN), "token 12 at position 0 is outside the vocabulary 0-11"),
    ("[1, 2,", "not JSON"),
    (" ".join(["a"] * LEN), "a list of integer tokens"),
    (json.dumps({"inputs": [1] * LEN}), "a labelled puzzle is"),
])
def test_codec_refuses_in_one_line(line, says):
    with pytest.raises(TRMEdgeError, match="generic") as e:
        GenericCodec(VOCAB, LEN).parse_text(f"{json.dumps([2] * LEN)}\n{line}\n")
    assert says in str(e.value) and str(e.value).startswith("line 2: ") and "\n" not in str(e.value)


def test_no_rules_and_no_puzzles_without_a_dataset(tmp_path):
    codec = GenericCodec(VOCAB, LEN)
    with pytest.raises(TRMEdgeError, match="no rules to check an answer by"):
        codec.check(np.zeros(LEN, int), np.zeros(LEN, int))
    with pytest.raises(TRMEdgeError, match="pass --dataset DIR"):
        codec.sample(4)
    root = write_sort_dataset(tmp_path / "d", n_test=5)
    drawn = codec.with_dataset(root).sample(8, seed=3)  # more than the split holds: each of its examples once
    test_x, _ = sort_pairs(5, 1)
    assert sorted(r.tobytes() for r in drawn) == sorted(r.tobytes() for r in test_x)
    assert len({codec.with_dataset(root).sample(2, seed).tobytes() for seed in range(6)}) > 1  # seeds draw apart
    with pytest.raises(TRMEdgeError, match="a dataset of 24 tokens over 12 values; the model reads 24 over 13"):
        GenericCodec(13, LEN, root).sample(2)


def test_task_told_by_shape():
    assert [codec_for(None, v, n).name for v, n in ((11, 81), (6, 100), (12, 900), (12, 24))] == \
        ["sudoku", "maze", "arc", "generic"]
    assert codec_for(None, 6, 100).seq_len == 100
    with pytest.raises(TRMEdgeError, match="which is no sudoku puzzle; pass the right --task"):
        codec_for("sudoku", VOCAB, LEN)
    assert codec_for("generic", 11, 81).name == "generic"  # asked for by name, any shape is one


def test_npy_puzzles(tmp_path):
    codec = GenericCodec(VOCAB, LEN)
    x, _ = sort_pairs(4, 2)
    np.save(tmp_path / "x.npy", x.astype(np.uint8))
    assert np.array_equal(np.stack([p for p, _ in read_puzzles(codec, str(tmp_path / "x.npy"))]), x)
    np.save(tmp_path / "bad.npy", x[:, :10])
    with pytest.raises(TRMEdgeError, match=r"give integer tokens of shape \[n, 24\]"):
        read_puzzles(codec, str(tmp_path / "bad.npy"))
    np.save(tmp_path / "big.npy", np.full((2, LEN), 40))
    with pytest.raises(TRMEdgeError, match="row 0: generic: token 40"):
        read_puzzles(codec, str(tmp_path / "big.npy"))


# -- from the run directory, as a user would ---------------------------------------------------------

def test_info_names_the_task_and_length_from_the_runs_dataset(sort_run, capsys):
    code, out, err = cli(capsys, "info", str(sort_run), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["task"] == "generic" and doc["config"]["seq_len"] == LEN and doc["config"]["vocab_size"] == VOCAB


def test_eval_on_the_dataset_matches_a_hand_count(sort_run, tmp_path, capsys):
    """Labels made to agree with the model's own answers on chosen rows: the exact rate is known by construction."""
    import torch

    from trm_edge.checkpoint import load_model
    from trm_edge.halting import HaltPolicy
    from trm_edge.model import Batch
    from trm_edge.training.datasets import read_dataset, write_dataset

    model, _ = load_model(sort_run, seq_len=LEN)
    src = read_dataset(sort_run.parents[1] / "data" / "sort-24", "test")
    x = np.asarray(src.inputs, np.int64)
    answers = model.solve(Batch(torch.from_numpy(x), torch.zeros(len(x), dtype=torch.long)),
                          HaltPolicy.parse("fixed", 3)).tokens
    labels = (answers + 1) % VOCAB  # every token wrong ...
    labels[labels == 0] = 1
    right = [0, 3, 4, 9, 17, 30]
    labels[right] = answers[right]  # ... but on these rows
    labels[5, :12] = 0  # pad (ignored): half the row, whose other half is the model's answer
    labels[5, 12:] = answers[5, 12:]
    root = tmp_path / "handmade"
    write_dataset(root, "test", {"inputs": x, "labels": labels, "puzzle_identifiers": np.zeros(len(x)),
                                 "puzzle_indices": np.arange(len(x) + 1), "group_indices": np.arange(len(x) + 1)},
                  VOCAB, 1)
    code, out, err = cli(capsys, "eval", str(sort_run), "--data", str(root), "--halt", "fixed", "--json")
    assert code == 0, err
    run = json.loads(out)["runs"][0]
    assert run["n"] == len(x) and run["exact_accuracy"] == pytest.approx(7 / len(x))
    hits = (answers == labels) & (labels != 0)
    assert run["token_accuracy"] == pytest.approx(np.mean(hits.sum(1) / (labels != 0).sum(1)))


def test_export_without_task_or_length_and_solve_on_ort(sort_run, tmp_path, capsys):
    """One export command, no --task/--seq-len: the int8 guard held out on the dataset's test split; the bundle's
    ORT answers are the reference's."""
    bundle = tmp_path / "bundle"
    code, out, err = cli(capsys, "export", str(sort_run), "-o", str(bundle), "--graph", "step", "--quantize",
                         "int8-rows", "--calib", "4", "--heldout", "16", "--max-drop", "100", "--json")
    assert code == 0, err
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "generic" and manifest["config"]["seq_len"] == LEN
    assert manifest["quantization"]["int8-rows"]["guard"]["n"] >= 8  # drawn from the dataset: it holds 40
    x, _ = sort_pairs(5, 7)
    (tmp_path / "p.txt").write_text("\n".join(json.dumps(row.tolist()) for row in x))
    code, out, err = cli(capsys, "solve", str(bundle), str(tmp_path / "p.txt"), "--halt", "fixed", "--json")
    assert code == 0, err
    got = [list(map(int, s["answer"].split())) for s in json.loads(out)["results"]]
    import torch

    from trm_edge.checkpoint import load_model
    from trm_edge.halting import HaltPolicy
    from trm_edge.model import Batch

    model, _ = load_model(sort_run, seq_len=LEN)
    want = model.solve(Batch(torch.from_numpy(x), torch.zeros(len(x), dtype=torch.long)),
                       HaltPolicy.parse("fixed", 3)).tokens
    assert np.array_equal(np.array(got), want)


def test_export_without_the_dataset_says_where_to_point(sort_run, tmp_path, capsys):
    import shutil

    run = shutil.copytree(sort_run, tmp_path / "moved")  # data_paths no longer reach the dataset
    code, out, err = cli(capsys, "export", str(run), "--seq-len", str(LEN), "-o", str(tmp_path / "b"), "--graph",
                         "step")
    assert code == 2 and "pass --dataset DIR" in err and len(err.strip().splitlines()) == 1
    data = sort_run.parents[1] / "data" / "sort-24"
    code, out, err = cli(capsys, "export", str(run), "--dataset", str(data), "-o", str(tmp_path / "b"), "--graph",
                         "step", "--json")
    assert code == 0, err
