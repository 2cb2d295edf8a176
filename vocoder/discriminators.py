"""Multi-period (HiFi-GAN) and multi-resolution (UnivNet/Vocos) discriminators, width-configurable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Outputs = tuple[list[torch.Tensor], list[list[torch.Tensor]]]  # logits per sub-disc, features per sub-disc


def conv_stack(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack then a 1-channel output conv -> (flattened logits, every layer's output)."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: tuple[int, ...]):
        super().__init__()
        self.period = period
        chans = (1, *channels)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < len(channels) - 1 else 1, 1), (2, 0)))
            for i in range(len(channels)))
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # wav: (B, S) -> logits (B, N), features
        b, s = wav.shape
        if s % self.period:
            wav = F.pad(wav, (0, self.period - s % self.period), mode="reflect")
        x = wav.view(b, 1, -1, self.period)
        return conv_stack(self.convs, self.post, x)


class ResolutionDiscriminator(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, (7, 5), (2, 2), (3, 2))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 1), (2, 1))),
            weight_norm(nn.Conv2d(c, c, (5, 3), (2, 2), (2, 1))),
            weight_norm(nn.Conv2d(c, c, 3, (2, 1), 1)),
            weight_norm(nn.Conv2d(c, c, 3, (2, 2), 1)),
        ])
        self.post = weight_norm(nn.Conv2d(c, 1, 3, 1, 1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # wav: (B, S) -> logits (B, N), features
        spec = torch.stft(wav, self.n_fft, self.hop, self.n_fft, self.window, return_complex=True)
        x = spec.abs().clamp(min=1e-5).log().unsqueeze(1)  # (B, 1, F, T)
        return conv_stack(self.convs, self.post, x)


class Discriminators(nn.Module):
    """All sub-discriminators: (B, S) -> (logits list, features list)."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11),
                 period_channels: tuple[int, ...] = (16, 64, 128, 128),
                 resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (256, 64)),
                 resolution_channels: int = 16):
        super().__init__()
        self.discs = nn.ModuleList(
            [PeriodDiscriminator(p, tuple(period_channels)) for p in periods]
            + [ResolutionDiscriminator(n, h, resolution_channels) for n, h in resolutions])

    def forward(self, wav: torch.Tensor) -> Outputs:
        # wav: (B, S)
        logits, feats = [], []
        for d in self.discs:
            lo, fe = d(wav)
            logits.append(lo)
            feats.append(fe)
        return logits, feats
