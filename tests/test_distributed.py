"""Data-parallel training with 2 CPU processes (torchrun, gloo, strategy ddp): every trainer
runs a few steps and both ranks end with the same weights, having trained on different data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import write_even_durations

from tts.datadir import spk2utt_from_utt2spk, write_table
from tts.frontend import Frontend
from tts.llm_train import load_config
from tts.training import BucketBatchSampler

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("tokenizer", "llm", "flow", "vocoder", "speaker")
WORDS = "the cat sat on a mat while one dog ran far away from home".split()


def make_data(d: Path, n: int = 16, sr: int = 16000) -> None:
    """n one-second clips of 4 'speakers' (harmonic tones at different pitches), with texts and
    speech tokens (25 per second) aligned to the 50 fps mel."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    wavs, texts, u2s, toks = {}, {}, {}, {}
    for i in range(n):
        spk = f"spk{i % 4}"
        utt = f"{spk}-{i:03d}"
        seconds = 1.0 + 0.1 * (i % 3)
        t = np.arange(int(seconds * sr)) / sr
        f0 = 110 + 40 * (i % 4) + 10 * np.sin(2 * np.pi * 2 * t)
        audio = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 6))
        audio = (0.3 * audio / np.abs(audio).max() + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        sf.write(d / f"{utt}.wav", audio, sr)
        wavs[utt] = str(d / f"{utt}.wav")
        texts[utt] = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
        u2s[utt] = spk
        toks[utt] = " ".join(str(int(x)) for x in rng.integers(0, 32, int(seconds * 25)))
    for name, table in (("wav.scp", wavs), ("text", texts), ("utt2spk", u2s), ("tokens", toks),
                        ("spk2utt", spk2utt_from_utt2spk(u2s))):
        write_table(d / name, table)
    conf = ROOT / "egs" / "synth_en" / "conf" / "llm_tiny.yaml"
    write_even_durations(d, Frontend(load_config(conf).llm.frontend))  # the tiny LLM is interleaved


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    tmp = tmp_path_factory.mktemp("ddp")
    make_data(tmp / "data")
    out = tmp / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(ROOT / "tests" / "ddp_worker.py"),
           str(tmp / "data"), str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-6000:])
    return out


