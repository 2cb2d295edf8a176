"""Harmonic source (NSF/HiFT idea): one oscillator driven by F0 gives every harmonic a coherent phase.

A convolutional generator fed 50 frames/s mel cannot by itself make a steady vowel's
phase advance correctly from frame to frame (its output for a steady input repeats
every frame). A source whose phase is the running integral of F0 carries that
advance: the generator reads the source's STFT phase and corrects it.

* :func:`estimate_f0`: F0 + voicing per mel frame from audio (normalised
  cross-correlation, vectorised torch). Training targets only, never a judge.
* :func:`upsample_frames`: frame values (centred on ``t * hop + hop / 2``) -> samples.
* :func:`harmonic_excitation`: band-limited pulse train ``sum_h sin(h * phi)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def estimate_f0(wav: torch.Tensor, sr: int, hop: int, fmin: float = 60.0, fmax: float = 400.0,
                window: int = 1024, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T * hop) audio -> F0 in Hz (B, T) and voicing (B, T) bool, one value per mel frame.

    Frame ``t`` is centred on sample ``t * hop + hop / 2`` like the shared mel. F0 is the
    first normalised cross-correlation peak within 85% of the best one (no sub-octave
    errors), refined by parabolic interpolation. Unvoiced frames carry the median F0.
    """
    b, s = wav.shape
    t = s // hop
    x = F.pad(wav.float()[:, None], (window // 2, window // 2), mode="reflect")[:, 0]
    frames = x[:, hop // 2:].unfold(-1, window, hop)[:, :t]  # (B, T, W)
    frames = frames - frames.mean(-1, keepdim=True)
    lo, hi = int(sr // fmax), int(math.ceil(sr / fmin))
    spec = torch.fft.rfft(frames, 2 * window)
    r = torch.fft.irfft(spec.abs() ** 2, 2 * window)[..., :hi + 2]
    c = torch.cumsum(frames ** 2, -1)
    lags = torch.arange(hi + 2)
    head = c[..., window - 1 - lags]
    tail = c[..., -1:] - torch.cat([torch.zeros_like(c[..., :1]), c[..., lags[1:] - 1]], -1)
    nccf = r / torch.sqrt(head * tail).clamp(min=1e-9)
    band = nccf[..., lo:hi + 1]
    best = band.max(-1).values
    first = (band >= 0.85 * best[..., None]).float().argmax(-1)  # first strong peak region
    idx = first[..., None] + torch.arange(-3, 4)
    idx = idx.clamp(0, band.shape[-1] - 1)
    local = band.gather(-1, idx)
    peak = idx.gather(-1, local.argmax(-1, keepdim=True))[..., 0].clamp(1, band.shape[-1] - 2)
    y0, y1, y2 = (band.gather(-1, (peak + d)[..., None])[..., 0] for d in (-1, 0, 1))
    denom = y0 - 2 * y1 + y2
    shift = torch.where(denom.abs() > 1e-9, 0.5 * (y0 - y2) / denom, torch.zeros_like(denom)).clamp(-0.5, 0.5)
    f0 = sr / (lo + peak.float() + shift)
    rms = frames.pow(2).mean(-1).sqrt()
    loud = rms > torch.maximum(torch.full_like(rms, 1e-3), 0.03 * rms.max(-1, keepdim=True).values)
    voiced = (best > threshold) & loud
    fill = torch.stack([f0[i][voiced[i]].median() if voiced[i].any() else f0.new_tensor(120.0)
                        for i in range(b)])
    return torch.where(voiced, f0, fill[:, None]), voiced


def upsample_frames(values: torch.Tensor, hop: int) -> torch.Tensor:
    """(B, T) per-frame values (centred on ``t * hop + hop / 2``) -> (B, T * hop), linear.

    Edge frames are held. The interpolation weights are one table shared by every frame,
    so a chunk of frames upsamples to exactly the same samples as the whole sequence.
    """
    v = F.pad(values.float()[:, None], (1, 1), mode="replicate")[:, 0]  # (B, T + 2)
    a, b, c = v[:, :-2, None], v[:, 1:-1, None], v[:, 2:, None]
    i = torch.arange(hop, dtype=torch.float32, device=values.device)
    half = hop // 2
    first = a + (b - a) * ((i[:half] + 0.5) / hop + 0.5)
    second = b + (c - b) * ((i[half:] + 0.5) / hop - 0.5)
    return torch.cat([first, second], dim=-1).reshape(values.shape[0], -1)


def source_phase(f0_samples: torch.Tensor, sr: int, start: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(B, S) F0 in Hz per sample -> running oscillator phase (B, S), float64, from ``start``."""
    return torch.cumsum(f0_samples.double() * (2 * math.pi / sr), -1) + start


def harmonic_excitation(phi: torch.Tensor, f0_samples: torch.Tensor, voicing: torch.Tensor,
                        sr: int) -> torch.Tensor:
    """Band-limited pulse train ``v * sum_{h=1..N} sin(h * phi)``, N harmonics below 0.95 Nyquist.

    phi: (B, S) float64 phase; f0_samples, voicing: (B, S). Returns (B, S) float32.
    Closed form: ``sin(N phi / 2) sin((N + 1) phi / 2) / sin(phi / 2)``.
    """
    n = torch.floor(0.475 * sr / f0_samples.double().clamp(min=1.0)).clamp(min=1.0)
    p = torch.remainder(phi, 2 * math.pi)
    den = torch.sin(p / 2)
    safe = den.abs() > 1e-6
    val = torch.sin(n * p / 2) * torch.sin((n + 1) * p / 2) / torch.where(safe, den, torch.ones_like(den))
    val = torch.where(safe, val, torch.zeros_like(val))
    return (val / n.sqrt() * voicing.double()).float()
