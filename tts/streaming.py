"""Streaming synthesis: ``Synthesizer.stream(text, prompt)`` yields audio while the LLM still speaks.

    LLM decode (producer thread) ─tokens─► bounded queue ─► FlowStream (chunk mask, cached
    prompt block, KV per ODE step) ─mel chunk─► VocoderStream (look-ahead + cross-fade) ─► audio

* **Producer thread, not an interleaving generator**: torch releases the GIL inside its
  ops, so on two or more cores the LLM keeps decoding the next chunk while the flow and
  the vocoder work on this one; the bounded queue stops a fast LLM from running far
  ahead. One exception: once the first chunk's tokens are out, the LLM waits until
  that chunk is solved, so the first audio never shares a busy CPU with decoding
  that can wait. Tokens do not depend on timing (the sampler has its own seeded generator), so a
  stream is as reproducible as ``synthesize``. ``close()`` on the stream (or leaving a
  ``with`` block, or dropping a half-read generator) stops and joins the thread; an
  exception in the thread is raised to the caller at the point it would have produced.
* **Chunks**: the flow solves ``first_chunk_tokens`` first (small: first audio sooner),
  then ``chunk_tokens`` at a time; each chunk is final once solved. It waits for
  ``flow_lookahead_tokens`` more and solves them with the chunk, so the chunk's end hears
  what follows (:mod:`flow.streaming`; without it chunk ends cost intelligibility). The
  vocoder holds back ``vocoder_lookahead`` mel frames of audio (they still lack right
  context) and cross-fades each window into the next, so joins do not click. With ``vocoder_lookahead >=
  vocoder.context_frames`` its output equals offline vocoding exactly.
* **Search**: best-of-N ranks whole candidates, which a stream cannot wait for, so
  ``n_candidates`` > 1 is refused; ``synthesize`` does the search.
* **Per-speaker cache**: pass a :class:`tts.synthesizer.Prompt` (``prepare_prompt``) and
  its analysis *and* the flow's solved prompt block (stored on it per solver options) are
  reused: the first call pays for them once.

Reference behaviour (tested): with ``vocoder_lookahead >= vocoder.context_frames`` the
concatenated stream equals, up to float rounding, ``join_with_pauses`` over sentences of
``vocoder(flow.generate(tokens_i, *synth.flow_prompt(prompt), chunk=2 * chunk_tokens,
first_chunk=2 * first_chunk_tokens, lookahead=2 * flow_lookahead_tokens, seed=seed + i))``,
where ``tokens_i`` are exactly the tokens ``synthesize(..., seed=seed)`` samples for sentence ``i``. The default smaller
look-ahead departs from that only in the few frames before each join.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
import torch

from flow.model import FlowModel
from flow.streaming import FlowContext, FlowStream, prompt_context
from tts.audio import soft_limit
from tts.sampling import Generation, SamplingConfig, decode
from vocoder.model import Vocoder
from vocoder.streaming import VocoderStream

CHUNK_TOKENS = 12  # 0.48 s per chunk after the first (24 frames: the flow trains on 25- and 50-frame chunks)
FIRST_CHUNK_TOKENS = 6  # 0.24 s: the first audio waits for these
FLOW_LOOKAHEAD_TOKENS = 2  # 80 ms (4 frames) of what follows, seen by each chunk (egs/synth_en/RESULTS.md)
VOCODER_LOOKAHEAD = 4  # mel frames (80 ms); see vocoder.streaming
QUEUE_SIZE = 256  # tokens the LLM may run ahead of the flow


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class TokenProducer:
    """Run an iterator in a daemon thread; iterate over its items through a bounded queue."""

    def __init__(self, items: Iterator, maxsize: int | None = None, stopped: threading.Event | None = None):
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE if maxsize is None else maxsize)
        self.stopped = stopped or threading.Event()
        self.thread = threading.Thread(target=self._run, args=(items,), name="voxlm-llm", daemon=True)
        self.thread.start()

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(_Failure(err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread (it ends after its current decoding step) and wait for it."""
        self.stopped.set()
        self.thread.join(timeout)


