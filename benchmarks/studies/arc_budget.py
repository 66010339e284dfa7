"""ARC at a chosen budget (issue 35): an ARC bundle exported with `--tasks`, its tasks solved the official way (each
test input under K of the task's variants, the answers voted on) for every K × halting policy, with pass@2 (on the
tasks whose files hold their answers) and the time per task.

`python -m benchmarks.studies.arc_budget BUNDLE TASK.json... [--k 1,2,4,8] [--halt learned,fixed] [--json]`
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from trm_edge import api


def budget_table(bundle: str, tasks: list[str], ks: list[int], halts: list[str], backend: str = "ort",
                 precision: str = "fp32") -> list[dict]:
    loaded = api.open_model(bundle, api.Opening(backend=backend, precision=precision))
    rows = []
    for k in ks:
        for halt in halts:
            res = api.solve_arc_tasks(loaded, tasks, halt=halt, per_task=k)
            scored = [[p["correct"] for p in t["pairs"]] for t in res["tasks"] if all(
                p["correct"] is not None for p in t["pairs"])]
            rows.append({"k": k, "halt": res["halt"], "tasks": len(res["tasks"]),
                         "pass@2": float(np.mean([np.mean(s) for s in scored])) if scored else None,
                         "mean_steps": float(np.mean([t["mean_steps"] for t in res["tasks"]])),
                         "seconds_per_task": res["seconds"] / len(res["tasks"])})
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--k", default="1,2,4,8", help="variants per task (comma-separated)")
    ap.add_argument("--halt", default="learned,fixed", help="halting policies (semicolon-separated)")
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    table = budget_table(a.bundle, a.tasks, [int(k) for k in a.k.split(",")], a.halt.split(";"), a.backend,
                         a.precision)
    if a.json:
        print(json.dumps(table, indent=2))
    else:
        print("| K | halting | tasks | pass@2 | mean steps | s per task |\n|---|---|---|---|---|---|")
        for r in table:
            p2 = "-" if r["pass@2"] is None else f"{100 * r['pass@2']:.1f}%"
            print(f"| {r['k']} | {r['halt']} | {r['tasks']} | {p2} | {r['mean_steps']:.2f} | "
                  f"{r['seconds_per_task']:.1f} |")
