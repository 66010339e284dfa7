"""Quantization-aware fine-tuning: the recursion trained through the exact int8 arithmetic that ships.

Rounding in one step is small; 16 steps x 9 calls of the same weights amplify it (static int8 of the bundled
model lost ~4 pp with calibrated ranges). Here each quantized `CastedLinear` computes what the deployed
MatMulIntegerToFloat computes (`trm_edge.int8`: S8 per-channel weights, U8 activations with one range per call
site, float output), with straight-through rounding, so the ordinary trainer fine-tunes the weights through
the supervision steps with deep supervision, and learns each call site's activation range (lo, hi) by the
gradient through the rounding (LSQ-style). The ranges leave as (scale, zero point) in the model's metadata;
the exporter gives them to ORT's static quantizer as overrides (a fake-quant graph cannot be exported:
pytorch#167063).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trm_edge.int8 import ACT_QMAX, FLOAT_MODULES, MIN_EDGE, WEIGHT_QMAX, calls_per_step, site_params
from trm_edge.model import TRM, Batch, CastedLinear

RANGE_LR_SCALE = 10.0  # the ranges' learning rate relative to the weights' (they are O(1-10), weights O(0.1))
CALIB_QUANTILE = 0.9999  # initial ranges: the calibrator's percentile, per side


def ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 per output channel, scale = absmax / 127 (fixed by the weights, as ORT computes it)."""
    scale = (w.detach().abs().amax(1, keepdim=True).double() / WEIGHT_QMAX).float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(ste_round(w / scale), -WEIGHT_QMAX, WEIGHT_QMAX) * scale


def fake_quant_act(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """uint8 with the range [lo, hi] (0 included): QuantizeLinear then DequantizeLinear, differentiable in lo, hi."""
    lo, hi = torch.clamp(lo, max=-MIN_EDGE), torch.clamp(hi, min=MIN_EDGE)
    scale = (hi - lo) / ACT_QMAX
    zp = torch.clamp(ste_round(-lo / scale), 0, ACT_QMAX)
    q = torch.clamp(ste_round(x / scale) + zp, 0, ACT_QMAX)
    return (q - zp) * scale


class SiteRanges(nn.Module):
    """(lo, hi) of each call of one module within a supervision step."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor):
        super().__init__()
        self.lo, self.hi = nn.Parameter(lo.clone().float()), nn.Parameter(hi.clone().float())
        self.calls = 0


class QATLinear(CastedLinear):
    """A CastedLinear whose i-th call in each step sees its input and weight as the int8 graph does."""
    sites: SiteRanges

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sites
        i, s.calls = s.calls % s.lo.numel(), s.calls + 1  # every step makes all calls, in graph order
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(fake_quant_act(x, s.lo[i], s.hi[i]), fake_quant_weight(self.weight).to(x.dtype), bias)


def quantized_modules(model: TRM) -> dict[str, CastedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, CastedLinear) and n not in FLOAT_MODULES}


def is_attached(model: TRM) -> bool:
    return any(isinstance(m, QATLinear) for m in model.modules())


def attach(model: TRM, ranges: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> TRM:
    """Turn the model's quantized linears into QATLinear with these initial (lo, hi) per call site (in place)."""
    for name, m in quantized_modules(model).items():
        m.__class__ = QATLinear
        m.sites = SiteRanges(*ranges[name])
    return model


def detach(model: TRM) -> tuple[TRM, dict[str, list[list[float]]]]:
    """A plain TRM with the fine-tuned weights, and the deployed (scale, zero point) of every call site."""
    plain = TRM(model.config)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".sites." not in k})
    sites = {n: [list(site_params(lo, hi)) for lo, hi in zip(m.sites.lo.tolist(), m.sites.hi.tolist())]
             for n, m in model.named_modules() if isinstance(m, QATLinear)}
    return plain.eval(), sites


@torch.no_grad()
def calibrate(model: TRM, tokens: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Initial ranges from the float model: the inputs of every call at every supervision step of these puzzles."""
    n = {name: calls_per_step(model.config, name) for name in quantized_modules(model)}
    seen: dict[str, list[list[torch.Tensor]]] = {name: [[] for _ in range(k)] for name, k in n.items()}
    counters = dict.fromkeys(seen, 0)

    def hook(name):
        def record(_mod, args):
            seen[name][counters[name] % n[name]].append(args[0].detach().flatten())
            counters[name] += 1
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in quantized_modules(model).items()]
    try:
        batch = Batch(torch.from_numpy(tokens), torch.zeros(len(tokens), dtype=torch.long))
        carry = model.initial_carry(len(tokens))
        for _ in range(model.config.halt_max_steps):
            carry, _, _ = model.step(carry, batch)
    finally:
        for h in handles:
            h.remove()

    def quantiles(xs: list[torch.Tensor]) -> tuple[float, float]:
        x = torch.cat(xs)
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:1 << 22]]  # quantile's size limit
        return float(torch.quantile(x, 1 - CALIB_QUANTILE)), float(torch.quantile(x, CALIB_QUANTILE))

    out = {}
    for name, per_call in seen.items():
        lo, hi = zip(*(quantiles(xs) for xs in per_call))
        out[name] = (torch.tensor(lo), torch.tensor(hi))
    return out
