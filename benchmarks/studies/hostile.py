"""The hostile-input budget, measured: each case of issue 32 (crafted files, bundles, graphs, URLs, arguments) run as
a user would run it, in a child process, with its exit code, its stderr line count, wall time and peak memory. The
target is exit 2 (1 for a failed engine run) with one line, within 5 s and 1 GB. The tests (tests/test_hostile_*.py)
hold each case to its message; this records what each one costs.
`python -m benchmarks.studies.hostile [--json]` (needs the export extra: it exports a tiny bundle to attack)."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

PUZZLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"
DEEP = "[" * 100_000 + "]" * 100_000


# Runs its arguments and reports their peak RSS: RUSAGE_CHILDREN of a process with one child covers just that one.
_WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
         "print(f'peak_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
         "sys.exit(r.returncode)")


def child(args: list[str], shell: str | None = None, timeout: float = 60) -> dict:
    """`trm-edge ARGS` (or a shell line) in a child: exit code, stderr lines, seconds and the child's peak RSS."""
    cmd = ["bash", "-c", shell] if shell else [sys.executable, "-m", "trm_edge", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _WRAP, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        err = proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        err = proc.communicate()[1] + f"\nkilled after {timeout} s\npeak_kb=0"
    seconds = time.perf_counter() - t0
    *lines, peak = [line for line in err.splitlines() if line.strip()]
    return {"exit": proc.returncode, "lines": len(lines), "seconds": round(seconds, 2),
            "peak_mb": round(int(peak.removeprefix("peak_kb=")) / 1024, 1), "last": lines[-1][:110] if lines else ""}


def npz(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)


def npy(shape: tuple[int, ...], payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def cases(work: Path, bundle: Path) -> dict[str, Callable[[], dict]]:
    """Case name -> a function crafting its input in `work` and running it."""

    def copy(name: str) -> Path:
        return shutil.copytree(bundle, work / name)

    def rehashed(b: Path) -> Path:
        from trm_edge.bundle import sha256

        doc = json.loads((b / "manifest.json").read_text())
        for name, info in doc["files"].items():
            info.update(sha256=sha256(b / name), bytes=(b / name).stat().st_size)
        (b / "manifest.json").write_text(json.dumps(doc))
        return b

    def with_init(name: str, members: dict[str, bytes]) -> Path:
        b = copy(name)
        npz(b / "init.npz", members)
        return rehashed(b)

    def bomb() -> Path:
        """The probe's case: 4 GB of zeros as H_init, deflated to 4 MB, streamed so crafting it costs no memory."""
        b = copy("bomb")
        n = 1 << 30
        with zipfile.ZipFile(b / "init.npz", "w", zipfile.ZIP_DEFLATED) as z, \
                z.open("H_init.npy", "w", force_zip64=True) as f:
            f.write(npy((n,)))
            for _ in range(4 * n // (16 << 20)):
                f.write(bytes(16 << 20))
        return rehashed(b)

    def deep_manifest() -> Path:
        b = copy("deep")
        (b / "manifest.json").write_text(DEEP)
        return b

    def edited(name: str, graph: str, edit: Callable) -> Path:
        """The bundle with `edit(model, helper, numpy_helper)` applied to one graph, rehashed."""
        import onnx
        from onnx import helper, numpy_helper

        b = copy(name)
        m = onnx.load(str(b / graph))
        edit(m, helper, numpy_helper)
        (b / graph).write_bytes(m.SerializeToString())
        return rehashed(b)

    def loop(m):
        return next(n for n in m.graph.node if n.op_type == "Loop")

    def trip_2_62(m, helper, numpy_helper):
        m.graph.initializer.append(numpy_helper.from_array(np.array(1 << 62, np.int64), "trip"))
        loop(m).input[0] = "trip"

    def scan_output(m, helper, numpy_helper):
        body = loop(m).attribute[0].g
        body.output.append(helper.make_tensor_value_info(body.output[1].name, 7, []))  # a carried value, scanned
        loop(m).output.append("scanned")

    def failing_gather(m, helper, numpy_helper):
        """Column 100 of 81 tokens: every op allowed, the graph loads, the run fails on its data."""
        m.graph.initializer.append(numpy_helper.from_array(np.array([100], np.int64), "col100"))
        m.graph.node.append(helper.make_node("Gather", ["tokens", "col100"], ["col"], axis=1))
        m.graph.output.append(helper.make_tensor_value_info("col", 7, None))

    def made(path: Path, fill: Callable[[Path], object]) -> Path:
        fill(path)
        return path

    os.mkfifo(work / "fifo")
    return {
        "compare /dev/zero": lambda: child(["compare", "/dev/zero", "-o", str(work / "c1")]),
        "compare a FIFO": lambda: child(["compare", str(work / "fifo"), "-o", str(work / "c2")]),
        "compare a binary file": lambda: child(["compare", "/bin/sh", "-o", str(work / "c3")]),
        "compare JSON 100,000 deep": lambda: child(["compare", str(made(work / "deep.json", lambda p: p.write_text(
            DEEP))), "-o", str(work / "c4")]),
        "manifest JSON 100,000 deep": lambda: child(["solve", str(deep_manifest()), PUZZLE]),
        "init.npz: 4 MB deflating to 4 GB": lambda: child(["solve", str(bomb()), PUZZLE]),
        "init.npz declaring 10^12 values": lambda: child(["solve", str(with_init("huge", {
            "H_init": npy((10**12,)), "L_init": npy((10**12,))})), PUZZLE]),
        "init.npz that is not a zip": lambda: child(["solve", str(with_init("nozip", {})), PUZZLE]),
        "puzzle file that is a FIFO": lambda: child(["solve", str(bundle), str(work / "fifo")]),
        "puzzles from /dev/zero": lambda: child(["solve", str(bundle), "/dev/zero"]),
        "closed stdin": lambda: child([], shell=f"{sys.executable} -m trm_edge solve {bundle} - <&-"),
        "solve 1 puzzle --batch 65536 (exit 0)": lambda: child(["solve", str(bundle), PUZZLE, "--batch", "65536"]),
        "loop graph: Loop trip count 2^62": lambda: child(["solve", str(edited("trip", "loop.onnx", trip_2_62)),
                                                           PUZZLE, "--graph", "loop"]),
        "loop graph: Loop with a scan output": lambda: child(["solve", str(edited("scan", "loop.onnx", scan_output)),
                                                              PUZZLE, "--graph", "loop"]),
        "step graph failing at run time (exit 1)": lambda: child(["solve", str(edited("gather", "step.onnx",
                                                                                        failing_gather)), PUZZLE]),
        "export -o .": lambda: child([], shell=f"cd {work} && {sys.executable} -m trm_edge export -o ."),
        "bench --remote ssh://-oProxyCommand=...": lambda: child(["bench", str(bundle), "--remote",
                                                                  "ssh://-oProxyCommand=touch${IFS}x@host"]),
        "bench HOME --remote (not a bundle)": lambda: child(["bench", str(work), "--remote", "ssh://pi@host"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from trm_edge.config import TRMConfig
    from trm_edge.export import ExportOptions, export_bundle
    from trm_edge.model import TRM

    cfg = TRMConfig(vocab_size=11, seq_len=81, hidden_size=16, num_heads=2, L_layers=2, H_cycles=2, L_cycles=2,
                    halt_max_steps=3, puzzle_emb_ndim=16, pos_encodings="none", mlp_t=True, forward_dtype="float32")
    with tempfile.TemporaryDirectory(prefix="trm-hostile-") as tmp:
        work = Path(tmp)
        bundle = export_bundle(TRM(cfg).eval(), {"task": "sudoku"}, work / "bundle", ExportOptions(("step", "loop"),
                                                                                                   verify_n=2))
        results = {}
        for name, run in cases(work, bundle).items():
            results[name] = run()
            if not a.json:
                r = results[name]
                print(f"{name:42} exit {r['exit']}  {r['lines']} line  {r['seconds']:5.2f} s  {r['peak_mb']:6.1f} MB"
                      f"  {r['last'][17:80]}", flush=True)
    if a.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
