"""Train the flow model with Lightning (bucketing, bf16 where available, checkpoint/resume, logs).

    python -m flow.train --config conf/flow.yaml --train data/train --dev data/dev --exp exp/flow

Resumes from ``<exp>/checkpoints/last.ckpt`` when it exists. Every checkpoint
also refreshes ``<exp>/model`` (config.json + model.safetensors), the directory
``FlowModel.from_pretrained`` and the report read.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

from flow.config import FlowConfig
from flow.data import FlowDataset, collate
from flow.model import FlowCheckpointError, FlowModel
from flow.phonetic import PhoneticConfig, PhoneticLoss
from tokenizer.api import CheckpointError, SpeechTokenizer
from tts.config import load_yaml
from tts.training import (
    EMA,
    BucketBatchSampler,
    ResumableLoader,
    StopWhenDone,
    TrainerConfig,
    add_trainer_args,
    apply_trainer_args,
    build_trainer,
    last_checkpoint,
    threads_when_done,
    warm_start,
    warmup_cosine,
)

log = logging.getLogger("flow.train")


@dataclass
class DataConfig:
    max_frames_per_batch: int = 6000  # summed padded frames per batch
    max_batch: int = 32
    crop_frames: int = 800  # longer utterances are cut to a random 16 s window
    num_workers: int = 0
    val_utts: int = 64  # dev utterances scored for val_loss
    split_batches: bool = False  # several processes: each a share of every batch (BucketBatchSampler split)


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 300
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio at trainer.max_steps


@dataclass
class FlowTrainConfig:
    model: FlowConfig = field(default_factory=FlowConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    phonetic: PhoneticConfig = field(default_factory=PhoneticConfig)  # flow.phonetic: off at weight 0

    @classmethod
    def from_yaml(cls, path: str | Path) -> FlowTrainConfig:
        return load_yaml(cls, path)


class FlowLightning(L.LightningModule):
    def __init__(self, cfg: FlowTrainConfig, export_dir: str | Path | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = FlowModel(cfg.model)
        self.export_dir = Path(export_dir) if export_dir else None
        # the frozen reader of flow.phonetic, kept out of the module tree: not in checkpoints or the EMA
        object.__setattr__(self, "phonetic", phonetic_loss(cfg))

    def training_step(self, batch: dict, _idx: int) -> torch.Tensor:
        if self.phonetic is not None:
            self.phonetic.to(batch["mel"].device)
        loss = self.model(batch["tokens"], batch["mel"], batch["mel_lens"], phonetic=self.phonetic)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["utts"]))
        if self.phonetic is not None and self.phonetic.last is not None:
            self.log("phonetic_kl", self.phonetic.last, batch_size=len(batch["utts"]))
        self.log("frames", batch["mel_lens"].sum().float(), reduce_fx="sum", batch_size=1)
        return loss

    def validation_step(self, batch: dict, idx: int) -> None:
        gen = torch.Generator(device=batch["mel"].device).manual_seed(1000 + idx)  # same noise every time
        loss = self.model(batch["tokens"], batch["mel"], batch["mel_lens"], generator=gen)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch["utts"]), sync_dist=True)  # ranks: their mean

    def configure_optimizers(self):
        o, steps = self.cfg.optim, self.cfg.trainer.max_steps
        opt = torch.optim.AdamW(self.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(o.warmup_steps, steps, o.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.export_dir is None or self.global_rank != 0:
            return
        model = self.model
        if EMA.holds_average(checkpoint):  # trainer.ema_decay (its callback ran before this hook): export
            model = FlowModel(model.config)  # the average, not the raw weights
            model.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
        model.save_pretrained(self.export_dir)


def phonetic_loss(cfg: FlowTrainConfig) -> PhoneticLoss | None:
    """The configured :class:`flow.phonetic.PhoneticLoss`, or None when its weight is 0."""
    pc = cfg.phonetic
    if pc.weight <= 0:
        return None
    if not pc.tokenizer:
        raise FlowCheckpointError("phonetic.weight > 0 needs a tokenizer model dir (phonetic.tokenizer or --tokenizer)")
    try:
        reader = SpeechTokenizer.from_pretrained(pc.tokenizer).model
        return PhoneticLoss(reader, cfg.model.mel_config, pc.weight, pc.min_t)
    except (CheckpointError, ValueError) as err:
        raise FlowCheckpointError(f"phonetic loss: {pc.tokenizer}: {err}") from err


def make_loader(ds: FlowDataset, cfg: DataConfig, shuffle: bool, seed: int) -> DataLoader:
    sampler = BucketBatchSampler(ds.lengths, cfg.max_frames_per_batch, cfg.max_batch, shuffle=shuffle, seed=seed,
                                 split=cfg.split_batches)
    return ResumableLoader(ds, sampler, collate_fn=collate, num_workers=cfg.num_workers)


def init_from(model: FlowModel, init_dir: str | Path) -> list[str]:
    """Copy every weight of a pretrained model dir whose name and shape match; -> names left as initialised.

    Use it to fine-tune, or to warm-start from a flow trained on other tokens: the
    backbone and the mel statistics carry over, a token embedding of another codebook
    size does not. A flow of another mel definition is refused (nothing of it fits).
    """
    source = FlowModel.from_pretrained(init_dir)
    if source.config.mel != model.config.mel:
        raise FlowCheckpointError(f"--init {init_dir}: its mel definition {source.config.mel} is not this config's "
                         f"{model.config.mel}")
    return warm_start(model, source.state_dict())


def train(cfg: FlowTrainConfig, train_dir: str | Path | list[str | Path], dev_dir: str | Path | None, exp: str | Path,
          progress: bool = True, init: str | Path | None = None, **trainer_kwargs) -> FlowModel:
    """Train (or resume) into ``exp``; returns the trained model, also saved to ``<exp>/model``.

    ``train_dir``: one data dir, or several whose union is trained on.

    ``init``: a flow model dir to warm-start from (ignored when resuming a checkpoint).
    """
    exp = Path(exp)
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    L.seed_everything(cfg.trainer.seed, workers=True)
    mc = cfg.model
    train_ds = FlowDataset(train_dir, mc.mel_config, mc.upsample, cfg.data.crop_frames,
                           vocab_size=mc.vocab_size, progress=progress)
    module = FlowLightning(cfg, export_dir=exp / "model")
    if init and last_checkpoint(exp) is None:  # its mel statistics carry over (init_from: the same mel)
        fresh = init_from(module.model, init)
        log.info("warm start from %s; newly initialised: %s", init, fresh or "nothing")
    else:
        module.model.set_mel_stats(*train_ds.mel_stats())
    loaders = {"train_dataloaders": make_loader(train_ds, cfg.data, True, cfg.trainer.seed)}
    if dev_dir:
        dev_ds = FlowDataset(dev_dir, mc.mel_config, mc.upsample, cfg.data.crop_frames, random_crop=False,
                             vocab_size=mc.vocab_size, progress=progress)
        dev_ds.items, dev_ds.lengths = dev_ds.items[:cfg.data.val_utts], dev_ds.lengths[:cfg.data.val_utts]
        loaders["val_dataloaders"] = make_loader(dev_ds, cfg.data, False, 0)
    trainer = build_trainer(cfg.trainer, exp, limit_val_batches=None if dev_dir else 0, num_sanity_val_steps=0,
                            **trainer_kwargs)
    trainer.fit(module, ckpt_path=last_checkpoint(exp), **loaders)
    if trainer.global_rank == 0:
        module.model.save_pretrained(exp / "model")
    return module.model


def tokenizer_vocab_size(tokenizer_dir: str | Path) -> int:
    """Codebook size from a tokenizer model directory's config (codebook_size / vocab_size / FSQ levels)."""
    path = Path(tokenizer_dir)
    cfg_file = next((path / n for n in ("config.json", "config.yaml") if (path / n).is_file()), None)
    if cfg_file is None:
        raise FileNotFoundError(f"{path}: no config.json or config.yaml")
    cfg = yaml.safe_load(cfg_file.read_text())  # YAML is a superset of JSON

    def find(d):
        if isinstance(d, dict):
            for key in ("codebook_size", "num_codes", "vocab_size"):
                if isinstance(d.get(key), int):
                    return d[key]
            for key in ("fsq_levels", "levels"):
                if isinstance(d.get(key), list):
                    return math.prod(d[key])
            for v in d.values():
                if (found := find(v)) is not None:
                    return found
        return None
    size = find(cfg)
    if size is None:
        raise ValueError(f"{cfg_file}: no codebook_size, vocab_size or FSQ levels found")
    return int(size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML mapping onto FlowTrainConfig")
    p.add_argument("--train", required=True, nargs="+",
                   help="data dir(s) with wav.scp and tokens; several: their union (e.g. a corpus plus more voices)")
    p.add_argument("--dev", help="data dir for val_loss")
    p.add_argument("--exp", required=True)
    p.add_argument("--tokenizer", help="tokenizer model dir: vocab_size is read from its config")
    p.add_argument("--init", help="flow model dir to warm-start from (matching weights only)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave default)")
    p.add_argument("--threads-when-done", nargs="+", metavar="ARG",
                   help="N PATH [PATH ...]: then N threads once every PATH exists (e.g. the done-files "
                        "of the jobs beside it)")
    p.add_argument("--stop-when-done", nargs="+", metavar="PATH",
                   help="stop (last.ckpt) once every PATH exists, to be resumed in more processes")
    p.add_argument("--split-batches", action="store_true",
                   help="with --devices N: each process trains on 1/N of every batch (one process's "
                        "batches and schedule; on CPU cores faster than N threads for small models) instead "
                        "of batches of its own")
    add_trainer_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = FlowTrainConfig.from_yaml(args.config)
    apply_trainer_args(cfg.trainer, args)
    cfg.data.split_batches = cfg.data.split_batches or args.split_batches
    if args.tokenizer:
        cfg.model.vocab_size = tokenizer_vocab_size(args.tokenizer)
        cfg.phonetic.tokenizer = cfg.phonetic.tokenizer or args.tokenizer
    callbacks = threads_when_done(args.threads_when_done)
    if args.stop_when_done:
        callbacks.append(StopWhenDone(args.stop_when_done))
    try:
        model = train(cfg, args.train, args.dev, args.exp, init=args.init, callbacks=callbacks)
    except FlowCheckpointError as err:  # a missing, corrupt or unfitting --init: one line
        raise SystemExit(f"flow.train: error: {err}") from None
    print(json.dumps({"exp": str(args.exp), "model": str(Path(args.exp) / "model"),
                      "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
