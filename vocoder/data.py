"""Vocoder data: random fixed-length waveform segments from a Kaldi data dir (wav.scp)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from tts.audio import load_audio
from tts.datadir import DataDirError, load_data_dir


def _num_samples(path: str, sample_rate: int) -> int:
    info = sf.info(path)
    return int(info.frames * sample_rate / info.samplerate)


class SegmentDataset(Dataset):
    """Item i: a random ``segment`` samples of utterance i (zero-padded if shorter), float32.

    ``segment=None`` returns whole utterances cut to a multiple of ``hop`` (validation).
    Files at the model's rate are read segment-wise; others are loaded whole and resampled.
    """

    def __init__(self, data_dir: str | Path, sample_rate: int, hop: int, segment: int | None,
                 max_utts: int | None = None, max_seconds: float | None = None, seed: int = 0):
        utts = load_data_dir(data_dir)
        if not utts:
            raise DataDirError(f"no utterances in {data_dir}")
        self.utts = utts[:max_utts] if max_utts else utts
        self.sr, self.hop, self.segment = sample_rate, hop, segment
        self.max_samples = int(max_seconds * sample_rate) if max_seconds else None
        self.rng = random.Random(seed)
        self.native = {}
        for u in self.utts:
            info = sf.info(u.wav)
            self.native[u.utt] = info.samplerate == sample_rate and info.channels == 1

    def __len__(self) -> int:
        return len(self.utts)

    def _read(self, i: int, start: int | None = None, stop: int | None = None) -> np.ndarray:
        u = self.utts[i]
        if self.native[u.utt]:
            data, _ = sf.read(u.wav, start=start or 0, stop=stop, dtype="float32")
            return data
        return load_audio(u.wav, self.sr, allow_silence=True)[start:stop]

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.segment is None:
            wav = self._read(i)
            if self.max_samples:
                wav = wav[:self.max_samples]
            return torch.from_numpy(wav[:len(wav) // self.hop * self.hop].copy())
        n = _num_samples(self.utts[i].wav, self.sr)
        start = self.rng.randint(0, max(0, n - self.segment))
        wav = self._read(i, start, start + self.segment)
        out = np.zeros(self.segment, np.float32)
        out[:len(wav)] = wav[:self.segment]
        return torch.from_numpy(out)
