"""The public zero-shot synthesis API: ``Synthesizer.from_pretrained(dir).synthesize(...)``.

    text ─frontend─► sentences ─► LLM (N candidates, one batched call per sentence)
        ─► token verifier (tokenizer CTC) keeps the best prune_to (default 4) ─► flow ─► vocoder
        ─► the verifiers that read audio rank them (default: the tokenizer's phone likelihood)
        ─► best candidate per sentence ─► sentences joined with short faded pauses

The prompt (a few seconds of the voice to clone) is analysed once per call, or
once per speaker with :meth:`Synthesizer.prepare_prompt` and passed back in.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from flow.model import FlowModel
from tokenizer.api import SpeechTokenizer
from tts.audio import AudioError, load_audio, soft_limit
from tts.frontend import TextError
from tts.llm import SpeechLM
from tts.mel import MelConfig, mel_spectrogram
from tts.model_dir import BACKENDS, ModelDirError, check_model_dir
from tts.sampling import Generation, GenerationError, Item, SamplingConfig, generate, generate_many
from tts.speaker import SpeakerEncoder
from tts.verifiers import (
    AUDIO_VERIFIER,
    PHONE_VERIFIER,
    PRUNE_TO,
    SPEAKER_VERIFIER,
    AudioIntelligibility,
    Candidate,
    PhoneLikelihood,
    SpeakerSimilarity,
    TokenIntelligibility,
    VerifyRequest,
    check_verifiers,
    rank,
)
from vocoder.model import Vocoder

MIN_PROMPT_SECONDS = 1.0
MAX_PROMPT_SECONDS = 20.0
PAUSE_SECONDS = 0.15  # silence between sentences
FADE_SECONDS = 0.01  # fade in/out at every join: no clicks
# the parts synthesize() times: SynthesisResult.timings[f"{name}_s"] (the audio verifiers: two or more finalists;
# plug-in verifiers that read tokens count in token_verifier, those that read audio in plugin_verifiers)
COMPONENTS = ("llm", "token_verifier", "flow", "vocoder", "phone_verifier", "speaker_verifier", "audio_verifier",
              "plugin_verifiers")


@dataclass
class Prompt:
    """Everything the chain needs from the voice prompt; reuse it for the same speaker."""

    audio: np.ndarray  # float32 mono at the model rate, trimmed to whole tokens
    text: str  # given or transcribed by the tokenizer's ASR
    tokens: list[int]
    mel: np.ndarray  # (n_mels, 2 * len(tokens)) log-mel
    embedding: np.ndarray  # VoxLM speaker-encoder embedding (for the speaker verifier)
    text_was_transcribed: bool = False
    # the flow's solved prompt block per solver options, filled by streaming (tts.streaming)
    flow_contexts: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass
class SynthesisResult:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    candidates: list[Candidate]  # every candidate with its verifier scores, best first per sentence
    chosen: list[Candidate]  # the chosen candidate of each sentence
    sentences: list[str]
    prompt_text: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class Request:
    """One input of :meth:`Synthesizer.synthesize_batch` (the arguments of ``synthesize``)."""

    text: str
    prompt: np.ndarray | str | Path | Prompt
    prompt_sample_rate: int | None = None
    prompt_text: str | None = None
    seed: int | None = None  # this request's seed (default: the call's)


@dataclass
class _Search:
    """The best-of-N options every sentence of a call shares."""

    n_candidates: int
    prune_to: int
    flow_steps: int | None
    guidance: float | None
    use_speaker_verifier: bool
    use_audio_verifier: bool
    use_phone_verifier: bool
    verifiers: list  # the call's plug-ins (tts.verifiers.load_verifier), checked


class Synthesizer:
    def __init__(self, tokenizer: SpeechTokenizer, lm: SpeechLM, flow: FlowModel, vocoder: Vocoder,
                 speaker: SpeakerEncoder, mel_config: MelConfig):
        self.tokenizer, self.lm, self.flow, self.vocoder, self.speaker = tokenizer, lm, flow, vocoder, speaker
        self.mel_config = mel_config
        self.sample_rate = mel_config.sample_rate
        self.intelligibility = TokenIntelligibility(tokenizer)
        self.similarity = SpeakerSimilarity(speaker)
        self.audio_intelligibility = AudioIntelligibility(tokenizer)
        self.phone_likelihood = PhoneLikelihood(tokenizer, lm.frontend) if PhoneLikelihood.available(tokenizer) else None

    @classmethod
    def from_pretrained(cls, path: str | Path, backend: str = "torch") -> Synthesizer:
        """Load a model directory (see :mod:`tts.model_dir`); nothing is downloaded.

        ``backend="onnx"``: every network runs on onnxruntime from ``path/onnx`` (written by
        ``voxlm export onnx``) behind adapters with the torch components' signatures
        (:mod:`tts.onnx_backend`); everything else is this class's code either way.
        ``backend="onnx-int8"``: the same, with the flow estimator's int8-weight graph.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not available; use one of {', '.join(BACKENDS)}")
        manifest = check_model_dir(path)
        root = Path(path)
        try:
            mel = MelConfig(**manifest["mel"])
        except TypeError as err:
            raise ModelDirError(f"{root}: bad mel config in the manifest: {err}") from err
        if backend != "torch":
            from tts.onnx_backend import load_onnx_components

            parts = load_onnx_components(root, int8=backend == "onnx-int8")
        else:
            parts = {"flow": FlowModel.from_pretrained(root / "flow").eval(),
                     "vocoder": Vocoder.from_pretrained(root / "vocoder").eval()}
        flow, vocoder = parts["flow"], parts["vocoder"]
        for name, cfg in (("flow", flow.config.mel_config), ("vocoder", vocoder.config.mel_config)):
            if cfg != mel:
                raise ModelDirError(f"{root}: the {name}'s mel settings differ from the manifest's")
        if backend == "torch":
            parts |= {"tokenizer": SpeechTokenizer.from_pretrained(root / "tokenizer"),
                      "llm": SpeechLM.from_pretrained(root / "llm"),
                      "speaker": SpeakerEncoder.from_pretrained(root / "speaker")}
        return cls(parts["tokenizer"], parts["llm"], flow, vocoder, parts["speaker"], mel)

    # ---- the prompt ----------------------------------------------------------------------
    def prepare_prompt(self, audio: np.ndarray | str | Path, sample_rate: int | None = None,
                       prompt_text: str | None = None) -> Prompt:
        """Prompt audio (array + rate, or a path) -> tokens, mel, speaker embedding, text."""
        wav = load_audio(audio, self.sample_rate, sample_rate=sample_rate, normalize="rms",
                         min_seconds=MIN_PROMPT_SECONDS, max_seconds=MAX_PROMPT_SECONDS)
        tokens = [int(t) for t in self.tokenizer.encode(wav, self.sample_rate)]
        frames = 2 * len(tokens)  # 25 Hz tokens, 50 Hz mel
        wav = wav[: frames * self.mel_config.hop_length]
        mel = mel_spectrogram(wav, self.mel_config)[:, :frames]
        transcribed = prompt_text is None or not prompt_text.strip()
        text = self.tokenizer.transcribe(wav, self.sample_rate).strip() if transcribed else prompt_text.strip()
        if not text:
            raise AudioError("no speech recognised in the prompt: give prompt_text, or a clearer prompt")
        return Prompt(wav, text, tokens, mel, self.speaker.embed(wav, self.sample_rate), transcribed)

    # ---- synthesis -----------------------------------------------------------------------
    def synthesize(self, text: str, prompt_audio: np.ndarray | str | Path | Prompt | None = None,
                   prompt_sample_rate: int | None = None, prompt_text: str | None = None,
                   n_candidates: int = 1, seed: int | None = None, prune_to: int = PRUNE_TO,
                   flow_steps: int | None = None, guidance: float | None = None,
                   use_speaker_verifier: bool = SPEAKER_VERIFIER, audio_verifier: bool = AUDIO_VERIFIER,
                   phone_verifier: bool = PHONE_VERIFIER, verifiers: list | None = None,
                   **sampling) -> SynthesisResult:
        """Speak ``text`` in the prompt's voice.

        prompt_audio: float32 mono array with ``prompt_sample_rate``, a path, or a
        :class:`Prompt` from :meth:`prepare_prompt`. ``prompt_text`` is optional (the
        tokenizer's ASR transcribes the prompt when absent). ``n_candidates`` > 1 runs
        best-of-N: all candidates come from one batched LLM call; the token verifier
        scores all of them and its best ``prune_to`` (default 4) go through flow and vocoder,
        where the verifiers that read audio rank them too: the tokenizer's phone likelihood
        (``phone_verifier``, on by default), the speaker verifier (``use_speaker_verifier``) and
        the tokenizer's character ASR (``audio_verifier``). With none of them on (or a tokenizer
        without a phone head, and the other two off) only the token verifier's best is vocoded.
        ``verifiers``: your own (:mod:`tts.verifiers`' protocol, or :func:`tts.verifiers.load_verifier`);
        those that need no audio score every candidate with the token verifier, the others
        the vocoded finalists; their weighted scores join the sum. ``sampling``: fields of
        :class:`tts.sampling.SamplingConfig` (temperature, top_k, top_p, ras_window, ...).
        """
        t0 = time.perf_counter()
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        sentences, prompt, seed, prompt_ids = self._begin(text, prompt_audio, prompt_sample_rate, prompt_text,
                                                          seed, sampling)
        t_prompt = time.perf_counter()
        clock = _Clock()  # seconds spent in each component, over all sentences
        search = self._search(n_candidates, prune_to, flow_steps, guidance, use_speaker_verifier, audio_verifier,
                              phone_verifier, verifiers)
        ranked = []
        for i, sentence in enumerate(sentences):
            cfg = SamplingConfig(**{**sampling, "num_candidates": n_candidates, "seed": seed + i})
            with clock("llm_s"):
                gen = generate(self.lm, self.lm.frontend.encode_normalized(sentence), prompt_ids, prompt.tokens, cfg)
            ranked.append(self._choose(i, sentence, gen, prompt, seed + i, search, clock))
        clock.seconds["prompt_s"] = t_prompt - t0
        return self._result(sentences, prompt, ranked, clock, wall_s=time.perf_counter() - t_prompt)

    def synthesize_batch(self, requests: list[Request], n_candidates: int = 1, seed: int | None = None,
                         prune_to: int = PRUNE_TO, flow_steps: int | None = None, guidance: float | None = None,
                         use_speaker_verifier: bool = SPEAKER_VERIFIER, audio_verifier: bool = AUDIO_VERIFIER,
                         phone_verifier: bool = PHONE_VERIFIER, verifiers: list | None = None,
                         batch_size: int = 8, errors: str = "raise",
                         **sampling) -> list[SynthesisResult | Exception]:
        """:meth:`synthesize` for many requests, their LLM decoding batched ``batch_size``
        sentences at a time (other texts, other prompts: one KV-cached loop).

        Each result is what ``synthesize(request..., seed=...)`` returns for it, with the request's own seed if it has one (the same
        tokens: every sentence samples from its own seeded generator), in request order; the
        LLM's time of a batch is shared equally among its sentences in ``timings``. The same
        prompt (one :class:`Prompt`, or one path with one ``prompt_text``) is analysed once.
        ``errors="raise"`` raises the first bad request's error before any audio is made;
        ``"return"`` puts it in that request's place and synthesizes the others.
        """
        from tts.errors import USER_ERRORS

        if n_candidates < 1 or batch_size < 1:
            raise ValueError(f"n_candidates and batch_size must be >= 1, got {n_candidates}, {batch_size}")
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        results: list = [None] * len(requests)
        clocks, begun, items, prompts = [_Clock() for _ in requests], {}, [], {}
        for j, r in enumerate(requests):
            t0 = time.perf_counter()
            try:
                key = (str(r.prompt), r.prompt_sample_rate, r.prompt_text) if isinstance(r.prompt, str | Path) else None
                prompt = prompts.get(key) or r.prompt
                sentences, prompt, s, prompt_ids = self._begin(r.text, prompt, r.prompt_sample_rate, r.prompt_text,
                                                               seed if r.seed is None else r.seed, sampling)
            except USER_ERRORS as err:
                if errors == "raise":
                    raise
                results[j] = err
                continue
            if key is not None:
                prompts[key] = prompt
            clocks[j].seconds["prompt_s"] = time.perf_counter() - t0
            begun[j] = (sentences, prompt, s)
            items += [(j, i, Item(self.lm.frontend.encode_normalized(x), prompt_ids, prompt.tokens, seed=s + i))
                      for i, x in enumerate(sentences)]
        cfg = SamplingConfig(**{**sampling, "num_candidates": n_candidates})
        gens = {}
        for k in range(0, len(items), batch_size):
            chunk = items[k:k + batch_size]
            t0 = time.perf_counter()
            try:
                outs = generate_many(self.lm, [it for _, _, it in chunk], cfg)
            except GenerationError:  # an input too long for the model: find it, keep the others
                outs = [self._generate_alone(it, cfg, errors, results, j) for j, _, it in chunk]
            share = (time.perf_counter() - t0) / len(chunk)
            for (j, i, _), gen in zip(chunk, outs, strict=True):
                clocks[j].seconds["llm_s"] = clocks[j].seconds.get("llm_s", 0.0) + share
                gens[j, i] = gen
        search = self._search(n_candidates, prune_to, flow_steps, guidance, use_speaker_verifier, audio_verifier,
                              phone_verifier, verifiers)
        for j, (sentences, prompt, s) in begun.items():
            if results[j] is not None:
                continue
            ranked = [self._choose(i, x, gens[j, i], prompt, s + i, search, clocks[j]) for i, x in enumerate(sentences)]
            results[j] = self._result(sentences, prompt, ranked, clocks[j])
        return results

    def _search(self, n_candidates, prune_to, flow_steps, guidance, speaker, audio, phone, verifiers) -> _Search:
        builtin = [self.intelligibility, self.similarity, self.audio_intelligibility, self.phone_likelihood]
        return _Search(n_candidates, prune_to, flow_steps, guidance, speaker, audio, phone,
                       check_verifiers(verifiers or [], [v for v in builtin if v is not None]))

    def _generate_alone(self, item: Item, cfg: SamplingConfig, errors: str, results: list, j: int) -> Generation | None:
        try:
            return generate_many(self.lm, [item], cfg)[0]
        except GenerationError as err:
            if errors == "raise":
                raise
            results[j] = err
            return None

    def _choose(self, i: int, sentence: str, gen: Generation, prompt: Prompt, seed: int, search: _Search,
                clock: _Clock) -> list[Candidate]:
        """Sentence ``i``'s candidates ranked, best first: the token verifier scores all, the
        best ``prune_to`` are vocoded and scored by the audio verifiers asked for (only its best
        when none is)."""
        cands = [Candidate(t, sentence=i, index=k, hit_max_length=h)
                 for k, (t, h) in enumerate(zip(gen.tokens, gen.hit_max, strict=True))]
        req = VerifyRequest(sentence, prompt.embedding, self.sample_rate, prompt.audio)
        by_tokens = [self.intelligibility] + [v for v in search.verifiers if not v.needs_audio]
        with clock("token_verifier_s"):
            for v in by_tokens:
                self._score(v, req, cands)
        ranked = rank([c for c in cands if c.tokens], by_tokens)
        if not ranked:
            raise RuntimeError(f"the LLM produced no speech tokens for {sentence!r}")
        readers = [(name, v) for name, v, on in (
            ("phone_verifier", self.phone_likelihood, search.use_phone_verifier and self.phone_likelihood is not None),
            ("speaker_verifier", self.similarity, search.use_speaker_verifier),
            ("audio_verifier", self.audio_intelligibility, search.use_audio_verifier)) if on]
        readers += [("plugin_verifiers", v) for v in search.verifiers if v.needs_audio]
        keep = ranked[: max(1, search.prune_to) if readers and search.n_candidates > 1 else 1]
        for c in keep:
            c.audio = self._vocode(c.tokens, prompt, search.flow_steps, search.guidance, seed, clock)
        if len(keep) > 1:
            for name, verifier in readers:
                with clock(f"{name}_s"):
                    self._score(verifier, req, keep)
        return rank(keep, by_tokens + [v for _, v in readers]) + ranked[len(keep):]

    def _result(self, sentences: list[str], prompt: Prompt, ranked: list[list[Candidate]],
                clock: _Clock, wall_s: float | None = None) -> SynthesisResult:
        """The chosen candidates joined; ``clock`` holds prompt_s and each component's seconds,
        ``wall_s`` the synthesis time (default: the components' sum, a batch's share)."""
        audio = join_with_pauses([r[0].audio for r in ranked], self.sample_rate)
        synth_s = wall_s if wall_s is not None else sum(v for k, v in clock.seconds.items() if k != "prompt_s")
        timings = {"prompt_s": 0.0, **clock.seconds, "total_s": clock.seconds.get("prompt_s", 0.0) + synth_s,
                   "rtf": synth_s / max(len(audio) / self.sample_rate, 1e-6)}
        return SynthesisResult(audio, self.sample_rate, [c for r in ranked for c in r], [r[0] for r in ranked],
                               sentences, prompt.text, timings)

    def stream(self, text: str, prompt_audio: np.ndarray | str | Path | Prompt | None = None,
               prompt_sample_rate: int | None = None, prompt_text: str | None = None, **options):
        """Speak ``text`` as a stream of float32 chunks, yielded as soon as each is ready.

        Options and the reference behaviour: :func:`tts.streaming.stream`. Pass a
        :class:`Prompt` from :meth:`prepare_prompt` to analyse the voice once per speaker.
        """
        from tts.streaming import stream
        return stream(self, text, prompt_audio, prompt_sample_rate, prompt_text, **options)

    def _begin(self, text, prompt_audio, prompt_sample_rate, prompt_text, seed, sampling):
        """Checks shared by synthesize and stream -> (sentences, prompt, seed, prompt text ids)."""
        if not isinstance(text, str):
            raise TextError(f"text must be a string, got {type(text).__name__}")
        unknown = set(sampling) - {f.name for f in fields(SamplingConfig)} - {"num_candidates", "seed"}
        if unknown:
            raise TypeError(f"unknown sampling option(s): {sorted(unknown)}")
        sentences = self.lm.frontend.normalize(text)  # raises TextError for empty/unspeakable text
        if prompt_audio is None:
            raise AudioError("a prompt (a few seconds of the voice to clone) is required")
        prompt = prompt_audio if isinstance(prompt_audio, Prompt) else \
            self.prepare_prompt(prompt_audio, prompt_sample_rate, prompt_text)
        seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
        prompt_ids = self.lm.frontend.encode_normalized(self.lm.frontend.transcript(prompt.text))
        return sentences, prompt, seed, prompt_ids

    def flow_prompt(self, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt tokens and mel the flow sees: at most its max_prompt_frames (the last ones,
        tokens and mel cut together); the LLM has already used the whole prompt."""
        keep = self.flow.config.max_prompt_frames // self.flow.config.upsample
        p_mel = prompt.mel[:, -keep * self.flow.config.upsample:]
        return torch.tensor(prompt.tokens[-keep:]), torch.from_numpy(p_mel.copy())

    @staticmethod
    def _score(verifier, request: VerifyRequest, cands: list[Candidate]) -> None:
        for c, s in zip(cands, verifier.score(request, cands), strict=True):
            c.scores[verifier.name] = float(s)

    def render(self, tokens: list[int], prompt: Prompt, seed: int, flow_steps: int | None = None,
               guidance: float | None = None) -> np.ndarray:
        """One candidate's tokens through flow and vocoder, as the search renders each finalist
        (``seed``: the flow's noise); float32 mono at :attr:`sample_rate`."""
        return self._vocode(tokens, prompt, flow_steps, guidance, seed, _Clock())

    @torch.no_grad()
    def _vocode(self, tokens: list[int], prompt: Prompt, steps: int | None, guidance: float | None,
                seed: int, clock: _Clock) -> np.ndarray:
        with clock("flow_s"):
            mel = self.flow.generate(torch.tensor(tokens), *self.flow_prompt(prompt), steps=steps,
                                     guidance=guidance, seed=seed)
        with clock("vocoder_s"):
            return self.vocoder(mel[None].float())[0].numpy().astype(np.float32)


class _Clock:
    """``with clock(name):`` adds the block's wall time to ``clock.seconds[name]``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def join_with_pauses(pieces: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """Concatenate sentence audio with short pauses; fade every edge so joins never click;
    soft-limit the peaks (see :func:`tts.audio.soft_limit`)."""
    fade = int(FADE_SECONDS * sample_rate)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    pause = np.zeros(int(PAUSE_SECONDS * sample_rate), np.float32)
    out = []
    for i, p in enumerate(pieces):
        p = p.astype(np.float32).copy()
        if len(p) > 2 * fade:
            p[:fade] *= ramp
            p[-fade:] *= ramp[::-1]
        out += [pause, p] if i else [p]
    return soft_limit(np.concatenate(out)) if out else np.zeros(0, np.float32)
