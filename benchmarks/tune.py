"""`trm-edge tune BUNDLE`: the fastest of the routes a bundle carries, timed on this machine, and remembered.

The best route differs by machine (LiteRT int8 2.7x ORT fp32 a step on a VNNI laptop, int8 slower than fp32 on an
AVX2-only one): so each route the bundle carries (engine x precision x graph form x threads) is timed here, on the
same puzzles under the bundle's halting policy, and the fastest is written to the user's cache, keyed by the
bundle's manifest hash and this machine (benchmarks.machine.machine_key). `solve`, `eval` and `bench` take it when no
route is named; a choice for another bundle or machine is stale and ignored. An int8 route is a candidate only if
its accuracy guard passed at export (the manifest says so); a route this machine cannot open is skipped, said why.

Rounds visit the routes in a rotating order and each route's figure is its median round, so that a machine's drift
(another process, a clock change) falls on every route alike; a pause before each route lets the previous one's idle
thread pool stop spinning (one engine's spinning threads beside another's slowed it by half: benchmarks/studies/
step_time.py).
"""

from __future__ import annotations

import datetime
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from trm_edge.bundle import MANIFEST, Bundle, sha256
from trm_edge.cache import read_entry, write_entry
from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy

ROUNDS = 3
PAUSE_S = 0.5  # seconds between routes: longer than the engines' spin-wait


@dataclass(frozen=True)
class Route:
    """One way to run a bundle: engine, precision, graph form and intra-op threads (None: the engine's default)."""
    backend: str
    precision: str
    graph: str
    threads: int | None = None

    def __str__(self) -> str:
        return f"{self.backend}/{self.precision}/{self.graph}" + (f" x{self.threads}t" if self.threads else "")


def guard_passed(b: Bundle, fmt: str, precision: str) -> bool:
    """fp32 graphs are verified against the reference at export; any other precision runs only where its accuracy
    guard passed."""
    if precision == "fp32":
        return True
    record = b.sections().get(fmt, {}).get("quantization", {}).get(precision, {})
    return isinstance(record, dict) and isinstance(record.get("guard"), dict) and record["guard"].get("passed") is True


def routes(b: Bundle, threads: tuple[int | None, ...] | None = None, graphs: tuple[str, ...] = ("step",)
           ) -> list[Route]:
    """Every route the bundle carries in `graphs` whose precision passed its guard, at each thread count (default: 1
    and all cores). Only the step graph by default: it is the form that runs every policy (checked answers too),
    views and continuous batching, so a choice among step routes is one solve, eval and bench can always take."""
    from trm_edge.runtimes import ENGINES

    counts = threads or tuple(sorted({1, os.cpu_count() or 1}))
    formats = b.formats()
    return [Route(backend, precision, graph, t) for backend, (fmt, *_) in ENGINES.items() if fmt in formats
            for graph, files in formats[fmt].items() if graph in graphs
            for precision in files if guard_passed(b, fmt, precision) for t in counts]


def _entry_name(b: Bundle) -> str:
    return f"tune/{b.digest[:32]}.json"


def tuned(b: Bundle) -> Route | None:
    """This machine's remembered choice for this bundle, or None: none made, made for another bundle (same path,
    new export) or another machine (CPU or engine versions), or naming a route the bundle no longer passes."""
    from trm_edge.benchmarks.machine import machine_key

    doc = read_entry(_entry_name(b))
    if not doc or doc.get("bundle") != b.digest or doc.get("machine") != machine_key():
        return None
    try:
        route = Route(**doc["choice"])
    except (TypeError, KeyError):
        return None
    return route if route in routes(b, (route.threads,), (route.graph,)) else None


def pick(b: Bundle, backend: str | None, graph: str = "step", precision: str = "fp32", threads: int | None = None
         ) -> tuple[Route, bool]:
    """The route to run a bundle by, and whether it is the tuned one: the route named, else (`--backend auto`, or no
    route option at all) the one `trm-edge tune` chose on this machine, else ONNX Runtime's fp32 step graph."""
    named = backend not in (None, "auto") or graph != "step" or precision != "fp32" or threads is not None
    choice = None if named else tuned(b)
    if choice:
        return choice, True
    return Route("ort" if backend in (None, "auto") else backend, precision, graph, threads), False