class SpeechStream:
    """An iterator of float32 audio chunks at ``sample_rate``; ``close()`` cancels it.

    After (or while) iterating: ``first_audio_s`` (seconds from the ``stream`` call to the
    first chunk), ``first_audio_cpu_s`` (CPU seconds this process spent meanwhile, all
    threads: on a loaded machine the wall time inflates, this does not), ``joins`` (sample positions where two vocoder windows meet, for click
    checks), ``sentences``.
    """

    def __init__(self, sample_rate: int, sentences: list[str], t_start: float, cpu_start: float):
        self.sample_rate, self.sentences, self.t_start, self.cpu_start = sample_rate, sentences, t_start, cpu_start
        self.first_audio_s: float | None = None
        self.first_audio_cpu_s: float | None = None
        self.joins: list[int] = []
        self._gen: Iterator[np.ndarray] = iter(())

    def __iter__(self) -> SpeechStream:
        return self

    def __next__(self) -> np.ndarray:
        chunk = next(self._gen)
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self.t_start
            self.first_audio_cpu_s = time.process_time() - self.cpu_start
        return chunk

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> SpeechStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Edges:
    """The fades and pauses of :func:`tts.synthesizer.join_with_pauses`, applied on the fly."""

    def __init__(self, sample_rate: int):
        from tts.synthesizer import FADE_SECONDS, PAUSE_SECONDS
        self.fade = int(FADE_SECONDS * sample_rate)
        self.ramp = np.linspace(0.0, 1.0, self.fade, dtype=np.float32)
        self.pause = np.zeros(int(PAUSE_SECONDS * sample_rate), np.float32)
        self.buf, self.faded_in = np.zeros(0, np.float32), False

    def add(self, audio: np.ndarray) -> np.ndarray:
        """Hold back the last ``fade`` samples (they may need a fade-out); emit the rest."""
        self.buf = np.concatenate([self.buf, audio])
        if not self.faded_in and len(self.buf) > 2 * self.fade:
            self.buf[:self.fade] *= self.ramp
            self.faded_in = True
        if not self.faded_in:
            return np.zeros(0, np.float32)
        out, self.buf = self.buf[:-self.fade], self.buf[-self.fade:]
        return out

    def end(self, more: bool) -> np.ndarray:
        out = self.buf
        if self.faded_in:
            out = out * self.ramp[::-1]
        self.buf, self.faded_in = np.zeros(0, np.float32), False
        return np.concatenate([out, self.pause]) if more else out


def flow_context(synth, prompt, steps: int | None, guidance: float | None) -> FlowContext:
    """The flow's solved prompt block for these options, cached on the Prompt."""
    key = synth.flow._options(steps, None, None, guidance)
    if key not in prompt.flow_contexts:
        p_tokens, p_mel = synth.flow_prompt(prompt)
        prompt.flow_contexts[key] = prompt_context(synth.flow, p_tokens, p_mel, steps=steps, guidance=guidance)
    return prompt.flow_contexts[key]


def _decode_sentences(lm, sentences: list[str], prompt_ids: list[int], prompt_tokens: list[int],
                      seed: int, sampling: dict, hold: tuple[int, threading.Event, threading.Event]
                      ) -> Iterator[tuple[int, list[int] | Generation]]:
    """(sentence, new tokens) per decoding step; (sentence, Generation) when it ends.

    ``hold = (n, first_chunk_done, stopped)``: after the first ``n`` tokens, wait until the
    consumer has solved the first chunk, so that on a busy CPU the first audio does not
    share it with decoding that can wait."""
    n_hold, first_done, stopped = hold
    for i, sentence in enumerate(sentences):
        cfg = SamplingConfig(**{**sampling, "num_candidates": 1, "seed": seed + i})
        steps = decode(lm, lm.frontend.encode_normalized(sentence), prompt_ids, prompt_tokens, cfg)
        count = 0
        while True:
            try:
                new = [tok for _, tok in next(steps)]
                yield i, new
                count += len(new)
                if i == 0 and count == n_hold:
                    while not first_done.wait(0.05) and not stopped.is_set():
                        pass
            except StopIteration as done:
                yield i, done.value
                break


