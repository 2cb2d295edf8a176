"""Train the vocoder on a Kaldi data dir; resumes from <exp>/checkpoints/last.ckpt.

    python -m vocoder.train --config conf/vocoder.yaml --train data/train --dev data/dev --exp exp/vocoder

Writes <exp>/model/ (config.json + model.safetensors, refreshed at every
validation and at the end), <exp>/samples/stepN/ (wavs + spectrogram PNGs),
<exp>/logs (CSV) and <exp>/tb (TensorBoard). Batches come from a seeded per-epoch
sampler that Lightning checkpoints, so a resumed run sees the same utterances in
the same order; ``--devices``/``--num-nodes``/``--strategy`` train it on many GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

from tts.config import load_yaml
from tts.mel import MelConfig
from tts.training import (
    BucketBatchSampler,
    ResumableLoader,
    TrainerConfig,
    add_trainer_args,
    apply_trainer_args,
    build_trainer,
    last_checkpoint,
    warm_start,
)
from vocoder.data import SegmentDataset
from vocoder.experiment import OptimConfig, VocoderExperiment
from vocoder.model import Vocoder, VocoderCheckpointError, VocoderConfig


@dataclass
class ValidationConfig:
    max_utts: int = 8
    max_seconds: float = 8.0


@dataclass
class TrainConfig:
    """YAML: ``mel_preset``, ``num_threads`` and sections model / optim / trainer / validation."""

    mel_preset: str = "16k"
    num_threads: int = 1
    model: VocoderConfig = field(default_factory=VocoderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(grad_clip=None))
    validation: ValidationConfig = field(default_factory=ValidationConfig)


def load_config(path: str | Path | None) -> TrainConfig:
    """YAML (sections model/optim/trainer/validation, plus mel_preset, num_threads) -> TrainConfig."""
    cfg = load_yaml(TrainConfig, path) if path else TrainConfig()
    cfg.model.mel = MelConfig.preset(cfg.mel_preset).to_dict()  # the one shared mel definition
    cfg.trainer.grad_clip = None  # manual optimisation: the module clips
    return cfg


def train(cfg: TrainConfig, train_dir: str | Path, dev_dir: str | Path, exp: str | Path,
          init: str | Path | None = None, input_mels: str | Path | None = None,
          **trainer_kwargs) -> VocoderExperiment:
    """Train (or resume) into ``exp``; ``<exp>/model`` holds the generator at the end.

    ``init``: a vocoder model dir whose generator weights start this run (ignored when
    resuming a checkpoint): the GAN fine-tuning phase starts from the reconstruction phase.
    ``input_mels``: train on these mels of the train utterances (``flow.gta``'s) in place of
    the real audio's, against the real audio (validation keeps the real mels).
    """
    torch.set_num_threads(cfg.num_threads)
    L.seed_everything(cfg.trainer.seed, workers=True)
    exp = Path(exp)
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    mc = cfg.model.mel_config
    train_ds = SegmentDataset(train_dir, mc.sample_rate, mc.hop_length, cfg.optim.segment_frames * mc.hop_length,
                              seed=cfg.trainer.seed, input_mels=input_mels)
    dev = SegmentDataset(dev_dir, mc.sample_rate, mc.hop_length, None,
                         max_utts=cfg.validation.max_utts, max_seconds=cfg.validation.max_seconds)
    if input_mels and (n := train_ds.input_mel(0).shape[0]) != mc.n_mels:
        raise SystemExit(f"--input-mels {input_mels}: {n}-band mels, this vocoder's mel has {mc.n_mels}")
    if len(train_ds) < cfg.optim.batch_size:
        raise SystemExit(f"{train_dir}: {len(train_ds)} utterances, fewer than batch_size {cfg.optim.batch_size}")
    b = cfg.optim.batch_size  # equal-size segments: every batch holds batch_size of them (pool tails fewer)
    sampler = BucketBatchSampler([1] * len(train_ds), max_frames=b, max_batch=b, seed=cfg.trainer.seed)
    train_dl = ResumableLoader(train_ds, sampler, num_workers=cfg.optim.num_workers,
                               persistent_workers=cfg.optim.num_workers > 0)
    dev_dl = DataLoader(dev, batch_size=1, num_workers=0)

    module = VocoderExperiment(cfg.model, cfg.optim, cfg.trainer.max_steps, exp)
    if init and last_checkpoint(exp) is None:
        try:
            source = Vocoder.from_pretrained(init).state_dict()
        except VocoderCheckpointError as err:
            raise SystemExit(f"--init: {err}") from err
        fresh = warm_start(module.generator, source)
        if fresh:
            raise SystemExit(f"{init}: not a generator of this config (missing or reshaped: {', '.join(fresh[:3])})")
    t = cfg.trainer
    several = str(t.devices) not in ("1", "auto") or t.num_nodes > 1
    if t.strategy == "ddp" or (t.strategy == "auto" and several):
        # the discriminators (before gan_start_step) and the F0 head sit out some steps
        t.strategy = "ddp_find_unused_parameters_true"
    if cfg.optim.max_minutes:
        trainer_kwargs.setdefault("max_time", timedelta(minutes=cfg.optim.max_minutes))
    trainer = build_trainer(cfg.trainer, exp, **trainer_kwargs)
    trainer.fit(module, train_dl, dev_dl, ckpt_path=last_checkpoint(exp))
    if trainer.is_global_zero:
        out = module.generator.save_pretrained(exp / "model")
        print(f"vocoder saved to {out}")
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--train", required=True, help="Kaldi data dir with wav.scp")
    ap.add_argument("--dev", required=True, help="Kaldi data dir for validation")
    ap.add_argument("--exp", required=True, help="experiment dir")
    ap.add_argument("--init", help="vocoder model dir to start from (e.g. the reconstruction phase's)")
    ap.add_argument("--input-mels", help="folder of <utt>.npy mels of the train utterances to train on "
                    "(python -m flow.gta: the flow's mels, time-aligned with the audio)")
    add_trainer_args(ap)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    apply_trainer_args(cfg.trainer, args)
    train(cfg, args.train, args.dev, args.exp, init=args.init, input_mels=args.input_mels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
