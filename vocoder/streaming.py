"""Streaming vocoder: mel arrives in pieces, audio leaves as soon as it is final.

Each ``push`` vocodes a window from ``left`` frames before the first unemitted frame
up to the newest frame, and emits audio up to ``lookahead`` frames short of the
newest (those last frames still lack right context). Running phases are carried
across windows as in :meth:`vocoder.model.Vocoder.vocode_chunked`.

* ``lookahead >= vocoder.context_frames`` (and ``left`` likewise): every emitted
  sample equals offline ``vocoder(mel)`` up to float rounding: exact, but a chunk of
  audio waits for ``context_frames`` more mel frames (31 for the toy vocoder, 0.6 s).
* smaller ``lookahead``: lower latency; the audio just before each join was computed
  with a little less right context than offline. The held-back audio of the previous
  window is cross-faded into the new window's over ``crossfade`` frames, so a join
  never jumps: the two computations differ by little, and the fade hides even that.
"""

from __future__ import annotations

import numpy as np
import torch

from vocoder.model import Vocoder


class VocoderStream:
    def __init__(self, vocoder: Vocoder, lookahead: int | None = None, left: int | None = None,
                 crossfade: int | None = None):
        ctx = vocoder.context_frames
        self.vocoder, self.hop = vocoder, vocoder.hop
        self.lookahead = ctx if lookahead is None else int(lookahead)
        self.left = ctx if left is None else int(left)
        xf = (0 if self.lookahead >= ctx else min(self.lookahead, 2)) if crossfade is None else int(crossfade)
        if self.lookahead < 0 or self.left < 0 or not 0 <= xf <= self.lookahead:
            raise ValueError(f"need lookahead, left >= 0 and 0 <= crossfade <= lookahead; got "
                             f"{self.lookahead}, {self.left}, {xf}")
        self.fade = np.linspace(0.0, 1.0, xf * self.hop + 2, dtype=np.float32)[1:-1]  # excludes 0 and 1
        self.bin_run, self.src_run = vocoder.running_sums(self.left)
        self.mel = torch.zeros(1, vocoder.mel_config.n_mels, 0)
        self.base = 0  # absolute frame index of self.mel[..., 0]
        self.done = 0  # frames emitted
        self.tail = np.zeros(0, np.float32)  # the last window's audio just after ``done``

    @property
    def latency_frames(self) -> int:
        """Mel frames a frame of audio waits for after its own."""
        return self.lookahead

    def push(self, mel: torch.Tensor) -> np.ndarray:
        """(n_mels, T) log-mel -> the audio that became final (float32, maybe empty)."""
        self.mel = torch.cat([self.mel, mel.reshape(1, *mel.shape[-2:]).float()], dim=2)
        return self._emit(final=False)

    def finish(self) -> np.ndarray:
        """Emit everything left (the end of the utterance needs no right context)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> np.ndarray:
        total = self.base + self.mel.shape[2]
        upto = total if final else total - self.lookahead
        if upto <= self.done:
            return np.zeros(0, np.float32)
        start = max(self.base, self.done - self.left)
        win = self.mel[..., start - self.base:]
        wav = self.vocoder.vocode_window(win, self.done - start, upto - start, self.bin_run, self.src_run)
        wav = wav[0].numpy().astype(np.float32)
        out = wav[(self.done - start) * self.hop:(upto - start) * self.hop].copy()
        n = min(len(self.tail), len(out))
        if n:
            w = self.fade[:n] if n == len(self.fade) else np.linspace(0, 1, n + 2, dtype=np.float32)[1:-1]
            out[:n] = self.tail[:n] * (1.0 - w) + out[:n] * w
        self.tail = wav[(upto - start) * self.hop:(upto - start) * self.hop + len(self.fade)].copy()
        self.done = upto
        keep_from = max(self.base, self.done - self.left)
        self.mel, self.base = self.mel[..., keep_from - self.base:], keep_from
        return out