def stream(synth, text: str, prompt_audio=None, prompt_sample_rate: int | None = None,
           prompt_text: str | None = None, *, chunk_tokens: int = CHUNK_TOKENS,
           first_chunk_tokens: int | None = FIRST_CHUNK_TOKENS, vocoder_lookahead: int | None = VOCODER_LOOKAHEAD,
           flow_lookahead_tokens: int = FLOW_LOOKAHEAD_TOKENS, n_candidates: int = 1, seed: int | None = None,
           flow_steps: int | None = None, guidance: float | None = None, **sampling) -> SpeechStream:
    """See the module docstring. Inputs are checked (and an uncached prompt analysed) before
    this returns; the LLM starts at once, audio comes as the caller iterates."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    if n_candidates != 1:
        raise ValueError(f"streaming needs n_candidates=1 (got {n_candidates}): best-of-N ranks whole "
                         "candidates, which a stream cannot wait for; use synthesize() for search")
    if not isinstance(synth.flow, FlowModel) or not isinstance(synth.vocoder, Vocoder):
        raise ValueError("streaming runs on the torch backend (it caches keys/values inside the flow); "
                         "load the model with backend='torch'")
    first_chunk_tokens = first_chunk_tokens or chunk_tokens
    if chunk_tokens < 1 or first_chunk_tokens < 1:
        raise ValueError(f"chunk sizes must be >= 1 token, got {chunk_tokens} and {first_chunk_tokens}")
    if flow_lookahead_tokens < 0:
        raise ValueError(f"flow_lookahead_tokens must be >= 0, got {flow_lookahead_tokens}")
    sentences, prompt, seed, prompt_ids = synth._begin(text, prompt_audio, prompt_sample_rate, prompt_text,
                                                       seed, sampling)
    lookahead = synth.vocoder.context_frames if vocoder_lookahead is None else vocoder_lookahead
    out = SpeechStream(synth.sample_rate, sentences, t0, cpu0)
    first_done, stopped = threading.Event(), threading.Event()
    hold = (first_chunk_tokens + flow_lookahead_tokens, first_done, stopped)
    producer = TokenProducer(_decode_sentences(synth.lm, sentences, prompt_ids, prompt.tokens, seed, sampling, hold),
                             stopped=stopped)
    out._gen = _run(synth, out, producer, flow_context(synth, prompt, flow_steps, guidance), seed,
                    (chunk_tokens, first_chunk_tokens, flow_lookahead_tokens), lookahead, first_done)
    return out


@torch.no_grad()
def _run(synth, out: SpeechStream, producer: TokenProducer, ctx: FlowContext, seed: int,
         flow_tokens: tuple[int, int, int], lookahead: int, first_done: threading.Event) -> Iterator[np.ndarray]:
    # flow_tokens: (chunk, first chunk, flow lookahead) in tokens; lookahead: the vocoder's, in frames
    up = synth.flow.config.upsample
    chunk_tokens, first_tokens, ahead_tokens = flow_tokens
    edges, n = _Edges(synth.sample_rate), len(out.sentences)
    current, emitted, start, voc_done = -1, 0, 0, 0  # sentence; samples out; its first sample; vocoded
    try:
        for i, item in producer:
            if i != current:
                current, start, voc_done = i, emitted, 0
                flow = FlowStream(synth.flow, ctx, chunk=chunk_tokens * up, first_chunk=first_tokens * up,
                                  lookahead=ahead_tokens * up, seed=seed + i)
                voc = VocoderStream(synth.vocoder, lookahead=lookahead)
            ended = isinstance(item, Generation)
            if ended and not flow.tokens:
                raise RuntimeError(f"the LLM produced no speech tokens for {out.sentences[i]!r}")
            mels = flow.finish() if ended else flow.push(item)
            if mels or ended:
                first_done.set()  # the LLM may go on (see _decode_sentences)
            pieces = [voc.push(mel) for mel in mels]
            pieces += [voc.finish()] if ended else []
            for p in pieces:
                if len(p) and voc_done:
                    out.joins.append(start + voc_done)
                voc_done += len(p)
            audio = edges.add(np.concatenate(pieces)) if pieces else np.zeros(0, np.float32)
            if ended:
                audio = np.concatenate([audio, edges.end(more=i + 1 < n)])
            if len(audio):
                emitted += len(audio)
                yield soft_limit(audio)
    finally:
        first_done.set()
        producer.close()


def click_ratio(audio: np.ndarray, joins: list[int], width: int = 4) -> float:
    """Energy of the sample-to-sample difference within ``width`` samples of the joins, over
    its energy everywhere else: about 1 when joins are seamless, well above 1 when they click."""
    d = np.diff(np.asarray(audio, np.float64)) ** 2
    near = np.zeros(len(d), bool)
    for j in joins:
        near[max(0, j - width):j + width] = True
    if not near.any() or near.all():
        return float("nan")
    return float(d[near].mean() / max(d[~near].mean(), 1e-20))
