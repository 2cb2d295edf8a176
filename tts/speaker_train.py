"""Train VoxLM's speaker-encoder verifier on a Kaldi data dir, and report its EER.

    python -m tts.speaker_train --train data/train [data/timbre ...] --dev data/test --exp exp/speaker [--max-steps N]

Mels of every training utterance are computed once (progress bar) and held in
memory; batches are random fixed-length segments. Several ``--train`` dirs train one
encoder; a speaker id that appears in two of them is one speaker (Kaldi's ``utt2spk``). Training resumes from
``<exp>/checkpoints/last.ckpt`` and continues the same stream of batches (batch
``b`` of rank ``r`` is drawn from its own seed); ``--devices``/``--num-nodes``
train it data-parallel. The final model goes to ``<exp>/model`` and the
report (EER and mean same/different-speaker cosine on ``--dev``, whose speakers
may be unseen) to ``<exp>/report.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from tts.audio import load_audio
from tts.datadir import load_data_dir
from tts.mel import MelConfig, mel_spectrogram
from tts.speaker import AAMSoftmax, SpeakerEncoder, SpeakerEncoderConfig, equal_error_rate
from tts.training import (
    TrainerConfig,
    add_trainer_args,
    apply_trainer_args,
    build_trainer,
    dist_rank_world,
    last_checkpoint,
)


@dataclass
class SpeakerTrainConfig:
    segment_frames: int = 100  # 2 s at 50 frames/s
    batch_size: int = 64
    lr: float = 2e-3
    max_steps: int = 1500
    channels: int = 256
    embed_dim: int = 128


def load_mels(data_dir: str | Path, mel_cfg: MelConfig, desc: str) -> tuple[list[np.ndarray], list[str], list[str]]:
    utts = load_data_dir(data_dir)
    mels = [mel_spectrogram(load_audio(u.wav, mel_cfg.sample_rate), mel_cfg)
            for u in tqdm(utts, desc=f"mel {desc}")]
    return mels, [u.spk for u in utts], [u.utt for u in utts]


class SegmentStream(IterableDataset):
    """Endless random (mel segment, speaker index) pairs; mels shorter than a segment are tiled.

    Items come in groups of ``batch_size`` (one DataLoader batch), group ``b`` of
    rank ``r`` drawn from its own seed: ranks see different data, and a stream
    started at ``start`` (the resumed step) continues exactly where a run stopped.
    """

    def __init__(self, mels: list[np.ndarray], labels: list[int], frames: int, seed: int,
                 batch_size: int = 1, start: int = 0):
        self.mels, self.labels, self.frames, self.seed = mels, labels, frames, seed
        self.batch_size, self.start = batch_size, start

    def __iter__(self):
        rank, _ = dist_rank_world()
        for b in itertools.count(self.start):
            rng = random.Random(f"{self.seed}/{rank}/{b}")
            for _ in range(self.batch_size):
                yield self._draw(rng)

    def _draw(self, rng: random.Random) -> tuple[torch.Tensor, int]:
        i = rng.randrange(len(self.mels))
        m = self.mels[i]
        if m.shape[1] < self.frames:
            m = np.tile(m, (1, self.frames // m.shape[1] + 1))
        s = rng.randrange(m.shape[1] - self.frames + 1)
        return torch.from_numpy(m[:, s:s + self.frames]), self.labels[i]


class SpeakerModule(L.LightningModule):
    def __init__(self, cfg: SpeakerTrainConfig, num_speakers: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = SpeakerEncoder(SpeakerEncoderConfig(channels=cfg.channels, embed_dim=cfg.embed_dim))
        self.head = AAMSoftmax(cfg.embed_dim, num_speakers)

    def training_step(self, batch, _):
        mel, labels = batch  # (B, n_mels, T), (B,)
        loss = self.head(self.encoder(mel), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.cfg.lr, total_steps=self.cfg.max_steps, pct_start=0.1)
        return [opt], [{"scheduler": sched, "interval": "step"}]


@torch.no_grad()
def evaluate(encoder: SpeakerEncoder, mels: list[np.ndarray], spks: list[str], max_pairs: int = 4000) -> dict:
    """EER and mean cosine over same- and different-speaker utterance pairs."""
    encoder.eval()
    emb = np.stack([encoder(torch.from_numpy(m)[None])[0].numpy() for m in mels])
    pairs = list(itertools.combinations(range(len(mels)), 2))
    random.Random(0).shuffle(pairs)
    same, diff = [], []
    for i, j in pairs[: max_pairs * 4]:
        (same if spks[i] == spks[j] else diff).append(float(emb[i] @ emb[j]))
    same, diff = np.array(same[:max_pairs]), np.array(diff[:max_pairs])
    return {"eer": equal_error_rate(same, diff), "same_cos": float(same.mean()),
            "diff_cos": float(diff.mean()), "same_pairs": len(same), "diff_pairs": len(diff),
            "speakers": len(set(spks)), "utterances": len(mels)}


def resume_step(exp_dir: str | Path) -> int:
    """The global step of the checkpoint a run in ``exp_dir`` resumes from (0 when none)."""
    ckpt = last_checkpoint(exp_dir)
    if ckpt is None:
        return 0
    return int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["global_step"])


def train(train_dir: str | Path | list[str | Path], dev_dir: str | None, exp: str, cfg: SpeakerTrainConfig,
          trainer_cfg: TrainerConfig | None = None, **trainer_kwargs) -> dict:
    exp_dir = Path(exp)
    mel_cfg = MelConfig()
    mels, spks = [], []
    for d in [train_dir] if isinstance(train_dir, str | Path) else train_dir:
        m, s, _ = load_mels(d, mel_cfg, f"train {Path(d).name}")
        mels += m
        spks += s
    speakers = sorted(set(spks))
    labels = [speakers.index(s) for s in spks]
    module = SpeakerModule(cfg, len(speakers))
    stream = SegmentStream(mels, labels, cfg.segment_frames, seed=0, batch_size=cfg.batch_size,
                           start=resume_step(exp_dir))
    loader = DataLoader(stream, batch_size=cfg.batch_size)
    tcfg = trainer_cfg or TrainerConfig(max_steps=cfg.max_steps, checkpoint_every=250, val_every=10**9)
    trainer = build_trainer(tcfg, exp_dir, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(module, loader, ckpt_path=last_checkpoint(exp_dir))
    report = {"train_speakers": len(speakers), "train_utts": len(mels), "steps": trainer.global_step}
    if not trainer.is_global_zero:
        return report
    module.encoder.save_pretrained(exp_dir / "model")
    if dev_dir:
        dmels, dspks, _ = load_mels(dev_dir, mel_cfg, "dev")
        report["dev"] = evaluate(SpeakerEncoder.from_pretrained(exp_dir / "model"), dmels, dspks)
    (exp_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, nargs="+", help="one or more Kaldi data dirs")
    p.add_argument("--dev", default=None, help="data dir to report EER on (e.g. unseen test speakers)")
    p.add_argument("--exp", required=True)
    p.add_argument("--channels", type=int, default=SpeakerTrainConfig.channels)
    p.add_argument("--batch-size", type=int, default=SpeakerTrainConfig.batch_size)
    add_trainer_args(p)
    p.set_defaults(max_steps=SpeakerTrainConfig.max_steps)
    a = p.parse_args(argv)
    cfg = SpeakerTrainConfig(max_steps=a.max_steps, channels=a.channels, batch_size=a.batch_size)
    tcfg = apply_trainer_args(TrainerConfig(max_steps=cfg.max_steps, checkpoint_every=250, val_every=10**9), a)
    print(json.dumps(train(a.train, a.dev, a.exp, cfg, tcfg), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
