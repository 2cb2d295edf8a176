"""Resume after a kill: atomic checkpoints, the same data order, the same step count.

The in-process tests use a toy LightningModule (milliseconds a step); the last test
SIGKILLs a real trainer (the tiny LLM) mid-run and resumes it from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from helpers import write_even_durations
from torch.utils.data import Dataset

from tts.frontend import Frontend
from tts.llm_train import load_config
from tts.training import (
    BucketBatchSampler,
    FinalCheckpoint,
    ResumableLoader,
    TrainerConfig,
    add_trainer_args,
    apply_trainer_args,
    build_trainer,
    last_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60  # the killed LLM run's max_steps


class Items(Dataset):
    def __len__(self) -> int:
        return 37

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i)])


class Crash(RuntimeError):
    pass


class Toy(L.LightningModule):
    """Records which items every optimizer step saw; optionally dies at ``crash_at``."""

    def __init__(self, seen: list, crash_at: int | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen, self.crash_at = seen, crash_at

    def training_step(self, batch, _):
        if self.crash_at is not None and self.global_step == self.crash_at:
            raise Crash(f"killed at step {self.global_step}")
        self.seen.append((self.global_step, sorted(int(x) for x in batch[:, 0])))
        return ((self.w - batch) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(exp: Path, seen: list, max_steps: int, crash_at: int | None = None) -> L.Trainer:
    lengths = [1 + (i * 7) % 5 for i in range(37)]
    sampler = BucketBatchSampler(lengths, max_frames=12, max_batch=4, seed=3, pool=2)
    loader = ResumableLoader(Items(), sampler)
    cfg = TrainerConfig(max_steps=max_steps, checkpoint_every=5, val_every=10**6, log_every=1,
                        precision="32-true", accelerator="cpu", devices=1, progress_bar=False)
    trainer = build_trainer(cfg, exp, limit_val_batches=0, enable_model_summary=False)
    try:
        trainer.fit(Toy(seen, crash_at), loader, ckpt_path=last_checkpoint(exp))
    except Crash:
        pass
    return trainer


def test_sampler_is_deterministic_and_covers_every_item_once_per_epoch():
    lengths = [5 + (i % 9) for i in range(100)]
    a = BucketBatchSampler(lengths, max_frames=40, max_batch=6, seed=1)
    b = BucketBatchSampler(lengths, max_frames=40, max_batch=6, seed=1)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)
    a.set_epoch(0)
    first = list(a)
    assert len(first) == len(a)
    assert sorted(i for batch in first for i in batch) == list(range(100))
    a.set_epoch(1)
    assert list(a) != first and len(list(a)) == len(a)  # reshuffled, same count


def test_sampler_resume_skips_consumed_batches():
    s = BucketBatchSampler(list(range(1, 60)), max_frames=50, max_batch=4, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.resume(2, 3)
    assert list(s) == full[3:]
    assert list(s) == full  # the skip applies once


@pytest.mark.parametrize("crash_at", [7, 10, 12])  # mid-epoch, on an epoch boundary (10 batches), after it
def test_resume_after_crash_keeps_data_order_and_step_count(tmp_path, crash_at):
    whole: list = []
    fit(tmp_path / "whole", whole, max_steps=24)
    assert [s for s, _ in whole] == list(range(24))

    seen: list = []
    fit(tmp_path / "cut", seen, max_steps=24, crash_at=crash_at)
    ckpt = last_checkpoint(tmp_path / "cut")
    resumed_from = torch.load(ckpt, weights_only=False)["global_step"]
    assert resumed_from == crash_at // 5 * 5
    after: list = []
    trainer = fit(tmp_path / "cut", after, max_steps=24)
    assert trainer.global_step == 24
    assert after == whole[resumed_from:]  # the same batches, in the same order, at the same steps
    assert not list((tmp_path / "cut" / "checkpoints").glob("*.tmp"))


def test_max_steps_override_takes_zero_and_refuses_negatives(capsys):
    """--max-steps (the recipes' <phase>_steps): 0 is honoured; a negative, which Lightning would read
    as no limit at all, is an argument error."""
    parser = argparse.ArgumentParser()
    add_trainer_args(parser)
    assert apply_trainer_args(TrainerConfig(max_steps=50), parser.parse_args(["--max-steps", "0"])).max_steps == 0
    assert apply_trainer_args(TrainerConfig(max_steps=50), parser.parse_args([])).max_steps == 50
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-steps", "-1"])
    assert "-1: training steps must be 0 or more" in capsys.readouterr().err


def test_last_checkpoint_passes_over_a_torn_file(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    torch.save({"global_step": 5}, ckpt_dir / "step0000005.ckpt")
    (ckpt_dir / "last.ckpt").write_bytes(b"PK\x03\x04 torn")  # a write cut short
    assert last_checkpoint(tmp_path) == ckpt_dir / "step0000005.ckpt"
    assert zipfile.is_zipfile(last_checkpoint(tmp_path))
    assert last_checkpoint(tmp_path / "nothing") is None


class _Rank:
    """A trainer as one rank sees it: rank 0's broadcast answer, and the saves this rank made."""

    def __init__(self, step: int, rank0_says: bool):
        self.global_step, self.saved, self.is_global_zero = step, [], False
        self.strategy = type("S", (), {"broadcast": staticmethod(lambda obj, src=0: rank0_says)})()

    def save_checkpoint(self, path):
        self.saved.append(path)


@pytest.mark.parametrize("rank0_says", [False, True])
def test_final_checkpoint_ranks_follow_rank_zero(tmp_path, rank0_says):
    """The final save is collective: a rank that cannot see last.ckpt (another node) must not
    save alone, nor skip alone; it follows rank 0, which writes."""
    rank = _Rank(step=8, rank0_says=rank0_says)
    FinalCheckpoint(tmp_path / "checkpoints" / "last.ckpt").on_train_end(rank, None)
    assert rank.saved == ([tmp_path / "checkpoints" / "last.ckpt"] if rank0_says else [])


def _write_llm_data(d: Path) -> None:
    d.mkdir(parents=True)
    sentences = ["the cat sat on the mat", "a quick brown fox", "hello there my friend",
                 "speech tokens are fun", "one two three four five", "good morning to you"]
    texts, toks, u2s = [], [], []
    for i in range(24):
        utt = f"spk{i % 3}-{i:03d}"
        text = sentences[i % len(sentences)]
        texts.append(f"{utt} {text}")
        toks.append(f"{utt} " + " ".join(str((7 * i + 3 * j) % 32) for j in range(2 * len(text))))
        u2s.append(f"{utt} spk{i % 3}")
    for name, lines in (("text", texts), ("tokens", toks), ("utt2spk", u2s)):
        (d / name).write_text("\n".join(sorted(lines)) + "\n")
    write_even_durations(d, Frontend(load_config(ROOT / "egs" / "synth_en" / "conf" / "llm_tiny.yaml").llm.frontend))


def test_kill_llm_training_and_resume(tmp_path):
    """SIGKILL the tiny LLM trainer after its first checkpoint; the rerun ends at max_steps
    with every checkpoint whole."""
    data, exp = tmp_path / "train", tmp_path / "exp"
    _write_llm_data(data)
    conf = yaml.safe_load((ROOT / "egs" / "synth_en" / "conf" / "llm_tiny.yaml").read_text())
    conf["trainer"].update(checkpoint_every=10, val_every=1000, log_every=5)
    (tmp_path / "llm.yaml").write_text(yaml.safe_dump(conf))
    cmd = [sys.executable, "-m", "tts.llm_train", "--config", str(tmp_path / "llm.yaml"), "--train", str(data),
           "--exp", str(exp), "--max-steps", str(STEPS), "--threads", "1", "--accelerator", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list((exp / "checkpoints").glob("step*.ckpt")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    time.sleep(0.5)  # let it train on past the checkpoint (possibly into the next save)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = last_checkpoint(exp)
    killed_at = torch.load(ckpt, weights_only=False)["global_step"]
    assert 0 < killed_at < STEPS
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {ckpt}" in r.stderr
    final = torch.load(last_checkpoint(exp), weights_only=False)
    assert final["global_step"] == STEPS  # the end of training is checkpointed too
    for path in (exp / "checkpoints").glob("*.ckpt"):
        assert zipfile.is_zipfile(path), path  # nothing torn, nothing half-written
    assert not list((exp / "checkpoints").glob("*.tmp"))
    assert json.loads((exp / "model" / "config.json").read_text())
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and torch.load(last_checkpoint(exp), weights_only=False)["global_step"] == STEPS


def test_threads_when_done_waits_for_every_file(tmp_path):
    from types import SimpleNamespace

    from tts.training import ThreadsWhenDone, threads_when_done
    before = torch.get_num_threads()
    target = 1 if before > 1 else 2
    a, b = tmp_path / "llm.done", tmp_path / "vocoder.done"
    cb = threads_when_done([str(target), str(a), str(b)])[0]
    assert isinstance(cb, ThreadsWhenDone) and threads_when_done(None) == []
    try:
        a.touch()
        cb.on_train_batch_start(SimpleNamespace(global_step=10), None, None, 0)
        assert torch.get_num_threads() == before  # one file still missing
        b.touch()
        cb.on_train_batch_start(SimpleNamespace(global_step=11), None, None, 0)
        assert torch.get_num_threads() == before  # checked every 10 steps only
        cb.on_train_batch_start(SimpleNamespace(global_step=20), None, None, 0)
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)
    for bad in ([str(a)], ["0", str(a)]):
        with pytest.raises(SystemExit, match="expected N PATH"):
            threads_when_done(bad)
