"""The benchmark harness: every (backend, precision, graph, halting policy) run on the same puzzles, measured the
same way, and compared with one fp32 reference so that a faster run that answers differently shows up.

Latency is per solve: a batch's wall time over its size, one sample per batch after `warmup` untimed batches;
per step divides that by the batch's mean steps used. With `rounds` > 1 the puzzles are cut into that many slices and
the runs take turns, a slice each, in an order that rotates every round: a machine whose speed drifts (a shared VM,
a phone's governor, a laptop's turbo) then slows every run alike, and their ratios hold. numpy only on the device
side (no torch import here).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

import trm_edge
from trm_edge.api import builtin_data
from trm_edge.atomic import claim
from trm_edge.benchmarks.energy import Meter, idle_power_w, open_meter
from trm_edge.benchmarks.machine import machine_facts
from trm_edge.benchmarks.peak import peak, share
from trm_edge.errors import TRMEdgeError
from trm_edge.evaluate import evaluate, in_batches, score
from trm_edge.extras import installed
from trm_edge.halting import HaltPolicy, Solution
from trm_edge.tasks import Codec, Pair, read_puzzles
from trm_edge.views import solve_views

SCHEMA_VERSION = 1
Progress = Callable[[str, int, int | None], None]  # (what runs now, puzzles done, puzzles in all or None)


@dataclass(frozen=True)
class BenchOptions:
    """A bench apart from its bundles: the axes crossed (backend, precision, graph, halting policy, views), the
    puzzles (a file or 'builtin', the first `n`) and how each run is measured. Policies stay text: `fixed` and
    `learned` without max= take each bundle's own halt_max_steps. `energy` names a meter (energy.open_meter) or is
    one."""
    backends: Sequence[str] = ("ort",)
    precisions: Sequence[str] = ("fp32",)
    graphs: Sequence[str] = ("step",)
    halts: Sequence[str] = ("fixed", "learned:0")
    views: Sequence[int] = (1,)
    data: str | os.PathLike = "builtin"
    n: int | None = 64
    batch: int = 1
    threads: int | None = None
    warmup: int = 2
    energy: str | Meter | None = "auto"
    idle_seconds: float = 1.0
    rounds: int = 1

    def __post_init__(self):
        if self.batch < 1 or self.warmup < 0 or (self.n is not None and self.n < 1) or self.rounds < 1:
            raise TRMEdgeError(f"need batch >= 1, warmup >= 0, n >= 1 and rounds >= 1 (got batch={self.batch}, "
                               f"warmup={self.warmup}, n={self.n}, rounds={self.rounds})")


@dataclass(frozen=True)
class MeasureOptions:
    """How one run is measured: `warmup` untimed batches, then `batch` puzzles a solve call, each puzzle in up to
    `views` views; energy from `meter` less `idle_w` watts of idle power (run_bench opens and baselines it)."""
    batch: int = 1
    warmup: int = 2
    views: int = 1
    meter: Meter | None = None
    idle_w: float | None = None


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 (linear interpolation, as numpy) and the mean."""
    a = np.asarray(samples, dtype=np.float64)
    if not len(a):
        raise TRMEdgeError("no timed batches: need at least one puzzle")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean())}


