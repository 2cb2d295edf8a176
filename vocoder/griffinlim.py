"""Griffin-Lim baseline behind the vocoder's call: (B, n_mels, T) log-mel -> (B, T * hop)."""

from __future__ import annotations

import librosa
import numpy as np
import torch

from tts.mel import MelConfig
from vocoder.model import VocoderInputError


class GriffinLim:
    """The shared mel inverted by NNLS onto the linear grid, then librosa's (fast) Griffin-Lim.

    The shared mel frames are centred on ``t * hop + hop / 2`` (see ``tts/mel.py``);
    librosa's centred frames sit on ``t * hop``, so the output is shifted by half a
    hop to line up with the input audio, and cut to exactly ``T * hop`` samples.
    """

    def __init__(self, mel_config: MelConfig | None = None, n_iter: int = 32, inverse: str = "nnls"):
        """inverse: "nnls" (librosa's non-negative least squares, better, slower) or "pinv"."""
        if inverse not in ("nnls", "pinv"):
            raise ValueError(f"inverse must be 'nnls' or 'pinv', got {inverse!r}")
        self.mel_config = c = mel_config or MelConfig()
        self.hop = c.hop_length
        self.n_iter, self.inverse = n_iter, inverse
        fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels,
                                 fmin=c.f_min, fmax=c.f_max, norm="slaney", htk=False)
        self._pinv = np.linalg.pinv(fb)

    def check_mel(self, mel: torch.Tensor) -> None:
        n_mels = self.mel_config.n_mels
        if not isinstance(mel, torch.Tensor):
            raise VocoderInputError(f"mel must be a torch.Tensor, got {type(mel).__name__}")
        if mel.dim() != 3 or mel.shape[1] != n_mels or 0 in mel.shape:
            raise VocoderInputError(f"mel must have shape (B, {n_mels}, T), got {tuple(mel.shape)}")
        if not torch.isfinite(mel).all():
            raise VocoderInputError("mel contains NaN or infinite values")

    def _one(self, mel: np.ndarray) -> np.ndarray:
        c = self.mel_config
        if self.inverse == "nnls":
            mag = librosa.feature.inverse.mel_to_stft(
                np.exp(mel), sr=c.sample_rate, n_fft=c.n_fft, power=1.0,
                fmin=c.f_min, fmax=c.f_max, norm="slaney", htk=False)
        else:
            mag = np.maximum(self._pinv @ np.exp(mel), 0.0)
        frames = mel.shape[1]
        wav = librosa.griffinlim(mag, n_iter=self.n_iter, hop_length=self.hop,
                                 win_length=c.win_length, n_fft=c.n_fft, center=True,
                                 random_state=0)
        out = np.zeros(frames * self.hop, np.float32)
        shift = self.hop // 2
        n = min(len(wav), len(out) - shift)
        out[shift:shift + n] = wav[:n]
        return out

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        # mel: (B, n_mels, T) -> (B, T * hop)
        self.check_mel(mel)
        arr = mel.detach().cpu().float().numpy()
        return torch.from_numpy(np.stack([self._one(m) for m in arr]).astype(np.float32))
