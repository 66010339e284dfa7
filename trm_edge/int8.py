"""The static int8 scheme that ships, in one place: what the exporter builds and what fine-tuning simulates.

Every MatMul but the two heads reads int8 weights, symmetric per output channel (scale = absmax / 127, values
in [-127, 127], as ORT's quantizer computes them), and a uint8 activation with one (scale, zero point) per
*call site*: a stack runs several times per supervision step (`calls_per_step`), each call is its own tensor in
the step graph, so each gets its own range. MatMul outputs stay float. Learned ranges travel in a
model's metadata under `int8_sites`: {module name: [[scale, zero_point] per call, in call order]}.
"""

from __future__ import annotations

import numpy as np

FLOAT_MODULES = ("q_head", "lm_head")  # tiny and decisive (the halting decision, the answer argmax)
WEIGHT_QMAX = 127
ACT_QMAX = 255
MIN_EDGE = 1e-4  # an activation range reaches at least this far on both sides of 0


def calls_per_step(config, module: str = "L_level") -> int:
    """How many times a module of a reasoning stack (by its name) runs in one supervision step: TRM's one shared
    L_level H_cycles x (L_cycles + 1) times; HRM's L_level H_cycles x L_cycles times and its H_level H_cycles."""
    if config.family == "trm":
        return config.H_cycles * (config.L_cycles + 1)
    return config.H_cycles * (1 if module.startswith("H_level.") else config.L_cycles)


def site_params(lo: float, hi: float) -> tuple[float, int]:
    """The deployed uint8 (scale, zero point) of an activation range, in float32 exactly as QAT computes them
    (training.qat.fake_quant_act), so that the graph rounds where training did; the range always includes 0."""
    lo, hi = np.float32(min(lo, -MIN_EDGE)), np.float32(max(hi, MIN_EDGE))
    scale = (hi - lo) / np.float32(ACT_QMAX)
    return float(scale), int(np.clip(np.round(-lo / scale), 0, ACT_QMAX))
