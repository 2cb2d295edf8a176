"""The single mel-spectrogram definition shared by flow and vocoder.

Both models import :class:`MelConfig` and :class:`MelSpectrogram` from here, so
their features can never drift apart. Frame count is exact and documented:

    num_frames(num_samples) = num_samples // hop_length

("same" padding: the signal is reflect-padded by (n_fft - hop) / 2 on each side
and framed without centring), so a vocoder that outputs ``frames * hop`` samples
reproduces the first ``frames * hop`` samples of the input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import librosa
import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 1280
    hop_length: int = 320  # 16 kHz / 320 = 50 frames per second
    win_length: int = 1280
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = 8000.0
    log_floor: float = 1e-5  # log(max(mel, floor)); the floor is log(1e-5) = -11.51

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def preset(cls, name: str) -> MelConfig:
        """'16k': the toy corpus (50 fps, 80 bins). '24k': real corpora (50 fps, 100 bins).
        Both frame with an 80 ms window; '16k-w40' and '24k-w40' keep the 50 fps with a
        40 ms window (n_fft 640 / 960), which loses fewer words (egs/synth_en/RESULTS.md)."""
        presets = {"16k": cls(), "24k": cls(24000, 1920, 480, 1920, 100, 0.0, 12000.0),
                   "16k-w40": cls(16000, 640, 320, 640, 80, 0.0, 8000.0),
                   "24k-w40": cls(24000, 960, 480, 960, 100, 0.0, 12000.0)}
        presets |= {"16000": presets["16k"], "24000": presets["24k"]}
        if name not in presets:
            raise ValueError(f"unknown mel preset {name!r}: use one of {sorted(presets)}")
        return presets[name]


class MelSpectrogram(nn.Module):
    """(B, samples) or (samples,) float waveform -> (B, n_mels, samples // hop) log-mel."""

    def __init__(self, config: MelConfig = MelConfig()):
        super().__init__()
        self.config = config
        fb = librosa.filters.mel(
            sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
            fmin=config.f_min, fmax=config.f_max, norm="slaney", htk=False,
        )
        self.register_buffer("mel_basis", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, n_fft // 2 + 1, frames) linear STFT magnitude."""
        c = self.config
        pad = c.n_fft - c.hop_length
        x = torch.nn.functional.pad(wav.unsqueeze(1), (pad // 2, pad - pad // 2), mode="reflect")
        spec = torch.stft(
            x.squeeze(1), c.n_fft, c.hop_length, c.win_length, self.window,
            center=False, return_complex=True,
        )
        return spec.abs()

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        # wav: (B, samples) -> (B, n_mels, frames)
        squeeze = wav.dim() == 1
        if squeeze:
            wav = wav.unsqueeze(0)
        mel = torch.matmul(self.mel_basis, self.magnitude(wav.float()))
        mel = torch.log(torch.clamp(mel, min=self.config.log_floor))
        return mel[0] if squeeze else mel


_CACHE: dict[MelConfig, MelSpectrogram] = {}


def mel_spectrogram(audio: np.ndarray, config: MelConfig = MelConfig()) -> np.ndarray:
    """numpy float32 mono at ``config.sample_rate`` -> (n_mels, frames) float32 log-mel."""
    if config not in _CACHE:
        _CACHE[config] = MelSpectrogram(config)
    with torch.no_grad():
        return _CACHE[config](torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()
