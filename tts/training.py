"""Shared Lightning plumbing for every VoxLM trainer (tokenizer, LLM, flow, vocoder, speaker).

One place decides: loggers (CSV + TensorBoard), checkpoint cadence, atomic
checkpoints and resume from ``<exp>/checkpoints/last.ckpt``, precision (bf16
autocast where the hardware has it), and length-bucketed batching that shards
itself over distributed ranks and resumes mid-epoch in the same order.

The same config trains on one CPU, one GPU, or many GPUs on many nodes with no
code change: ``devices``/``num_nodes``/``strategy`` come from the config or the
shared command-line options (:func:`add_trainer_args`), and Lightning reads the
launcher's environment (``torchrun``, ``srun``) or starts the processes itself.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Sampler


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    checkpoint_every: int = 200  # steps
    val_every: int = 500  # steps
    log_every: int = 20  # steps
    precision: str = "auto"  # "auto": bf16-mixed where supported, else 32
    accelerator: str = "auto"  # "cpu", "gpu", "auto"
    devices: int | str = "auto"  # per node: a count, "auto", or a list string like "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # "auto" (ddp when devices > 1), "ddp", "fsdp" (sharded; large LLMs)
    grad_clip: float | None = 1.0
    accumulate_grad_batches: int = 1
    seed: int = 1234
    progress_bar: bool = True
    keep_checkpoints: int = 1  # newest step<N>.ckpt files kept beside last.ckpt
    average_last: int = 0  # > 1: trainers that support it write the mean of the newest N step checkpoints
    ema_decay: float = 0.0  # > 0: an exponential moving average of the weights (EMA below) is what
                            # validation, the checkpoints' state_dict and the final model hold


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


def _step_of(path: Path) -> int:
    digits = "".join(c for c in path.stem if c.isdigit())
    return int(digits) if digits else -1


def average_checkpoints(exp_dir: str | Path, n: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The element-wise mean of the newest ``n`` ``step<N>.ckpt`` state dicts (icefall's ``--avg``).

    Floating-point tensors are averaged; others (integer buffers) come from the newest.
    -> (state dict of the LightningModule, the steps averaged). Fewer than ``n`` files: an error.
    """
    paths = sorted((Path(exp_dir) / "checkpoints").glob("step*.ckpt"), key=_step_of)[-n:]
    if len(paths) < n:
        raise FileNotFoundError(f"{exp_dir}/checkpoints: {len(paths)} step checkpoints, averaging needs {n}")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in reversed(paths):  # newest first: its non-float tensors (and dtypes) are kept
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]  # our own files
        for k, v in state.items():
            if k not in total:
                dtypes[k] = v.dtype
                total[k] = v.double() if v.is_floating_point() else v
            elif v.is_floating_point():
                total[k] += v.double()
    avg = {k: (v / n).to(dtypes[k]) if dtypes[k].is_floating_point else v for k, v in total.items()}
    return avg, [_step_of(p) for p in paths]


