"""Hostile files: every file trm-edge reads from a user or a stranger (a bundle's manifest and initial state, a model's
config, a dataset, a report for `compare`, puzzles) is refused with one line, within a budget of time and memory
decided before the work: FIFOs and devices named as such and never opened to block, JSON depth measured before
parsing, npz members' declared shapes and sizes checked before a byte is allocated. Part of the hostile-input set
(tests/test_hostile_*.py), which grows with each defect found."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import REPO, TINY_PUZZLE, cli, copy_of, rehash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy
from trm_edge.untrusted import json_depth, load_arrays, parse_json

DEEP = "[" * 100_000 + "]" * 100_000


def one_line(code: int, out: str, err: str, message: str, exit_code: int = 2) -> str:
    lines = err.strip().splitlines()
    assert code == exit_code and len(lines) == 1 and lines[0].startswith("trm-edge: error:"), err
    assert message in lines[0], lines[0]
    return lines[0]


def cli_subprocess(*args: str, timeout: float = 30, **kw) -> tuple[int, str, float]:
    """`trm-edge ARGS` in a child (what may hang must not hang the suite): (exit code, stderr, seconds)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "trm_edge", *args], capture_output=True, text=True, timeout=timeout,
                         **kw)
    return res.returncode, res.stderr, time.perf_counter() - t0


def npy_bytes(header: dict, payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def write_npz(path, members: dict[str, bytes], compress: bool = False) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)


# -- a bundle's initial state (init.npz) ------------------------------------------------------------------------

def test_a_compressed_bomb_in_init_npz_costs_nothing(tiny_bundle, tmp_path):
    """200 MB of zeros in 200 kB of deflate, declared as H_init: refused by the file's size budget (16 + 16 floats)
    before anything is inflated (the old loader inflated it whole, then found the shape wrong)."""
    from trm_edge.runtimes import open_solver

    b = copy_of(tiny_bundle, tmp_path)
    n = 50_000_000
    bomb = npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (n,)}, bytes(4 * n))
    write_npz(b / "init.npz", {"H_init": bomb, "L_init": bomb}, compress=True)
    assert (b / "init.npz").stat().st_size < 1_000_000
    rehash(b)
    tracemalloc.start()
    try:
        with pytest.raises(TRMEdgeError, match=r"init.npz: larger than 12,544 bytes, far more than a bundle's "
                                               "initial state holds"):
            open_solver(b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated reading a hostile init.npz"


@pytest.mark.parametrize("members, message", [
    ({"H_init": npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (10**12,)}), "L_init": b""},
     "H_init is float32 of shape (1000000000000,)"),
    ({"H_init": npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (16,)}, bytes(8)), "L_init": b""},
     "H_init: 8 bytes of values, expected 64"),
    ({"H_init": npy_bytes({"descr": "|O", "fortran_order": False, "shape": (16,)}), "L_init": b""},
     "H_init is object of shape (16,)"),
    ({"L_init": b""}, "There is no item named 'H_init.npy'"),
    ({"H_init": npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (16,)}, bytes(64 + (4 << 20)))},
     "H_init: the zip declares 4,194,496 bytes for 64 bytes of values"),  # a small bomb: 4 kB deflated
])
def test_init_npz_headers_are_checked_before_reading(capsys, tiny_bundle, tmp_path, members, message):
    b = copy_of(tiny_bundle, tmp_path)
    write_npz(b / "init.npz", members, compress=True)
    rehash(b)
    one_line(*cli(capsys, "solve", str(b), TINY_PUZZLE), message)


def test_init_npz_that_is_not_a_zip_is_one_line(capsys, tiny_bundle, tmp_path):
    b = copy_of(tiny_bundle, tmp_path)
    (b / "init.npz").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    rehash(b)
    one_line(*cli(capsys, "solve", str(b), TINY_PUZZLE), "init.npz: not a bundle's initial state (not an npz")


def test_load_arrays_reads_our_own_exactly(tiny_bundle):
    with np.load(tiny_bundle / "init.npz") as z:
        want = {k: z[k] for k in ("H_init", "L_init")}
    got = load_arrays(tiny_bundle / "init.npz", {k: v.shape for k, v in want.items()})
    assert all(np.array_equal(got[k], want[k]) and got[k].dtype == np.float32 for k in want)


# -- JSON: manifests, model configs, reports, datasets ----------------------------------------------------------

