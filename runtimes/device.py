"""What an app embeds: one step graph of a bundle and a small contract, `trm-device.json`, that names the graph's
inputs and outputs with their shapes, the sizes, the halting policy and the initial state. The Android app and the
web page read all of it from there instead of repeating it, so a re-exported model cannot drift from the code that
runs it (tests/test_android.py and tests/test_web.py hold both to this file and to the Python Solver). Torch-free.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from trm_edge.atomic import atomic_dir
from trm_edge.bundle import MANIFEST, Bundle, sha256
from trm_edge.errors import TRMEdgeError
from trm_edge.spec import io_spec

CONTRACT = "trm-device.json"
CONTRACT_FORMAT, CONTRACT_VERSION = "trm-edge-device", 1
# What the app's and the page's own code can parse, check and draw; any other task's tokens they take as they are
TASKS = ("sudoku", "generic")


def check_task(b: Bundle, where: str) -> None:
    """Refused up front, before any conversion or download."""
    if b.task not in TASKS:
        raise TRMEdgeError(f"{b.path}: a {b.task} bundle; {where} solves sudoku, and generic tasks (tokens as they "
                           "are), only: export it again with --task generic to take its tokens as they are")


def device_contract(b: Bundle, graph: Path, precision: str) -> dict:
    """The contract for `graph` (a file beside the contract, batch 1) made from bundle `b`."""
    from trm_edge.runtimes import initial_state
    from trm_edge.views import PATIENCE

    c = b.config
    return {
        "format": CONTRACT_FORMAT, "format_version": CONTRACT_VERSION, "task": b.task,
        "seq_len": c.seq_len, "vocab_size": c.vocab_size, "total_len": c.total_len, "hidden_size": c.hidden_size,
        "halt_max_steps": c.halt_max_steps, "halting": b.halting,
        "views": {"default": b.codec.default_views, "patience": PATIENCE},  # as `solve`'s
        "graph": {"file": graph.name, "precision": precision, "bytes": graph.stat().st_size,
                  "sha256": sha256(graph), **io_spec("step", c, batch=1)},
        # float32 values as JSON numbers: each parses back to the same float32 (Math.fround, toFloat())
        "init": {k: v.tolist() for k, v in initial_state(b).items()},
        "source": {"bundle": b.path.name, "manifest_sha256": sha256(b.path / MANIFEST),
                   "versions": b.manifest.get("versions", {})},
    }


def write_android_assets(bundle: str | os.PathLike, out: str | os.PathLike, precision: str = "fp32") -> Path:
    """The app's `assets/trm` folder: the step graph in ORT format (what onnxruntime-android loads fastest and
    what reduced-op builds need) and its contract."""
    import json

    from trm_edge.runtimes.ort import to_ort_format

    b = Bundle(bundle)
    check_task(b, "the Android app")
    onnx_graph = b.graph_file("step", precision)

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as work:
            converted = to_ort_format(onnx_graph, work)
            shutil.move(converted, tmp / "step.ort")
        contract = device_contract(b, tmp / "step.ort", precision)
        (tmp / CONTRACT).write_text(json.dumps(contract, indent=1))

    return atomic_dir(out, write, "android-assets")
