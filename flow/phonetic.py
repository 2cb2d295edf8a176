"""A phonetic loss for the flow: VoxLM's own tokenizer reads the generated and the real mel.

The OT-CFM loss weighs every mel bin alike, and the words live in a small part of
that error (egs/synth_en/RESULTS.md: lower validation loss did not buy words). This
term adds what an ASR hears: at each training step the flow's one-step estimate of
the clean mel, ``x1_hat = x_t + (1 - t) v``, and the real mel go through the frozen
speech tokenizer's encoder and its phone CTC head (``inter_head``, trained on
phones from the continuous pre-quantizer features), and the loss is the KL
divergence of the generated frames' phone posteriors from the real ones', on the
target frames. DMOSpeech trains its TTS with an ASR's CTC loss the same way; here
the reader is the tokenizer VoxLM trains itself (never a judge), and the target is
the real audio's posteriorgram, so no transcript or alignment of the crop is needed.

The tokenizer reads 100 frames/s log-mel; the flow's mel is 50 frames/s of the same
80-band log-mel definition (another window). Its per-bin standardised mel (the
flow's ``normalize``) is upsampled x2 in time and taken as the tokenizer's
standardised features: greedy phones read this way from real dev mels differ from
the tokenizer's own front end in 7% of phones (40 dev utts, the toy recipe's
models). The x4 subsampling and x2 CTC upsampling bring the posteriors back to the
flow's 50 frames/s, one per mel frame.

Measured on the toy corpus it does not pay (egs/synth_en/RESULTS.md, stop 37: the
second flow phase with weight 1 read dev WER +0.036 +- 0.015 and SIM -0.038, while the
reader's own phones did not move), so no recipe config turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.model import TokenizerModel
from tts.mel import MelConfig


@dataclass
class PhoneticConfig:
    weight: float = 0.0  # 0 = off
    tokenizer: str | None = None  # tokenizer model dir (flow.train --tokenizer fills it)
    min_t: float = 0.5  # only samples at flow time t >= min_t (inference starts at prior_start)


class PhoneticLoss(nn.Module):
    """Frozen tokenizer phone reader; ``(gen, real, mask, lengths) -> scalar`` KL(real || gen)."""

    def __init__(self, tokenizer: TokenizerModel, mel: MelConfig, weight: float = 1.0, min_t: float = 0.5):
        super().__init__()
        cfg = tokenizer.cfg
        if tokenizer.inter_head is None or cfg.inter_from == "codes" or cfg.inter_targets != "phones":
            raise ValueError("the phonetic loss needs a tokenizer with a phone CTC head on its encoder "
                             "(inter_targets: phones, inter_from: encoder or both)")
        if cfg.n_mels != mel.n_mels or abs(2 * mel.frame_rate - 100.0) > 1e-6 or cfg.ctc_upsample != 2:
            raise ValueError(f"the phonetic loss reads 50 frames/s of {cfg.n_mels} mel bins (the tokenizer's) "
                             f"at a CTC upsampling of 2 (it has {cfg.ctc_upsample}); "
                             f"this flow's mel is {mel.frame_rate} frames/s of {mel.n_mels}")
        self.tokenizer, self.weight, self.min_t = tokenizer.eval(), weight, min_t
        for p in self.tokenizer.parameters():
            p.requires_grad_(False)
        self.last: torch.Tensor | None = None  # the latest unweighted value, for logging

    def train(self, mode: bool = True) -> PhoneticLoss:
        return self  # the reader stays in eval mode (no dropout) whatever its owner does

    def log_probs(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T) flow-standardised mel, lengths (B,) -> phone log-probs (B, T', P), valid (B, T').

        T' = T rounded down to even; frame i of the output reads mel frame i."""
        t = x.shape[2] - x.shape[2] % 2
        feats = F.interpolate(x[:, :, :t].float(), scale_factor=2, mode="linear", align_corners=False)
        feat_lens = (2 * lengths.clamp(max=t)) // 4 * 4  # (B,) multiples of 4
        m = self.tokenizer
        # the tokenizer standardises its input itself: hand it its own feature scale
        feats = feats.transpose(1, 2) * m.feat_std + m.feat_mean  # (B, 2T, C)
        logp, tokens = m.phone_log_probs(feats, feat_lens)  # (B, T, P) at 50 Hz, (B,) 25 Hz frames
        return logp, torch.arange(logp.shape[1], device=logp.device) < (tokens * m.cfg.ctc_upsample)[:, None]

    def forward(self, gen: torch.Tensor, real: torch.Tensor, frames: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        # gen, real: (B, C, T) standardised mels; frames: (B, T) bool, where to compare; lengths: (B,)
        if gen.shape[0] == 0:  # no row to read: zero, still part of the graph
            self.last = gen.new_zeros(())
            return gen.sum() * 0.0
        with torch.no_grad():
            target, valid = self.log_probs(real, lengths)
        logp, _ = self.log_probs(gen, lengths)
        keep = (valid & frames[:, :valid.shape[1]]).float()
        kl = (target.exp() * (target - logp)).sum(-1)  # (B, T')
        value = (kl * keep).sum() / keep.sum().clamp(min=1.0)
        self.last = value.detach()
        return value
