import numpy as np
import pytest
import torch

from tts.mel import MelConfig, MelSpectrogram, mel_spectrogram


@pytest.mark.parametrize("preset, fps", [("16k", 50.0), ("24k", 50.0), ("16k-w40", 50.0), ("24k-w40", 50.0)])
@pytest.mark.parametrize("samples", [0.5, 1.0, 1.2345, 3.0])
def test_frame_count_is_samples_over_hop(preset, fps, samples):
    cfg = MelConfig.preset(preset)
    n = int(samples * cfg.sample_rate)
    mel = mel_spectrogram(np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1, cfg)
    assert cfg.frame_rate == fps
    assert mel.shape == (cfg.n_mels, n // cfg.hop_length) == (cfg.n_mels, cfg.num_frames(n))


def test_batched_equals_single_and_tone_lands_in_right_bin(tone):
    cfg = MelConfig()
    m = MelSpectrogram(cfg)
    x = torch.from_numpy(tone(1.0, freq=1000.0))
    single = m(x)
    batch = m(torch.stack([x, x * 0.5]))
    torch.testing.assert_close(batch[0], single)
    # a 1 kHz tone: the loudest mel bin's centre frequency is near 1 kHz
    import librosa
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.f_min, fmax=cfg.f_max)[1:-1]
    loudest = int(single[:, 10:-10].mean(dim=1).argmax())
    assert abs(centres[loudest] - 1000) < 100
    # half the amplitude is log(0.5) lower in every loud bin
    assert torch.allclose(batch[1, loudest], single[loudest] + np.log(0.5), atol=1e-3)


def test_silence_hits_the_floor():
    mel = mel_spectrogram(np.zeros(16000, np.float32))
    assert np.allclose(mel, np.log(MelConfig().log_floor))


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown mel preset"):
        MelConfig.preset("22k")
