"""ARC's official vote over augmented views: a hand-computed vote, the official evaluator's own output for the same
predictions, and the whole path from a dataset in the official layout through `trm-edge eval` with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trm_edge.evaluate import arc_pass_at, arc_vote, grid_key
from trm_edge.tasks.arc import dihedral, encode_grid, variant_name

X1, Y1 = np.array([[1, 2, 0], [0, 0, 3]]), np.array([[1, 1], [2, 0], [0, 5]])  # no symmetry: a wrong inverse shows
X2, Y2 = np.array([[4, 0], [0, 0]]), np.array([[4, 4, 0]])
X3, Y3 = np.array([[7]]), np.array([[7, 8]])
WRONG_A, WRONG_B, WRONG_D = np.array([[9]]), np.array([[1, 2], [3, 4]]), np.array([[8, 7]])
SWAP = np.array([0, 2, 1, 3, 4, 5, 6, 9, 8, 7])  # colours 1<->2, 7<->9


def _row(task, k, colours, x, y, answer, q):
    """One test row of a variant: the variant's input and output, and a prediction made in the variant's frame."""
    name = variant_name(task, k, colours) if k or not np.array_equal(colours, np.arange(10)) else task
    x, y, answer = (encode_grid(dihedral(colours[g], k)) for g in (x, y, answer))
    return name, x, y, answer, q


def test_the_vote_matches_a_hand_count():
    ident = np.arange(10)
    rows = [
        # task t1, pair 1: Y1 has 2 votes (mean sigmoid(q) 0.27), WRONG_A 2 votes (0.88), WRONG_B 1: WRONG_A ranks
        # first on the tie, Y1 second -> pass@1 no, pass@2 yes. The votes come from different frames.
        _row("t1", 0, ident, X1, Y1, Y1, -1.0), _row("t1", 1, SWAP, X1, Y1, Y1, -1.0),
        _row("t1", 6, ident, X1, Y1, WRONG_A, 2.0), _row("t1", 3, SWAP, X1, Y1, WRONG_A, 2.0),
        _row("t1", 5, SWAP, X1, Y1, WRONG_B, 5.0),
        # t1, pair 2: Y2 3 votes against 1 -> pass@1
        _row("t1", 0, ident, X2, Y2, Y2, 0.0), _row("t1", 1, SWAP, X2, Y2, Y2, -3.0),
        _row("t1", 7, ident, X2, Y2, Y2, -3.0), _row("t1", 4, SWAP, X2, Y2, WRONG_B, 9.0),
        # t2: never answered right (WRONG_D is Y3's mirror image, right only in a frame that flips it)
        _row("t2", 0, ident, X3, Y3, WRONG_D, 0.0), _row("t2", 4, ident, X3, Y3, WRONG_D, 0.0),
    ]
    names, x, y, p, q = (list(c) for c in zip(*rows))
    res = arc_pass_at(names, np.stack(x), np.stack(y), np.stack(p), np.array(q, np.float32))
    # t1 scores 1/2 at K=1 and 2/2 at K=2; t2 scores 0 and 0; pass@K averages the two tasks
    assert res == {"tasks": 2, "pairs": 3, "rows": 11, "pass@1": 0.25, "pass@2": 0.5}
    blank = np.zeros(900, np.int64)  # a prediction with no grid is a vote for the empty grid, never the truth
    res = arc_pass_at(["t3"], encode_grid(X3)[None], encode_grid(Y3)[None], blank[None], np.zeros(1))
    assert (res["pass@1"], res["pass@2"]) == (0.0, 0.0)


OFFICIAL = Path(__file__).parent / "data" / "arc-official"


def test_the_vote_matches_the_official_evaluator():
    """tests/data/arc-official/vote (its README): predictions for the official test split, made to tie on votes
    and on mean q_halt, scored by the official evaluators/arc.py. Same pass@K, same attempts in submission.json."""
    from trm_edge.api import submission

    arrays = np.load(OFFICIAL / "expected" / "arrays.npz")
    identifiers = json.loads((OFFICIAL / "expected" / "identifiers.json").read_text())
    vote = np.load(OFFICIAL / "vote" / "predictions.npz")
    official = json.loads((OFFICIAL / "vote" / "official_result.json").read_text())
    official_submission = json.loads((OFFICIAL / "vote" / "official_submission.json").read_text())
    test_puzzles = json.loads((OFFICIAL / "vote" / "test_puzzles.json").read_text())
    order = vote["order"]  # the rows in the order the evaluator saw them: the vote's ties go to the first seen
    assert sorted(order) == list(range(len(arrays["test__inputs"])))
    ids = np.repeat(arrays["test__puzzle_identifiers"], np.diff(arrays["test__puzzle_indices"]))[order]
    names = [identifiers[i] for i in ids]
    inputs, labels = arrays["test__inputs"][order], arrays["test__labels"][order]
    preds, q = vote["preds"], vote["q_halt"]
    assert preds.shape == (len(order), 900) and q.dtype == np.float32

    ks = [int(k.removeprefix("ARC/pass@")) for k in official]
    assert ks == [1, 2, 5, 10, 100, 1000]
    res = arc_pass_at(names, inputs, labels, preds, q, ks=ks)
    assert res["tasks"] == len(test_puzzles)  # the official divides by the test set's tasks
    assert res["pairs"] == sum(len(t["test"]) for t in test_puzzles.values())
    for k in ks:
        assert res[f"pass@{k}"] == pytest.approx(official[f"ARC/pass@{k}"], abs=1e-12), k
    # the fixture exercises the ranking: the truth wins a tie on votes by its mean q (66e6c45b, pass@1), and loses
    # exact ties on votes and mean q to answers seen before it (332efdb3 at pass@2, b1fc8b8e's first pair at pass@5)
    assert [official[f"ARC/pass@{k}"] for k in (1, 2, 5, 10)] == pytest.approx([0.5, 0.5, 5 / 6, 1.0])

    votes = arc_vote(names, inputs, preds, q)
    pairs = {task: [(task, grid_key(np.array(p["input"]))) for p in t["test"]] for task, t in test_puzzles.items()}
    assert sorted(votes) == sorted(key for keys in pairs.values() for key in keys)
    ours = submission({"tasks": [{"task": task, "pairs": [{"attempts": [g.tolist() for g, _, _ in votes[key][:2]]}
                                                          for key in keys]} for task, keys in pairs.items()]})
    assert list(ours) == list(official_submission)
    for task, attempts in official_submission.items():
        for i, pair in enumerate(attempts):
            assert ours[task][i] == pair, (task, i)
    assert any(p["attempt_1"] == p["attempt_2"] for t in ours.values() for p in t)  # a vote with one answer


@pytest.fixture
def arc_dataset(tmp_path):
    """Two tasks with their original and two augmented variants each, in the official layout (test split:
    the variants' test pairs, each variant its own puzzle identifier)."""
    from trm_edge.training import arc_data, datasets

    rng = np.random.default_rng(0)
    names, test = ["<blank>"], arc_data.Split()
    for task, tests in (("t1", [(X1, Y1), (X2, Y2)]), ("t2", [(X3, Y3)])):
        for name, _, t in arc_data._variants(task, [], [(a.astype(np.uint8), b.astype(np.uint8)) for a, b in tests],
                                             2, rng):
            names.append(name)
            test.add_puzzle(len(names) - 1, *arc_data._encode_pairs(t, None))
        test.close_group()
    for split in ("train", "test"):
        datasets.write_dataset(tmp_path / "arc", split, vars(test), vocab_size=12, num_puzzle_identifiers=len(names),
                               identifiers=names)
    return tmp_path / "arc", len(names)


def test_eval_votes_over_a_datasets_variants(arc_dataset, tmp_path, monkeypatch, capsys):
    from conftest import tiny_config

    from trm_edge import api
    from trm_edge.checkpoint import save
    from trm_edge.cli import main
    from trm_edge.model import TRM

    root, n_ids = arc_dataset
    model_dir = save(TRM(tiny_config(vocab_size=12, seq_len=900, hidden_size=16, puzzle_emb_ndim=16,
                                     num_puzzle_identifiers=n_ids)).eval(), tmp_path / "m", task="arc")
    with pytest.raises(SystemExit) as e:
        main(["eval", str(model_dir), "--data", str(root), "--json"])
    assert e.value.code == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert run["n"] == 9 and run["vote"]["rows"] == 9 and run["vote"]["pairs"] == 3 and run["vote"]["tasks"] == 2
    # an oracle in every variant's frame: the answers map back onto the truth, one pair per original test input
    from trm_edge.training.datasets import read_dataset

    ds = read_dataset(root, "test")
    row_ids = np.repeat(ds.puzzle_identifiers, np.diff(ds.puzzle_indices))
    loaded, seen = api.open_model(str(model_dir)), []

    def oracle(tokens, policy, ids):
        seen.append(ids)
        pick = [np.flatnonzero((ds.inputs == t).all(1) & (row_ids == i))[0] for t, i in zip(tokens, ids)]
        return api.Solution(ds.labels[pick].astype(np.int64), np.ones(len(tokens), np.int64),
                            np.zeros(len(tokens), np.float32))

    loaded.solve = oracle
    run = api.eval_dataset(loaded, root, None, 4)
    assert np.array_equal(np.concatenate(seen), row_ids)  # every row under its own variant's identifier
    assert run["exact_accuracy"] == 1.0 and run["vote"] == {"tasks": 2, "pairs": 3, "rows": 9, "pass@1": 1.0,
                                                           "pass@2": 1.0}
    small = save(TRM(tiny_config(vocab_size=12, seq_len=900, hidden_size=16, puzzle_emb_ndim=16)).eval(),
                 tmp_path / "small", task="arc")
    with pytest.raises(SystemExit) as e:  # a model with fewer puzzle embeddings than the dataset's identifiers
        main(["eval", str(small), "--data", str(root)])
    assert e.value.code == 2 and "puzzle embeddings" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # views are the dataset's own variants
        main(["eval", str(model_dir), "--data", str(root), "--views", "4"])
    assert e.value.code == 2 and "variants it holds" in capsys.readouterr().err
