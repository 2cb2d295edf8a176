"""Training data for the flow model: speech tokens + cached log-mels of a Kaldi data dir.

Reads ``<data>/tokens`` (``<utt> <id id ...>`` at the token rate) and
``<data>/wav.scp``; the mels come from :mod:`tts.mel` (the one mel definition)
and are cached as ``<data>/mel_<key>/<utt>.npy`` (float32, (n_mels, frames)), ``<key>``
a digest of the mel definition (its ``config.json`` lies beside them), so a model on
another mel never reads stale features. Caching is resumable: existing files are kept,
new ones are written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from tts.audio import load_audio
from tts.datadir import DataDirError, read_int_table, read_table
from tts.mel import MelConfig, mel_spectrogram

log = logging.getLogger(__name__)


def read_tokens(path: str | Path) -> dict[str, np.ndarray]:
    """Kaldi table of speech tokens -> {utt: int64 ids} (errors: :func:`tts.datadir.read_int_table`)."""
    return {utt: np.asarray(ids, dtype=np.int64) for utt, ids in read_int_table(path).items()}


@functools.cache
def _mel_key(mel_cfg: MelConfig) -> str:
    """A short digest of a mel definition (computed once per definition, not per item read)."""
    return hashlib.sha1(json.dumps(mel_cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


def mel_dir(data_dir: str | Path, mel_cfg: MelConfig) -> Path:
    """The cache folder of ``mel_cfg``'s mels in ``data_dir``: one per mel definition."""
    return Path(data_dir) / f"mel_{_mel_key(mel_cfg)}"


def mel_path(data_dir: str | Path, utt: str, mel_cfg: MelConfig) -> Path:
    return mel_dir(data_dir, mel_cfg) / f"{utt}.npy"


def cache_mels(data_dir: str | Path, mel_cfg: MelConfig, utts: list[str] | None = None,
               progress: bool = True) -> None:
    """Compute ``mel_dir(data_dir, mel_cfg)/<utt>.npy`` for every utterance (or ``utts``) that lacks one."""
    data_dir = Path(data_dir)
    wavs = read_table(data_dir / "wav.scp")
    todo = [u for u in (utts or sorted(wavs)) if not mel_path(data_dir, u, mel_cfg).is_file()]
    cache = mel_dir(data_dir, mel_cfg)
    cache.mkdir(exist_ok=True)
    if not (cache / "config.json").is_file():
        (cache / "config.json").write_text(json.dumps(mel_cfg.to_dict(), indent=2) + "\n")
    for utt in tqdm(todo, desc=f"mel {data_dir}", disable=not progress or not todo):
        audio = load_audio(wavs[utt], mel_cfg.sample_rate)
        mel = mel_spectrogram(audio, mel_cfg)
        save_mel(mel_path(data_dir, utt, mel_cfg), mel)


