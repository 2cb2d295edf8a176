"""The speaker-encoder verifier: it learns to tell speakers apart, saves and loads, fails clearly."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from tts.audio import AudioError
from tts.datadir import spk2utt_from_utt2spk, write_table
from tts.speaker import CheckpointError, SpeakerEncoder, SpeakerEncoderConfig, equal_error_rate
from tts.speaker_train import SpeakerTrainConfig, train
from tts.training import TrainerConfig


def voice(rng, f0, formant, seconds=1.5, sr=16000):
    """A buzzy 'voice': harmonics of f0 (jittered) shaped by one resonance."""
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) * np.exp(-((k * f0 - formant) / 400) ** 2) for k in range(1, 30))
    return (0.3 * x / np.abs(x).max() + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def two_speaker_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("spk")
    rng = np.random.default_rng(0)
    wavs, texts, u2s = {}, {}, {}
    for spk, (f0, formant) in {"a": (110, 700), "b": (220, 1800), "c": (160, 1200)}.items():
        for i in range(6):
            utt = f"{spk}-{i}"
            path = root / f"{utt}.wav"
            sf.write(path, voice(rng, f0 * rng.uniform(0.95, 1.05), formant), 16000)
            wavs[utt], texts[utt], u2s[utt] = str(path), "x", spk
    d = root / "data"
    d.mkdir()
    for name, table in (("wav.scp", wavs), ("text", texts), ("utt2spk", u2s), ("spk2utt", spk2utt_from_utt2spk(u2s))):
        write_table(d / name, table)
    return d


def test_encoder_learns_speakers_and_round_trips(two_speaker_dir, tmp_path):
    torch.manual_seed(0)
    cfg = SpeakerTrainConfig(segment_frames=40, batch_size=16, lr=3e-3, max_steps=60, channels=32, embed_dim=16)
    tcfg = TrainerConfig(max_steps=60, checkpoint_every=30, val_every=10**9, progress_bar=False)
    report = train(str(two_speaker_dir), str(two_speaker_dir), str(tmp_path / "exp"), cfg, tcfg)
    assert report["steps"] == 60 and report["train_speakers"] == 3
    dev = report["dev"]
    assert dev["same_cos"] > dev["diff_cos"] + 0.2 and dev["eer"] < 0.2
    assert json.loads((tmp_path / "exp" / "report.json").read_text())["dev"] == dev
    enc = SpeakerEncoder.from_pretrained(tmp_path / "exp" / "model")
    wav = sf.read(two_speaker_dir.parent / "a-0.wav", dtype="float32")[0]
    e1, e2 = enc.embed(wav, 16000), enc.embed(two_speaker_dir.parent / "a-0.wav")
    np.testing.assert_allclose(e1, e2, atol=1e-5)
    assert e1.shape == (16,) and np.isclose(np.linalg.norm(e1), 1.0, atol=1e-4)
    # 48 kHz input is resampled at the edge and lands close to the 16 kHz embedding
    import librosa
    e48 = enc.embed(librosa.resample(wav, orig_sr=16000, target_sr=48000), 48000)
    assert SpeakerEncoder.similarity(e1, e48) > 0.95


def test_bad_inputs_and_checkpoints(tmp_path):
    enc = SpeakerEncoder(SpeakerEncoderConfig(channels=16, embed_dim=8))
    with pytest.raises(AudioError, match="silent"):
        enc.embed(np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="under the minimum"):
        enc.embed(np.ones(100, np.float32) * 0.1, 16000)
    with pytest.raises(CheckpointError, match="missing"):
        SpeakerEncoder.from_pretrained(tmp_path / "nothing")
    enc.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        SpeakerEncoder.from_pretrained(tmp_path / "m")


def test_equal_error_rate():
    assert equal_error_rate(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 0.0
    assert equal_error_rate(np.array([0.1, 0.2]), np.array([0.9, 0.8])) == 1.0
    assert 0.3 < equal_error_rate(np.array([0.9, 0.2]), np.array([0.8, 0.1])) < 0.7


def test_cli_trains_on_several_dirs_with_shared_speaker_ids(two_speaker_dir, tmp_path):
    """Two --train dirs: utterances add up, a speaker id found in both is one speaker."""
    from tts.datadir import load_data_dir
    from tts.speaker_train import main

    utts = [u for u in load_data_dir(two_speaker_dir) if u.spk in ("b", "c")]  # b and c again, new utt ids
    u2s = {f"x{u.utt}": u.spk for u in utts}
    other = tmp_path / "other"
    other.mkdir()
    for name, table in (("wav.scp", {f"x{u.utt}": str(u.wav) for u in utts}), ("text", {k: "x" for k in u2s}),
                        ("utt2spk", u2s), ("spk2utt", spk2utt_from_utt2spk(u2s))):
        write_table(other / name, table)
    argv = ["--train", str(two_speaker_dir), str(other), "--exp", str(tmp_path / "exp"), "--max-steps", "2",
            "--channels", "16", "--batch-size", "4"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "exp" / "report.json").read_text())
    assert report["train_speakers"] == 3 and report["train_utts"] == 18 + 12 and report["steps"] == 2
