"""The vector-field network: an LLM-shaped transformer with adaptive-norm time conditioning.

Each block is a modern decoder block (pre-norm RMSNorm, rotary positions, a gated
SiLU MLP, no biases in attention) whose norms are modulated by the flow time and
the speaker vector (DiT's adaLN-Zero: shift, scale and a residual gate per
sub-layer, zero-initialised so every block starts as the identity).

With ``conv_kernel=K > 0`` each block also has a **causal depthwise convolution**
sub-layer (Conformer's convolution module, made causal): a frame mixes in its ``K - 1``
predecessors, the local detail (harmonics, transitions) a few attention layers at
50 fps draw poorly. Causal, so the chunk masks below stay exact; its output projection
is zero-initialised, so a model warm-started without it begins where that one was.

Attention masks decide offline versus streaming (TouchTTS): full attention sees
the whole utterance; a **chunk mask** of size ``C`` lets frame ``i`` see every
frame ``j < (i // C + 1) * C``, i.e. its own chunk and all the past. Trained on
a mix of both, one model serves both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)


def chunk_mask(length: int, chunk: int | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, T) bool attention mask, True = may attend; ``chunk=None`` or 0 = full attention.

    With a chunk size ``C``: ``mask[i, j] = j < (i // C + 1) * C`` (own chunk + past).
    """
    if not chunk:
        return torch.ones(length, length, dtype=torch.bool, device=device)
    if chunk < 0:
        raise ValueError(f"chunk size must be positive, got {chunk}")
    idx = torch.arange(length, device=device)
    limit = (idx // chunk + 1) * chunk
    return idx.view(1, -1) < limit.view(-1, 1)


def block_mask(ends: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, T) bool mask for blocks ending at ``ends`` (increasing, last = T): own block + past.

    The streaming layout of inference: the prompt as one block, then the target in chunks
    (a first chunk that may be shorter, then fixed ones); see :func:`stream_blocks`.
    """
    idx = torch.arange(ends[-1], device=device)
    bounds = torch.tensor(ends, device=device)
    limit = bounds[torch.searchsorted(bounds, idx, right=True)]
    return idx.view(1, -1) < limit.view(-1, 1)


def stream_blocks(prompt: int, total: int, chunk: int, first: int | None = None) -> list[int]:
    """Block ends for streaming inference: ``[prompt, prompt + first, + chunk, ..., total]``."""
    if chunk < 1 or (first is not None and first < 1):
        raise ValueError(f"chunk sizes must be positive, got chunk={chunk}, first={first}")
    ends, e = ([prompt] if prompt else []), prompt + (first or chunk)
    while e < total:
        ends.append(e)
        e += chunk
    return ends + [total] if not ends or ends[-1] != total else ends


class KVSlot:
    """What one block keeps of the frames already solved at one field evaluation (streaming).

    ``blocks``: their keys, transposed, and values, (B, H, d, T) and (B, H, T, d), contiguous
    (so attention reads them without a copy), one pair per solved block. They are never
    concatenated (no copying per step; the prompt's pairs are shared by every
    stream that starts from the same context). ``mod``: the block's adaLN modulation,
    which depends only on the conditioning vector, the same for every chunk at this
    evaluation; computed once. ``conv``: the causal convolution's inputs (B, K - 1 + L, D), the
    ``K - 1`` frames before the newest block then its ``L``; the next block reads its last ``K - 1``.
    """

    def __init__(self, blocks: list | None = None, mod: torch.Tensor | None = None,
                 conv: torch.Tensor | None = None):
        self.blocks, self.mod, self.conv = list(blocks or []), mod, conv

    def copy(self) -> KVSlot:
        return KVSlot(self.blocks, self.mod, self.conv)

    def keep_first(self, frames: int) -> None:
        """Keep only the first ``frames`` frames of the newest block (streaming lookahead)."""
        kt, v = self.blocks[-1]
        self.blocks[-1] = (kt[..., :frames].contiguous(), v[:, :, :frames].contiguous())
        if self.conv is not None:  # drop the same trailing frames from the convolution's inputs
            self.conv = self.conv[:, :self.conv.shape[1] - kt.shape[3] + frames]


def attend_blocks(q: torch.Tensor, blocks: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Full attention of q (B, H, L, d) over (keys^T, values) blocks of a :class:`KVSlot` -> (B, H, L, d)."""
    q = q.contiguous()
    scores = torch.cat([q @ kt for kt, _ in blocks], dim=-1) * q.shape[-1] ** -0.5
    w = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    out, start = 0, 0
    for kt, v in blocks:
        out = out + w[..., start:start + kt.shape[3]].contiguous() @ v
        start += kt.shape[3]
    return out


def attention_mask(lengths: torch.Tensor, max_len: int, chunk: int | None) -> torch.Tensor:
    """(B,) valid lengths -> (B, 1, T, T) bool mask: chunk/full structure and key padding."""
    keys = torch.arange(max_len, device=lengths.device).view(1, -1) < lengths.view(-1, 1)  # (B, T)
    return (chunk_mask(max_len, chunk, lengths.device).unsqueeze(0) & keys.unsqueeze(1)).unsqueeze(1)


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = scale * t.float().view(-1, 1) * freqs.view(1, -1)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                kv: KVSlot | None = None) -> torch.Tensor:
        # x: (B, T, D), mask: (B, 1, T, T) bool or None (all visible) -> (B, T, D)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary_pos_emb(q, k, *rope)
        if kv is not None:  # streaming: the new frames see every past block and themselves
            kv.blocks = kv.blocks + [(k.transpose(-1, -2).contiguous(), v.contiguous())]
        if kv is not None and len(kv.blocks) > 1:
            y = attend_blocks(q, kv.blocks)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class CausalConv(nn.Module):
    """RMSNorm -> depthwise causal Conv1d (kernel K) -> SiLU -> Linear, zero-initialised output."""

    def __init__(self, dim: int, kernel: int, eps: float = 1e-6):
        super().__init__()
        if kernel < 2:
            raise ValueError(f"conv_kernel must be 0 (none) or >= 2, got {kernel}")
        self.kernel = kernel
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, kv: KVSlot | None = None) -> torch.Tensor:
        # x: (B, T, D) -> (B, T, D); kv: the inputs of the frames before x (streaming)
        h = self.norm(x)
        if kv is not None and kv.conv is not None:  # always holds >= K - 1 frames
            past = kv.conv[:, -(self.kernel - 1):]
        else:  # the sequence's start: zero padding
            past = h.new_zeros(h.shape[0], self.kernel - 1, h.shape[2])
        seq = torch.cat([past, h], dim=1)  # (B, K - 1 + T, D)
        if kv is not None:
            kv.conv = seq
        return self.out(F.silu(self.depthwise(seq.transpose(1, 2)).transpose(1, 2)))


