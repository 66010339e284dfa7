"""The web page's latency per solve in headless Chromium (onnxruntime-web, WASM) beside native ONNX Runtime on the
same machine, in one run: `python -m benchmarks.studies.browser BUNDLE [--precision fp32,int8-dynamic] [-n 32]`.
These are desktop Chromium figures; a phone's browser is slower, and only a phone can say by how much."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time

import numpy as np

from trm_edge.api import builtin_data
from trm_edge.halting import HaltPolicy
from trm_edge.runtimes import open_solver
from trm_edge.runtimes.browser import CHROMIUM, CHROMIUM_ARGS, build_site, server
from trm_edge.tasks import SUDOKU, read_puzzles


def _native(bundle: str, precision: str, puzzles: list[str], halt: str, threads: int) -> list[dict]:
    solver = open_solver(bundle, "ort", "step", precision, threads=threads)
    policy = HaltPolicy.parse(halt, solver.config.halt_max_steps)
    solver.solve(SUDOKU.parse(puzzles[0])[None], policy)  # untimed, as the page's first solve
    runs = []
    for p in puzzles:
        t0 = time.perf_counter()
        sol = solver.solve(SUDOKU.parse(p)[None], policy)
        runs.append({"ms": 1000 * (time.perf_counter() - t0), "steps": int(sol.steps[0]),
                     "answer": SUDOKU.compact(sol.tokens[0])})
    return runs


def _page(site, puzzles: list[str], halt: str, isolate: bool) -> tuple[list[dict], str]:
    """Per-puzzle runs in the page (its compute time: the steps, not the drawing) and what it ran with."""
    from playwright.sync_api import sync_playwright

    srv = server(site, port=0, isolate=isolate)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{srv.server_address[1]}/index.html")
            page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=120_000)
            threads = page.evaluate("window.trm.threads")
            page.evaluate(f"window.trm.solve({json.dumps(puzzles[0])}, {{halt: {json.dumps(halt)}, views: 1}})")
            runs = [page.evaluate(f"window.trm.solve({json.dumps(q)}, {{halt: {json.dumps(halt)}, views: 1}})")
                    for q in puzzles]
            browser.close()
    finally:
        srv.shutdown()
        srv.server_close()
    setting = f"{threads} thread(s), {'isolated' if isolate else 'plain server'}"
    return [{"ms": r["compute_ms"], "steps": r["steps"], "answer": r["answer"]} for r in runs], setting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--halt", default="fixed:16")
    ap.add_argument("-n", type=int, default=32)
    args = ap.parse_args()
    pairs = read_puzzles(SUDOKU, str(builtin_data("sudoku")[0]))[: args.n]
    puzzles = [SUDOKU.compact(p) for p, _ in pairs]
    rows = []
    for precision in args.precision.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            site = build_site(args.bundle, f"{tmp}/site", precision)
            for isolate in (False, True):
                runs, setting = _page(site, puzzles, args.halt, isolate)
                rows.append({"engine": "chromium wasm", "precision": precision, "setting": setting, "runs": runs})
        for threads in (1, 2):
            rows.append({"engine": "ort native", "precision": precision, "setting": f"{threads} thread(s)",
                         "runs": _native(args.bundle, precision, puzzles, args.halt, threads)})
    base = {r["precision"]: r for r in rows if r["engine"] == "ort native" and r["setting"].startswith("1 ")}
    print(f"{len(puzzles)} puzzles (24-29 givens), one view, {args.halt}, batch 1")
    print("| engine | precision | setting | exact | ms per step | ms per solve (median) | answers = native 1 thread |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ms, steps = [x["ms"] for x in r["runs"]], [x["steps"] for x in r["runs"]]
        same = np.mean([a["answer"] == b["answer"] for a, b in zip(r["runs"], base[r["precision"]]["runs"])])
        exact = np.mean([x["answer"] == SUDOKU.compact(label) for x, (_, label) in zip(r["runs"], pairs)])
        print(f"| {r['engine']} | {r['precision']} | {r['setting']} | {exact:.0%} | {sum(ms) / sum(steps):.1f} | "
              f"{statistics.median(ms):.0f} | {same:.0%} |")


if __name__ == "__main__":
    main()
