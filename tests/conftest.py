import numpy as np
import pytest


@pytest.fixture
def tone():
    """Make a float32 sine of a given length/rate/channels."""
    def make(seconds=1.0, sr=16000, freq=220.0, channels=1, amp=0.5):
        t = np.arange(int(seconds * sr)) / sr
        x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        return np.stack([x] * channels, axis=1) if channels > 1 else x
    return make
