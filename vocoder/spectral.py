"""Spectral operations of the vocoder head: its STFT/iSTFT pair and the mel pseudo-inverse.

The head works at its own resolution (default n_fft 320 / hop 80 at 16 kHz, 4
sub-frames per mel frame), centred framing (``torch.stft(center=True)``):
sub-frame ``j`` is centred on sample ``j * hop``. ``T * up`` sub-frames give
exactly ``T * up * hop`` samples through :meth:`HeadSTFT.istft`.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import torch
from torch import nn

from tts.mel import MelConfig


class HeadSTFT(nn.Module):
    """STFT/iSTFT at the head's resolution (hann window, centred frames)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def stft(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, samples) -> (B, bins, frames) complex; frame ``j`` centred on ``j * hop``."""
        spec = torch.stft(wav, self.n_fft, self.hop, self.n_fft, self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        return spec[..., :frames]

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, bins, frames) complex -> (B, length) waveform."""
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, self.window,
                           center=True, length=length)


def bin_advance(n_fft: int, hop: int) -> torch.Tensor:
    """(bins,) phase advance per hop of a sinusoid at each bin's centre frequency."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float32)
    return 2 * math.pi * k * hop / n_fft


def mel_pseudo_inverse(mel_cfg: MelConfig, n_fft: int) -> torch.Tensor:
    """(bins, n_mels) pseudo-inverse of the shared mel filterbank, evaluated at ``n_fft``.

    The shared filterbank is defined at ``mel_cfg.n_fft``; its pseudo-inverse maps a
    mel back to that linear grid, which is then interpolated onto the head's
    frequency grid and rescaled for the shorter window (FreeV's amplitude prior).
    """
    fb = librosa.filters.mel(sr=mel_cfg.sample_rate, n_fft=mel_cfg.n_fft, n_mels=mel_cfg.n_mels,
                             fmin=mel_cfg.f_min, fmax=mel_cfg.f_max, norm="slaney", htk=False)
    pinv = np.linalg.pinv(fb)  # (mel_bins_linear, n_mels)
    src = np.linspace(0, mel_cfg.sample_rate / 2, pinv.shape[0])
    dst = np.linspace(0, mel_cfg.sample_rate / 2, n_fft // 2 + 1)
    out = np.stack([np.interp(dst, src, pinv[:, m]) for m in range(pinv.shape[1])], axis=1)
    out *= n_fft / mel_cfg.win_length  # sinusoid amplitude scales with the window sum
    return torch.from_numpy(out.astype(np.float32))


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """|x| after wrapping to [-pi, pi] (APNet's anti-wrapping function)."""
    return torch.abs(x - 2 * math.pi * torch.round(x / (2 * math.pi)))
