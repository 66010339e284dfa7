"""Small-batch overhead (issue 39 item 5): one step at batch 1 on each engine, split where the engine can say it into
its matrix products, its other kernels and the time outside any kernel (session entry, feeds, thread wake-ups), and
timed under the knobs each engine offers against that overhead, in interleaved rounds; and what ORT's spinning
workers cost the engine that runs right after it.

ONNX Runtime's split comes from its profiler (ort_profile), OpenVINO's from its per-node counters (PERF_COUNT);
LiteRT's Python interpreter has no per-op timer, so only its wall time is shown. The knobs: ORT's intra-op spinning
and graph optimisation level, OpenVINO's performance hint and CPU pinning, LiteRT's threads.

    python -m benchmarks.studies.overhead BUNDLE [--rounds 5] [--runs 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from benchmarks.studies.ort_profile import profile, step_feed
from trm_edge.bundle import Bundle
from trm_edge.runtimes import open_solver

THREADS = 2
OV_GEMM = {"FullyConnected", "MatMul"}


def ort_knob(b: Bundle, feed: dict, spinning: bool, level: str) -> Callable[[], object]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = THREADS, 1, 4
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level.upper()}")
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    sess = ort.InferenceSession(str(b.graph_file("step", "fp32")), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feed)


def ov_request(b: Bundle, hint: str, pinning: bool, counters: bool = False):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": THREADS,
              "ENABLE_CPU_PINNING": pinning, "PERF_COUNT": counters}
    compiled = core.compile_model(core.read_model(str(b.file(b.formats()["openvino"]["step"]["fp32"]))), "CPU",
                                  config)
    return compiled.create_infer_request()


def ov_split(b: Bundle, feed: dict, runs: int) -> dict:
    """OpenVINO's per-node counters of the last of `runs` steps, beside the median wall time of the steps."""
    request, walls = ov_request(b, "LATENCY", False, counters=True), []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feed)
        walls.append(1000 * (time.perf_counter() - t0))
    per_type: dict[str, float] = defaultdict(float)
    for p in request.profiling_info:
        per_type[p.node_type] += p.real_time.total_seconds() * 1000
    wall, kernels = float(np.median(walls)), sum(per_type.values())
    gemm = sum(v for k, v in per_type.items() if k in OV_GEMM)
    return {"step_ms": round(wall, 3), "groups_ms": {"gemm": round(gemm, 3), "other kernels": round(kernels - gemm, 3),
                                                    "outside kernels": round(wall - kernels, 3)},
            "ops_ms": {k: round(v, 3) for k, v in sorted(per_type.items(), key=lambda kv: -kv[1])}}


def knobs(b: Bundle, feed: dict) -> dict[str, Callable[[], object]]:
    """Each engine's candidates; its default first."""
    engines = b.formats()
    out = {f"ort spinning, {level}": ort_knob(b, feed, True, level) for level in ("all", "extended", "basic")}
    out["ort no spinning, all"] = ort_knob(b, feed, False, "all")
    if "openvino" in engines:
        for hint, pin in (("LATENCY", False), ("LATENCY", True), ("THROUGHPUT", False)):
            request = ov_request(b, hint, pin)
            out[f"openvino {hint.lower()}{', pinned' if pin else ''}"] = lambda r=request: r.infer(feed)
    if "litert" in engines:
        for threads in (THREADS, 1):
            solver = open_solver(b, "litert", "step", "fp32", threads)
            out[f"litert {threads} thread(s)"] = lambda s=solver: s.adapter.run(feed)
    return out


def rounds(candidates: dict[str, Callable[[], object]], n_rounds: int, runs: int) -> dict[str, list[float]]:
    """Median ms of `runs` calls per candidate per round, the candidates rotated each round, a pause between."""
    for call in candidates.values():
        for _ in range(10):
            call()
    names, out = list(candidates), {k: [] for k in candidates}
    for r in range(n_rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                candidates[name]()
                times.append(1000 * (time.perf_counter() - t0))
            out[name].append(float(np.median(times)))
            time.sleep(0.2)
    return out


def after_ort(b: Bundle, feed: dict, pairs: int = 25) -> dict:
    """What ORT's spinning costs whoever runs next: a 2-thread LiteRT step alone, and right after (or a pause after)
    an ORT step, with ORT's intra-op spinning on and off; median ms."""
    litert = open_solver(b, "litert", "step", "fp32", THREADS)
    out = {}
    for spinning in (True, False):
        ort_step = ort_knob(b, feed, spinning, "all")
        for _ in range(10):
            ort_step(), litert.adapter.run(feed)
        for pause in (None, 0.0, 0.01, 0.03, 0.1):
            times = []
            for _ in range(pairs):
                if pause is not None:
                    ort_step()
                    time.sleep(pause)
                t0 = time.perf_counter()
                litert.adapter.run(feed)
                times.append(1000 * (time.perf_counter() - t0))
            what = "alone" if pause is None else f"{1000 * pause:.0f} ms after an ORT step"
            out[f"ORT spinning {'on' if spinning else 'off'}: LiteRT {what}"] = round(float(np.median(times)), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    b = Bundle(a.bundle)
    feed = step_feed(b)
    splits = {"ort": profile(a.bundle, "fp32", 100, THREADS)}
    if "openvino" in b.formats():
        splits["openvino"] = ov_split(b, feed, 100)
    timed = rounds(knobs(b, feed), a.rounds, a.runs)
    res = {"flops_per_step": b.config.flops_per_step(), "splits": splits,
           "knobs_ms": {k: {"median": round(float(np.median(v)), 3), "rounds": [round(x, 3) for x in v]}
                        for k, v in timed.items()},
           "after_ort_ms": after_ort(b, feed) if "litert" in b.formats() else {}}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for engine, s in splits.items():
        parts = ", ".join(f"{k} {v:.2f} ms ({100 * v / s['step_ms']:.0f}%)" for k, v in s["groups_ms"].items())
        print(f"{engine}: {s['step_ms']:.2f} ms a step at batch 1: {parts}")
    for k, v in res["knobs_ms"].items():
        print(f"{k:<28} {v['median']:7.2f} ms  (rounds {' '.join(f'{x:.2f}' for x in v['rounds'])})")
    for k, v in res["after_ort_ms"].items():
        print(f"{k:<52} {v:7.2f} ms")


if __name__ == "__main__":
    main()