class Block(nn.Module):
    """Pre-norm decoder block; both norms modulated by the conditioning vector (adaLN-Zero).

    ``conditioned=False`` (the flow's token encoder): plain pre-norm with learned gains, no ``c``.
    """

    def __init__(self, dim: int, heads: int, mlp: LlamaConfig, eps: float = 1e-6, conditioned: bool = True,
                 conv_kernel: int = 0):
        super().__init__()
        self.conv = CausalConv(dim, conv_kernel, eps) if conv_kernel != 0 else None
        self.norm1 = nn.RMSNorm(dim, eps=eps, elementwise_affine=not conditioned)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.RMSNorm(dim, eps=eps, elementwise_affine=not conditioned)
        self.mlp = LlamaMLP(mlp)
        self.ada = nn.Linear(dim, 6 * dim) if conditioned else None
        if conditioned:
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None, kv: KVSlot | None = None) -> torch.Tensor:
        # x: (B, T, D), c: (B, D) or None when unconditioned -> (B, T, D)
        if self.ada is None:
            x = x + self.attn(self.norm1(x), rope, mask, kv)
            if self.conv is not None:
                x = x + self.conv(x, kv)
            return x + self.mlp(self.norm2(x))
        mod = kv.mod if kv is not None and kv.mod is not None else self.ada(F.silu(c))
        if kv is not None:
            kv.mod = mod
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1), rope, mask, kv)
        if self.conv is not None:
            x = x + self.conv(x, kv)
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))


class Backbone(nn.Module):
    """(B, in_dim, T) features + (B, D) condition -> (B, out_dim, T) velocity.

    ``conditioned=False`` builds the same stack without any conditioning vector (``c=None``):
    the flow's token encoder.
    """

    def __init__(self, in_dim: int, out_dim: int, dim: int, layers: int, heads: int,
                 mlp_ratio: float = 2.75, rope_theta: float = 10000.0, max_positions: int = 8192,
                 conditioned: bool = True, conv_kernel: int = 0):
        super().__init__()
        llama = LlamaConfig(
            hidden_size=dim, intermediate_size=int(dim * mlp_ratio), num_attention_heads=heads,
            hidden_act="silu", mlp_bias=False, max_position_embeddings=max_positions,
            rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        )
        self.dim = dim
        self.in_proj = nn.Linear(in_dim, dim)
        self.rope = LlamaRotaryEmbedding(llama)
        self.blocks = nn.ModuleList(Block(dim, heads, llama, conditioned=conditioned, conv_kernel=conv_kernel) for _ in range(layers))
        self.norm = nn.RMSNorm(dim, eps=1e-6, elementwise_affine=not conditioned)
        self.final_ada = nn.Linear(dim, 2 * dim) if conditioned else None
        self.out_proj = nn.Linear(dim, out_dim)
        for layer in (self.final_ada, self.out_proj):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, mask: torch.Tensor | None,
                extra: torch.Tensor | None = None, kv: list[KVSlot] | None = None,
                offset: int = 0) -> torch.Tensor:
        # x: (B, in_dim, T), c: (B, D), mask: (B, 1, T, T) bool, extra: (B, T, D) added after in_proj
        # kv: one slot per block holding the past frames (streaming); offset: position of x's first frame
        h = self.in_proj(x.transpose(1, 2))  # (B, T, D)
        if extra is not None:
            h = h + extra
        pos = torch.arange(offset, offset + h.shape[1], device=h.device).unsqueeze(0)
        rope = self.rope(h, pos)
        for i, block in enumerate(self.blocks):
            h = block(h, c, rope, mask, kv[i] if kv is not None else None)
        h = self.norm(h)
        if self.final_ada is not None:
            h = modulate(h, *self.final_ada(F.silu(c)).chunk(2, dim=-1))
        return self.out_proj(h).transpose(1, 2)  # (B, out_dim, T)
