"""Seconds per optimizer step of the bundled recipe on this machine, fp32 against bf16 autocast, batch 32 and 64, side
by side in one run (the machine is noisy; compare the rows, not sessions).

`python -m benchmarks.studies.train_pace` — each row trains 20 and 60 steps from scratch on 400 puzzles and takes
the difference, so set-up and the first steps' warm-up cancel out. Whether autocast_bf16 pays depends on the CPU:
it needs AVX-512 BF16 (or a GPU).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time

ROWS = ({}, {"autocast_bf16": True}, {"batch_size": 64, "carry_bank": 1024},
        {"batch_size": 64, "carry_bank": 1024, "autocast_bf16": True})


def pace(puzzles, solutions, **overrides) -> float:
    from trm_edge.training import sources
    from trm_edge.training.recipes import SUDOKU_DEFAULT
    from trm_edge.training.trainer import train

    took = []
    for steps in (20, 60):
        cfg = dataclasses.replace(SUDOKU_DEFAULT, steps=steps, warmup_steps=10, eval_every=10**9,
                                  checkpoint_every=10**9, **overrides)
        stream = sources.sudoku_stream(puzzles, solutions, cfg.batch_size, 0)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            train(cfg, tmp, stream, log=lambda rec: None)
            took.append(time.perf_counter() - t)
    return (took[1] - took[0]) / 40


if __name__ == "__main__":
    from trm_edge.training import sources

    p, s = sources.sudoku_pool([[24, 29, 400]], 5)
    for row in ROWS:
        print(f"{row or 'fp32, batch 32'}: {pace(p, s, **row):.3f} s a step", flush=True)