def test_a_manifest_nested_100000_deep_is_one_line(capsys, tiny_bundle, tmp_path):
    b = copy_of(tiny_bundle, tmp_path)
    (b / "manifest.json").write_text(DEEP)
    one_line(*cli(capsys, "solve", str(b), TINY_PUZZLE), "JSON nested 100000 deep (at most 64)")


@pytest.mark.parametrize("name, what", [("manifest.json", "a trm-edge bundle manifest"),
                                        ("init.npz", "a bundle file")])
def test_a_bundle_file_that_is_a_fifo_is_named(tiny_bundle, tmp_path, name, what):
    """In a child: opening a FIFO to read it would block forever."""
    b = copy_of(tiny_bundle, tmp_path)
    (b / name).unlink()
    os.mkfifo(b / name)
    code, err, seconds = cli_subprocess("solve", str(b), TINY_PUZZLE)
    assert code == 2 and f"{name}: is a FIFO (named pipe), not {what}" in err and seconds < 30, err


def test_a_model_config_nested_100000_deep_is_one_line(capsys, tmp_path):
    from trm_edge.checkpoint import DEFAULT_MODEL

    d = shutil.copytree(DEFAULT_MODEL, tmp_path / "m")
    (d / "config.json").write_text(DEEP)
    one_line(*cli(capsys, "info", str(d)), "config.json: not a trm-edge model config: JSON nested 100000 deep")


def test_a_dataset_json_nested_deep_is_one_line(capsys, tmp_path):
    """A dataset beside an official checkpoint says its sequence length; a hostile one nests instead."""
    from conftest import FIXTURES

    src = FIXTURES / "maze_att_fp32"  # attention: its sequence length is read from dataset.json
    if not src.is_dir():
        pytest.skip("fixtures missing")
    d = shutil.copytree(src, tmp_path / "run")
    (d / "dataset.json").write_text(DEEP)
    one_line(*cli(capsys, "info", str(d)), "dataset.json: not a dataset.json: JSON nested 100000 deep")


@pytest.mark.parametrize("make, message", [
    (lambda p: "/dev/zero", "/dev/zero: is a character device, not a trm-edge benchmark report"),
    (lambda p: os.mkfifo(p / "fifo.json") or p / "fifo.json", "is a FIFO (named pipe), not a trm-edge benchmark"),
    (lambda p: (p / "b.json").write_bytes(bytes(range(256)) * 4) and p / "b.json", "not UTF-8 text (byte 0x80"),
    (lambda p: (p / "d.json").write_text(DEEP) and p / "d.json", "JSON nested 100000 deep"),
    (lambda p: (p / "r").mkdir() or (p / "r" / "report.json").write_text('{"schema_version": 1,') and p / "r",
     "not JSON (Expecting property name"),
])
def test_compare_refuses_hostile_reports_fast(tmp_path, make, message):
    """In a child: /dev/zero grew without bound, a FIFO hung forever; each is now one line within seconds."""
    src = make(tmp_path)
    code, err, seconds = cli_subprocess("compare", str(src), "-o", str(tmp_path / "out"), timeout=60)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert seconds < 20 and not (tmp_path / "out").exists()


def test_a_dataset_array_declaring_a_huge_shape_is_one_line(capsys, tiny_bundle, tmp_path):
    from trm_edge.training.datasets import build

    root = tmp_path / "ds"
    build("sudoku", root, n_train=4, n_test=4)
    f = root / "test" / "all__inputs.npy"
    f.write_bytes(npy_bytes({"descr": "<i8", "fortran_order": False, "shape": (10**12, 81)}, bytes(64)))
    one_line(*cli(capsys, "eval", str(tiny_bundle), "--data", str(root)),
             "all__inputs.npy: not a dataset array: its header declares int64 of shape (1000000000000, 81)")


# -- puzzles and stdin ----------------------------------------------------------------------------------------

def test_fifos_and_devices_are_named_as_such(capsys, tiny_bundle, tmp_path):
    os.mkfifo(tmp_path / "puzzles")
    code, err, seconds = cli_subprocess("solve", str(tiny_bundle), str(tmp_path / "puzzles"))
    assert code == 2 and "puzzles: is a FIFO (named pipe), not a puzzle file" in err and seconds < 30, err
    one_line(*cli(capsys, "solve", str(tiny_bundle), "/dev/zero"), "/dev/zero: is a character device")