def warm_start(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> list[str]:
    """Copy every weight of ``source`` whose name and shape match ``model``'s; -> names left as initialised."""
    own = model.state_dict()
    keep = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(set(own) - set(keep))


def last_checkpoint(exp_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt``, else the newest ``step*.ckpt``; None when none.

    A file that is not a whole zip archive (a torn write from before checkpoints were
    atomic) is passed over for the next one.
    """
    ckpt_dir = Path(exp_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return None
    steps = sorted(ckpt_dir.glob("step*.ckpt"), key=_step_of, reverse=True)
    for path in [ckpt_dir / "last.ckpt", *steps]:
        if path.is_file() and zipfile.is_zipfile(path):
            return path
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to ``<name>.tmp`` in its own directory, fsync, then rename over the name.

    A run killed mid-write leaves the previous checkpoint whole (a rename is atomic
    on one filesystem); a stale ``.tmp`` is overwritten by the next save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _steps(value: str) -> int:
    """--max-steps: 0 or more (Lightning reads a negative max_steps as "no limit": a typo would train forever)."""
    steps = int(value)
    if steps < 0:
        raise argparse.ArgumentTypeError(f"{value}: training steps must be 0 or more")
    return steps


def add_trainer_args(parser: argparse.ArgumentParser) -> None:
    """The options every trainer shares; they override the config's ``trainer`` section."""
    g = parser.add_argument_group("distributed / trainer overrides (default: the config's trainer section)")
    g.add_argument("--accelerator", help="cpu, gpu or auto")
    g.add_argument("--devices", help="devices per node: a count, 'auto', or ids like '0,1'")
    g.add_argument("--num-nodes", type=int, help="nodes (each runs --devices processes)")
    g.add_argument("--strategy", help="auto, ddp, fsdp (sharded, for the LLM), ...")
    g.add_argument("--precision", help="auto, 32-true, bf16-mixed, 16-mixed")
    g.add_argument("--max-steps", type=_steps, help="override trainer.max_steps")


def apply_trainer_args(cfg: TrainerConfig, args: argparse.Namespace) -> TrainerConfig:
    """Copy the :func:`add_trainer_args` options that were given onto ``cfg`` (in place; returned)."""
    if getattr(args, "accelerator", None):
        cfg.accelerator = args.accelerator
    if getattr(args, "devices", None):
        d = args.devices
        cfg.devices = int(d) if d.isdigit() else d
    if getattr(args, "num_nodes", None):
        cfg.num_nodes = args.num_nodes
    if getattr(args, "strategy", None):
        cfg.strategy = args.strategy
    if getattr(args, "precision", None):
        cfg.precision = args.precision
    if getattr(args, "max_steps", None) is not None:  # 0 is honoured: e.g. only export a warm start
        cfg.max_steps = args.max_steps
    return cfg


def make_strategy(name: str, wrap: set[type] | None = None):
    """Lightning strategy for ``name``; "fsdp" shards parameters, gradients and optimizer state,
    wrapping each module of a class in ``wrap`` (transformer blocks) as its own unit, and saves
    full (gathered) checkpoints so resume and export work at any world size."""
    if name != "fsdp":
        return name
    from lightning.pytorch.strategies import FSDPStrategy

    return FSDPStrategy(auto_wrap_policy=wrap, state_dict_type="full")


class FinalCheckpoint(L.Callback):
    """Save ``last.ckpt`` when training ends off the checkpoint cadence, so a finished run
    resumes as finished (a rerun trains nothing) instead of from the last cadence step."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # save_checkpoint is collective (a barrier): every rank must take the same branch, so
        # rank 0, the one that writes, reads the file and decides (another node may not see it).
        save = trainer.is_global_zero and trainer.global_step > 0 and trainer.global_step != self._saved_step()
        if trainer.strategy.broadcast(save, src=0):
            trainer.save_checkpoint(self.path)  # every rank calls it; rank 0 writes

    def _saved_step(self) -> int:
        if not (self.path.is_file() and zipfile.is_zipfile(self.path)):
            return -1
        return int(torch.load(self.path, map_location="cpu", weights_only=False, mmap=True)["global_step"])


class RankSeed(L.Callback):
    """Reseed torch, numpy and random per (seed, rank, step) when training starts, under DDP or on resume.

    Every process of a run calls ``seed_everything`` with the same seed (so the ranks
    build the same model), and Lightning does not restore random states on resume. So
    without this every rank would draw the same flow noise and times, masks and dropout
    for its own items (with ``--split-batches``, every share of a batch the same draws:
    fewer distinct draws per step), and a resumed run would replay the draws of its
    first steps. A fresh one-process run is left as it was seeded.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.world_size > 1 or trainer.global_step > 0:
            state = np.random.SeedSequence([self.seed, trainer.global_rank, trainer.global_step]).generate_state(1)
            L.seed_everything(int(state[0]), verbose=False)


class _WhenDone(L.Callback):
    """A callback that acts once every file in ``paths`` exists, checked every ``every`` steps
    (a file check is cheap): the done-files of the jobs that share the machine."""

    def __init__(self, paths: list[str | Path], every: int = 10):
        if not paths:
            raise ValueError(f"{type(self).__name__} needs at least one path")
        self.paths, self.every = [Path(p) for p in paths], every

    def due(self, trainer: L.Trainer) -> bool:
        return trainer.global_step % self.every == 0 and all(p.exists() for p in self.paths)

    def done_files(self) -> str:
        return ", ".join(map(str, self.paths))


class ThreadsWhenDone(_WhenDone):
    """Raise torch's CPU threads to ``threads`` once every file in ``paths`` exists.

    A trainer that shares the machine with other jobs starts on fewer threads and takes
    the freed cores when their done-files appear (the recipe's flow, at one thread beside
    the LLM, then at two alone, with ``flow_procs=1``).
    """

    def __init__(self, threads: int, paths: list[str | Path], every: int = 10):
        if threads < 1:
            raise ValueError(f"threads must be 1 or more, got {threads}")
        super().__init__(paths, every)
        self.threads, self.done = threads, False

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.done or not self.due(trainer):
            return
        self.done = True
        if self.threads != torch.get_num_threads():
            print(f"step {trainer.global_step}: {self.done_files()} done: "
                  f"{torch.get_num_threads()} -> {self.threads} torch threads", flush=True)
            torch.set_num_threads(self.threads)


class StopWhenDone(_WhenDone):
    """End training (``last.ckpt`` saved, :class:`FinalCheckpoint`) once every file in ``paths`` exists.

    The hand-over of the CPU recipe's flow: it trains in one process of one thread
    beside the LLM, stops when the jobs beside it are done, and the recipe resumes it
    in several processes (``--devices N --strategy ddp``, batches split over them).
    """

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.due(trainer):
            print(f"step {trainer.global_step}: {self.done_files()} done: stopping here (last.ckpt) to be resumed",
                  flush=True)
            trainer.should_stop = True


def threads_when_done(value: list[str] | None) -> list[L.Callback]:
    """``--threads-when-done N PATH...`` -> the callback list (empty when the option is absent)."""
    if not value:
        return []
    if len(value) < 2 or not value[0].isdigit() or int(value[0]) < 1:
        raise SystemExit(f"--threads-when-done: expected N PATH [PATH ...], got {' '.join(value)}")
    return [ThreadsWhenDone(int(value[0]), value[1:])]


class EMA(WeightAveraging):
    """Weights averaged as ``avg = decay * avg + (1 - decay) * w`` after every optimizer step.

    Lightning's :class:`WeightAveraging` does the bookkeeping: the average replaces the
    weights during validation and at the end of training, and goes into each checkpoint's
    ``state_dict`` (the raw weights beside it, under ``current_model_state``, so a resumed
    run goes on with both). So the model dir a trainer exports with each checkpoint, and
    the one it saves when it finishes, hold the average.
    """

    def __init__(self, decay: float):
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))

    @staticmethod
    def holds_average(checkpoint: dict) -> bool:
        """Whether a checkpoint's ``state_dict`` is the average (the raw weights then ride beside it)."""
        return "current_model_state" in checkpoint


