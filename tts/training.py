"""Shared Lightning plumbing for every VoxLM trainer (tokenizer, LLM, flow, vocoder).

One place decides: loggers (CSV + TensorBoard), checkpoint cadence, resume from
``<exp>/checkpoints/last.ckpt``, precision (bf16 autocast where the hardware has
it), and length-bucketed batching. The same config then trains on one CPU, one
GPU or many (DDP) with no code change: Lightning picks the accelerator, and
``devices``/``num_nodes``/``strategy`` come from the config.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import Sampler


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    checkpoint_every: int = 200  # steps
    val_every: int = 500  # steps
    log_every: int = 20  # steps
    precision: str = "auto"  # "auto": bf16-mixed where supported, else 32
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    grad_clip: float | None = 1.0
    accumulate_grad_batches: int = 1
    seed: int = 1234
    progress_bar: bool = True


def bf16_supported() -> bool:
    """bf16 autocast pays on GPUs that have it and on CPUs with AVX512-BF16/AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if bf16_supported() else "32-true"


def warmup_cosine(warmup_steps: int, total_steps: int, final_ratio: float):
    """LR factor per step: linear warm-up to 1, then cosine decay to ``final_ratio`` at ``total_steps``
    (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    warmup_steps = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    return factor


def last_checkpoint(exp_dir: str | Path) -> Path | None:
    path = Path(exp_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def build_trainer(cfg: TrainerConfig, exp_dir: str | Path, **kwargs) -> L.Trainer:
    """A Trainer that logs to ``exp_dir`` and checkpoints every ``cfg.checkpoint_every`` steps.

    ``kwargs`` pass through (e.g. ``callbacks``, ``limit_val_batches``).
    Manual-optimisation modules (GANs) must clip gradients themselves:
    ``gradient_clip_val`` is dropped for them by passing ``grad_clip=None``.
    """
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ModelCheckpoint(
        dirpath=exp_dir / "checkpoints", every_n_train_steps=cfg.checkpoint_every,
        save_last=True, save_top_k=1, monitor="step", mode="max",
        filename="step{step:07d}", auto_insert_metric_name=False,
    )
    callbacks = [ckpt, *kwargs.pop("callbacks", [])]
    return L.Trainer(
        default_root_dir=exp_dir,
        max_steps=cfg.max_steps,
        max_epochs=-1,
        val_check_interval=cfg.val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=cfg.log_every,
        precision=resolve_precision(cfg.precision),
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        gradient_clip_val=cfg.grad_clip,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        logger=[CSVLogger(exp_dir, name="logs"), TensorBoardLogger(exp_dir, name="tb")],
        callbacks=callbacks,
        enable_progress_bar=cfg.progress_bar,
        **kwargs,
    )


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: sort by length inside shuffled pools, cap frames per batch.

    lengths: any per-item size (frames, tokens). A batch holds at most
    ``max_batch`` items and at most ``max_frames`` summed length (padding
    counted as the longest item times the batch size). Deterministic per epoch
    given ``seed``; ``set_epoch`` reshuffles (Lightning calls it).
    """

    def __init__(self, lengths: list[int], max_frames: int, max_batch: int = 64,
                 shuffle: bool = True, seed: int = 0, pool: int = 50):
        self.lengths, self.max_frames, self.max_batch = lengths, max_frames, max_batch
        self.shuffle, self.seed, self.pool, self.epoch = shuffle, seed, pool, 0
        self._batches = self._make_batches()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._batches = self._make_batches()

    def _make_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        batches: list[list[int]] = []
        span = self.max_batch * self.pool
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i])
            batch: list[int] = []
            for i in chunk:
                longest = max([self.lengths[j] for j in batch] + [self.lengths[i]])
                if batch and (len(batch) >= self.max_batch or longest * (len(batch) + 1) > self.max_frames):
                    batches.append(batch)
                    batch = []
                batch.append(i)
            if batch:
                batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

