"""Full-size models through `trm-edge export`, timed as a user runs it (issue 38): a random-weight checkpoint in the
official layout at a published size, written to a temporary folder, then the CLI export on it, with its wall time,
peak memory, what it forecast and what it measured.

`python -m benchmarks.studies.full_size sudoku-mlp [--json] [-- EXPORT_ARGS...]` (default `--quantize int8`)
`python -m benchmarks.studies.full_size arc-v1 [-- --graph step --puzzle-ids 1,2,3]`

sudoku-mlp is the official Sudoku-MLP (5.0M parameters, 81 tokens, 25.6 GFLOP a step); arc-v1 is ARC Prize's
`arc_v1_public/step_518071` shape (attention, 916 tokens, 876,403 puzzle rows: a 1.8 GB file). Down-projections are
scaled by 0.1 as in official_size.py: at full random scale the recursion is chaotic and the answers say nothing about
a graph; damped it is contractive. Shapes, FLOPs and hence times are unchanged."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.studies.official_size import SUDOKU_MLP, damped
from trm_edge.checkpoint import export_official
from trm_edge.config import TRMConfig

ARC_V1 = TRMConfig(vocab_size=12, seq_len=900, num_puzzle_identifiers=876_403, hidden_size=512, num_heads=8,
                   H_cycles=3, L_cycles=4, pos_encodings="rope", mlp_t=False, forward_dtype="bfloat16")
SIZES = {"sudoku-mlp": (SUDOKU_MLP, "data/sudoku-extreme-1k-aug-1000", ["--quantize", "int8"]),
         "arc-v1": (ARC_V1, "data/arc1concept-aug-1000", ["--graph", "step", "--puzzle-ids", "1,2,3"])}


def checkpoint(size: str, out: Path) -> Path:
    """The random-weight official checkpoint of `size` (down-projections damped), written into `out`."""
    config, data, _ = SIZES[size]
    model = damped(config)
    return export_official(model, out, step=1, task=data)


def run(size: str, args: list[str]) -> dict:
    """The checkpoint is written by a process of its own and the export's peak read from its own rusage (os.wait4):
    a child forked from a process holding the 3.7 GB the writing takes reported that as its peak (the 3.7 GB recorded
    for this study on 2026-12-07 before this was fixed)."""
    with tempfile.TemporaryDirectory(prefix="trm-full-size-") as tmp:
        t0 = time.perf_counter()
        ckpt = Path(tmp) / "ckpt"
        writer = multiprocessing.get_context("spawn").Process(target=checkpoint, args=(size, ckpt))
        writer.start()
        writer.join()
        made = time.perf_counter() - t0
        bundle = Path(tmp) / "bundle"
        cmd = ["trm-edge", "export", str(ckpt), "-o", str(bundle), *(args or SIZES[size][2])]
        print(f"checkpoint written in {made:.0f} s; running: {' '.join(cmd)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)  # its progress lines pass through on stderr
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        result = {"size": size, "command": " ".join(["trm-edge", "export", "CKPT", "-o", "OUT", *cmd[5:]]),
                  "exit": proc.returncode, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
                  "checkpoint_mb": round(sum(f.stat().st_size for f in ckpt.iterdir()) / 2**20)}
        if proc.returncode == 0:
            result.update(_figures(json.loads((bundle / "manifest.json").read_text())))
        return result


def _figures(manifest: dict) -> dict:
    """What the manifest says of the verification's and the guard's cost, forecast beside measured."""
    v = manifest["verification"]
    out = {"verification": {k: v.get(k) for k in ("puzzles", "asked", "estimate_s", "seconds")}}
    for mode, q in manifest.get("quantization", {}).items():
        g = q["guard"]
        out[f"guard_{mode}"] = {"forecast": q["forecast"], "n": g["n"], "looks": g["looks"],
                                "drop_pp": round(g["exact_drop_pp"], 2), "interval_pp": g["decision_interval_pp"],
                                "decided_by": g["decided_by"], "capped": g["capped"], "seconds": g["seconds"],
                                "int8_seconds": q["seconds"]}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("size", choices=sorted(SIZES))
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("export_args", nargs="*", help="after --: the export's options (default: per size)")
    a = ap.parse_args()
    res = run(a.size, a.export_args)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))
    sys.exit(res["exit"])
