"""Vocoder losses: mel L1, multi-resolution STFT, APNet-style phase losses, GAN terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vocoder.spectral import anti_wrap


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over resolutions; (B, S) vs (B, S)."""

    def __init__(self, resolutions: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256), (2048, 512))):
        super().__init__()
        self.resolutions = resolutions
        for n_fft, _ in resolutions:
            self.register_buffer(f"win{n_fft}", torch.hann_window(n_fft), persistent=False)

    def magnitudes(self, wav: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
        spec = torch.stft(wav.float(), n_fft, hop, n_fft, getattr(self, f"win{n_fft}"), return_complex=True)
        return spec.abs().clamp(min=1e-5)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # y_hat, y: (B, S) -> scalar
        total = y_hat.new_zeros(())
        for n_fft, hop in self.resolutions:
            m_hat, m = self.magnitudes(y_hat, n_fft, hop), self.magnitudes(y, n_fft, hop)
            sc = torch.linalg.norm(m - m_hat) / torch.linalg.norm(m).clamp(min=1e-5)
            total = total + sc + F.l1_loss(m_hat.log(), m.log())
        return total / len(self.resolutions)


def phase_losses(phase: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """APNet's anti-wrapped phase losses, weighted by the target magnitude.

    phase: (B, K, J) predicted phase; target: (B, K, J) complex STFT of the real audio
    at the same grid. Returns instantaneous-phase (ip), group-delay (gd) and
    instantaneous-angular-frequency (iaf) losses; low-energy bins, whose phase is
    noise, count little.
    """
    mag = target.abs()
    w = mag / mag.mean(dim=(1, 2), keepdim=True).clamp(min=1e-7)
    w = w.clamp(max=10.0)
    ref = torch.angle(target)

    def weighted(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return (err * weight).sum() / weight.sum().clamp(min=1e-7)

    ip = weighted(anti_wrap(phase - ref), w)
    gd = weighted(anti_wrap(phase.diff(dim=1) - ref.diff(dim=1)), torch.minimum(w[:, 1:], w[:, :-1]))
    iaf = weighted(anti_wrap(phase.diff(dim=2) - ref.diff(dim=2)), torch.minimum(w[..., 1:], w[..., :-1]))
    return {"ip": ip, "gd": gd, "iaf": iaf}


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Least-squares GAN: real -> 1, fake -> 0 (HiFi-GAN)."""
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f ** 2) for r, f in zip(real, fake, strict=True))


def generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f in fake)


def feature_matching_loss(real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    total = 0.0
    for rs, fs in zip(real_feats, fake_feats, strict=True):
        for r, f in zip(rs, fs, strict=True):
            total = total + F.l1_loss(f, r.detach())
    return total