def test_closed_stdin_is_one_line(tiny_bundle):
    res = subprocess.run(f"{sys.executable} -m trm_edge solve {tiny_bundle} - <&-", shell=True, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == (
        "trm-edge: error: <stdin>: standard input is closed; pipe the puzzles in or give a file"), res.stderr


# -- outputs without a name of their own --------------------------------------------------------------------------

@pytest.mark.parametrize("out", [".", "..", "/", ""])
def test_nameless_outputs_are_refused_before_any_work(capsys, tiny_bundle, tmp_path, monkeypatch, out):
    work = tmp_path / "cwd" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for args in (["web", str(tiny_bundle), "-o", out], ["export", "-o", out], ["bench", str(tiny_bundle), "-o", out]):
        one_line(*cli(capsys, *args), "name a directory of its own")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cwd", "sub"]


# -- work bounded by the input --------------------------------------------------------------------------------

def test_batch_never_allocates_more_slots_than_puzzles(tiny_bundle):
    """`solve B PUZZLE --batch 65536` allocated a carry for every slot (6.5 GB on the bundled model)."""
    from trm_edge.runtimes import open_solver
    from trm_edge.tasks import SUDOKU

    solver = open_solver(tiny_bundle)
    rows, carry = [], solver.carry
    solver.carry = lambda n: rows.append(n) or carry(n)
    puzzles = np.stack([SUDOKU.parse(TINY_PUZZLE)] * 3)
    sol = solver.solve_stream(puzzles, HaltPolicy.parse("fixed:2", 16), slots=65536, views=2)
    assert max(rows) == 3 and len(sol.steps) == 3


# -- fuzzing the loaders ----------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=list(HealthCheck), derandomize=True)


def test_json_depth_matches_the_parser():
    for text in ['{"a": [1, {"b": "[[[["}]}', "[]", '"]]]"', r'["\"[", [[]]]', "3"]:
        depth, value = json_depth(text), json.loads(text)

        def nest(v):
            return 1 + max(map(nest, v.values() if isinstance(v, dict) else v), default=0) \
                if isinstance(v, (dict, list)) else 0
        assert depth == nest(value), text


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode)
       | st.recursive(st.none() | st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=30)
       .map(lambda v: json.dumps(v).encode()))
def test_json_is_parsed_or_refused_in_one_line(data):
    try:
        parse_json(data, "x.json", "thing", max_depth=4)
    except TRMEdgeError as e:
        assert "\n" not in str(e) and str(e).startswith("x.json: not a thing: ")


@FUZZ
@given(st.data())
def test_mutated_init_npz_is_read_exactly_or_refused(tiny_bundle, tmp_path_factory, data):
    good = (tiny_bundle / "init.npz").read_bytes()
    cuts = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    bad = bytearray(good)
    for i, v in cuts:
        bad[i] = v
    f = tmp_path_factory.mktemp("npz") / "init.npz"
    f.write_bytes(bytes(bad))
    try:
        got = load_arrays(f, {"H_init": (16,), "L_init": (16,)}, "initial state")
    except TRMEdgeError as e:
        assert "\n" not in str(e)
        return
    assert all(v.shape == (16,) and v.dtype == np.float32 for v in got.values())


@pytest.mark.parametrize("value, message", [("[" * 100_000, "JSON nested 100000 deep"),
                                            ("1x", "not JSON (Extra data at line 1, column 2)")])
def test_knob_values_are_parsed_within_the_budget(capsys, tmp_path, value, message):
    one_line(*cli(capsys, "data", "build", "sudoku", "-o", str(tmp_path / "d"), "--knob", f"n_train={value}"),
             f"--knob n_train: not a JSON value: {message}")
    assert not (tmp_path / "d").exists()


def test_a_payload_linked_to_a_device_is_refused(capsys, tiny_bundle, tmp_path):
    b = copy_of(tiny_bundle, tmp_path)
    (b / "init.npz").unlink()
    (b / "init.npz").symlink_to("/dev/zero")
    one_line(*cli(capsys, "solve", str(b), TINY_PUZZLE), "leaves the bundle directory")


def test_the_hostile_benchmark_measures_every_case():
    """benchmarks/studies/hostile.py (its figures are in benchmarks/results/reliability.md) runs whole: every case
    one line, exit 2 but the two that must not (a solve that works, a graph failing at run time)."""
    res = subprocess.run([sys.executable, "-m", "benchmarks.studies.hostile", "--json"], capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    cases = json.loads(res.stdout)
    assert res.returncode == 0 and len(cases) == 18, res.stderr[-2000:]
    for name, r in cases.items():
        want = 0 if "(exit 0)" in name else 1 if "(exit 1)" in name else 2
        assert r["exit"] == want and r["lines"] == (want != 0) and r["peak_mb"] > 0, (name, r)
