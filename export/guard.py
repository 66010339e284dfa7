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

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from trm_edge.errors import CheckFailed, TRMEdgeError
from trm_edge.evaluate import paired_drop, row_scores, summarize
from trm_edge.export.options import GUARD_PUZZLES
from trm_edge.halting import Solution

if TYPE_CHECKING:
    from trm_edge.export.formats import Context
    from trm_edge.runtimes.solver import Solver

T = TypeVar("T")


def heldout_plan(k: int, n: int, generated: bool) -> tuple[int, int] | None:
    """(puzzles, seed) of the k-th held-out draw, each its own seed: `n` (--heldout) puzzles, then half as many a draw
    (the guard draws more while a decision is close), or None once GUARD_PUZZLES times `n` are drawn or where the task
    cannot generate more (ARC's tasks are a fixed set)."""
    half = max(1, n // 2)
    if k and (not generated or n + (k - 1) * half >= GUARD_PUZZLES * n):
        return None
    return (n, 2) if k == 0 else (half, 100 + k)


def solved_rows(codec, puzzles: np.ndarray, sol: Solution, fp32_tokens: np.ndarray) -> np.ndarray:
    """Per puzzle: solved by the task's rules, or, for a task without rules (ARC), equal to the fp32 answer."""
    try:
        return row_scores(codec, puzzles, [None] * len(puzzles), sol)[0]
    except TRMEdgeError:
        return row_scores(codec, puzzles, list(fp32_tokens), sol)[0]


def judge(ctx: Context, solve: Callable[..., Solution], what: str) -> dict:
    """The guard's figures for one int8 candidate (`solve(puzzles, advance=...)`: its answers, `advance(n)` as
    puzzles finish), beside fp32 on the first held-out draw and, while the drop's 95% interval straddles the budget, on
    further (half-size) draws while Context.heldout_draw gives them: a close call then rests on more puzzles instead
    of one draw's noise (one graph measured +1.17 pp on 512 puzzles and +0.3 on 1,000), and half-size draws stop it
    as soon as the interval clears. `passed`: the drop fits the budget, by the interval when it clears the budget
    on one side, else by the point estimate on every puzzle drawn."""
    budget = ctx.options.quant.max_drop
    puzzles, fp32, got = [], [], []
    decided = "the point estimate (the interval straddles the budget)"
    for k in itertools.count():
        if (draw := ctx.heldout_draw(k)) is None:
            break
        n = sum(map(len, puzzles)) + len(draw)
        tail = f"{len(draw)} more held-out (close call, {n} in all)" if k else f"{len(draw)} held-out"
        puzzles.append(draw)
        fp32.append(ctx.heldout_fp32(k, _counting(ctx.status, f"{what}: fp32", tail)))
        got.append(solve(draw, advance=_counting(ctx.status, f"{what}: int8", tail)))
        figs = guard_figures(Solution.concat(fp32), Solution.concat(got), np.concatenate(puzzles), ctx.codec)
        lo, hi = figs["drop_ci95_pp"]
        if hi <= budget or lo > budget:
            decided = "the 95% interval"
            break
    return dict(figs, decided_by=decided, passed=figs["exact_drop_pp"] <= budget)


def _counting(status: Callable[[str], None], head: str, tail: str) -> Callable[[int], None]:
    """`advance(n)` for a solve of minutes: the status line counts the puzzles done ("HEAD 300/TAIL")."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        status(f"{head} {done}/{tail}")

    advance(0)
    return advance


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
    failed. Else CheckFailed: the first rung's drop, the last shipping rung's, the budget and fp32's rate on the
    last attempt (`count`: and on how many held-out puzzles)."""
    tried: list[tuple[Rung[T], dict]] = []
    for rung in rungs:
        built = rung.build()
        figs = judged(built, rung.what)
        tried.append((rung, {**rung.record, **figs}))
        if figs["passed"] and rung.ships:
            return Climbed(rung, built, [t for _, t in tried])
    (first, first_try), final = tried[0], tried[-1][1]
    last, last_try = next(((r, t) for r, t in reversed(tried) if r.ships), tried[-1])
    on = f" on {final['n']} held-out puzzles" if count else ""
    raise CheckFailed(f"{who} accuracy guard failed: exact-solve drop {first_try['exact_drop_pp']:.2f} pp with "
                      f"{first.keeps}, still {last_try['exact_drop_pp']:.2f} pp with {last.keeps}; budget "
                      f"{budget:g} pp (fp32 {final['fp32_exact']:.1%}{on}); no bundle written")


def guard_record(ctx: Context, tries: list[dict], speed: dict, warnings: list[str]) -> dict:
    """The manifest keys every format's int8 section shares: the guard's last attempt (what shipped) and every
    attempt, on how many held-out puzzles, under which policy and budget, and the side-by-side speed check."""
    return {"heldout_puzzles": tries[-1]["n"], "policy": str(ctx.policy), "max_drop_pp": ctx.options.quant.max_drop,
            "guard": tries[-1], "attempts": tries, "speed": speed, "warnings": warnings}


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
                solver.adapter.run(row)
                if i >= skip:
                    t.append(time.perf_counter() - t0)
    return [round(1000 * float(np.median(t)), 3) for t in times]
