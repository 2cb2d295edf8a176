"""One decoding step of a stock Llama / Qwen2 causal LM, without transformers' per-call machinery.

For VoxLM's small LLM (3.5M parameters) a step of transformers' forward costs ~3 ms at one
thread, of which its 29 matmuls take ~0.7: the rest is module dispatch, mask building, rope
and cache bookkeeping around them (stop 46). :class:`FastStep` runs the same arithmetic
(RMSNorm, rotary embedding, SDPA, SwiGLU, in transformers' order of operations) straight on
the model's weights, for one new position per row, reading and extending the same KV cache
(:mod:`tts.kv_cache`). The prefill still runs transformers' forward. The logits match
transformers' to float rounding and the sampled tokens are the same (tests/test_llm.py).
A model outside what it reproduces (another architecture, rope scaling, biases where Llama
has none) gets ``None`` from :func:`fast_step`, and decoding keeps transformers' forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

SUPPORTED = ("llama", "qwen2")


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm / Qwen2RMSNorm, op for op."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class FastStep:
    """``step(ids, cache, mask, positions)``: (B, 1) ids -> (B, V) logits of the new position."""

    def __init__(self, model: PreTrainedModel):
        cfg, inner = model.config, model.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scale = self.head_dim ** -0.5
        self.embed, self.norm, self.eps = inner.embed_tokens.weight, inner.norm.weight, inner.norm.variance_epsilon
        self.inv_freq, self.rope_scale = inner.rotary_emb.inv_freq, inner.rotary_emb.attention_scaling
        self.head = (model.lm_head.weight, model.lm_head.bias)
        self.layers = [(layer.input_layernorm.weight, layer.self_attn, layer.post_attention_layernorm.weight, layer.mlp)
                       for layer in inner.layers]

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, cache: Cache, mask: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        # ids (B, 1); mask (B, past + 1) 1 = attend (left-padded rows) or None; positions (B, 1) or None
        b = ids.shape[0]
        if positions is None:
            positions = torch.full((b, 1), cache.get_seq_length(), dtype=torch.long)
        freqs = positions[..., None].float() * self.inv_freq  # (B, 1, hd / 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = (emb.cos() * self.rope_scale)[:, None], (emb.sin() * self.rope_scale)[:, None]  # (B, 1, 1, hd)
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]  # (B, 1, 1, past + 1)
        x = F.embedding(ids, self.embed)  # (B, 1, D)
        for i, (ln1, attn, ln2, mlp) in enumerate(self.layers):
            h = _rms_norm(x, ln1, self.eps)
            q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k, v = cache.layers[i].update(k, v)  # (B, KVH, past + 1, hd)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale,
                                               enable_gqa=self.kv_heads != self.heads)
            x = x + F.linear(y.transpose(1, 2).reshape(b, 1, -1), attn.o_proj.weight, attn.o_proj.bias)
            h = _rms_norm(x, ln2, self.eps)
            gate = F.silu(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight)
            x = x + F.linear(gate, mlp.down_proj.weight)
        return F.linear(_rms_norm(x[:, -1], self.norm, self.eps), *self.head)  # (B, V)


def fast_step(model) -> FastStep | None:
    """A :class:`FastStep` for ``model`` when it reproduces its forward exactly, else None."""
    cfg = getattr(model, "config", None)
    if not isinstance(model, PreTrainedModel) or getattr(cfg, "model_type", None) not in SUPPORTED:
        return None
    rope = getattr(cfg, "rope_parameters", None) or {}
    mlp = model.model.layers[0].mlp
    if (rope.get("rope_type", "default") != "default" or cfg.hidden_act != "silu"
            or getattr(cfg, "mlp_bias", False) or mlp.gate_proj.bias is not None
            or (cfg.model_type == "llama" and getattr(cfg, "attention_bias", False))
            or getattr(cfg, "pretraining_tp", 1) != 1 or getattr(cfg, "use_sliding_window", False)
            or model.config._attn_implementation != "sdpa"):
        return None
    return FastStep(model)
