"""Two bundles of the same model, exported before and after a change that should not change them (issue 34): their
manifests key by key, their ONNX graphs node by node, and their answers on every ONNX form and precision.

`python -m benchmarks.studies.same_bundle BEFORE AFTER [-n 64] [--ignore KEY,...]`

Left out of the manifest comparison: timings, versions, the source path and the speed check (they differ between
two runs of one export), the files' bytes and hashes (the graphs are compared instead, without the exporter's
per-node debug metadata: a class name and a stack trace), and any `--ignore` keys (what a change added on purpose).
Exit 1 when anything else differs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

from trm_edge.halting import HaltPolicy
from trm_edge.runtimes import open_solver

RUN_TO_RUN = {"export_seconds", "session_init_ms", "seconds", "convert_seconds", "versions", "speed", "source",
              "warnings", "bytes", "sha256"}


def manifest_differences(a, b, ignore: set[str], path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted((set(a) | set(b)) - ignore):
            out += ([f"{path}/{k}: only {'after' if k in b else 'before'}"] if (k in a) != (k in b) else
                    manifest_differences(a[k], b[k], ignore, f"{path}/{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in manifest_differences(x, y, ignore, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def graph_bytes(path: Path) -> bytes:
    """The graph without the per-node debug metadata and the producer's version."""
    model = onnx.load(str(path))

    def strip(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    strip(attr.g)

    strip(model.graph)
    del model.metadata_props[:]
    model.producer_version = ""
    return model.SerializeToString(deterministic=True)


def main(before: Path, after: Path, n: int, ignore: set[str]) -> int:
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (before, after))
    lines = [f"manifest: {d}" for d in manifest_differences(ma, mb, RUN_TO_RUN | ignore)]
    for name in sorted(f for f in mb["files"] if f.endswith(".onnx")):
        if graph_bytes(before / name) != graph_bytes(after / name):
            lines.append(f"graph {name}: nodes or weights differ")
    first = open_solver(after, "ort", "step", "fp32")
    puzzles = first.codec.sample(n, 77)
    for graph, precision in [(g, p) for g, entry in mb["graphs"].items() for p in entry["files"]]:
        for halt in ("fixed", "learned:0", mb["halting"]):
            policy = HaltPolicy.parse(halt, first.config.halt_max_steps)
            a, b = (open_solver(p, "ort", graph, precision).solve(puzzles, policy) for p in (before, after))
            same = all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("tokens", "steps", "q_halt"))
            print(f"{graph}/{precision} under {halt}: {'identical' if same else 'DIFFERENT'} answers, steps and q_halt "
                  f"on {n} puzzles")
            if not same:
                lines.append(f"answers {graph}/{precision} {halt}: differ")
    print("\n".join(lines) or "manifests (run-to-run keys aside), graphs (debug metadata aside) and answers: identical")
    return 1 if lines else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("-n", type=int, default=64, help="puzzles solved on each form, precision and policy")
    ap.add_argument("--ignore", default="", help="manifest keys a change added or redefined on purpose")
    a = ap.parse_args()
    sys.exit(main(a.before, a.after, a.n, set(filter(None, a.ignore.split(",")))))
