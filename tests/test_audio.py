import numpy as np
import pytest
import soundfile as sf

from tts.audio import (
    AudioError,
    load_audio,
    peak_normalize,
    prepare_audio,
    rms_normalize,
    soft_limit,
)


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_load_any_rate_resamples_to_target(tmp_path, tone, sr):
    path = tmp_path / f"x{sr}.wav"
    sf.write(path, tone(1.0, sr), sr)
    out = load_audio(path, 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 16000) <= 1
    # the 220 Hz tone survives resampling: its spectrum peaks at 220 Hz
    spec = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spec) * 16000 / len(out) - 220) < 2


def test_stereo_file_and_array_downmix(tmp_path, tone):
    stereo = tone(0.5, 16000, channels=2)
    stereo[:, 1] = 0.0  # right channel silent: mono is half the left
    sf.write(tmp_path / "s.wav", stereo, 16000)
    out = load_audio(tmp_path / "s.wav", 16000)
    np.testing.assert_allclose(out, stereo[:, 0] / 2, atol=1e-4)
    # channels-first arrays too
    np.testing.assert_allclose(prepare_audio(stereo.T, 16000, 16000), out, atol=1e-4)


def test_int16_array_is_scaled():
    x = (np.sin(np.arange(1600) / 5) * 16384).astype(np.int16)
    out = prepare_audio(x, 16000, 16000)
    assert 0.45 < np.abs(out).max() <= 0.5


@pytest.mark.parametrize("audio, match", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros(16000, np.float32), "silent"),
    (np.full(16000, np.nan, np.float32), "NaN"),
    (np.full(16000, np.inf, np.float32), "NaN or infinite"),
])
def test_bad_arrays_raise_clear_errors(audio, match):
    with pytest.raises(AudioError, match=match):
        prepare_audio(audio, 16000, 16000)


def test_silence_allowed_when_asked():
    out = prepare_audio(np.zeros(1600, np.float32), 16000, 16000, allow_silence=True)
    assert out.shape == (1600,)


def test_too_long_and_too_short(tone):
    with pytest.raises(AudioError, match="over the limit"):
        prepare_audio(tone(3.0), 16000, 16000, max_seconds=2.0)
    with pytest.raises(AudioError, match="under the minimum"):
        prepare_audio(tone(0.2), 16000, 16000, min_seconds=1.0)


def test_missing_corrupt_and_untyped(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav", 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage that is not audio" * 10)
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(bad, 16000)
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(np.ones(100, np.float32), 16000)
    with pytest.raises(AudioError, match="numpy array"):
        prepare_audio([0.1, 0.2], 16000, 16000)
    with pytest.raises(AudioError, match="sample rate"):
        prepare_audio(np.ones(100, np.float32), 0, 16000)


def test_normalisation(tone):
    x = tone(1.0, amp=0.1)
    assert np.isclose(np.abs(peak_normalize(x)).max(), 0.95, atol=1e-4)
    y = rms_normalize(x, target_dbfs=-20.0)
    assert np.isclose(20 * np.log10(np.sqrt(np.mean(y ** 2))), -20.0, atol=0.1)
    loud = rms_normalize(tone(1.0, amp=0.9), target_dbfs=0.0)  # would clip: limited
    assert np.abs(loud).max() <= 0.99 + 1e-6
    with pytest.raises(ValueError, match="normalize"):
        prepare_audio(x, 16000, 16000, normalize="loud")


def test_soft_limit():
    x = np.linspace(-3.0, 3.0, 60001, dtype=np.float32)
    y = soft_limit(x)
    assert np.abs(y).max() <= 1.0 and np.all(np.diff(y) >= 0)  # bounded, still monotonic
    assert np.abs(y[np.abs(x) <= 1.2]).max() < 0.995  # real overshoots (1.1-1.2) stay clear of full scale
    inside = np.abs(x) <= 0.8
    assert np.array_equal(y[inside], x[inside])  # transparent below the knee
    assert np.abs(np.diff(y)).max() <= np.diff(x).max() + 1e-6  # slope never above 1: no kink at the knee
    assert np.allclose(soft_limit(x[:30000]), y[:30000])  # sample-wise: chunks give the same samples
