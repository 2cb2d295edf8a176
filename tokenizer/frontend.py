"""Audio and text front-ends of the tokenizer: 100 frames/s log-mel, token count, characters.

Token rate: features come at 100 frames/s (hop 160 at 16 kHz) and are cut to a
multiple of 4 before the x4 subsampling, so a clip of ``n`` samples at 16 kHz
gives exactly

    num_tokens(n) = n // 640        (25 tokens per second; the last < 40 ms is dropped)

and 2 * num_tokens(n) equals the 50 Hz mel frames of ``tts.mel`` (``n // 320``)
or one fewer, so flow can upsample tokens x2 and pad one frame at most.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from tts.audio import AudioError, load_audio
from tts.g2p import ARPABET, word_phones
from tts.mel import MelConfig, MelSpectrogram

from .config import FEATURE_HOP, SAMPLE_RATE, SAMPLES_PER_TOKEN, SUBSAMPLING


def num_tokens(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Tokens :meth:`SpeechTokenizer.encode` returns for ``num_samples`` at ``sample_rate``.

    Audio at another rate is resampled to 16 kHz first (ceil(n * 16000 / sr) samples).
    """
    n16 = num_samples if sample_rate == SAMPLE_RATE else math.ceil(num_samples * SAMPLE_RATE / sample_rate)
    return n16 // SAMPLES_PER_TOKEN


def feature_config(n_mels: int = 80, n_fft: int = 400) -> MelConfig:
    """The ASR front-end: tts.mel's definition at a 10 ms hop and 25 ms window."""
    return MelConfig(sample_rate=SAMPLE_RATE, n_fft=n_fft, hop_length=FEATURE_HOP, win_length=n_fft,
                     n_mels=n_mels, f_min=0.0, f_max=SAMPLE_RATE / 2)


class FeatureExtractor:
    """float32 mono 16 kHz -> (frames, n_mels) log-mel with frames = 4 * num_tokens."""

    def __init__(self, n_mels: int = 80, n_fft: int = 400):
        self.mel = MelSpectrogram(feature_config(n_mels, n_fft))

    @torch.no_grad()
    def __call__(self, audio: np.ndarray) -> torch.Tensor:
        frames = (len(audio) // SAMPLES_PER_TOKEN) * SUBSAMPLING
        if frames == 0:
            raise AudioError(f"audio is {len(audio)} samples at 16 kHz; a token needs {SAMPLES_PER_TOKEN}")
        feats = self.mel(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
        return feats[:, :frames].T.contiguous()  # (frames, n_mels)


def load_for_tokenizer(source, sample_rate: int | None = None, normalize: str | None = "rms",
                       max_seconds: float = 600.0) -> np.ndarray:
    """Path or array -> checked float32 mono 16 kHz, level-normalised, at least one token long."""
    return load_audio(source, SAMPLE_RATE, sample_rate=sample_rate, normalize=normalize,
                      min_seconds=SAMPLES_PER_TOKEN / SAMPLE_RATE, max_seconds=max_seconds)


_KEEP = re.compile(r"[^a-z' ]+")


def normalize_text(text: str) -> str:
    """Lowercase letters, apostrophes and single spaces: what the CTC head spells."""
    text = _KEEP.sub(" ", text.lower())
    return " ".join(text.split())


class CharVocab:
    """CTC symbols: index 0 is the blank, then the characters (saved with the model)."""

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError(f"vocab must be distinct single characters, got {chars!r}")
        self.chars = list(chars)
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_texts(cls, texts) -> CharVocab:
        chars: set[str] = set()
        for t in texts:
            chars.update(normalize_text(t))
        return cls(sorted(chars))

    def __len__(self) -> int:
        return len(self.chars) + 1  # with the blank

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in normalize_text(text) if c in self.index]

    def decode_ctc(self, ids) -> str:
        """Greedy CTC: collapse repeats, drop blanks."""
        out, prev = [], -1
        for i in ids:
            i = int(i)
            if i != prev and i != 0:
                out.append(self.chars[i - 1])
            prev = i
        return " ".join("".join(out).split())


PHONES = ARPABET + [f"<{c}>" for c in "abcdefghijklmnopqrstuvwxyz"]  # letters spell unknown words


class PhoneLexicon:
    """Text -> stressless ARPAbet ids (CMUdict, first pronunciation); unknown words are spelled.

    Used only as an auxiliary training target (the pre-quantizer CTC), so the
    tokens learn phonetic content fast; the model's output stays characters.
    """

    def __init__(self):
        self.index = {p: i + 1 for i, p in enumerate(PHONES)}  # 0 is the CTC blank

    def __len__(self) -> int:
        return len(PHONES) + 1

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in normalize_text(text).split():
            phones = word_phones(word)
            if phones:
                ids += [self.index[p] for p in phones]
            else:
                ids += [self.index[f"<{c}>"] for c in word if c.isalpha()]
        return ids
