"""The reference recursive models, numerically the official TinyRecursiveModels (TRM) and HRM semantics.

Read top-down: a supervision `step` embeds the puzzle, then runs H_cycles × (L_cycles updates of the latent
z_L + one update of the answer z_H), and reads the answer logits from z_H and the halting logits from z_H at
position 0. The family decides which stack updates z_H: TRM reuses its one `L_level` for both, HRM has its own
`H_level`. `solve` repeats steps under a `HaltPolicy`. State-dict keys equal the official ones with the
`_orig_mod.model.inner.` prefix removed.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trm_edge.config import TRMConfig
from trm_edge.halting import Checker, HaltPolicy, Solution, finite_rows, halting_loop
from trm_edge.spec import SPEC


class Carry(NamedTuple):
    z_H: torch.Tensor  # [B, prefix+L, D] the answer state ("y")
    z_L: torch.Tensor  # [B, prefix+L, D] the latent ("z")


class Batch(NamedTuple):
    tokens: torch.Tensor  # [B, L] int64
    puzzle_ids: torch.Tensor  # [B] int64


class TRM(nn.Module):
    def __init__(self, config: TRMConfig):
        super().__init__()
        c = self.config = config
        self.dtype = getattr(torch, c.forward_dtype)
        self.embed_scale = math.sqrt(c.hidden_size)
        self.embed_tokens = CastedEmbedding(c.vocab_size, c.hidden_size, 1.0 / self.embed_scale)
        self.lm_head = CastedLinear(c.hidden_size, c.vocab_size)
        self.q_head = CastedLinear(c.hidden_size, 2, bias=True)
        # puzzle_emb_ndim 0 (HRM's default): no table and no prefix, as in the official code
        self.puzzle_emb = PuzzleEmbedding(c.num_puzzle_identifiers, c.puzzle_emb_ndim) if c.puzzle_emb_ndim else None
        if c.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(c.hidden_size // c.num_heads, c.total_len, c.rope_theta)
        elif c.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(c.total_len, c.hidden_size, 1.0 / self.embed_scale)
        self.L_level = ReasoningModule(c, c.L_layers)
        if c.family == "hrm":
            self.H_level = ReasoningModule(c, c.H_layers)
        self.register_buffer("H_init", trunc_normal_(torch.empty(c.hidden_size), std=1.0))
        self.register_buffer("L_init", trunc_normal_(torch.empty(c.hidden_size), std=1.0))
        with torch.no_grad():  # the official init: Q head starts at "never halt"
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

    # -- one supervision step --
    def initial_carry(self, batch_size: int) -> Carry:
        shape = (batch_size, self.config.total_len, self.config.hidden_size)
        return Carry(self.H_init.to(self.dtype).expand(shape).clone(), self.L_init.to(self.dtype).expand(shape).clone())

    def reset_carry(self, carry: Carry, reset: torch.Tensor) -> Carry:
        """Rows where `reset` is set restart from the initial state (the official ACT reset)."""
        r = reset.view(-1, 1, 1)
        return Carry(torch.where(r, self.H_init.to(self.dtype), carry.z_H),
                     torch.where(r, self.L_init.to(self.dtype), carry.z_L))

    def embed(self, batch: Batch) -> torch.Tensor:
        c = self.config
        x = self.embed_tokens(batch.tokens, self.dtype)
        if self.puzzle_emb is not None:
            p = self.puzzle_emb(batch.puzzle_ids).to(self.dtype)
            p = F.pad(p, (0, c.prefix_len * c.hidden_size - c.puzzle_emb_ndim))
            x = torch.cat((p.view(-1, c.prefix_len, c.hidden_size), x), dim=-2)
        if c.pos_encodings == "learned":
            x = 0.707106781 * (x + self.embed_pos.embedding_weight.to(self.dtype))
        return self.embed_scale * x

    def step(self, carry: Carry, batch: Batch) -> tuple[Carry, torch.Tensor, torch.Tensor]:
        """One supervision step: (new carry, logits [B, L, V], the halting logit [B] fp32). A row halts when it is
        positive: TRM's q_halt; HRM's q_halt - q_continue (HRM halts when q_halt > q_continue), so `learned:0` is
        each family's own rule, and every graph, engine and policy reads one number.

        With autograd on, only the last H cycle builds a graph (TRM's full-recursion gradient); for HRM only its
        last z_L and z_H updates do (HRM's 1-step gradient).
        """
        new_carry, logits, q = self.forward_q(carry, batch)
        return new_carry, logits, q[..., 0] - q[..., 1] if self.config.family == "hrm" else q[..., 0]

    forward = step  # so DDP and torch.compile wrap the supervision step

    def forward_q(self, carry: Carry, batch: Batch) -> tuple[Carry, torch.Tensor, torch.Tensor]:
        """`step` with both Q logits [B, 2] (halt, continue), as the official ACT head emits them."""
        c = self.config
        cos_sin = self.rotary_emb() if c.pos_encodings == "rope" else None
        x = self.embed(batch)
        z_H, z_L = carry
        hrm = c.family == "hrm"
        H_level = self.H_level if hrm else self.L_level
        grad = torch.is_grad_enabled()

        def graph(tracked: bool):
            return contextlib.nullcontext() if tracked or not grad else torch.no_grad()

        for h in range(c.H_cycles):
            last = h == c.H_cycles - 1
            for i in range(c.L_cycles):
                with graph(last and (not hrm or i == c.L_cycles - 1)):
                    z_L = self.L_level(z_L, z_H + x, cos_sin)
            with graph(last):
                z_H = H_level(z_H, z_L, cos_sin)
        logits = self.lm_head(z_H)[:, c.prefix_len:]
        q = self.q_head(z_H[:, 0]).to(torch.float32)
        return Carry(z_H.detach(), z_L.detach()), logits, q

    # -- the outer loop --
    @torch.inference_mode()
    def solve(self, batch: Batch, policy: HaltPolicy, check: Checker | None = None) -> Solution:
        """Supervision steps from the initial state until every row has halted under the policy (`check`: the
        task's rules, for a verifying policy)."""

        def step(carry: Carry):
            carry, _, tokens, q, ok = self.halting_step(carry, batch)
            return carry, tokens, q, ok

        return halting_loop(step, self.initial_carry(batch.tokens.shape[0]), policy, check)

    def halting_step(self, carry: Carry, batch: Batch) -> tuple[Carry, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One supervision step as the halting loop reads it: (carry, logits, predicted tokens, q_halt, finite
        rows), the arrays in numpy."""
        carry, logits, q = self.step(carry, batch)
        arrays = [t.float().cpu().numpy() for t in (carry.z_H, carry.z_L, logits, q)]
        return carry, arrays[2], logits.argmax(-1).cpu().numpy(), arrays[3], finite_rows(*arrays)


# ---------------------------------------------------------------------------------------------------
# The building blocks, below the model that uses them.


class ReasoningModule(nn.Module):
    """A stack of blocks (official names `L_level`, and HRM's `H_level`): add the injection, then the blocks."""

    def __init__(self, c: TRMConfig, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(c) for _ in range(layers))

    def forward(self, h: torch.Tensor, injection: torch.Tensor, cos_sin) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, cos_sin)
        return h


class Block(nn.Module):
    """Post-norm block. The mlp_t variant mixes tokens with a SwiGLU over the sequence axis, and its
    RMSNorm then normalises over the sequence axis too (it runs in the transposed layout)."""

    def __init__(self, c: TRMConfig):
        super().__init__()
        self.eps = c.rms_norm_eps
        if c.mlp_t:
            self.mlp_t = SwiGLU(c.total_len, c.swiglu_inter(c.total_len))
        else:
            self.self_attn = Attention(c.hidden_size, c.num_heads)
        self.mlp = SwiGLU(c.hidden_size, c.swiglu_inter(c.hidden_size))

    def forward(self, h: torch.Tensor, cos_sin) -> torch.Tensor:
        if hasattr(self, "mlp_t"):
            t = h.transpose(1, 2)
            h = rms_norm(t + self.mlp_t(t), self.eps).transpose(1, 2)
        else:
            h = rms_norm(h + self.self_attn(h, cos_sin), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class Attention(nn.Module):
    """Non-causal multi-head attention with one fused QKV matrix ordered [Q heads | K heads | V heads]."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv_proj = CastedLinear(hidden, 3 * hidden)
        self.o_proj = CastedLinear(hidden, hidden)

    def forward(self, h: torch.Tensor, cos_sin) -> torch.Tensor:
        B, S, D = h.shape
        qkv = self.qkv_proj(h).view(B, S, 3 * self.heads, self.head_dim)
        q, k, v = qkv.split(self.heads, dim=2)
        if cos_sin is not None:
            q, k = apply_rope(q, *cos_sin), apply_rope(k, *cos_sin)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(o.transpose(1, 2).reshape(B, S, D))


class SwiGLU(nn.Module):
    """down(silu(gate) * up); the gate is the FIRST half of gate_up_proj's output."""

    def __init__(self, width: int, inter: int):
        super().__init__()
        self.gate_up_proj = CastedLinear(width, 2 * inter)
        self.down_proj = CastedLinear(inter, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(h).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE tables in fp32 for positions 0..S-1 (the puzzle prefix counts)."""

    def __init__(self, dim: int, positions: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos_cached, self.sin_cached


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, S, H, d], computed in fp32 and cast back, as the official code does."""
    xf = x.to(cos.dtype)
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)).to(x.dtype)


def rms_norm(h: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a learnable scale, in fp32, over the last axis."""
    hf = h.to(torch.float32)
    return (hf * torch.rsqrt(hf.square().mean(-1, keepdim=True) + eps)).to(h.dtype)


class CastedLinear(nn.Module):
    """fp32 weight [out, in] cast to the input's dtype at each call (truncated-normal init, std 1/sqrt(in))."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(fan_out, fan_in), std=1.0 / math.sqrt(fan_in)))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num: int, dim: int, std: float):
        super().__init__()
        self.embedding_weight = nn.Parameter(trunc_normal_(torch.empty(num, dim), std=std))

    def forward(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(dtype))


class PuzzleEmbedding(nn.Module):
    """The per-puzzle table, a zero-initialised buffer as in the official code (not an nn.Parameter:
    ARC tables are ~1.8 GB). In training the looked-up rows get a gradient the trainer applies sparsely
    (official SignSGD); `last_lookup` holds them for it."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.register_buffer("weights", torch.zeros(num, dim))
        self.last_lookup: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids]
        if self.training and torch.is_grad_enabled():
            rows = rows.detach().requires_grad_()
            self.last_lookup = (ids, rows)
        return rows


def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """Truncated normal at ±2 std with the variance corrected to `std` (the official JAX-style init)."""
    if std == 0:
        return t.zero_()
    lower, upper = -2.0, 2.0
    sqrt2 = math.sqrt(2)
    a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
    z = (b - a) / 2
    c = (2 * math.pi) ** -0.5
    pdf_u, pdf_l = c * math.exp(-0.5 * upper**2), c * math.exp(-0.5 * lower**2)
    comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
    with torch.no_grad():
        t.uniform_(a, b).erfinv_().mul_(sqrt2 * comp_std).clamp_(lower * comp_std, upper * comp_std)
    return t


STEP_OUTPUTS = tuple(name for name, _, _ in SPEC["step"]["outputs"])


class StepModule(nn.Module):
    """One supervision step with the step graph's inputs and outputs (trm_edge/spec.py), named as there: what the
    ONNX and LiteRT exporters trace and the torch adapter runs. Integer inputs of any width; `index_dtype` is the
    predicted tokens' (LiteRT's integers are int32)."""

    def __init__(self, model: TRM, index_dtype: torch.dtype = torch.int64):
        super().__init__()
        self.model, self.index_dtype = model, index_dtype

    def forward(self, tokens: torch.Tensor, puzzle_ids: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        carry, logits, q = self.model.step(Carry(z_H, z_L), Batch(tokens.long(), puzzle_ids.long()))
        logits = logits.float()
        return dict(zip(STEP_OUTPUTS, (carry.z_H.float(), carry.z_L.float(), logits.argmax(-1).to(self.index_dtype),
                                       q.float(), logits)))
