"""Vocoder tests: tiny models, audio made here (flite if installed, else a synthetic vowel)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tts.audio import load_audio, save_audio
from tts.datadir import DataDirError, spk2utt_from_utt2spk, write_table
from tts.mel import MelSpectrogram
from vocoder import GriffinLim, Vocoder, VocoderCheckpointError, VocoderConfig, VocoderInputError
from vocoder.data import SegmentDataset
from vocoder.experiment import OptimConfig, VocoderExperiment
from vocoder.source import estimate_f0
from vocoder.train import load_config
from vocoder.train import main as train_main

CONF = Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf"
TINY = VocoderConfig(dim=32, intermediate_dim=64, num_layers=2, sub_dim=16, sub_layers=1, source="harmonic")
# chunked == offline once overlap_frames >= context_frames; only float rounding remains
CHUNK_TOLERANCE = 1e-4


def speech(tmp: Path, text: str = "the quick brown fox jumps over the lazy dog", name: str = "a") -> np.ndarray:
    """A few seconds of 16 kHz speech: flite if installed, else a harmonic vowel with vibrato."""
    if shutil.which("flite"):
        path = tmp / f"{name}_raw.wav"
        subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
        return load_audio(path, 16000)
    t = np.arange(32000) / 16000
    f0 = 120 + 10 * np.sin(2 * np.pi * 3 * t)
    ph = 2 * np.pi * np.cumsum(f0) / 16000
    return (0.1 * sum(np.sin(k * ph) / k for k in range(1, 30))).astype(np.float32)


def tiny_model(seed: int = 0) -> Vocoder:
    torch.manual_seed(seed)
    model = Vocoder(TINY)
    with torch.no_grad():  # non-trivial outputs, as after training
        model.out.weight.normal_(0, 0.3)
        model.f0_head.weight.normal_(0, 0.3)
    return model.eval()


def test_output_length_is_frames_times_hop():
    model = tiny_model()
    for t in (1, 7, 50):
        with torch.no_grad():
            assert model(torch.randn(2, 80, t)).shape == (2, t * 320)
    assert GriffinLim(n_iter=2, inverse="pinv")(torch.randn(1, 80, 9)).shape == (1, 9 * 320)


# 1-frame chunks: one CPU left a single sample off by 1.8e-4 (relative), another agrees
# to 4e-7 like 2+ frames do; float rounding of the phase sums, so a looser bound for them
@pytest.mark.parametrize(("chunk", "tolerance"), [(1, 1e-3), (2, CHUNK_TOLERANCE), (10, CHUNK_TOLERANCE),
                                                  (25, CHUNK_TOLERANCE)])
def test_chunked_equals_offline(chunk, tolerance):
    model = tiny_model(1)
    mel = torch.randn(1, 80, 83)
    with torch.no_grad():
        offline = model(mel)
        chunked = model.vocode_chunked(mel, chunk_frames=chunk)  # overlap = context_frames
        assert chunked.shape == offline.shape
        err = (chunked - offline).abs().max() / offline.abs().max()
        assert err < tolerance, (chunk, float(err))
        short = model.vocode_chunked(mel, chunk_frames=10, overlap_frames=1)
        assert (short - offline).abs().max() / offline.abs().max() > CHUNK_TOLERANCE


def test_f0_estimate_follows_a_chirp():
    sr, t = 16000, np.arange(32000) / 16000
    f0 = 100 + 75 * t
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = torch.from_numpy((0.1 * sum(np.sin(k * phase) / k for k in range(1, 20))).astype(np.float32))
    est, voiced = estimate_f0(wav[None], sr, 320)
    true = 100 + 75 * (np.arange(est.shape[1]) * 320 + 160) / sr
    assert voiced.all()
    assert np.abs(est[0].numpy() / true - 1)[2:-2].max() < 0.02


@pytest.mark.parametrize("phase_mode", ["local", "cumsum"])
def test_chunked_equals_offline_all_modes(phase_mode):
    torch.manual_seed(3)
    model = Vocoder(VocoderConfig(**{**TINY.__dict__, "phase_mode": phase_mode})).eval()
    with torch.no_grad():
        model.out.weight.normal_(0, 0.3)
        model.f0_head.weight.normal_(0, 0.3)
        mel = torch.randn(1, 80, 60)
        offline = model(mel)
        chunked = model.vocode_chunked(mel, chunk_frames=7)
    assert (chunked - offline).abs().max() / offline.abs().max() < CHUNK_TOLERANCE


def test_tiny_generator_overfits_a_clip(tmp_path):
    torch.manual_seed(0)
    wav = torch.from_numpy(speech(tmp_path)[:16000 // 320 * 320 * 2])
    exp = VocoderExperiment(TINY, OptimConfig(), max_steps=60)
    opt = torch.optim.AdamW(exp.generator.parameters(), 3e-3)
    mels = []
    for _ in range(60):
        total, parts, _ = exp.reconstruction_losses(wav[None])
        opt.zero_grad()
        total.backward()
        opt.step()
        mels.append(float(parts["mel"]))
    assert np.mean(mels[-5:]) < 0.6 * np.mean(mels[:3]), mels


def test_save_load_round_trip(tmp_path):
    model = tiny_model(2)
    model.save_pretrained(tmp_path / "voc")
    loaded = Vocoder.from_pretrained(tmp_path / "voc")
    assert loaded.config == model.config
    mel = torch.randn(1, 80, 20)
    with torch.no_grad():
        assert torch.equal(loaded(mel), model(mel))


def test_clear_errors(tmp_path):
    model = tiny_model()
    for bad in (torch.randn(80, 20), torch.randn(1, 64, 20), torch.randn(1, 80, 0)):
        with pytest.raises(VocoderInputError, match="shape|empty"):
            model(bad)
    nan = torch.randn(1, 80, 20)
    nan[0, 3, 4] = float("nan")
    with pytest.raises(VocoderInputError, match="NaN"):
        model(nan)
    with pytest.raises(VocoderInputError, match="NaN"):
        GriffinLim()(nan)
    with pytest.raises(VocoderCheckpointError, match="lacks"):
        Vocoder.from_pretrained(tmp_path / "missing")
    model.save_pretrained(tmp_path / "voc")
    (tmp_path / "voc" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VocoderCheckpointError, match="cannot load"):
        Vocoder.from_pretrained(tmp_path / "voc")


@pytest.mark.parametrize("path", sorted(CONF.glob("vocoder*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_build(path):
    cfg = load_config(path)
    model = Vocoder(cfg.model)
    assert model.hop == 320 and cfg.trainer.grad_clip is None


def _data_dirs(tmp_path: Path) -> dict[str, Path]:
    """train/ and dev/ Kaldi dirs of two spoken utterances each."""
    data = {}
    for split in ("train", "dev"):
        d = tmp_path / split
        d.mkdir()
        wavs, texts = {}, {}
        for i, text in enumerate(["hello there", "good morning to you"]):
            utt = f"spk-{split}{i}"
            save_audio(d / f"{utt}.wav", speech(tmp_path, text, utt), 16000)
            wavs[utt], texts[utt] = str(d / f"{utt}.wav"), text
        write_table(d / "wav.scp", wavs)
        write_table(d / "text", texts)
        utt2spk = dict.fromkeys(wavs, "spk")
        write_table(d / "utt2spk", utt2spk)
        write_table(d / "spk2utt", spk2utt_from_utt2spk(utt2spk))
        data[split] = d
    return data


def test_input_mels_are_frame_aligned_segments_and_train(tmp_path):
    """SegmentDataset(input_mels=): (wav segment, its frames of the given mel), the segment starting
    on a frame; utterances without a mel left out; vocoder.train --input-mels trains on them."""
    data = _data_dirs(tmp_path)
    cfg = load_config(CONF / "vocoder_tiny.yaml")
    mc = cfg.model.mel_config
    mel_of = MelSpectrogram(mc)
    mels = tmp_path / "mels"
    mels.mkdir()
    wav = load_audio(data["train"] / "spk-train0.wav", mc.sample_rate)
    np.save(mels / "spk-train0.npy", mel_of(torch.from_numpy(wav)).numpy())  # the real mel: an exact reference
    frames = 32
    ds = SegmentDataset(data["train"], mc.sample_rate, mc.hop_length, frames * mc.hop_length, input_mels=mels)
    assert len(ds) == 1  # spk-train1 has no mel
    for _ in range(5):
        seg, mel = ds[0]
        assert seg.shape == (frames * mc.hop_length,) and mel.shape == (mc.n_mels, frames)
        own = mel_of(seg)  # away from the segment's edges, its own mel is the whole utterance's
        torch.testing.assert_close(mel[:, 2:-2], own[:, 2:-2], atol=1e-3, rtol=0)
    with pytest.raises(DataDirError, match="with a mel in"):
        SegmentDataset(data["dev"], mc.sample_rate, mc.hop_length, 3200, input_mels=mels)
    bad = tmp_path / "bad_mels"
    bad.mkdir()
    (bad / "spk-train0.npy").write_bytes(b"not an array")
    with pytest.raises(DataDirError, match="not a readable .npy"):
        SegmentDataset(data["train"], mc.sample_rate, mc.hop_length, 3200, input_mels=bad)[0]
    np.save(bad / "spk-train0.npy", np.zeros((40, 100), np.float32))
    np.save(bad / "spk-train1.npy", np.zeros((40, 100), np.float32))
    with pytest.raises(SystemExit, match="40-band mels, this vocoder's mel has 80"):
        train_main(["--config", str(CONF / "vocoder_tiny.yaml"), "--train", str(data["train"]), "--dev",
                    str(data["dev"]), "--exp", str(tmp_path / "bad_exp"), "--input-mels", str(bad)])
    wav = load_audio(data["train"] / "spk-train1.wav", mc.sample_rate)
    np.save(mels / "spk-train1.npy", mel_of(torch.from_numpy(wav)).numpy()[:, :-3])  # shorter than its audio
    exp = tmp_path / "exp"
    assert train_main(["--config", str(CONF / "vocoder_tiny.yaml"), "--train", str(data["train"]), "--dev",
                       str(data["dev"]), "--exp", str(exp), "--input-mels", str(mels), "--max-steps", "2"]) == 0
    assert Vocoder.from_pretrained(exp / "model")


def test_train_cli_writes_model_and_resumes(tmp_path):
    data = _data_dirs(tmp_path)
    exp = tmp_path / "exp"
    args = ["--config", str(CONF / "vocoder_tiny.yaml"), "--train", str(data["train"]),
            "--dev", str(data["dev"]), "--exp", str(exp)]
    assert train_main(args) == 0
    assert (exp / "checkpoints" / "last.ckpt").is_file()
    assert list((exp / "samples").glob("step*/0.png"))
    first = Vocoder.from_pretrained(exp / "model")
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    # rerun: resumes at step 4, so nothing changes
    assert train_main(args) == 0
    again = Vocoder.from_pretrained(exp / "model")
    mel = MelSpectrogram(first.config.mel_config)(torch.from_numpy(speech(tmp_path)))[None]
    with torch.no_grad():
        assert torch.equal(first(mel), again(mel))
    # warm start (the GAN phase starts from the reconstruction phase's generator): with no
    # steps the new run's generator is the init's; a generator of another shape is refused
    warm = tmp_path / "warm"
    assert train_main([*args[:-1], str(warm), "--init", str(exp / "model"), "--max-steps", "0"]) == 0
    with torch.no_grad():
        assert torch.equal(Vocoder.from_pretrained(warm / "model")(mel), again(mel))
    other = tmp_path / "other"
    Vocoder(VocoderConfig(dim=16, intermediate_dim=32, num_layers=1, sub_dim=8, sub_layers=1)).save_pretrained(other)
    with pytest.raises(SystemExit, match="not a generator of this config"):
        train_main([*args[:-1], str(tmp_path / "bad"), "--init", str(other)])
    with pytest.raises(SystemExit, match="--init: vocoder model dir .* lacks config.json"):
        train_main([*args[:-1], str(tmp_path / "bad"), "--init", str(tmp_path / "no_such_model")])