@pytest.mark.parametrize("component", COMPONENTS)
def test_ranks_agree_on_weights(ddp_run, component):
    ranks = [torch.load(ddp_run / f"{component}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    infos = [json.loads((ddp_run / f"{component}.rank{r}.json").read_text()) for r in (0, 1)]
    assert all(i["world_size"] == 2 and i["global_step"] == 4 for i in infos)
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    for name, p in ranks[0].items():
        assert torch.equal(p, ranks[1][name]), f"{component}: {name} differs between ranks"
    assert infos[0]["draw"] != infos[1]["draw"]  # RankSeed: each rank its own noise, masks, dropout
    if infos[0]["utts"]:  # batch samplers shard: the ranks trained on different utterances
        assert infos[0]["utts"] != infos[1]["utts"]
    assert (ddp_run / component / "checkpoints" / "last.ckpt").is_file()


def test_bucket_sampler_shards_over_ranks(monkeypatch):
    import tts.training as training

    lengths = [3 + i % 7 for i in range(45)]
    shards = []
    for rank in range(3):
        monkeypatch.setattr(training, "dist_rank_world", lambda rank=rank: (rank, 3))
        s = BucketBatchSampler(lengths, max_frames=30, max_batch=4, seed=5)
        s.set_epoch(2)
        shards.append(list(s))
        assert len(shards[-1]) == len(s)
    assert len({len(b) for b in shards}) == 1  # equal counts: no rank waits on another
    seen = sorted(i for shard in shards for batch in shard for i in batch)
    assert set(seen) == set(range(45))  # every item, a few twice where the count was padded


def test_split_batches_share_one_process_batches(monkeypatch):
    """split=True: at each step the ranks' shares make up the one-process batch of that step (a
    one-item batch goes to both), so the world trains on one process's batches, count and order."""
    import tts.training as training

    lengths = [3 + i % 7 for i in range(45)] + [40]  # the last is alone in its batch
    one = BucketBatchSampler(lengths, max_frames=40, max_batch=4, seed=5, split=True)
    one.set_epoch(1)
    shares = []
    for rank in range(2):
        monkeypatch.setattr(training, "dist_rank_world", lambda rank=rank: (rank, 2))
        s = BucketBatchSampler(lengths, max_frames=40, max_batch=4, seed=5, split=True)
        s.set_epoch(1)
        shares.append(list(s))
        assert len(s) == len(one) == len(shares[-1])
    monkeypatch.setattr(training, "dist_rank_world", lambda: (0, 1))
    for batch, a, b in zip(list(one), *shares, strict=True):
        assert a and b and sorted(set(a + b)) == sorted(batch)
        assert len(batch) == 1 or not set(a) & set(b)


def test_flow_stops_when_done_then_resumes_in_two_processes(tmp_path):
    """The CPU recipe's hand-over (recipes/stages.sh, flow_procs): flow.train stops once a done-file
    exists, with last.ckpt, and the same command with --devices 2 --strategy ddp --split-batches
    resumes it to the end of its schedule and exports the model."""
    make_data(tmp_path / "data")
    done = tmp_path / "llm.done"
    done.write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "flow.train", "--config", str(ROOT / "egs/synth_en/conf/flow_tiny.yaml"),
           "--train", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"), "--threads", "1", "--max-steps", "24"]

    def step() -> int:
        ckpt = torch.load(tmp_path / "exp/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
        return ckpt["global_step"]

    r = subprocess.run(cmd + ["--stop-when-done", str(done)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done: stopping here" in r.stdout and 0 < step() < 24
    r = subprocess.run(cmd + ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--split-batches"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting with 2 processes" in r.stdout + r.stderr and step() == 24
    assert (tmp_path / "exp/model/model.safetensors").is_file()


def test_sharded_extraction_then_merge(tmp_path, monkeypatch):
    """Two shards (as two launcher ranks would run them) extract disjoint parts without merging;
    a plain run then merges with nothing left to do, equal to an unsharded extraction."""
    from tokenizer.api import SpeechTokenizer
    from tokenizer.config import ModelConfig, QuantizerConfig
    from tokenizer.extract import extract, extract_all, launcher_shard
    from tokenizer.model import TokenizerModel
    from tts.datadir import read_table

    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, heads=2, ff_mult=2, num_blocks=2, conv_kernel=7,
                      quantizer=QuantizerConfig(levels=[5, 5]), vocab=list(" abcdefghijklmnopqrstuvwxyz"))
    SpeechTokenizer(TokenizerModel(cfg)).save_pretrained(tmp_path / "tok")
    make_data(tmp_path / "data", n=8)
    (tmp_path / "data" / "tokens").unlink()  # the stand-in tokens of the training tests
    shutil.copytree(tmp_path / "data", tmp_path / "plain")
    for shard in (0, 1):
        assert extract(tmp_path / "tok", tmp_path / "data", nj=1, shard=shard, shards=2) is None
    assert not (tmp_path / "data" / "tokens").exists()
    parts = sorted(p.name for p in (tmp_path / "data" / "tokens.parts").glob("*/part.*"))
    assert parts == ["part.0of2", "part.1of2"]
    # one call for both dirs: the sharded one merges, the plain one is extracted whole
    assert extract_all(tmp_path / "tok", [tmp_path / "data", tmp_path / "plain"], nj=1) == [
        tmp_path / "data" / "tokens", tmp_path / "plain" / "tokens"]
    assert read_table(tmp_path / "data" / "tokens") == read_table(tmp_path / "plain" / "tokens")
    assert len(read_table(tmp_path / "data" / "tokens")) == 8
    assert not (tmp_path / "data" / "tokens.parts").exists()

    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.delenv("RANK", raising=False)
    assert launcher_shard() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launcher_shard() == (1, 2)  # torchrun's variables first