def tune(bundle: str | os.PathLike, data: str = "builtin", n: int = 32, batch: int = 1,
         threads: tuple[int | None, ...] | None = None, graphs: tuple[str, ...] = ("step",),
         progress: Callable[[str, int, int], None] | None = None, solver_factory=None) -> dict:
    """Time every runnable route on the same `n` puzzles under the bundle's policy; remember and return the fastest
    (mean ms per solve, median of ROUNDS rounds), with every route's figures and the ones skipped."""
    from trm_edge.benchmarks.harness import MeasureOptions, agreement, load_pairs, measure
    from trm_edge.benchmarks.machine import machine_facts, machine_key
    from trm_edge.runtimes import open_solver

    b = Bundle(bundle)
    factory = solver_factory or open_solver
    candidates, skipped, solvers = routes(b, threads, graphs), [], {}
    if not candidates:
        raise TRMEdgeError(f"{bundle}: no {' or '.join(graphs)} graph to tune (has: {', '.join(b.manifest['graphs'])})")
    for r in candidates:
        try:
            solvers[r] = factory(b, backend=r.backend, graph=r.graph, precision=r.precision, threads=r.threads)
        except (TRMEdgeError, ImportError) as e:
            skipped.append({**asdict(r), "route": str(r), "reason": str(e)})
    if not solvers:
        raise TRMEdgeError(f"{bundle}: no route of this bundle runs here: " + "; ".join(
            f"{s['route']}: {s['reason']}" for s in skipped[:3]))
    first = next(iter(solvers.values()))
    pairs = load_pairs(first.codec, data, n)
    policy = HaltPolicy.parse(b.halting, b.config.halt_max_steps)
    order, done, total = list(solvers), 0, ROUNDS * len(solvers) * len(pairs)
    times: dict[Route, list[float]] = {r: [] for r in order}
    answers, steps = {}, {}
    for k in range(ROUNDS):
        for r in order[k % len(order):] + order[:k % len(order)]:
            def advance(m: int, label: str = f"round {k + 1}/{ROUNDS}: {r}") -> None:
                nonlocal done
                done += m
                if progress:
                    progress(label, done, total)
            time.sleep(PAUSE_S)
            metrics, sol = measure(solvers[r], first.codec, pairs, policy, MeasureOptions(batch, warmup=1), advance)
            times[r].append(metrics["latency_ms"]["mean"])
            answers[r], steps[r] = sol.tokens, metrics["mean_steps"]
    reference = next((r for r in order if r.precision == "fp32" and r.graph == "step"), order[0])
    rows = sorted(({**asdict(r), "route": str(r), "ms_per_solve": statistics.median(times[r]),
                    "rounds_ms": [round(t, 3) for t in times[r]], "mean_steps": steps[r],
                    "agreement_with_fp32": agreement(answers[r], answers[reference])} for r in order),
                  key=lambda row: row["ms_per_solve"])
    best = rows[0]
    for row in rows:
        row["vs_fastest"] = row["ms_per_solve"] / best["ms_per_solve"]
    choice = {k: best[k] for k in ("backend", "precision", "graph", "threads")}
    doc = {"bundle": b.digest, "path": os.path.abspath(bundle), "machine": machine_key(),
           "machine_label": machine_facts()["label"],
           "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "policy": str(policy), "puzzles": len(pairs), "batch": batch, "choice": choice, "routes": rows,
           "skipped": skipped}
    saved = write_entry(_entry_name(b), doc)
    return dict(doc, saved=str(saved) if saved else None)


def _still(path: object, digest: object) -> bool:
    """Whether the bundle a choice was made for is still at its path, unchanged (its manifest's hash)."""
    try:
        return isinstance(path, str) and sha256(Path(path) / MANIFEST) == digest
    except OSError:
        return False


def remembered() -> list[dict]:
    """Every choice this machine remembers (for doctor): bundle path, route and its time, newest first."""
    from trm_edge.benchmarks.machine import machine_key
    from trm_edge.cache import cache_dir

    key, found = machine_key(), []
    for f in sorted((cache_dir() / "tune").glob("*.json")):
        doc = read_entry(f"tune/{f.name}")
        if doc and doc.get("machine") == key and isinstance(doc.get("choice"), dict) and \
                _still(doc.get("path"), doc.get("bundle")):
            try:
                best = doc["routes"][0]
                found.append({"path": doc["path"], "route": str(Route(**doc["choice"])),
                              "ms_per_solve": best["ms_per_solve"], "measured": doc["measured"]})
            except (KeyError, TypeError, IndexError):
                continue
    return sorted(found, key=lambda d: d["measured"], reverse=True)
