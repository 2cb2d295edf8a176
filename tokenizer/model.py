"""The supervised semantic tokenizer network: an ASR encoder with a quantizer inside.

    log-mel (B, 4T, 80) -> conv subsampling x4 -> first half of the blocks
      -> quantizer (FSQ / VQ, vector-quantize-pytorch) -> token ids (B, T) at 25 Hz
      -> second half of the blocks -> CTC head (ctc_upsample outputs per token frame)

Everything is length-masked, so a clip gives the same tokens alone or in a batch.

Training aids (config.quantizer; all off at inference): ``hard`` fades FSQ's rounding
in, ``mix`` fades out a continuous bypass around the codes, and ``recon_weight``
asks the codes to follow the pre-quantizer features. With hard FSQ from step 0
the post-quantizer half sat on the CTC blank plateau while the codebook
collapsed to a handful of codes; with these it leaves the plateau with >50% of
codes in use (measured on a probe corpus).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import FSQ, VectorQuantize

from .config import ModelConfig
from .frontend import PHONES


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) -> (B, max_len) True where valid."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class Subsampling(nn.Module):
    """Two stride-2 convolutions over time (mel bins as channels): 100 Hz -> 25 Hz."""

    def __init__(self, n_mels: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, 4T, n_mels), mask: (B, 4T) -> (B, T, dim)
        x = (x * mask[..., None]).transpose(1, 2)
        x = F.gelu(self.conv1(x)) * mask[:, None, ::2]
        x = F.gelu(self.conv2(x)) * mask[:, None, ::4]
        return self.out(x.transpose(1, 2))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(dim * mult, dim), nn.Dropout(dropout))


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions and a key padding mask."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.out = nn.Linear(dim, dim)
        head_dim = dim // heads
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)),
                             persistent=False)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, H, T, hd)
        t = torch.arange(x.shape[2], device=x.device, dtype=torch.float32)
        ang = torch.outer(t, self.inv_freq)
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D), mask: (B, T) -> (B, T, D)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.rotate(q), self.rotate(k)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class ConvModule(nn.Module):
    """Conformer convolution: pointwise + GLU, depthwise (masked), LayerNorm, SiLU, pointwise."""

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, dim * 2)
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.pw2 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D) -> (B, T, D)
        y = F.glu(self.pw1(self.norm(x)), dim=-1) * mask[..., None]
        y = self.dw(y.transpose(1, 2)).transpose(1, 2)
        return self.drop(self.pw2(F.silu(self.norm2(y))))


class Block(nn.Module):
    """A conformer block (macaron FFN, MHSA, conv) or, with conv=False, a transformer block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.conformer = cfg.block == "conformer"
        self.ff1 = FeedForward(cfg.dim, cfg.ff_mult, cfg.dropout) if self.conformer else None
        self.attn = SelfAttention(cfg.dim, cfg.heads, cfg.dropout)
        self.conv = ConvModule(cfg.dim, cfg.conv_kernel, cfg.dropout) if self.conformer else None
        self.ff2 = FeedForward(cfg.dim, cfg.ff_mult, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D), mask: (B, T) -> (B, T, D)
        scale = 0.5 if self.conformer else 1.0
        if self.ff1 is not None:
            x = x + 0.5 * self.ff1(x)
        x = x + self.drop(self.attn(x, mask))
        if self.conv is not None:
            x = x + self.conv(x, mask)
        x = x + scale * self.ff2(x)
        return self.norm(x) * mask[..., None]


