"""Is a newly trained sudoku model better than the bundled one? Issue 16's ship rule, side by side, in one command.

`python -m trm_edge.benchmarks.candidate CANDIDATE TOP95 [--base BUNDLE] [--seeds 0,1,2] [--limit N] [--json]`

CANDIDATE and BASE are bundles with an ORT step graph (`trm-edge export MODEL -o B --graph step`; BASE defaults to
the bundled model, exported on the fly). Both solve the same puzzles under the same views: the held-out builtin
files (24-29 and 30-40 givens) with one view at fixed:16 (the issue's one-view targets), and TOP95 at 16 views
(view seed 0) and at 64 views under every seed of --seeds, since one draw of 64 views moves top95 by several points.
The rule was fixed before any candidate was measured (RESULTS.md, the WiSE-FT blend): ship only if the candidate is
not worse on any line (point estimates; top95 at 64 views pooled over the seeds) and better on 24-29 givens.
A line that alone refuses the candidate (worse on a line that is not pooled) ends the judging, since the rest cannot
change the verdict (`--every-line` measures them anyway, for the record). Exit 0 when it ships, 1 when it does not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BUILTIN_ONE_VIEW = ("sudoku-givens24-29.txt", "sudoku-givens30-40.txt")
DECIDES = "sudoku-givens24-29.txt, 1 view"  # the line the candidate must win
POOLED = "top95, 64 views, seed"  # these lines are judged together, over the seeds


def lines(top95: str, seeds: list[int]) -> list[tuple[str, str, int, int, str]]:
    """(name, data file, views, view seed, halting) of every line the rule reads (one view: the puzzle itself)."""
    from trm_edge.api import builtin_data

    files = {p.name: str(p) for p in builtin_data("sudoku")}
    one = [(f"{name}, 1 view", files[name], 1, 0, "fixed:16") for name in BUILTIN_ONE_VIEW]
    return one + [("top95, 16 views", top95, 16, 0, "learned:3")] + [
        (f"top95, 64 views, seed {s}", top95, 64, s, "learned:3") for s in seeds]


def solve_line(bundle: str, data: str, views: int, seed: int, halt: str, limit: int | None) -> dict:
    """Per-puzzle 'the rules accept the answer' flags, the view-steps spent and the time, through what `trm-edge
    solve --views` runs."""
    from trm_edge.halting import HaltPolicy
    from trm_edge.runtimes import open_solver
    from trm_edge.tasks import read_puzzles
    from trm_edge.views import view_policy

    solver = open_solver(bundle, "ort", "step")
    x = np.stack([p for p, _ in read_puzzles(solver.codec, data)][:limit])
    t0 = time.perf_counter()
    policy = view_policy(solver.policy(HaltPolicy.parse(halt, solver.config.halt_max_steps)), views)
    sol = solver.solve_stream(x, policy, views=views, seed=seed)
    return {"per_puzzle": [bool(solver.codec.check(p, t)) for p, t in zip(x, sol.tokens)],
            "mean_view_steps": float(np.mean(sol.view_steps)), "s_per_puzzle": (time.perf_counter() - t0) / len(x)}


def verdict(rows: list[dict]) -> dict:
    """The rule on measured lines (each with the base's and the candidate's per-puzzle flags): the top95 64-view
    seeds pooled into one line, then not worse anywhere and better on DECIDES."""
    from trm_edge.evaluate import paired_drop

    pooled: dict[str, dict] = {}
    for r in rows:
        name = "top95, 64 views, seeds pooled" if r["name"].startswith(POOLED) else r["name"]
        p = pooled.setdefault(name, {"name": name, "base": [], "candidate": []})
        p["base"] += r["base"]
        p["candidate"] += r["candidate"]
    judged = []
    for p in pooled.values():
        d = paired_drop(np.array(p["base"]), np.array(p["candidate"]))
        judged.append({"name": p["name"], "n": d["n"], "base": float(np.mean(p["base"])),
                       "candidate": float(np.mean(p["candidate"])), "lost": d["lost"], "gained": d["gained"],
                       "gain_pp": 100 * (d["gained"] - d["lost"]) / d["n"],
                       "ci95_pp": [-d["ci95_pp"][1], -d["ci95_pp"][0]]})
    worse = [j["name"] for j in judged if j["gain_pp"] < 0]
    better = any(j["name"] == DECIDES and j["gain_pp"] > 0 for j in judged)
    if worse:
        why = f"worse on {', '.join(worse)}"
    else:
        why = "not worse anywhere, better on 24-29 givens" if better else f"not better on {DECIDES}"
    return {"ship": not worse and better, "why": why, "judged": judged}


def judge(candidate: str, top95: str, base: str | None = None, seeds: tuple[int, ...] = (0, 1, 2),
          limit: int | None = None, progress=None, every_line: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base = base or _export_bundled(Path(tmp) / "base")
        rows = []
        for name, data, views, seed, halt in lines(top95, list(seeds)):
            a, b = (solve_line(m, data, views, seed, halt, limit) for m in (base, candidate))
            rows.append({"name": name, "base": a["per_puzzle"], "candidate": b["per_puzzle"],
                         "base_view_steps": a["mean_view_steps"], "candidate_view_steps": b["mean_view_steps"],
                         "base_s": a["s_per_puzzle"], "candidate_s": b["s_per_puzzle"]})
            if progress:
                progress(rows[-1])
            if not every_line and not name.startswith(POOLED) and np.mean(b["per_puzzle"]) < np.mean(a["per_puzzle"]):
                break  # worse on a line of its own: refused whatever the rest says
    return {"candidate": candidate, "base": base, "lines": rows, **verdict(rows)}


def _export_bundled(out: Path) -> str:
    from trm_edge.checkpoint import load_model
    from trm_edge.export import ExportOptions, export_bundle

    model, meta = load_model()
    return str(export_bundle(model, meta, out, ExportOptions(("step",))))


def _table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="candidate vs base: solved (paired gain, 95% interval)")
    for col in ("line", "n", "base", "cand.", "gain pp [95%]"):
        t.add_column(col, justify="left" if col == "line" else "right")
    for j in res["judged"]:
        lo, hi = j["ci95_pp"]
        t.add_row(j["name"], str(j["n"]), f"{j['base']:.1%}", f"{j['candidate']:.1%}",
                  f"{j['gain_pp']:+.1f} [{lo:+.1f}, {hi:+.1f}]")
    Console(width=80).print(t)
    print(("SHIP: " if res["ship"] else "do not ship: ") + res["why"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidate", help="bundle with an ORT step graph")
    ap.add_argument("top95", help="the hard set (../shared/data/sudoku/top95.txt)")
    ap.add_argument("--base", help="bundle to beat (default: the bundled model, exported here)")
    ap.add_argument("--seeds", default="0,1,2", help="view seeds of the 64-view top95 lines")
    ap.add_argument("--limit", type=int, help="first N puzzles of each file (a quick look; not for the verdict)")
    ap.add_argument("--every-line", action="store_true", help="measure every line even once the verdict is known")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    from trm_edge.errors import TRMEdgeError

    try:
        res = judge(a.candidate, a.top95, a.base, tuple(int(s) for s in a.seeds.split(",")), a.limit,
                    progress=None if a.json else lambda r: print(f"{r['name']}: {np.mean(r['base']):.1%} -> "
                                                                 f"{np.mean(r['candidate']):.1%}", flush=True),
                    every_line=a.every_line)
    except TRMEdgeError as e:  # bad input: one line and exit 2, as on the CLI (exit 1 here means "do not ship")
        print(f"candidate: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    print(json.dumps(res)) if a.json else _table(res)
    raise SystemExit(0 if res["ship"] else 1)
