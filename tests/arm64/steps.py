"""One step at a time, from the same inputs on both machines: how int8 on aarch64 compares with int8 on x86.

A solve feeds each step the previous step's output, so in int8 one activation on the other side of a rounding
boundary can grow, over 16 recursive steps, into another answer: CI met one (int8-dynamic solved a puzzle on x86 in
4 steps and left it unsolved on aarch64 after 16). Here x86 records the carry it feeds each step, and aarch64 and
fp32 replay those very inputs, so each step is compared alone. Measured so (2026-12-04, bundled model): ORT's int8
is not bit-portable between the ISAs, even from identical inputs the two int8 steps differ by about 60% of the
quantization's own error (rms), yet each is as close to fp32 as the other (int8-rows: carry rms 1.14e-2 on both,
cells agreeing with fp32 99.0% and 99.1%). So the check is that aarch64's int8 is as accurate as x86's against fp32,
not equal to it.

    steps.py record BUNDLE PRECISION PUZZLES STEPS OUT.npz   # x86: run STEPS steps a puzzle, keep inputs, outputs
    steps.py replay BUNDLE PRECISION X86.npz OUT.npz         # the same steps from x86's inputs

numpy + trm_edge's runtime side only (the emulated install has no torch). Batch 1, one thread: as the solves.
"""

from __future__ import annotations

import sys

import numpy as np

from trm_edge.bundle import Bundle
from trm_edge.runtimes import open_solver
from trm_edge.tasks import read_puzzles


def _solver(bundle: str, precision: str):
    return open_solver(Bundle(bundle), precision=precision, threads=1)


def record(bundle: str, precision: str, puzzles: str, steps: int, out: str) -> None:
    s = _solver(bundle, precision)
    rows = [tokens for tokens, _ in read_puzzles(s.codec, puzzles)]
    keep: dict[str, list] = {k: [] for k in ("tokens", "z_H", "z_L", "z_H_out", "z_L_out", "pred", "q_halt")}
    for tokens in rows:
        t, pid = tokens[None].astype(np.int64), np.zeros(1, np.int64)
        z_H, z_L = s.carry(1)
        for _ in range(steps):
            h, l, pred, q, _ = s.step(t, pid, z_H, z_L)
            for k, v in zip(keep, (t, z_H, z_L, h, l, pred, q)):
                keep[k].append(np.asarray(v))
            z_H, z_L = h, l
    np.savez(out, **{k: np.concatenate(v) for k, v in keep.items()})


def replay(bundle: str, precision: str, x86: str, out: str) -> None:
    s = _solver(bundle, precision)
    with np.load(x86) as x:
        outs = [s.step(x["tokens"][i:i + 1], np.zeros(1, np.int64), x["z_H"][i:i + 1], x["z_L"][i:i + 1])
                for i in range(len(x["tokens"]))]
    np.savez(out, **{k: np.concatenate([o[j] for o in outs]) for j, k in enumerate(("z_H_out", "z_L_out", "pred",
                                                                                       "q_halt"))})


def error(ref: str, other: str) -> dict:
    """How far one replay's steps are from another's (fp32's): carry rms as a share of the carry's largest
    magnitude, halting logit rms, and the share of predicted cells that agree."""
    with np.load(ref) as r, np.load(other) as o:
        carry = max(float(np.sqrt(((o[k] - r[k]) ** 2).mean()) / np.abs(r[k]).max()) for k in ("z_H_out", "z_L_out"))
        return {"calls": int(len(r["pred"])), "carry_rms": carry,
                "q_rms": float(np.sqrt(((o["q_halt"] - r["q_halt"]) ** 2).mean())),
                "cells_agree": float((o["pred"] == r["pred"]).mean())}


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "record":
        record(args[0], args[1], args[2], int(args[3]), args[4])
    elif cmd == "replay":
        replay(*args)
    else:
        sys.exit(f"steps.py: unknown command {cmd!r} (record, replay)")