class Quantizer(nn.Module):
    """One interface over FSQ and VQ-EMA: features -> (quantized, ids, aux loss); ids -> features."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        q = cfg.quantizer
        self.kind = q.kind
        if q.kind == "fsq":
            self.q = FSQ(levels=list(q.levels), dim=cfg.dim)
        else:
            self.q = VectorQuantize(dim=cfg.dim, codebook_size=q.codebook_size, codebook_dim=q.codebook_dim,
                                    decay=q.decay, commitment_weight=q.commitment_weight,
                                    kmeans_init=True, threshold_ema_dead_code=q.dead_code_threshold)
        self.size = q.size

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                hard: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: (B, T, D) -> quantized (B, T, D), ids (B, T), aux loss ()
        if self.kind == "vq":
            quantized, ids, aux = self.q(x, mask=mask)
            return quantized * mask[..., None], ids.long(), aux.sum()
        if hard >= 1.0:
            quantized, ids = self.q(x)
            return quantized * mask[..., None], ids.long(), x.new_zeros(())
        # FSQ with the rounding faded in: forward = bounded + hard * (round(bounded) - bounded),
        # backward = straight through. hard=0 is FSQ's bound without rounding.
        q = self.q
        z = q.project_in(x).float()
        levels = q._levels
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset
        rounded = bounded.round()
        half_width = levels // 2
        ids = q.codes_to_indices(rounded / half_width)
        mixed = bounded + hard * (rounded - bounded).detach()
        quantized = q.project_out((mixed / half_width).to(x.dtype))
        return quantized * mask[..., None], ids.long(), x.new_zeros(())

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: (B, T) -> (B, T, D)
        if self.kind == "fsq":
            return self.q.indices_to_codes(ids)
        return self.q.get_output_from_indices(ids)


@dataclass
class EncoderOutput:
    ids: torch.Tensor  # (B, T) token ids, 0..codebook_size-1
    lengths: torch.Tensor  # (B,) tokens per clip
    logits: torch.Tensor | None = None  # (B, T * ctc_upsample, vocab) CTC logits
    inter_logits: torch.Tensor | None = None  # (B, T * ctc_upsample, V') read frame by frame
    inter_code_logits: torch.Tensor | None = None  # the same head on the codes (inter_from: both)
    aux_loss: torch.Tensor | None = None


class TokenizerModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.vocab:
            raise ValueError("ModelConfig.vocab is empty: build it from the training transcripts")
        self.cfg = cfg
        vocab = len(cfg.vocab) + 1
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.n_mels))
        self.subsample = Subsampling(cfg.n_mels, cfg.dim)
        self.pre = nn.ModuleList(Block(cfg) for _ in range(cfg.split))
        self.quantizer = Quantizer(cfg)
        self.post = nn.ModuleList(Block(cfg) for _ in range(cfg.num_blocks - cfg.split))
        self.head = nn.Linear(cfg.dim, vocab * cfg.ctc_upsample)
        inter_vocab = len(PHONES) + 1 if cfg.inter_targets == "phones" else vocab
        self.inter_head = None  # auxiliary CTC read frame by frame (MLP) from x or the codes
        if cfg.inter_ctc_weight > 0:
            self.inter_head = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(),
                                            nn.Linear(cfg.dim, inter_vocab * cfg.ctc_upsample))

    def ctc_logits(self, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D) -> (B, T * up, V)
        b, t, _ = x.shape
        return head(x).view(b, t * self.cfg.ctc_upsample, -1)

    def encode_continuous(self, feats: torch.Tensor, feat_lengths: torch.Tensor):
        # feats: (B, 4T, n_mels) -> pre-quantizer features (B, T, D), mask (B, T)
        mask4 = length_mask(feat_lengths, feats.shape[1])
        x = self.subsample((feats - self.feat_mean) / self.feat_std, mask4)
        mask = mask4[:, ::4]
        for block in self.pre:
            x = block(x, mask)
        return x, mask

    def decode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, D) quantized (or bypassed) features -> CTC logits (B, T * up, V)
        for block in self.post:
            x = block(x, mask)
        return self.ctc_logits(self.head, x)

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor, bypass: bool = False,
                hard: float = 1.0, mix: float = 1.0) -> EncoderOutput:
        # feats: (B, 4T, n_mels), feat_lengths: (B,) multiples of 4
        # hard < 1 fades FSQ rounding in; mix < 1 lets (1 - mix) of x bypass the quantizer
        x, mask = self.encode_continuous(feats, feat_lengths)
        quantized, ids, aux = self.quantizer(x, mask, hard)
        if self.training and self.cfg.quantizer.recon_weight > 0:  # codes keep x's main directions
            err = ((quantized - x.detach()) ** 2).mean(-1)
            aux = aux + self.cfg.quantizer.recon_weight * (err * mask).sum() / mask.sum()
        inter = inter_codes = None
        if self.inter_head is not None:
            inter = self.ctc_logits(self.inter_head, quantized if self.cfg.inter_from == "codes" else x)
            if self.cfg.inter_from == "both":
                inter_codes = self.ctc_logits(self.inter_head, quantized)
        if bypass:
            quantized = x
        elif mix < 1.0:  # early training: part of the continuous features passes around the codes
            quantized = mix * quantized + (1 - mix) * x
        logits = self.decode(quantized, mask)
        return EncoderOutput(ids, mask.sum(1), logits, inter, inter_codes, aux)

    @torch.no_grad()
    def tokens(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> EncoderOutput:
        # feats: (B, 4T, n_mels) -> ids (B, T)
        x, mask = self.encode_continuous(feats, feat_lengths)
        _, ids, _ = self.quantizer(x, mask)
        return EncoderOutput(ids, mask.sum(1))

    @property
    def has_phone_head(self) -> bool:
        return self.inter_head is not None and self.cfg.inter_targets == "phones"

    def phone_log_probs(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # feats: (B, 4T, n_mels) -> log-posteriors of the auxiliary phone CTC (B, T * up, P), token lengths (B,);
        # the head reads the codes when it was trained on them alone (inter_from: codes), else the
        # pre-quantizer features (encoder; both, whose head learnt both). Differentiable in feats
        # (flow.phonetic's loss reads generated mels through it); the verifier calls it under no_grad.
        h, mask = self.encode_continuous(feats, feat_lengths)
        return self.phone_head(h, mask), mask.sum(1)

    def phone_head(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # encoder features (B, T, D), mask (B, T) -> phone log-posteriors (B, T * up, P)
        if self.cfg.inter_from == "codes":
            h = self.quantizer(h, mask)[0]
        return self.ctc_logits(self.inter_head, h).log_softmax(-1)

    @torch.no_grad()
    def logits_from_tokens(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # ids: (B, T) -> CTC logits (B, T * up, V), from the tokens alone
        mask = length_mask(lengths, ids.shape[1])
        return self.decode(self.quantizer.embed(ids) * mask[..., None], mask)