def agreement(tokens: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of puzzles whose whole answer equals the reference's."""
    return float(np.mean(np.all(np.asarray(tokens) == np.asarray(reference), axis=1)))


def size_mb(path: str | os.PathLike) -> float:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size / 1e6
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window where Linux allows it (clear_refs 5), so each session gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process (since the last reset, where resetting works)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    try:
        import resource  # not on Windows

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return rss / 1e6 if sys.platform == "darwin" else rss * 1024 / 1e6  # bytes on macOS, KiB elsewhere


def load_pairs(codec: Codec, data: str, n: int | None) -> list[Pair]:
    files = builtin_data(codec.name) if data == "builtin" else [data]
    pairs = [pair for f in files for pair in read_puzzles(codec, os.fspath(f))]
    return pairs[:n] if n else pairs


def _default_factory():
    try:
        from trm_edge.runtimes import open_solver
    except ImportError as e:
        raise TRMEdgeError(f"no runtime adapters in this install ({e})") from None
    return open_solver


def _open_reference(factory, bundle: str, threads: int | None):
    """The fp32 step-graph solver answers are compared with: PyTorch where installed, else ONNX Runtime; also
    why the preferred one could not open, since the report must say what the reference really was."""
    errors = []
    for backend in (["torch"] if installed("torch") else []) + ["ort"]:
        try:
            return factory(bundle, backend=backend, graph="step", precision="fp32", threads=threads), errors
        except (TRMEdgeError, ImportError) as e:
            errors.append(f"{backend}: {e}")
    raise TRMEdgeError("cannot open the fp32 reference: " + "; ".join(errors))


def _graph_sizes(bundle: str) -> Callable[[str, str, str], float | None]:
    """backend, graph, precision -> MB of the files that engine loads (None where the bundle does not say)."""
    from trm_edge.bundle import Bundle
    from trm_edge.runtimes import ENGINES

    try:
        b = Bundle(bundle)
    except TRMEdgeError:
        return lambda *_: None

    def mb(backend: str, graph: str, precision: str) -> float | None:
        fmt = ENGINES.get(backend, (None,))[0]
        try:
            return b.graph_bytes(graph, precision, fmt) / 1e6
        except KeyError:  # the torch reference, or a form the bundle lacks
            return None
    return mb


def _close(solver) -> None:
    close = getattr(solver, "close", None)
    if callable(close):
        close()


def _routes(bundle: str, combos: list[tuple[str, str, str]], threads: int | None) -> list[tuple]:
    """(backend, precision, graph, threads, tuned) of each run: a combination with backend `auto` takes the route
    `trm-edge tune` chose for this bundle on this machine (where the precision and graph are fp32 and step, and no
    --threads is given: else, or with no choice made, ONNX Runtime's)."""
    from trm_edge.benchmarks.tune import pick
    from trm_edge.bundle import Bundle

    if not any(c[0] == "auto" for c in combos):
        return [(*c, threads, False) for c in combos]
    try:
        b = Bundle(bundle)
    except TRMEdgeError:
        return [("ort" if c[0] == "auto" else c[0], *c[1:], threads, False) for c in combos]
    runs = []
    for backend, precision, graph in combos:
        route, was_tuned = pick(b, backend, graph, precision, threads)
        runs.append((route.backend, route.precision, route.graph, route.threads, was_tuned))
    return list(dict.fromkeys(runs))


@dataclass(frozen=True)
class Timed:
    """What one run's timed batches gave on some puzzles (all of them, or a round's slice): `metrics` joins them."""
    sol: Solution
    per_solve: list[float]  # ms a solve, one sample a batch
    per_step: list[float]
    busy: list[float]  # seconds in solve calls
    seconds: float  # wall, warm-up excluded
    joules: float | None  # the meter's reading over `seconds` (None without a meter)


def timed_run(solver, codec: Codec, puzzles: np.ndarray, policy: HaltPolicy, how: MeasureOptions,
              advance: Callable[[int], None] | None = None) -> Timed:
    """Warm up, then solve `puzzles` (each in up to `how.views` views) in batches, timing each batch."""
    solve = partial(solve_views, solver.solve, codec, views=how.views)
    for k in range(how.warmup):
        solve(puzzles[np.arange(k * how.batch, (k + 1) * how.batch) % len(puzzles)], policy)
    per_solve, per_step, busy = [], [], []

    def timed(rows: slice):
        x = puzzles[rows]
        t0 = time.perf_counter()
        sol = solve(x, policy)
        dt = time.perf_counter() - t0
        busy.append(dt)
        per_solve.append(1000 * dt / len(x))
        per_step.append(per_solve[-1] / max(float(np.mean(sol.view_steps)), 1.0))
        return sol

    meter = how.meter
    e0, t0 = (meter.read() if meter else None), time.perf_counter()
    sol = in_batches(timed, len(puzzles), how.batch, advance)
    e1, t1 = (meter.read() if meter else None), time.perf_counter()
    return Timed(sol, per_solve, per_step, busy, t1 - t0, None if meter is None else e1 - e0)


def metrics(parts: Sequence[Timed], codec: Codec, puzzles: np.ndarray, labels: list, config, idle_w: float | None
            ) -> tuple[dict, Solution]:
    """A run's figures from its timed parts, which cover `puzzles` (with their `labels`) in order, and the joined
    Solution."""
    sol = Solution.concat([p.sol for p in parts])
    summary = score(codec, puzzles, labels, sol)
    summary["steps_histogram"] = {str(k): v for k, v in summary["steps_histogram"].items()}
    busy, seconds = sum(sum(p.busy) for p in parts), sum(p.seconds for p in parts)
    raw = net = None
    if all(p.joules is not None for p in parts):
        joules = sum(p.joules for p in parts)
        raw = joules / len(puzzles)
        net = raw if idle_w is None else (joules - idle_w * seconds) / len(puzzles)
    return dict(summary, latency_ms=percentiles([x for p in parts for x in p.per_solve]),
                latency_per_step_ms=percentiles([x for p in parts for x in p.per_step]),
                throughput_per_s=len(puzzles) / busy,
                # the model's FLOPs a step (TRMConfig.flops_per_step) times the steps every view ran, per busy second
                gflop_per_s=config.flops_per_step() * float(np.sum(sol.view_steps)) / busy / 1e9,
                energy_j_per_solve=net, energy_j_per_solve_raw=raw, seconds=seconds), sol


def measure(solver, codec: Codec, pairs: list[Pair], policy: HaltPolicy, how: MeasureOptions,
            advance: Callable[[int], None] | None = None) -> tuple[dict, Solution]:
    """One run on every puzzle at once: its metrics and the joined Solution."""
    puzzles = np.stack([p for p, _ in pairs]).astype(np.int64)
    return metrics([timed_run(solver, codec, puzzles, policy, how, advance)], codec, puzzles, [lab for _, lab in pairs],
                   solver.config, how.idle_w)


def run_bench(bundle: str | Sequence[str], options: BenchOptions = BenchOptions(),
              out_dir: str | os.PathLike | None = None, progress: Progress | None = None, solver_factory=None) -> dict:
    """Benchmark one or more bundles (e.g. one model exported at several depths) over the cross product of the
    axes; writes report.json/.md and plots to `out_dir` when given. Each run is compared with its own bundle's
    fp32 reference. `solver_factory` defaults to `trm_edge.runtimes.open_solver`."""
    o = options
    bundles = [os.fspath(bundle)] if isinstance(bundle, (str, os.PathLike)) else [os.fspath(b) for b in bundle]
    if not (bundles and o.backends and o.precisions and o.graphs and o.halts):
        raise TRMEdgeError("every axis (bundle, backend, precision, graph, halt) needs at least one value")
    for b in bundles:
        if not Path(b).exists():
            raise TRMEdgeError(f"{b}: no such bundle")
    if out_dir is not None:
        claim(out_dir, "report")
    factory = solver_factory or _default_factory()
    meter = open_meter(o.energy) if isinstance(o.energy, str) else o.energy
    combos = list(itertools.product(o.backends, o.precisions, o.graphs))
    runs, skipped, references, pairs, done, total = [], [], [], None, 0, 0

    def advance(label: str):
        def step(k: int) -> None:
            nonlocal done
            done += k
            if progress:
                progress(label, done, total)
        return step

    peaks = peak(announce=(lambda what: progress(what, 0, None)) if progress else None)  # each run's share of it
    with meter or contextlib.nullcontext():
        idle_w = idle_power_w(meter, o.idle_seconds) if meter else None
        for b in bundles:
            ref, ref_errors = _open_reference(factory, b, o.threads)
            codec, max_steps = ref.codec, ref.config.halt_max_steps
            depth = f"{ref.config.H_cycles},{ref.config.L_cycles}"
            policies = [HaltPolicy.parse(h, max_steps) for h in o.halts]
            if pairs is None:
                pairs = load_pairs(codec, o.data, o.n)
                total = len(pairs) * len(bundles) * (1 + len(combos) * len(policies) * len(o.views))
                first_codec = codec.name
            elif codec.name != first_codec:
                raise TRMEdgeError(f"{b}: a {codec.name} bundle; the bundles of one bench share a task "
                                   f"({bundles[0]} is {first_codec})")

            ref_policy = HaltPolicy.parse("fixed", max_steps)
            ref_summary, ref_sol = evaluate(lambda x, r=ref, p=ref_policy: r.solve(x, p), codec, pairs, o.batch,
                                            advance("fp32 reference"))
            references.append({"bundle": b, "depth": depth, "backend": ref.describe().get("backend", "?"),
                               "precision": "fp32", "graph": "step", "halt": str(ref_policy),
                               "exact_accuracy": ref_summary["exact_accuracy"], "mean_steps": ref_summary["mean_steps"],
                               "runtime": ref.describe(), "fallback_from": "; ".join(ref_errors) or None})
            _close(ref)
            ref = None  # free the reference session before measuring
            bundle_mb, graph_mb = size_mb(b), _graph_sizes(b)
            routes, rounds = _routes(b, combos, o.threads), min(o.rounds, len(pairs))
            slices = np.array_split(np.arange(len(pairs)), rounds)
            puzzles, labels = np.stack([p for p, _ in pairs]).astype(np.int64), [lab for _, lab in pairs]
            parts, opened = defaultdict(list), {}  # (route, policy, views) -> Timed a round; route -> its session
            for r in range(rounds):
                for route in routes[r % len(routes):] + routes[:r % len(routes)]:  # each round another goes first
                    backend, precision, graph, threads, _ = route
                    if r and route not in opened:  # it could not start in round 1
                        continue
                    reset_peak_rss()
                    try:
                        solver = factory(b, backend=backend, graph=graph, precision=precision, threads=threads)
                    except (TRMEdgeError, ImportError) as e:
                        skipped.append({"backend": backend, "precision": precision, "graph": graph, "reason": str(e),
                                        "bundle": b})
                        advance(f"skipped {backend}/{precision}/{graph}")(len(pairs) * len(policies) * len(o.views))
                        continue
                    for policy, k in itertools.product(policies, o.views):
                        label = (f"{backend}/{precision}/{graph} {policy} x{k}" + (f" d{depth}" if len(bundles) > 1
                                 else "") + (f", round {r + 1} of {rounds}" if rounds > 1 else ""))
                        parts[route, policy, k].append(timed_run(solver, codec, puzzles[slices[r]], policy,
                                                                 MeasureOptions(o.batch, o.warmup, k, meter, idle_w),
                                                                 advance(label)))
                    seen = opened.get(route, {"init_ms": float(solver.init_ms), "peak_rss_mb": None})  # round 1's
                    rss = max(filter(None, (seen["peak_rss_mb"], peak_rss_mb())), default=None)  # the largest round's
                    opened[route] = dict(seen, info=solver.describe(), config=solver.config, peak_rss_mb=rss)
                    _close(solver)
            for route in (r for r in routes if r in opened):
                backend, precision, graph, threads, was_tuned = route
                s = opened[route]
                for policy, k in itertools.product(policies, o.views):
                    figures, sol = metrics(parts[route, policy, k], codec, puzzles, labels, s["config"], idle_w)
                    runs.append({
                        "backend": backend, "precision": precision, "graph": graph, "halt": str(policy), "views": k,
                        "bundle": b, "depth": depth,
                        "tuned": was_tuned,
                        "batch": o.batch, "threads": threads if threads is not None else s["info"].get("threads"),
                        "warmup": o.warmup, "rounds": rounds, **figures,
                        "peak_share": share(figures["gflop_per_s"], precision, peaks),
                        "agreement_with_fp32": agreement(sol.tokens, ref_sol.tokens),
                        "init_ms": s["init_ms"], "peak_rss_mb": s["peak_rss_mb"], "bundle_mb": bundle_mb,
                        "graph_mb": graph_mb(backend, graph, precision),
                        "energy_source": meter.source if meter else "none",
                        "energy_estimated": bool(meter and meter.estimate), "idle_power_w": idle_w,
                        "runtime": s["info"],
                    })
    if not runs:
        raise TRMEdgeError("no run could start: " + "; ".join(
            f"{s['backend']}/{s['precision']}/{s['graph']}: {s['reason']}" for s in skipped))
    report = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "trm-edge", "version": trm_edge.__version__},
        "bundle": bundles[0], "bundle_mb": size_mb(bundles[0]), "bundles": bundles,
        "data": {"source": os.fspath(o.data), "n": len(pairs), "labelled": sum(lab is not None for _, lab in pairs)},
        "machine": machine_facts(), "reference": references[0], "references": references,
        "peak": {k: peaks[k] for k in ("fp32", "int8", "measured", "cached")},
        "energy": {"source": meter.source if meter else "none", "estimate": bool(meter and meter.estimate),
                   "idle_power_w": idle_w, "idle_seconds": float(o.idle_seconds) if meter else 0.0},
        "runs": runs, "skipped": skipped,
    }
    if out_dir is not None:
        from trm_edge.benchmarks.report import write_report

        write_report(report, out_dir)
    return report
