"""The Android app (runtimes/android): its assets and their contract against the bundle and the spec, and its pure
Kotlin core (halting loop, policies, sudoku, energy math, contract checks) compiled with kotlinc and run on a plain
JVM against trm_edge's answers on recorded steps of the real model. The app itself needs the Android SDK and
Google's Maven, which neither this machine nor CI reaches: it is not built here (runtimes/android/README.md)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from urllib.parse import quote, unquote_plus

import numpy as np
import onnxruntime as ort
import pytest
from conftest import REPO, require_tool

from trm_edge.api import builtin_data
from trm_edge.benchmarks.energy import battery_power_w
from trm_edge.bundle import Bundle
from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy, halting_loop
from trm_edge.runtimes import device, initial_state, open_solver
from trm_edge.spec import SPEC, io_spec
from trm_edge.tasks import SUDOKU, GenericCodec, read_puzzles

ANDROID = REPO / "runtimes" / "android"
CORE = ANDROID / "app" / "src" / "main" / "java" / "dev" / "trmedge" / "solver" / "core"
HARNESS = ANDROID / "core-check" / "ReplayCheck.kt"
STEPS = 16  # recorded per puzzle: the bundled model's halt_max_steps
POLICIES = ["fixed:16", "fixed:4", "fixed:1", "learned:3", "learned", "learned:0,min=2,max=8", "learned:5.65",
            "learned:0.1", "learned:3,verify", "fixed,verify"]
_ORT_TYPES = {"tensor(int64)": "int64", "tensor(float)": "float32"}


@pytest.fixture(scope="module")
def assets(bundled_step_bundle, tmp_path_factory) -> Path:
    return device.write_android_assets(bundled_step_bundle, tmp_path_factory.mktemp("android") / "trm")


def test_contract_matches_the_spec_and_the_bundle(bundled_step_bundle, assets):
    b = Bundle(bundled_step_bundle)
    c = json.loads((assets / device.CONTRACT).read_text())
    graph = assets / c["graph"]["file"]
    assert (c["format"], c["format_version"], c["task"]) == (device.CONTRACT_FORMAT, device.CONTRACT_VERSION, "sudoku")
    assert {k: c["graph"][k] for k in ("inputs", "outputs")} == io_spec("step", b.config, batch=1)
    assert c["graph"]["bytes"] == graph.stat().st_size
    assert c["graph"]["sha256"] == hashlib.sha256(graph.read_bytes()).hexdigest()
    HaltPolicy.parse(c["halting"], c["halt_max_steps"])
    for k, v in initial_state(b).items():
        values = c["init"][k]
        # each JSON number is a float32 exactly, so Kotlin's toFloat() of the parsed double is the bundle's value
        assert np.array_equal(np.asarray(values, np.float32), v) and all(float(np.float32(x)) == x for x in values)

    # the .ort file as onnxruntime-android loads it: the contract's names, dtypes and shapes (batch may stay symbolic)
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for side, got in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs())):
        want = c["graph"][side]
        assert [(t.name, _ORT_TYPES.get(t.type, t.type)) for t in got] == [(t["name"], t["dtype"]) for t in want]
        for t, w in zip(got, want):
            assert len(t.shape) == len(w["shape"]) and all(
                g == d or (i == 0 and not isinstance(g, int)) for i, (g, d) in enumerate(zip(t.shape, w["shape"])))

    # and it computes what the bundle's step.onnx computes, over two chained steps of two puzzles
    onnx = ort.InferenceSession(str(b.graph_file("step", "fp32", "onnx")), providers=["CPUExecutionProvider"])
    init, shape = initial_state(b), (1, b.config.total_len, b.config.hidden_size)
    for tokens, _ in read_puzzles(SUDOKU, str(builtin_data("sudoku")[0]))[:2]:
        z_H, z_L = (np.broadcast_to(init[k], shape).copy() for k in ("H_init", "L_init"))
        for _ in range(2):
            feeds = {"tokens": tokens[None], "puzzle_ids": np.zeros(1, np.int64), "z_H": z_H, "z_L": z_L}
            from_ort, from_onnx = sess.run(None, feeds), onnx.run(None, feeds)
            for name, g, w in zip([o.name for o in onnx.get_outputs()], from_ort, from_onnx):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
            z_H, z_L = from_ort[0], from_ort[1]


def test_contract_constants_and_tensor_names_stay_in_the_contract():
    """The app reads every tensor name from trm-device.json: no step-graph name is written in its Kotlin, and the
    file name, format and version it expects are the ones trm_edge writes."""
    names = {n for side in SPEC["step"].values() for n, _, _ in side}
    for kt in ANDROID.rglob("*.kt"):
        for lit in re.findall(r'"((?:[^"\\\n]|\\.)*)"', kt.read_text()):
            assert not any(lit == n or ("_" in n and n in lit) for n in names), \
                f"{kt.relative_to(REPO)}: tensor name in {lit!r}; take it from the contract (DeviceContract)"
    src = (CORE / "Contract.kt").read_text()
    assert f'CONTRACT = "{device.CONTRACT}"' in src and f'FORMAT = "{device.CONTRACT_FORMAT}"' in src
    assert f"FORMAT_VERSION = {device.CONTRACT_VERSION}" in src


# -- the Kotlin core replayed against Python ----------------------------------------------------------------------

def _csv(tokens) -> str:
    return ",".join(str(int(t)) for t in tokens)


def _f32(x) -> str:
    return f"{int(np.asarray(x, np.float32).view(np.uint32)):08x}"


def _f64(x: float) -> str:
    return f"{struct.unpack('<Q', struct.pack('<d', x))[0]:016x}"


class _Like:
    """An expected field matched by a predicate (a float within rounding, a message's start), named in diffs."""

    def __init__(self, what: str, ok):
        self.what, self.ok = what, ok

    def __eq__(self, other):
        return isinstance(other, str) and self.ok(other)

    def __repr__(self):
        return self.what


def _near(x: float) -> _Like:
    return _Like(f"~{x!r}", lambda s: math.isclose(float(s), x, rel_tol=1e-12, abs_tol=1e-15))


def _record(bundle: Path) -> dict[str, tuple[np.ndarray, list]]:
    """16 steps of the first 4 puzzles of each builtin file through ORT: name -> (puzzle, [(pred, q, finite)])."""
    pairs = [p for f in builtin_data("sudoku") for p in read_puzzles(SUDOKU, str(f))[:4]]
    x = np.stack([p for p, _ in pairs])
    solver = open_solver(bundle, "ort", "step")
    z_H, z_L = solver.carry(len(x))
    steps = []
    for _ in range(STEPS):
        z_H, z_L, pred, q, ok = solver.step(x, np.zeros(len(x), np.int64), z_H, z_L)
        steps.append((pred, q, ok))
    recs = {f"r{i}": (x[i], [(p[i], q[i], bool(ok[i])) for p, q, ok in steps]) for i in range(len(x))}
    first = {n: next((k for k, (p, _, _) in enumerate(s, 1) if SUDOKU.check(x0, p)), None)
             for n, (x0, s) in recs.items()}
    assert any(k is not None and k <= 2 for k in first.values()) and None in first.values(), \
        f"the recording should hold a puzzle solved by step 2 and one never solved (first solved at: {first}); " \
        "pick other puzzles for this model"
    # faults: a row that goes non-finite at step 3 (q_halt NaN), and one whose very first step does
    x0, s = recs["r0"]
    recs["nan3"] = (x0, [(p, np.float32("nan") if k == 2 else q, ok and k != 2) for k, (p, q, ok) in enumerate(s)])
    recs["nan1"] = (x0, [(p, q, k > 0) for k, (p, q, _) in enumerate(s)])
    # q_halt exactly float32(0.1): not above the threshold 0.1, which numpy compares in float32
    recs["tie"] = (x0, [(p, np.float32(0.1), ok) for p, _, ok in s])
    return recs


def _python_solve(puzzle: np.ndarray, steps: list, policy: str) -> list[str]:
    pol = HaltPolicy.parse(policy, STEPS)

    def step(k):
        pred, q, ok = steps[k]
        return k + 1, pred[None], np.array([q], np.float32), np.array([ok])

    sol = halting_loop(step, 0, pol, SUDOKU.checker(puzzle[None]))
    return [_csv(sol.tokens[0]), str(sol.steps[0]), _f32(sol.q_halt[0]), str(sol.fault[0])]


def _python_parse(text: str) -> list[str]:
    try:
        t = SUDOKU.parse(text)
    except TRMEdgeError as e:
        return ["error", str(e)]
    return ["ok", _csv(t), SUDOKU.render(t)]


# A generic task's puzzles (seq_len 4, vocab 12): accepted forms, then each refusal; the app reads no labelled dicts
TOKEN_TEXTS = ["2 3 4 5", "[2, 3, 4, 5]", " 2,3, 4 5\n", "[]", "", "2 3 4", "2 3 4 12", "-1 2 3 4", "2 3 x 5",
               "[2, 3, 4, 2.5]", "2 3 4 99999999999999999999999"]


def _python_tokens(text: str) -> list:
    codec = GenericCodec(12, 4)
    try:
        t = codec.parse(text)
    except TRMEdgeError as e:
        return ["error", str(e)]
    return ["ok", _csv(t), codec.render(t)]


def _python_policy(text: str, halt_max: int) -> list[str]:
    try:
        p = HaltPolicy.parse(text, halt_max)
    except TRMEdgeError as e:
        return ["error", str(e)]
    return ["ok", p.kind, str(p.max_steps), str(p.min_steps), _f64(p.threshold), str(p.verify).lower()]


def _sudoku_cases() -> tuple[list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """Texts to parse (accepted forms, then each refusal) and (puzzle, answer) pairs to check."""
    pairs = read_puzzles(SUDOKU, str(builtin_data("sudoku")[0]))[:2]
    (puzzle, solution), (other, _) = pairs
    line = SUDOKU.compact(puzzle)
    grid = SUDOKU.render(puzzle)

    def clash(*cells):  # two 7s in one row, column or box of an otherwise empty grid
        return "".join("7" if i in cells else "." for i in range(81))

    texts = [line, line.replace(".", "0"), f"  {line}\n", grid, grid.replace("\n", "\r\n"),
             "\n".join(line[i:i + 9] for i in range(0, 81, 9)), line[:80], line[:40] + "x" + line[41:],
             clash(3, 7), clash(5, 77), clash(30, 50), "\n".join(grid.splitlines()[:-1]),
             grid.replace("\n", "1\n", 1), "", "123\n456"]
    wrong = solution.copy()
    wrong[[0, 1]] = wrong[[1, 0]]
    blank = solution.copy()
    blank[5] = 1
    padded = solution.copy()
    padded[80] = 0
    checks = [(puzzle, solution), (puzzle, wrong), (puzzle, blank), (puzzle, padded), (other, solution),
              (puzzle, puzzle)]
    return texts, checks


POLICY_TEXTS = [  # each parsed with a model's halt_max_steps of 16 and of 4
    "fixed", "fixed:16", "fixed:0", "fixed:257", "fixed:256", "fixed:+8", "fixed: 8", "fixed:1_6", "fixed:8,verify",
    "fixed:8,min=2", "fixed:16:2", "fixed:8,", "fixed,verify,verify", "learned", "learned:3",
    "learned:-1.5,min=2,max=8", "learned:inf", "learned:-Infinity", "learned:nan", "learned:1e3", "learned:.5",
    "learned:5.", "learned:1_0.5", "learned:0.1", "learned:3,min=0", "learned:3,min=9,max=8", "learned:3,max=300",
    "learned:3,foo=1", "learned:3,min", "learned:abc", "learned:0x10", "learned:1.5f", "Learned:3", "",
    "  learned:3 , max=6 , verify ", "learned:3,max=99999999999999999999", "learned:3,min=2,min=x",
    "learned:3,min=x,min=2", "learned:-0", "verify", "learned:3,min= 2", "learned:3,min =2", "learned,min=8",
]

ENERGY = [  # (samples (t ns, current µA or mA either sign, mV), energy counter at start and end (nWh))
    ([(0, -400_000, 3800), (10_000_000, 350, 3900), (30_000_000, -420_000, 3850), (45_500_000, 9_999, 3700),
      (60_000_000, 10_000, 3700)],
     (5_000_000_000, 4_999_990_000)),
    ([(0, 812_345, 4123), (15_000_000, 812_345, 4123)], (-(2 ** 63), -(2 ** 63))),
    ([(7, 1, 3000)], (0, 1000)),
    ([(0, -1_000_000, 3700), (1_000_000_000, -1_000_000, 3700)], (123, 123)),
]


def _contract_cases(config) -> list[tuple[str, list[str], list]]:
    """(id, the contract line's fields after the id, expected fields): the bundle's, renamed, then broken ones."""
    spec = io_spec("step", config, batch=1)
    sizes = [config.seq_len, config.vocab_size, config.total_len, config.hidden_size, config.halt_max_steps]

    def line(sp, task="sudoku", halting="learned:3"):
        fields = [task, *map(str, sizes), quote(halting, safe="")]
        return fields + [",".join(f"{t['name']}:{t['dtype']}:{'x'.join(map(str, t['shape']))}" for t in sp[side])
                         for side in ("inputs", "outputs")]

    def changed(side, i, **kw):
        sp = json.loads(json.dumps(spec))
        sp[side][i].update(kw)
        return sp

    refused = ["error", _Like("a one-line trm-device.json error", lambda s: s.startswith("trm-device.json: ")
                              and "\n" not in s)]
    renamed = json.loads(json.dumps(spec))
    for side in renamed.values():
        for t in side:
            t["name"] = "x_" + t["name"]
    short = json.loads(json.dumps(spec))
    short["outputs"].pop()
    names = [t["name"] for side in ("inputs", "outputs") for t in spec[side]]
    return [
        ("k-bundle", line(spec), ["ok", *names]),
        ("k-renamed", line(renamed), ["ok", *("x_" + n for n in names)]),
        ("k-dtype", line(changed("inputs", 2, dtype="float16")), refused),
        ("k-shape", line(changed("outputs", 4, shape=[1, config.seq_len, config.vocab_size + 1])), refused),
        ("k-batch", line(changed("inputs", 0, shape=[2, config.seq_len])), refused),
        ("k-short", line(short), refused),
        ("k-task", line(spec, task="maze"), refused),
        ("k-generic", line(spec, task="generic"), ["ok", *names]),  # any shape: tokens as they are
        ("k-halting", line(spec, halting="learned:x"), refused),
    ]


@pytest.fixture(scope="session")  # as the bundle's scope, so a missing compiler is found before that export
def kotlinc() -> Path:
    """Debian's kotlinc and a JRE (apt-get install kotlin default-jre-headless): skipped without, failed in CI."""
    require_tool("kotlinc", "compiles the Android app's core for the JVM checks")
    require_tool("java", "runs the Android app's core checks")
    return Path(shutil.which("kotlinc"))


def test_kotlin_core_replays_like_python(kotlinc, bundled_step_bundle, tmp_path):
    recs = _record(bundled_step_bundle)
    texts, checks = _sudoku_cases()
    lines, want = [], {}
    for name, (puzzle, steps) in recs.items():
        lines.append(f"record {name} {_csv(puzzle)}")
        lines += [f"step {name} {_csv(p)} {_f32(q)} {int(ok)}" for p, q, ok in steps]
        for i, pol in enumerate(POLICIES):
            lines.append(f"solve {name}-{i} {name} {STEPS} {quote(pol, safe='')}")
            want[f"{name}-{i}"] = ["solve", f"{name}-{i}", *_python_solve(puzzle, steps, pol)]
    for i, text in enumerate(texts):
        lines.append(f"parse p{i} {quote(text, safe='')}")
        want[f"p{i}"] = ["parse", f"p{i}", *_python_parse(text)]
    for i, text in enumerate([*TOKEN_TEXTS, "[2, 3,"]):
        lines.append(f"generic g{i} 4 12 {quote(text, safe='')}")
        want[f"g{i}"] = ["generic", f"g{i}", *_python_tokens(text)]
    want[f"g{len(TOKEN_TEXTS)}"][3] = _Like("generic: not JSON…", lambda s: s.startswith("generic: not JSON"))
    for i, (puzzle, answer) in enumerate(checks):
        lines.append(f"check c{i} {_csv(puzzle)} {_csv(answer)}")
        want[f"c{i}"] = ["check", f"c{i}", str(SUDOKU.check(puzzle, answer)).lower()]
    for i, (text, halt_max) in enumerate(itertools.product(POLICY_TEXTS, (16, 4))):
        lines.append(f"policy h{i} {halt_max} {quote(text, safe='')}")
        want[f"h{i}"] = ["policy", f"h{i}", *_python_policy(text, halt_max)]
    for cid, fields, expected in _contract_cases(Bundle(bundled_step_bundle).config):
        lines.append(" ".join(["contract", cid, *fields]))
        want[cid] = ["contract", cid, *expected]
    for i, (samples, (c0, c1)) in enumerate(ENERGY):
        lines.append(f"energy e{i} {','.join(f'{t}:{a}:{v}' for t, a, v in samples)} {c0} {c1}")
        joules = sum((t1 - t0) / 1e9 * (battery_power_w(a0, v0) + battery_power_w(a1, v1)) / 2
                     for (t0, a0, v0), (t1, a1, v1) in zip(samples, samples[1:]))
        counter = "none" if c0 in (0, -(2 ** 63)) or c0 == c1 else _near(abs(c1 - c0) * 3.6e-6)
        want[f"e{i}"] = ["energy", f"e{i}", _near(joules), counter]
    replay = tmp_path / "replay.txt"
    replay.write_text("# written by tests/test_android.py\n" + "\n".join(lines) + "\n")

    classes = tmp_path / "classes"
    # C1 JIT only: the compiler is one short run, where tiered compilation costs more than it gains
    env = dict(os.environ, JAVA_OPTS="-Xmx512M -XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    res = subprocess.run([str(kotlinc), *map(str, sorted(CORE.glob("*.kt"))), str(HARNESS), "-d", str(classes)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not re.search(r"\.kt:\d+:\d+: warning:", res.stderr), res.stderr[-3000:]  # deprecations rot first
    stdlib = kotlinc.resolve().parents[1] / "lib" / "kotlin-stdlib.jar"  # the compiler's own
    res = subprocess.run(["java", "-XX:TieredStopAtLevel=1", "-cp", f"{classes}{os.pathsep}{stdlib}",
                          "dev.trmedge.solver.check.ReplayCheckKt", str(replay)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = {f[1]: f for f in ([unquote_plus(x) for x in line.split(" ")] for line in res.stdout.splitlines())}
    assert got.keys() == want.keys()
    bad = [(got[k], w) for k, w in want.items() if got[k] != w]
    assert not bad, "\n".join(f"kotlin: {g}\npython: {w}" for g, w in bad[:5])
