"""The exportable graphs of the VoxLM chain: thin ``nn.Module`` wrappers with plain tensor I/O.

Each wrapper calls the component's own modules (no copy of model code) and fixes
the boundary the ONNX file will have. ``voxlm export onnx`` traces them with
``torch.onnx.export(..., dynamo=True)``; :mod:`tts.onnx_backend` feeds the same
names to onnxruntime. The LLM is not here: onnxruntime-genai's model builder
exports it (:func:`tts.onnx_export.export_llm`).

    graph               inputs -> outputs
    tokenizer_encoder   feats (B, 4T, n_mels), feat_lengths (B,) -> ids (B, T), lengths (B,)
                        [, log_probs (B, T * up, P): the auxiliary phone CTC head's log-posteriors (the
                        phone verifier), where the tokenizer has one; one graph, so the encoder's
                        weights are stored once]
    tokenizer_ctc       ids (B, T), lengths (B,) -> logits (B, T * up, V)
    flow_tokens         ids (B, T) frame-rate token ids -> feats (B, T, D), mu (B, C, T)   (embedding +
                        token encoder and its mel prior, zeros without one; once per utterance)
    flow_estimator      x (B, C, T), t (B,), keep (B,), feats (B, T, D), cond (B, C, T),
                        prompt_mask (B, T) -> v (B, C, T)   (one ODE field call, full attention)
    vocoder             mel (B, C, T) -> wav (B, T * hop)
    speaker             mel (B, C, T) -> embedding (B, D)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flow.backbone import timestep_embedding


class TokenizerEncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor):
        # feats: (B, 4T, n_mels), feat_lengths: (B,) -> ids (B, T), lengths (B,)
        #   [, phone log-posteriors (B, T * up, P) where the tokenizer has a phone head]
        m = self.model
        h, mask = m.encode_continuous(feats, feat_lengths)
        ids = m.quantizer(h, mask)[1]
        if not m.has_phone_head:
            return ids, mask.sum(1)
        return ids, mask.sum(1), m.phone_head(h, mask)


class TokenizerCTCGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # ids: (B, T), lengths: (B,) -> CTC logits (B, T * up, V)
        return self.model.logits_from_tokens(ids, lengths)


class FlowTokensGraph(nn.Module):
    """FlowModel.features under full attention: frame-rate ids -> token features (run once, not per step)."""

    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def forward(self, ids, cond=None, prompt_mask=None):
        # ids: (B, T) token ids at the frame rate -> feats (B, T, D), mu (B, C, T) normalised mel prior;
        # a prior_speaker model also takes cond (B, C, T) and prompt_mask (B, T), as flow_estimator does
        spk = self.flow.speaker_vector(cond, prompt_mask, None) if self.flow.prior_spk is not None else None
        feats, mu = self.flow.features(ids, None, spk)
        if mu is None:
            mu = torch.zeros(ids.shape[0], self.flow.n_mels, ids.shape[1])
        return feats, mu


class FlowEstimatorGraph(nn.Module):
    """FlowModel.estimator's field with its conditions as inputs; token features from flow_tokens.

    Offline (full) attention only: an explicit (B, 1, T, T) mask input cost ~11% of every
    call in onnxruntime (measured), and chunk masks serve streaming, which stays on torch.
    """

    def __init__(self, flow):
        super().__init__()
        if flow.config.speaker == "external":
            raise ValueError("flow models with speaker='external' are not exportable yet")
        self.flow = flow

    def forward(self, x, t, keep, feats, cond, prompt_mask):
        # x: (B, C, T) noisy normalised mel, t: (B,), keep: (B,) 1 = conditional, 0 = dropped (CFG),
        # feats: (B, T, D) token features, cond: (B, C, T) normalised prompt mel (0 past the prompt),
        # prompt_mask: (B, T) bool -> v (B, C, T)
        f, k = self.flow, keep.to(x.dtype)
        c = f.time_mlp(timestep_embedding(t, 256))
        spk = f.speaker_vector(cond, prompt_mask, None)
        if spk is not None:
            c = c + spk * k[:, None]
        c_tok = feats * k[:, None, None]
        return f.backbone(torch.cat([x, cond * k[:, None, None]], dim=1), c, None, extra=c_tok)


class RealISTFT(nn.Module):
    """torch.istft(center=True, hann window) with real ops only: inverse rDFT matrices + overlap-add.

    ONNX has no inverse STFT and exporters handle complex tensors poorly, so the
    vocoder graph uses this; it equals ``HeadSTFT.istft`` to float rounding. The
    overlap-add is ``n_fft / hop`` shifted sums, so ``hop`` must divide ``n_fft``.
    """

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        if n_fft % hop:
            raise ValueError(f"the ONNX iSTFT needs hop ({hop}) to divide n_fft ({n_fft})")
        self.n_fft, self.hop = n_fft, hop
        n, k = torch.arange(n_fft, dtype=torch.float64), torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        w = torch.full_like(k, 2.0)
        w[0] = 1.0
        if n_fft % 2 == 0:
            w[-1] = 1.0  # DC and Nyquist appear once in the inverse real DFT
        ang = 2 * math.pi * k[:, None] * n[None, :] / n_fft  # (bins, n_fft)
        window = torch.hann_window(n_fft, dtype=torch.float64)
        self.register_buffer("cos", (w[:, None] * torch.cos(ang) / n_fft * window).float(), persistent=False)
        self.register_buffer("sin", (-w[:, None] * torch.sin(ang) / n_fft * window).float(), persistent=False)
        self.register_buffer("win_sq", (window ** 2).float(), persistent=False)

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: (B, J, n_fft) -> (B, (J - 1) * hop + n_fft): frame j starts at sample j * hop
        b, j, _ = frames.shape
        r, hop = self.n_fft // self.hop, self.hop
        parts = frames.reshape(b, j, r, hop)
        return sum(F.pad(parts[:, :, k].reshape(b, j * hop), (k * hop, (r - 1 - k) * hop)) for k in range(r))

    def forward(self, mag: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        # mag, phase: (B, bins, J) -> (B, length)
        re, im = mag * torch.cos(phase), mag * torch.sin(phase)
        frames = re.transpose(1, 2) @ self.cos + im.transpose(1, 2) @ self.sin  # (B, J, n_fft), windowed
        y = self.overlap_add(frames)
        env = self.overlap_add(self.win_sq.expand(1, frames.shape[1], -1))  # (1, ...) window-square sum
        start = self.n_fft // 2
        return y[:, start:start + length] / env[:, start:start + length]


class VocoderGraph(nn.Module):
    def __init__(self, vocoder):
        super().__init__()
        if vocoder.config.source != "none":
            raise ValueError("vocoders with source='harmonic' are not exportable yet")
        self.vocoder = vocoder
        self.istft = RealISTFT(vocoder.stft.n_fft, vocoder.stft.hop)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # mel: (B, n_mels, T) -> wav (B, T * hop)
        v = self.vocoder
        h, _, _ = v.encode(mel)
        x = v.out(v.backbone.decode(h)).transpose(1, 2)  # (B, 6 * bins, T * up), as Vocoder.decode
        log_mag, adv, re, im, _, _ = x.chunk(6, dim=1)
        if v.config.amp_prior:
            prior = torch.log(torch.clamp(v.pinv @ mel.float().exp(), min=1e-5))
            log_mag = log_mag + prior.repeat_interleave(v.config.up, dim=2)
        phase = torch.atan2(im, re + 1e-7)  # the local phase: Vocoder.decode's atan2 of the phasor
        if v.config.phase_mode == "cumsum":
            adv = adv + v.advance[:, None]
            phase = phase + torch.remainder(torch.cumsum(adv, dim=2), 2 * math.pi)
        return self.istft(log_mag.clamp(max=8.0).exp(), phase, mel.shape[2] * v.hop)


class SpeakerGraph(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # mel: (B, n_mels, T) -> (B, D) unit-norm embedding
        return self.encoder(mel)