def save_mel(path: Path, mel: np.ndarray) -> None:
    """Write a float32 ``.npy`` atomically: a temporary named by the process (ranks may write at
    once), renamed into place, so a killed run never leaves a torn file."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, mel.astype(np.float32))
    tmp.replace(path)


def load_mel(data_dir: str | Path, utt: str, mel_cfg: MelConfig, mmap: bool = False) -> np.ndarray:
    return np.load(mel_path(data_dir, utt, mel_cfg), mmap_mode="r" if mmap else None)


@dataclass
class FlowItem:
    utt: str
    tokens: torch.Tensor  # (N,)
    mel: torch.Tensor  # (C, T), T <= upsample * N


class FlowDataset(Dataset):
    """Aligned (tokens, mel) pairs of one or more data dirs; utterances whose lengths disagree by > 2 tokens are skipped.

    Several dirs train one flow on their union (e.g. a corpus plus speech of more voices
    whose transcripts are unusable: the flow needs only tokens and mel); utterance ids
    must be unique across them. ``crop_frames``: longer utterances are cut to a random
    token-aligned window (fixed window at the start when ``random_crop`` is False).
    """

    def __init__(self, data_dirs: str | Path | list[str | Path], mel_cfg: MelConfig, upsample: int,
                 crop_frames: int = 1000, random_crop: bool = True, vocab_size: int | None = None,
                 progress: bool = True):
        self.data_dirs = [Path(d) for d in ([data_dirs] if isinstance(data_dirs, (str, Path)) else data_dirs)]
        self.upsample, self.mel_cfg = upsample, mel_cfg
        self.crop_frames, self.random_crop = crop_frames - crop_frames % upsample, random_crop
        self.items: list[tuple[Path, str, np.ndarray]] = []  # (data dir, utt, tokens)
        self.lengths: list[int] = []
        for d in self.data_dirs:
            self._add_dir(d, mel_cfg, vocab_size, progress)
        utts = [u for _, u, _ in self.items]
        if len(set(utts)) != len(utts):
            dup = sorted({u for u in utts if utts.count(u) > 1})[:3]
            raise DataDirError(f"{[str(d) for d in self.data_dirs]}: utterance ids repeat across dirs (e.g. {dup})")
        self.utts = utts

    def _add_dir(self, data_dir: Path, mel_cfg: MelConfig, vocab_size: int | None, progress: bool) -> None:
        upsample = self.upsample
        tokens = read_tokens(data_dir / "tokens")
        wavs = read_table(data_dir / "wav.scp")
        missing = sorted(set(wavs) - set(tokens))
        if missing:
            log.warning("%s: %d utterances have no tokens (e.g. %s); skipped", data_dir, len(missing), missing[:3])
        utts = sorted(set(wavs) & set(tokens))
        if not utts:
            raise DataDirError(f"{data_dir}: no utterance has both audio and tokens")
        top = max(int(t.max()) for t in tokens.values())
        if vocab_size is not None and top >= vocab_size:
            raise DataDirError(f"{data_dir}/tokens: id {top} >= vocab_size {vocab_size}")
        cache_mels(data_dir, mel_cfg, utts, progress)
        skipped, before = [], len(self.items)
        for utt in utts:
            frames = load_mel(data_dir, utt, mel_cfg, mmap=True).shape[1]
            if abs(frames - upsample * tokens[utt].size) > 2 * upsample:
                skipped.append(utt)
                continue
            self.items.append((data_dir, utt, tokens[utt]))
            self.lengths.append(min(frames, upsample * tokens[utt].size, self.crop_frames))
        if skipped:
            log.warning("%s: %d utterances skipped, tokens and mel lengths disagree (e.g. %s)",
                        data_dir, len(skipped), skipped[:3])
        if len(self.items) == before:
            raise DataDirError(f"{data_dir}: no utterance has tokens matching its mel length")

    def mel_stats(self, limit: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-bin mean and std of the log-mels of ``limit`` utterances spread evenly over the set."""
        picks = np.linspace(0, len(self.items) - 1, min(limit, len(self.items))).round().astype(int)
        mels = np.concatenate([load_mel(*self.items[i][:2], self.mel_cfg) for i in sorted(set(picks))], axis=1)
        return torch.from_numpy(mels.mean(1)).float(), torch.from_numpy(mels.std(1)).float()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> FlowItem:
        data_dir, utt, tokens = self.items[i]
        mel = load_mel(data_dir, utt, self.mel_cfg)
        frames = min(mel.shape[1], self.upsample * tokens.size)
        start = 0
        if frames > self.crop_frames:
            n_tok = (frames - self.crop_frames) // self.upsample
            start = random.randint(0, n_tok) * self.upsample if self.random_crop else 0
            frames = self.crop_frames
        t0 = start // self.upsample
        n = -(-frames // self.upsample)
        return FlowItem(utt, torch.from_numpy(tokens[t0:t0 + n].copy()),
                        torch.from_numpy(np.ascontiguousarray(mel[:, start:start + frames])))


def collate(items: list[FlowItem]) -> dict:
    """Pad to the longest item: tokens (B, N) zeros, mel (B, C, T) zeros, mel_lens (B,)."""
    n = max(it.tokens.numel() for it in items)
    t = max(it.mel.shape[1] for it in items)
    tokens = torch.zeros(len(items), n, dtype=torch.long)
    mel = torch.zeros(len(items), items[0].mel.shape[0], t)
    for b, it in enumerate(items):
        tokens[b, :it.tokens.numel()] = it.tokens
        mel[b, :, :it.mel.shape[1]] = it.mel
    lens = torch.tensor([it.mel.shape[1] for it in items])
    return {"utts": [it.utt for it in items], "tokens": tokens, "mel": mel, "mel_lens": lens}
