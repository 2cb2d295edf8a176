"""The one audio front-end of VoxLM: load, check, resample, normalise, save.

Audio in VoxLM's API is ``numpy.float32`` mono plus an explicit sample rate.
Everything that enters a model passes through :func:`load_audio` (or
:func:`prepare_audio` for arrays), which resamples *at the edge* and refuses
audio that no model should see: empty, silent, NaN/inf or absurdly long.
"""

from __future__ import annotations

import os
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

DEFAULT_MAX_SECONDS = 600.0
SILENCE_PEAK = 1e-4  # peak below this (-80 dBFS) counts as silence


class AudioError(ValueError):
    """Raised for audio a model must not see; the message says what is wrong."""


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``(samples, channels)`` and its rate; clear errors."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:  # libsndfile reads wav, flac, ogg and mp3
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # LibsndfileError, RuntimeError, ...
        raise AudioError(f"cannot read audio file {path}: {err}") from err
    return data, int(sr)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(T,), (T, C) or (C, T) with C <= 8 -> (T,) by averaging channels."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise AudioError(f"audio must be 1-D or 2-D (samples, channels), got shape {audio.shape}")
    if audio.shape[1] <= 8 and audio.shape[0] > audio.shape[1]:
        return audio.mean(axis=1)
    if audio.shape[0] <= 8:
        return audio.mean(axis=0)
    raise AudioError(f"cannot tell channels from samples in shape {audio.shape}")


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (soxr via librosa); a no-op when rates match."""
    if orig_sr == target_sr:
        return audio
    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")


def check_audio(
    audio: np.ndarray,
    sample_rate: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    min_seconds: float = 0.0,
    allow_silence: bool = False,
) -> None:
    """Raise :class:`AudioError` for empty, NaN/inf, silent, too short or too long audio."""
    if sample_rate is None or int(sample_rate) <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}")
    if audio.size == 0:
        raise AudioError("audio is empty (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError("audio contains NaN or infinite samples")
    seconds = audio.shape[-1] / sample_rate
    if seconds > max_seconds:
        raise AudioError(f"audio is {seconds:.1f} s long, over the limit of {max_seconds:.0f} s")
    if seconds < min_seconds:
        raise AudioError(f"audio is {seconds:.2f} s long, under the minimum of {min_seconds:.2f} s")
    if not allow_silence and float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError("audio is silent (peak below -80 dBFS)")


def peak_normalize(audio: np.ndarray, peak: float = 0.95) -> np.ndarray:
    """Scale so the absolute peak is ``peak``; silence is returned unchanged."""
    m = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if m < SILENCE_PEAK else (audio * (peak / m)).astype(np.float32)


def rms_normalize(audio: np.ndarray, target_dbfs: float = -20.0, peak: float = 0.99) -> np.ndarray:
    """Scale to a target RMS loudness, then limit the peak so nothing clips."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    if rms < SILENCE_PEAK:
        return audio
    out = audio * (10 ** (target_dbfs / 20) / rms)
    m = float(np.max(np.abs(out)))
    if m > peak:
        out = out * (peak / m)
    return out.astype(np.float32)


def soft_limit(audio: np.ndarray, knee: float = 0.8) -> np.ndarray:
    """Sample-wise soft limiter: unchanged up to ``knee``, above it bent by tanh towards 1.0.

    Synthesised speech at the prompt's loudness (-20 dBFS RMS) can peak over full scale; a
    hard clip on writing would distort it. Being sample-wise, this gives the same samples
    whether the audio arrives whole or in streamed chunks. Slope and value are continuous
    at the knee; the output never exceeds 1.0.
    """
    out = audio.astype(np.float32)  # a copy: the caller's array is never changed
    over = np.abs(out) > knee
    head = 1.0 - knee
    out[over] = np.sign(out[over]) * (knee + head * np.tanh((np.abs(out[over]) - knee) / head))
    return out


def prepare_audio(
    audio: np.ndarray,
    sample_rate: int,
    target_sr: int,
    normalize: str | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    min_seconds: float = 0.0,
    allow_silence: bool = False,
) -> np.ndarray:
    """Array in any layout/rate/dtype -> checked float32 mono at ``target_sr``.

    normalize: None (keep levels), "peak" or "rms".
    """
    if not isinstance(audio, np.ndarray):
        if hasattr(audio, "detach"):  # a torch tensor
            audio = audio.detach().cpu().numpy()
        else:
            raise AudioError(f"audio must be a numpy array, got {type(audio).__name__}")
    if audio.dtype.kind == "i":  # int PCM -> [-1, 1)
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max + 1)
    elif audio.dtype.kind != "f":
        raise AudioError(f"audio must hold numbers, got dtype {audio.dtype}")
    audio = to_mono(audio.astype(np.float32, copy=False))
    check_audio(audio, sample_rate, max_seconds, 0.0, allow_silence)
    audio = resample(audio, int(sample_rate), target_sr).astype(np.float32)
    check_audio(audio, target_sr, max_seconds, min_seconds, allow_silence)
    if normalize == "peak":
        audio = peak_normalize(audio)
    elif normalize == "rms":
        audio = rms_normalize(audio)
    elif normalize is not None:
        raise ValueError(f"normalize must be None, 'peak' or 'rms', got {normalize!r}")
    return audio


def load_audio(
    source: str | Path | np.ndarray,
    target_sr: int,
    sample_rate: int | None = None,
    **kwargs,
) -> np.ndarray:
    """Path or array -> checked float32 mono at ``target_sr`` (see :func:`prepare_audio`).

    An array needs its ``sample_rate``; a path carries its own.
    """
    if isinstance(source, (str, Path)):
        data, sample_rate = read_audio(source)
    else:
        if sample_rate is None:
            raise AudioError("an audio array needs an explicit sample_rate")
        data = source
    return prepare_audio(data, sample_rate, target_sr, **kwargs)


def save_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write float32 mono as 16-bit PCM wav (clipped to [-1, 1]); atomically: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
