"""Training data: a Kaldi data dir -> cached log-mel features + character targets, bucketed batches."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tts.audio import AudioError
from tts.datadir import load_data_dir
from tts.training import BucketBatchSampler, ResumableLoader

from .config import DataConfig, ModelConfig
from .frontend import CharVocab, FeatureExtractor, PhoneLexicon, load_for_tokenizer

log = logging.getLogger(__name__)


def compute_features(data_dir: str | Path, cfg: ModelConfig, normalize: str | None,
                     cache: str | Path | None = None) -> dict[str, torch.Tensor]:
    """utt -> (frames, n_mels) float16 log-mel, cached in ``cache`` (safetensors) when given.

    Clips that cannot be read or are under one token are skipped with a warning.
    """
    if cache is not None and Path(cache).is_file():
        return load_file(str(cache))
    extractor = FeatureExtractor(cfg.n_mels, cfg.n_fft)
    feats: dict[str, torch.Tensor] = {}
    for utt in tqdm(load_data_dir(data_dir), desc=f"features {data_dir}", mininterval=5):
        try:
            feats[utt.utt] = extractor(load_for_tokenizer(utt.wav, normalize=normalize)).half()
        except AudioError as err:
            log.warning("skipping %s: %s", utt.utt, err)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{cache}.{os.getpid()}.tmp")  # distributed ranks may cache at once
        save_file(feats, str(tmp))
        tmp.replace(cache)
    return feats


def feature_stats(feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    total = sum(f.shape[0] for f in feats.values())
    s = sum(f.float().sum(0) for f in feats.values())
    s2 = sum((f.float() ** 2).sum(0) for f in feats.values())
    mean = s / total
    return mean, (s2 / total - mean**2).clamp(min=1e-4).sqrt()


@dataclass
class Item:
    utt: str
    feats: torch.Tensor  # (frames, n_mels)
    target: list[int]
    text: str
    inter_target: list[int]  # pre-quantizer CTC targets (phones, or the characters again)


class CTCDataset(Dataset):
    """Features with their character targets; drops clips CTC cannot align or over max_seconds."""

    def __init__(self, data_dir: str | Path, feats: dict[str, torch.Tensor], vocab: CharVocab,
                 ctc_upsample: int, max_seconds: float | None = None, limit: int | None = None,
                 phones: PhoneLexicon | None = None):
        texts = {u.utt: u.text for u in load_data_dir(data_dir)}
        self.items: list[Item] = []
        dropped = 0
        for utt in sorted(feats):
            f = feats[utt]
            target = vocab.encode(texts.get(utt, ""))
            too_long = max_seconds is not None and f.shape[0] > max_seconds * 100
            inter = phones.encode(texts.get(utt, "")) if phones is not None else target
            frames = f.shape[0] // 4 * ctc_upsample
            if not target or not inter or max(len(target), len(inter)) > frames or too_long:
                dropped += 1
                continue
            text = " ".join("".join(vocab.chars[i - 1] for i in target).split())
            self.items.append(Item(utt, f, target, text, inter))
        if limit is not None and len(self.items) > limit:  # an even spread over the ids
            step = len(self.items) / limit
            self.items = [self.items[int(i * step)] for i in range(limit)]
        if dropped:
            log.warning("%s: dropped %d clips (no target, too long, or more characters than CTC frames)",
                        data_dir, dropped)
        if not self.items:
            raise ValueError(f"{data_dir}: no usable utterances")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    def lengths(self) -> list[int]:
        return [it.feats.shape[0] for it in self.items]


def collate(items: list[Item]) -> dict:
    return {
        "feats": torch.nn.utils.rnn.pad_sequence([it.feats.float() for it in items], batch_first=True),
        "feat_lengths": torch.tensor([it.feats.shape[0] for it in items]),
        "targets": torch.tensor([t for it in items for t in it.target]),
        "target_lengths": torch.tensor([len(it.target) for it in items]),
        "inter_targets": torch.tensor([t for it in items for t in it.inter_target]),
        "inter_target_lengths": torch.tensor([len(it.inter_target) for it in items]),
        "texts": [it.text for it in items],
        "utts": [it.utt for it in items],
    }


def make_loader(ds: CTCDataset, cfg: DataConfig, shuffle: bool, seed: int = 0) -> DataLoader:
    sampler = BucketBatchSampler(ds.lengths(), cfg.max_frames, cfg.max_batch, shuffle=shuffle, seed=seed)
    return ResumableLoader(ds, sampler, collate_fn=collate, num_workers=0)


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, cfg: DataConfig, fill: torch.Tensor) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) without time warping, for training batches.

    feats: (B, T, n_mels), lengths: (B,), fill: (n_mels,) -> a masked copy. Each clip gets
    ``cfg.freq_masks`` bands of 0..``cfg.freq_width`` mel bins and ``cfg.time_masks`` spans
    of 0..``cfg.time_width`` x its length, set to ``fill`` (the feature mean, i.e. 0 after
    the model's normalisation). Written here because torchaudio (which has the masks) is
    not installable beside the CPU torch (see DESIGN.md).
    """
    if not (cfg.freq_masks or cfg.time_masks):
        return feats
    b, t, m = feats.shape
    keep = torch.ones(b, t, m, dtype=torch.bool, device=feats.device)
    for i in range(b):
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, min(cfg.freq_width, m) + 1, ()))
            f0 = int(torch.randint(0, m - w + 1, ()))
            keep[i, :, f0:f0 + w] = False
        n = int(lengths[i])
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, int(cfg.time_width * n) + 1, ()))
            t0 = int(torch.randint(0, n - w + 1, ()))
            keep[i, t0:t0 + w] = False
    return torch.where(keep, feats, fill.to(feats.dtype))
