"""Vocoder data: random fixed-length waveform segments from a Kaldi data dir (wav.scp), optionally
with the mel another model made of each utterance (``input_mels``: fine-tuning on the flow's mels)."""

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

    ``input_mels``: a folder of ``<utt>.npy`` mels, (n_mels, T) frame ``t`` covering samples
    ``t * hop`` on (what ``flow.gta`` writes: the flow's mel of each utterance, time-aligned with
    its audio). Items are then ``(wav segment, its mel frames)``, the segment starting on a frame;
    utterances without a file are left out. HiFi-GAN's fine-tuning on the acoustic model's mels.
    """

    def __init__(self, data_dir: str | Path, sample_rate: int, hop: int, segment: int | None,
                 max_utts: int | None = None, max_seconds: float | None = None, seed: int = 0,
                 input_mels: str | Path | None = None):
        utts = load_data_dir(data_dir)
        self.input_mels = Path(input_mels) if input_mels else None
        if self.input_mels is not None:
            if segment is None:
                raise ValueError("input_mels needs training segments (segment=None is validation)")
            utts = [u for u in utts if (self.input_mels / f"{u.utt}.npy").is_file()]
        if not utts:
            raise DataDirError(f"no utterances in {data_dir}" + (f" with a mel in {input_mels}" if input_mels else ""))
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

    def input_mel(self, i: int) -> np.ndarray:
        path = self.input_mels / f"{self.utts[i].utt}.npy"
        try:
            mel = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataDirError(f"{path}: not a readable .npy mel ({err})") from err
        if mel.ndim != 2:
            raise DataDirError(f"{path}: a mel is (n_mels, frames), got shape {mel.shape}")
        return mel

    def _read(self, i: int, start: int | None = None, stop: int | None = None) -> np.ndarray:
        u = self.utts[i]
        if self.native[u.utt]:
            data, _ = sf.read(u.wav, start=start or 0, stop=stop, dtype="float32")
            return data
        return load_audio(u.wav, self.sr, allow_silence=True)[start:stop]

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.segment is None:
            wav = self._read(i)
            if self.max_samples:
                wav = wav[:self.max_samples]
            return torch.from_numpy(wav[:len(wav) // self.hop * self.hop].copy())
        n = _num_samples(self.utts[i].wav, self.sr)
        mel = None
        if self.input_mels is not None:
            mel = self.input_mel(i)  # (n_mels, T)
            frames = self.segment // self.hop
            start = self.rng.randint(0, max(0, min(n // self.hop, mel.shape[1]) - frames)) * self.hop
        else:
            start = self.rng.randint(0, max(0, n - self.segment))
        wav = self._read(i, start, start + self.segment)
        out = np.zeros(self.segment, np.float32)
        out[:len(wav)] = wav[:self.segment]
        if mel is None:
            return torch.from_numpy(out)
        seg = np.array(mel[:, start // self.hop:start // self.hop + frames], np.float32)
        if seg.shape[1] < frames:  # past the mel's end: its floor
            seg = np.pad(seg, ((0, 0), (0, frames - seg.shape[1])), constant_values=mel.min())
        return torch.from_numpy(out), torch.from_numpy(seg)