def build_trainer(cfg: TrainerConfig, exp_dir: str | Path, fsdp_wrap: set[type] | None = None,
                  **kwargs) -> L.Trainer:
    """A Trainer that logs to ``exp_dir`` and checkpoints every ``cfg.checkpoint_every`` steps.

    Checkpoints are written atomically (:class:`AtomicCheckpointIO`): ``step<N>.ckpt``
    (the newest ``max(keep_checkpoints, average_last)``) and ``last.ckpt`` (also at the end of training). ``kwargs`` pass through (e.g. ``callbacks``,
    ``limit_val_batches``). Trainers shard their own data (:class:`BucketBatchSampler`,
    rank-aware streams), so Lightning's distributed sampler is off unless a caller
    passes ``use_distributed_sampler=True``. ``fsdp_wrap``: module classes FSDP wraps
    one by one when ``cfg.strategy == "fsdp"``.
    Manual-optimisation modules (GANs) must clip gradients themselves:
    ``gradient_clip_val`` is dropped for them by passing ``grad_clip=None``.
    """
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"trainer.ema_decay must be in [0, 1), got {cfg.ema_decay}")
    ckpt = ModelCheckpoint(
        dirpath=exp_dir / "checkpoints", every_n_train_steps=cfg.checkpoint_every,
        save_last=True, save_top_k=max(1, cfg.keep_checkpoints, cfg.average_last), monitor="step", mode="max",
        filename="step{step:07d}", auto_insert_metric_name=False,
    )
    callbacks = [ckpt, FinalCheckpoint(exp_dir / "checkpoints" / "last.ckpt"), RankSeed(cfg.seed)]
    if cfg.ema_decay:  # before the caller's callbacks: their on_save_checkpoint sees the average
        callbacks.append(EMA(cfg.ema_decay))
    callbacks += kwargs.pop("callbacks", [])
    kwargs.setdefault("use_distributed_sampler", False)
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
        strategy=make_strategy(cfg.strategy, fsdp_wrap),
        gradient_clip_val=cfg.grad_clip,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        logger=[CSVLogger(exp_dir, name="logs"), TensorBoardLogger(exp_dir, name="tb")],
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress_bar,
        **kwargs,
    )


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: sort by length inside shuffled pools, cap frames per batch.

    lengths: any per-item size (frames, tokens). A batch holds at most
    ``max_batch`` items and at most ``max_frames`` summed length (padding
    counted as the longest item times the batch size).

    Deterministic per epoch given ``seed``: ``set_epoch`` (Lightning calls it)
    reshuffles. Every epoch has the same number of batches (epoch 0's count;
    other epochs wrap around or stop short by a few batches), so resumed and
    uninterrupted runs agree on epoch boundaries. Under ``torch.distributed``
    every rank builds the same global list and takes every ``world``-th batch
    (padded by wrap-around to equal counts), so no distributed sampler is
    needed. With ``split=True`` every rank takes its share of each batch
    instead (items ``rank::world``; a batch of fewer items than ranks is
    repeated): the world trains on one process's batches, in its order and
    with its schedule, faster where compute is the limit (the CPU recipe's
    flow in two processes of one thread each: 1.17x two threads), and a run
    may resume at another world size on the same batches. :meth:`resume`
    skips the batches an interrupted epoch already consumed
    (:class:`ResumableLoader` calls it from the checkpoint).
    """

    def __init__(self, lengths: list[int], max_frames: int, max_batch: int = 64,
                 shuffle: bool = True, seed: int = 0, pool: int = 50, split: bool = False):
        self.lengths, self.max_frames, self.max_batch = lengths, max_frames, max_batch
        self.shuffle, self.seed, self.pool, self.epoch, self.split = shuffle, seed, pool, 0, split
        self._per_epoch = len(self._make_batches(0))
        self._skip: tuple[int, int] | None = None  # (epoch, batches already consumed)
        self.started_at = 0  # batches of the current epoch skipped by the running iteration

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        """The next iteration of ``epoch`` starts after its first ``consumed`` batches (of this rank)."""
        self._skip = (epoch, consumed)

    def _make_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
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

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``, in order."""
        rank, world = dist_rank_world()
        batches = self._make_batches(epoch)
        if not batches:
            return []
        if self.split:  # every batch, this rank's share of it (the count stays one process's)
            batches = [batches[i % len(batches)] for i in range(self._per_epoch)]
            return [(b * -(-world // len(b)))[rank::world] for b in batches]
        total = -(-self._per_epoch // world) * world  # a fixed count, a multiple of the world size
        batches = [batches[i % len(batches)] for i in range(total)]
        return batches[rank::world]

    def __iter__(self):
        # a generator: the epoch's batches are built on the first next(), after Lightning's
        # set_epoch, even though Lightning creates the iterator earlier
        epoch = self.epoch
        batches = self.rank_batches(epoch)
        self.started_at = 0
        if self._skip is not None and self._skip[0] == epoch:
            self.started_at = min(self._skip[1], len(batches))
        self._skip = None
        yield from batches[self.started_at:]

    def __len__(self) -> int:
        _, world = dist_rank_world()
        return self._per_epoch if self.split else -(-self._per_epoch // world)


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`BucketBatchSampler` whose position Lightning checkpoints.

    Lightning saves ``state_dict()`` in every checkpoint (epoch and batches consumed
    in it) and hands it back to ``load_state_dict`` on resume, so an interrupted
    epoch continues with the batch after the last one trained, not from its start.
    """

    def __init__(self, dataset, batch_sampler: BucketBatchSampler, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._live = None

    def __iter__(self):
        self._live = super().__iter__()
        return self._live

    def state_dict(self) -> dict:
        yielded = getattr(self._live, "_num_yielded", 0) if self._live is not None else 0
        return {"epoch": self.batch_sampler.epoch, "consumed": self.batch_sampler.started_at + yielded}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.resume(int(state["epoch"]), int(state["consumed"]))
