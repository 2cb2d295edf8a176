"""One decoding step of a stock Llama / Qwen2 causal LM, without transformers' per-call machinery.

For VoxLM's small LLM (3.5M parameters) a step of transformers' forward costs ~3 ms at one
thread, of which its 29 matmuls take ~0.7: the rest is module dispatch, mask building, rope
and cache bookkeeping around them (stop 46). :class:`FastStep` runs the same arithmetic
(RMSNorm, rotary embedding, SDPA, SwiGLU; fewer, fused operations) straight on
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
from transformers.models.llama.modeling_llama import rotate_half

SUPPORTED = ("llama", "qwen2")


def _cat(*tensors: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat(tensors)


def _t(*weights: torch.Tensor) -> torch.Tensor:
    """Linear weights (out, in), fused along out -> one (in, out) matrix: a row times it is
    ~20% faster on CPU than ``F.linear`` on the (out, in) layout (stop 46)."""
    return torch.cat(weights).t().contiguous()


def _linear(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    y = x @ w_t
    return y if bias is None else y + bias


class FastStep:
    """``step(ids, cache, mask, positions)``: (B, 1) ids -> (B, V) logits of the new position.

    Holds its own copy of the projection weights, transposed to (in, out) and with query/key/value
    and gate/up fused (one matmul each); it is made for a decoding call (~14 MB, a few ms), not
    kept beside a model in training.
    """

    def __init__(self, model: PreTrainedModel):
        cfg, inner = model.config, model.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scale, self.eps = self.head_dim ** -0.5, cfg.rms_norm_eps
        self.embed, self.norm = inner.embed_tokens.weight, inner.norm.weight
        self.inv_freq, self.rope_scale = inner.rotary_emb.inv_freq, inner.rotary_emb.attention_scaling
        self.head = (_t(model.lm_head.weight), model.lm_head.bias)
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append((
                layer.input_layernorm.weight,
                _t(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight), _cat(a.q_proj.bias, a.k_proj.bias, a.v_proj.bias),
                _t(a.o_proj.weight), a.o_proj.bias, layer.post_attention_layernorm.weight,
                _t(m.gate_proj.weight, m.up_proj.weight), _t(m.down_proj.weight)))

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, cache: Cache, mask: torch.Tensor | None = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        # ids (B, 1); mask (B, past + 1) 1 = attend (left-padded rows) or None; positions (B, 1) or None
        b, h, kvh, hd = ids.shape[0], self.heads, self.kv_heads, self.head_dim
        if positions is None:
            positions = torch.full((b, 1), cache.get_seq_length(), dtype=torch.long)
        freqs = positions.float() * self.inv_freq  # (B, hd / 2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, hd)
        cos, sin = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]  # (B, 1, 1, past + 1)
        x = F.embedding(ids, self.embed)  # (B, 1, D)
        for i, (ln1, w_qkv, b_qkv, w_o, b_o, ln2, w_gate_up, w_down) in enumerate(self.layers):
            qkv = _linear(F.rms_norm(x, ln1.shape, ln1, self.eps), w_qkv, b_qkv).view(b, h + 2 * kvh, hd)
            qk = qkv[:, :h + kvh]
            qk = qk * cos + rotate_half(qk) * sin  # rotary embedding of the queries and keys at once
            k, v = cache.layers[i].update(qk[:, h:, None], qkv[:, h + kvh:, None])  # (B, KVH, past + 1, hd)
            y = F.scaled_dot_product_attention(qk[:, :h, None], k, v, attn_mask=attn_mask, scale=self.scale,
                                               enable_gqa=kvh != h)  # (B, H, 1, hd)
            x = x + _linear(y.view(b, 1, h * hd), w_o, b_o)
            gate, up = _linear(F.rms_norm(x, ln2.shape, ln2, self.eps), w_gate_up).chunk(2, dim=-1)
            x = x + _linear(F.silu(gate) * up, w_down)
        return _linear(F.rms_norm(x[:, -1], self.norm.shape, self.norm, self.eps), *self.head)  # (B, V)


def fast_step(model) -> FastStep | None:
    """A :class:`FastStep` for ``model`` when it reproduces its forward (to float rounding), else None."""
    cfg = getattr(model, "config", None)
    if not isinstance(model, PreTrainedModel) or getattr(cfg, "model_type", None) not in SUPPORTED:
        return None
    rope = getattr(cfg, "rope_parameters", None) or {}
    mlp = model.model.layers[0].mlp
    if (rope.get("rope_type", "default") != "default" or cfg.hidden_act != "silu"
            or getattr(cfg, "mlp_bias", False) or mlp.gate_proj.bias is not None
            or (cfg.model_type == "llama" and getattr(cfg, "attention_bias", False))
            or getattr(cfg, "pretraining_tp", 1) != 1 or getattr(cfg, "use_sliding_window", False)
            or cfg._attn_implementation != "sdpa"):
        return None
    return FastStep(model)
