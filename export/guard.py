"""The int8 accuracy guard, once for every engine: the held-out draws, the paired judgement, the side-by-side speed
check, and the ladder each format climbs.

`int8` makes one promise on every engine: the fastest route that passes the guard on this engine. What that is
differs by engine and is measured (benchmarks/RESULTS.md): ONNX Runtime takes int8-static where `finetune --qat`
learned the ranges and int8-rows otherwise (export.quantize.route_of), LiteRT takes int8-dynamic, OpenVINO has one
route (NNCF's calibrated static int8, `nncf-int8`). The manifest's int8 section names the mode asked for (`mode`)
and what was built: the `route` and `format`, the graph's scheme, on every engine.

The guard compares a candidate with fp32 on held-out puzzles (exact-solve rate, token accuracy, agreement, mean
steps under the bundle's halting policy) and passes it while the paired exact-solve drop fits the budget. A format
offers its candidates as a ladder of rungs, each keeping more in float than the one before; `ladder` builds and
judges them in order and ships the first that passes, or refuses the export (CheckFailed: no bundle is written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from trm_edge.errors import CheckFailed
from trm_edge.evaluate import paired_drop, paired_interval, paired_score, row_scores, summarize
from trm_edge.export.options import GUARD_PUZZLES
from trm_edge.halting import Solution
from trm_edge.progress import counting, duration

if TYPE_CHECKING:
    from trm_edge.config import TRMConfig
    from trm_edge.export.formats import Context
    from trm_edge.runtimes.solver import Solver

T = TypeVar("T")
ALPHA = 0.05  # the sequential rule's false-accept rate at a drop equal to the budget, over all its looks
PIECE = 64  # held-out puzzles solved between two glances at the clock (the solver's slots), at most
CALL_TFLOP = 1.0  # and fewer where one step over them costs more (ARC's 239 GFLOP a puzzle: 4, not 8 GB at 64)
CUT_SHORT = 3  # failed rungs that --guard-minutes ended undecided before the ladder stops (ARC's size: ~5 min
# each, of 13 rungs; every further one would be judged on as few puzzles)


def heldout_plan(k: int, n: int, generated: bool) -> tuple[int, int] | None:
    """(puzzles, seed) of the k-th held-out draw, each its own seed: `n` (--heldout) puzzles, then half as many a draw
    (the guard draws more while a decision is close), or None once GUARD_PUZZLES times `n` are drawn or where the task
    cannot generate more (ARC's tasks are a fixed set)."""
    half = max(1, n // 2)
    if k and (not generated or n + (k - 1) * half >= GUARD_PUZZLES * n):
        return None
    return (n, 2) if k == 0 else (half, 100 + k)


def solved_rows(codec, puzzles: np.ndarray, sol: Solution, fp32_tokens: np.ndarray) -> np.ndarray:
    """Per puzzle: solved by the task's rules, or, for a task without rules (ARC, generic), equal to the fp32
    answer."""
    return row_scores(codec, puzzles, [None] * len(puzzles) if codec.rules else list(fp32_tokens), sol.tokens)[0]


def looks(n: int, generated: bool) -> list[int]:
    """How many held-out puzzles the guard has solved when it looks at the drop: half the first draw, the first draw,
    then after each further draw that heldout_plan gives (256, 512, 768, ..., 2,048 by default)."""
    sizes, k = [n // 2] if n > 1 else [], 0
    while (plan := heldout_plan(k, n, generated)) is not None:
        sizes.append((sizes[-1] if k else 0) + plan[0])
        k += 1
    return sizes


def boundaries(plan: list[int], n: int) -> list[float]:
    """The z of the interval the guard decides by at each look of `plan`. The look at the first draw's end (`n`)
    spends ALPHA / 2, as strict as a 95% interval there; the other looks share the other half (Bonferroni), so that
    a candidate whose drop is the budget passes by the interval at most ALPHA of the time over all its looks."""
    others = max(len(plan) - 1, 1)
    return [NormalDist().inv_cdf(1 - ALPHA / 2 / (1 if look == n else others)) for look in plan]


def judge(ctx: Context, solve: Callable[..., Solution], what: str) -> dict:
    """The guard's figures for one int8 candidate (`solve(puzzles, advance=...)`: its answers, `advance(n)` as
    puzzles finish), paired with fp32 on the held-out draws (Context.heldout_draw), `piece` puzzles at a time.

    Sequential: at each of `looks` it decides as soon as the drop's interval at `boundaries` clears the budget (pass)
    or lies above it (fail), by the score test of a drop at the budget (evaluate.paired_score). A clear case stops
    at half the first draw; a close call rests on up to GUARD_PUZZLES draws' worth instead of one draw's noise (one
    graph measured +1.17 pp on 512 puzzles and +0.3 on 1,000). When the puzzles run out, or --guard-minutes before
    them, undecided, the point estimate decides, and the figures say so (`decided_by`, `capped`): that decision has
    no stated error."""
    quant = ctx.options.quant
    budget, plan = quant.max_drop, looks(quant.heldout, ctx.codec.generated)
    zs, cap = boundaries(plan, quant.heldout), 60 * quant.guard_minutes if quant.guard_minutes else None
    take, t0, most = _held_out(ctx), time.perf_counter(), piece(ctx.model.config)
    pace = ctx.guard_forecast["seconds_per_puzzle"]  # a paired puzzle's seconds: the forecast's, then as measured
    puzzles, fp32, got, seen, capped = [], [], [], [], False
    for look, z in zip(plan, zs):
        solved = sum(map(len, puzzles))
        advance = counting(ctx.status, f"{what}: guard", f"solves (fp32 and int8 on {look} held-out puzzles)",
                            2 * solved, 2 * look)
        while solved < look:
            room = most if cap is None else int((cap - (time.perf_counter() - t0)) / pace)
            if capped := room < 1 and bool(puzzles):
                break
            if (taken := take(min(look - solved, most, max(room, 1)))) is None:
                break
            k, start, draw = taken
            puzzles.append(draw)
            fp32.append(ctx.heldout_fp32(k, start, draw, advance))
            got.append(solve(draw, advance=advance))
            solved += len(draw)
            pace = (time.perf_counter() - t0) / solved
        figs = guard_figures(Solution.concat(fp32), Solution.concat(got), np.concatenate(puzzles), ctx.codec)
        score = float(paired_score(figs["lost"], figs["gained"], figs["n"], budget / 100))
        seen.append(figs["n"])
        if (clear := abs(score) >= z) or solved < look:
            break
    lo, hi = paired_interval(figs["lost"], figs["gained"], figs["n"], z)
    passed = score <= -z if clear else figs["exact_drop_pp"] <= budget
    decided = (f"the interval at look {len(seen)} of {len(plan)} (z {z:.2f}; a drop at the budget passes by the "
               f"interval at most {ALPHA:.0%} of the time over all the looks)" if clear else
               f"the point estimate: --guard-minutes {quant.guard_minutes:g} ended the guard undecided" if capped else
               "the point estimate (the interval straddles the budget on every puzzle drawn)")
    return dict(figs, decided_by=decided, passed=passed, decision_interval_pp=[round(lo, 2), round(hi, 2)],
                looks=seen, capped=capped, seconds=round(time.perf_counter() - t0, 1))


def piece(config: TRMConfig) -> int:
    """Held-out puzzles solved at once: PIECE, or as many as one step of CALL_TFLOP allows (at least one)."""
    return max(1, min(PIECE, int(CALL_TFLOP * 1e12 // config.flops_per_step())))


def forecast(ctx: Context) -> dict:
    """What the guard will cost here, said before it starts: the fp32 step timed on a piece of held-out puzzles, times
    the steps a solve takes under the bundle's policy (the reference's mean on the verification puzzles), for fp32
    and int8 alike (int8 is as fast or faster: an upper bound), at each look. A policy under which no row halts
    early is named: every solve then costs the step cap."""
    from trm_edge.export.verify import replay, step_seconds

    quant, solver = ctx.options.quant, ctx.onnx_solvers["step"]
    batch = ctx.heldout[:piece(ctx.model.config)]
    steps = float(replay(ctx.reference_steps, ctx.policy).steps.mean())
    per = 2 * steps * step_seconds(solver, batch)
    plan = looks(quant.heldout, ctx.codec.generated)
    text = (f"int8 guard: {plan[0]:,} to {plan[-1]:,} held-out puzzles x {steps:.1f} steps x 2 precisions, "
            f"~{per:.2g} s a puzzle here: {duration(per * plan[0])} to {duration(per * plan[-1])}")
    if (cap := 60 * (quant.guard_minutes or 0)) and per * plan[-1] > cap:
        text += f"; --guard-minutes {quant.guard_minutes:g} stops it after about {max(1, int(cap / per)):,} a candidate"
    never = ctx.policy.kind != "fixed" and steps >= ctx.policy.max_steps
    return {"seconds_per_puzzle": per, "mean_steps": round(steps, 2), "text": text,
            "warning": f"no verification puzzle halted before the {ctx.policy.max_steps}-step cap under {ctx.policy} "
                       f"(random weights?): every solve costs all {ctx.policy.max_steps} steps" if never else None}


def _held_out(ctx: Context) -> Callable[[int], tuple[int, int, np.ndarray] | None]:
    """`take(size)`: the next `size` held-out puzzles (fewer at a draw's end) as (draw, start, puzzles); None once
    the plan's draws are spent."""
    k = start = 0

    def take(size: int) -> tuple[int, int, np.ndarray] | None:
        nonlocal k, start
        while (draw := ctx.heldout_draw(k)) is not None and start >= len(draw):
            k, start = k + 1, 0
        if draw is None:
            return None
        start += size
        return k, start - size, draw[start - size:start]

    return take


def guard_figures(fp32: Solution, q: Solution, puzzles: np.ndarray, codec) -> dict:
    """exact-solve rate by the task's rules (ARC: against the fp32 answers), token agreement, mean steps."""
    ex32, ex8 = (solved_rows(codec, puzzles, s, fp32.tokens) for s in (fp32, q))
    tok = (q.tokens == fp32.tokens).mean(-1)
    s32, s8 = summarize(ex32, tok, fp32.steps), summarize(ex8, tok, q.steps)
    paired = paired_drop(ex32, ex8)
    return {"n": len(puzzles), "fp32_exact": s32["exact_accuracy"], "int8_exact": s8["exact_accuracy"],
            "exact_drop_pp": paired["drop_pp"], "drop_ci95_pp": paired["ci95_pp"], "lost": paired["lost"],
            "gained": paired["gained"],
            "token_agreement": float(tok.mean()), "answer_agreement": float((tok == 1).mean()),
            "fp32_mean_steps": s32["mean_steps"], "int8_mean_steps": s8["mean_steps"]}


@dataclass(frozen=True)
class Rung(Generic[T]):
    """One candidate of a format's ladder, built only when every rung before it failed the guard."""
    what: str  # its name in the status lines while it is judged
    keeps: str  # what it keeps in float, as the refusal says it: "the heads in float"
    record: dict  # its attempt's keys in the manifest, before the guard's figures: {"float_modules": [...]}
    build: Callable[[], T]  # quantizes; gives what the judge solves with (and the format keeps if it ships)
    ships: bool = True  # False: nothing is left in int8; judged like the others, never shipped


@dataclass(frozen=True)
class Climbed(Generic[T]):
    """The rung that passed, what its `build` gave, and every attempt (the manifest's `attempts`)."""
    rung: Rung[T]
    built: T
    tries: list[dict]


def ladder(rungs: Iterable[Rung[T]], judged: Callable[[T, str], dict], who: str, budget: float,
           count: bool = False) -> Climbed[T]:
    """Build and judge `rungs` in order (`judged(built, rung.what)`: the guard's figures, as `judge` gives them) and
    return the first that passes and ships. `rungs` may be a generator: it is advanced only after the rung before
    failed. It stops after CUT_SHORT failed rungs that --guard-minutes ended undecided. Else CheckFailed: the first
    rung's drop, the last shipping rung's, the budget and fp32's rate on the last attempt (`count`: and on how many
    held-out puzzles)."""
    tried: list[tuple[Rung[T], dict]] = []
    cut = 0
    for rung in rungs:
        built = rung.build()
        figs = judged(built, rung.what)
        tried.append((rung, {**rung.record, **figs}))
        if figs["passed"] and rung.ships:
            return Climbed(rung, built, [t for _, t in tried])
        if (cut := sum(bool(t.get("capped")) for _, t in tried)) >= CUT_SHORT:
            break
    (first, first_try), final = tried[0], tried[-1][1]
    last, last_try = next(((r, t) for r, t in reversed(tried) if r.ships), tried[-1])
    on = f" on {final['n']} held-out puzzles" if count else ""
    stop = (f"; stopped after {cut} attempts that --guard-minutes cut short (raise it to judge more puzzles a "
            "rung, or export without --quantize)" if cut >= CUT_SHORT else "")
    raise CheckFailed(f"{who} accuracy guard failed: exact-solve drop {first_try['exact_drop_pp']:.2f} pp with "
                      f"{first.keeps}, still {last_try['exact_drop_pp']:.2f} pp with {last.keeps}; budget "
                      f"{budget:g} pp (fp32 {final['fp32_exact']:.1%}{on}){stop}; no bundle written")


def guard_record(ctx: Context, tries: list[dict], speed: dict, warnings: list[str]) -> dict:
    """The manifest keys every format's int8 section shares: the guard's last attempt (what shipped) and every
    attempt, on how many held-out puzzles, under which policy, budget and time cap, what it was forecast to cost,
    and the side-by-side speed check. A decision the time cap forced, and a model that never halts, are warned of."""
    last, told = tries[-1], ctx.guard_forecast
    if last["capped"]:
        lo, hi = last["decision_interval_pp"]
        warnings = [*warnings, f"int8 guard: --guard-minutes {ctx.options.quant.guard_minutes:g} ended it undecided "
                    f"on {last['n']} held-out puzzles: the point estimate ({last['exact_drop_pp']:+.2f} pp) decided, "
                    f"its interval [{lo:g}, {hi:g}] does not clear the {ctx.options.quant.max_drop:g} pp budget; "
                    "--guard-minutes 0 decides by the interval"]
    return {"heldout_puzzles": last["n"], "policy": str(ctx.policy), "max_drop_pp": ctx.options.quant.max_drop,
            "guard_minutes": ctx.options.quant.guard_minutes, "forecast": told["text"],
            "forecast_s_per_puzzle": round(told["seconds_per_puzzle"], 4), "guard": last,
            "attempts": tries, "speed": speed, "warnings": [*warnings, *filter(None, [told["warning"]])]}


def speed_check(mode: str, solver32: Solver, solver8: Solver, feed: dict, what: str, engine: str = ""
                ) -> tuple[dict, list[str]]:
    """Step time at batch 1, fp32 beside int8, and a warning when the guarded int8 graph does not pay."""
    ms32, ms8 = step_ms([solver32, solver8], feed)
    speed = {"step_ms_b1_fp32": ms32, f"step_ms_b1_{mode}": ms8, "speedup": round(ms32 / ms8, 2)}
    warnings = []
    if speed["speedup"] < 1:  # what the budget left quantized cannot pay for its Q/DQ and dequantized weights
        warnings.append(f"{engine}{mode}: the guarded step graph is {1 / speed['speedup']:.1f}x SLOWER than fp32 at "
                        f"batch 1 ({what}); use the fp32 graph")
    return speed, warnings


def step_ms(solvers: list[Solver], feed: dict, blocks: int = 5, runs: int = 4, settle: int = 2) -> list[float]:
    """Median time of one step at batch 1 for each solver, measured in alternating blocks so that a shared
    machine's drift falls on all of them alike (here fp32's step took 26 ms in one block and 44 in another a second
    later; timed one after the other, two exports of the same graphs measured int8 at 1.03x and 1.26x fp32 where
    the bench gave 0.82x). Each block's first `settle` runs are not timed (a lone solver's first block only): the
    other session's threads still spin for about two runs after a switch. A side-by-side check, not a benchmark:
    see `trm-edge bench`."""
    row = {k: v[:1] for k, v in feed.items()}
    times = [[] for _ in solvers]
    for b in range(blocks):
        skip = settle if b == 0 or len(solvers) > 1 else 0  # one solver alone never switches after its first block
        for t, solver in zip(times, solvers):
            for i in range(skip + runs):
                t0 = time.perf_counter()
                solver.run(row)
                if i >= skip:
                    t.append(time.perf_counter() - t0)
    return [round(1000 * float(np.median(t)), 3) for t in times]
