from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRM_EDGE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "official"
TOP95 = SHARED / "data" / "sudoku" / "top95.txt"
OFFICIAL = ["sudoku_mlp_fp32", "maze_att_fp32"]
# The longest files (export and conversion to every engine): run first, so the parallel workers end together
LONGEST_FIRST = ("test_export.py", "test_engines.py", "test_quantize.py")


def pytest_collection_modifyitems(items):
    order = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: each file keeps its own order


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch) -> Path:
    """The tests' own user cache, shared by this run's workers: a test never writes into the user's (a peak or a
    tune choice measured under the suite's load would mislead their next bench). The web engine npm fetched once is
    shared with it, read-only in effect: a run that lacks it fetches its own."""
    from trm_edge.cache import cache_dir
    from trm_edge.runtimes.browser import ORT_WEB

    real = cache_dir()
    root = tmp_path_factory.getbasetemp().parent / "cache"  # the workers' basetemps are siblings
    web = ORT_WEB.replace("@", "-")
    (root / "trm-edge").mkdir(parents=True, exist_ok=True)
    if (real / web).is_dir() and not (root / "trm-edge" / web).exists():
        try:
            (root / "trm-edge" / web).symlink_to(real / web)
        except FileExistsError:  # the other worker linked it first
            pass
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    return root / "trm-edge"


@pytest.fixture(params=OFFICIAL)
def official_dir(request) -> Path:
    d = FIXTURES / request.param
    if not d.is_dir():
        pytest.skip(f"official fixtures not found at {d}")
    return d


def as_from_a_terminal() -> None:
    """Popen's preexec_fn for a child that is sent SIGINT: a suite started in the background (a shell ignores SIGINT
    for background jobs, and children inherit that) must still test what a Ctrl-C does in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tiny_config(mlp_t: bool = True, **kw):
    """A hidden-32 model for fast differential tests."""
    from trm_edge.config import TRMConfig

    base = dict(vocab_size=11, seq_len=81, hidden_size=32, num_heads=4, L_layers=2, H_cycles=2, L_cycles=2,
                halt_max_steps=4, puzzle_emb_ndim=32, pos_encodings="none" if mlp_t else "rope", mlp_t=mlp_t,
                forward_dtype="float32", **({"puzzle_emb_len": 0} if kw.get("family") == "hrm" else {}))
    return TRMConfig(**{**base, **kw})


def bf16_official(tmp_path: Path, cast_init: bool = False) -> Path:
    """The sudoku fixture as a bf16 run: config forward_dtype bfloat16 (and, with cast_init, bf16 carry-init buffers,
    as a bf16 trainer saves them)."""
    import shutil

    import torch
    import yaml

    src = FIXTURES / "sudoku_mlp_fp32"
    if not src.is_dir():
        pytest.skip("fixtures missing")
    d = tmp_path / "bf16"
    shutil.copytree(src, d)
    doc = yaml.safe_load((d / "all_config.yaml").read_text())
    doc["arch"]["forward_dtype"] = "bfloat16"
    (d / "all_config.yaml").write_text(yaml.safe_dump(doc))
    if cast_init:
        state = torch.load(src / "step_1234", weights_only=True)
        torch.save({k: v.bfloat16() if k.endswith(("H_init", "L_init")) else v for k, v in state.items()},
                   d / "step_1234")
    return d


def official_with_rows(d: Path, rows: int, **config) -> Path:
    """A tiny official-format checkpoint (step_1) whose puzzle rows differ (the official init leaves them zero) and
    whose halting head reads its input, so a wrong row shows in the answers and q_halt."""
    import torch

    from trm_edge.checkpoint import export_official
    from trm_edge.model import TRM

    torch.manual_seed(0)
    model = TRM(tiny_config(num_puzzle_identifiers=rows, **config))
    with torch.no_grad():
        model.puzzle_emb.weights.normal_()
        model.q_head.weight.normal_(0, 0.5)
        model.q_head.bias.zero_()
    return export_official(model, d, step=1, task="sudoku")


@pytest.fixture(scope="session")
def bundled_step_bundle(tmp_path_factory) -> Path:
    """The bundled model's step graph as a bundle, exported once per test session (the device tests share it)."""
    from trm_edge.checkpoint import DEFAULT_MODEL, load_model
    from trm_edge.export import ExportOptions, export_bundle

    if not DEFAULT_MODEL.is_dir():
        pytest.skip("no bundled model in this checkout")
    model, meta = load_model()
    out = tmp_path_factory.mktemp("bundled") / "bundle"
    return export_bundle(model, meta, out, ExportOptions(("step",), verify_n=4))  # verification has its own tests


def require_tool(path: str, why: str) -> None:
    """Skip where a system tool is missing, except in CI (CI=1), where .ci/run installs it: a miss there fails."""
    import shutil

    if shutil.which(path) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing in CI ({why}); .ci/run should install it")
        pytest.skip(f"{path} not installed ({why})")


# -- a tiny bundle, and what a hostile author does to it (tests/test_reliability.py, tests/test_hostile_*.py) ------

TINY_PUZZLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"


def export_tiny_bundle(out: Path) -> Path:
    """A hidden-16 random sudoku model's step and loop graphs: a real bundle, exported in seconds, that solves in
    moments even under emulation (tests/arm64/run.sh benchmarks it there)."""
    from trm_edge.export import ExportOptions, export_bundle
    from trm_edge.model import TRM

    model = TRM(tiny_config(hidden_size=16, num_heads=2, puzzle_emb_ndim=16, halt_max_steps=3)).eval()
    return export_bundle(model, {"task": "sudoku"}, out, ExportOptions(("step", "loop"), verify_n=4))


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return export_tiny_bundle(tmp_path_factory.mktemp("tiny") / "b")


def rehash(bundle: Path) -> None:
    """What a hostile author does after editing a payload: make the manifest's hashes match again."""
    import json

    from trm_edge.bundle import sha256

    mf = bundle / "manifest.json"
    doc = json.loads(mf.read_text())
    for name, info in doc["files"].items():
        p = bundle / name
        if p.exists():
            info.update(sha256=sha256(p), bytes=p.stat().st_size)
    mf.write_text(json.dumps(doc))


def edit_manifest(bundle: Path, fn) -> None:
    import json

    mf = bundle / "manifest.json"
    doc = json.loads(mf.read_text())
    fn(doc)
    mf.write_text(json.dumps(doc))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """`trm-edge ARGS` in this process: (exit code, stdout, stderr)."""
    from trm_edge.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    """A copy to attack, the shared fixture left whole."""
    import shutil

    return shutil.copytree(bundle, tmp_path / "b")


def refused(capsys, bundle: Path, message: str) -> str:
    """`solve BUNDLE` refused before any work: exit 2, nothing on stdout, one line on stderr holding `message`."""
    code, out, err = cli(capsys, "solve", str(bundle), TINY_PUZZLE, "--json")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and message in lines[0], err
    return lines[0]
