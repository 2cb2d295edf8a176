"""Verifiers for best-of-N search (Llasa's inference-time scaling).

A verifier scores the N candidates of one request; higher is better. VoxLM's
defaults are its own models, never the judges:

- :class:`TokenIntelligibility`: the speech tokenizer's CTC head reads each
  candidate's *tokens* (no flow, no vocoder) and the score is ``1 - CER``
  against the normalised target text. Cheap, so it runs on every candidate
  and prunes before the expensive stages.
- :class:`PhoneLikelihood`: the tokenizer's encoder and its auxiliary phone CTC head
  read each vocoded finalist's *audio*; the score is the CTC log-likelihood of the
  target's phones, per phone. It sees what flow and vocoder made of the tokens, and
  ranks the ``prune_to`` finalists (default 4) with the token verifier.
- :class:`SpeakerSimilarity` (opt-in): VoxLM's own speaker encoder (``tts.speaker``),
  cosine between a finalist's audio and the prompt.
- :class:`AudioIntelligibility` (opt-in): the tokenizer's character ASR (through its
  quantizer) on the finalist's audio, ``1 - CER``.

Plug in your own (``synthesize(..., verifiers=[...])``, ``--verifier SPEC`` on the CLI): any
object with ``name``, ``needs_audio``, ``weight`` and ``score(request, candidates) ->
list[float]``. :func:`load_verifier` makes one from a local path: a speaker-encoder
directory (``tts.speaker``'s format, e.g. one trained on a larger corpus: cosine of each
finalist to the prompt under *that* encoder) or ``file.py:factory`` / ``module:factory``,
a callable with no arguments that returns the object (and loads its model from wherever
you keep it). Verifiers that need no audio score every candidate beside the token
verifier, before pruning; the others score the vocoded finalists.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import jiwer
import numpy as np
import torch

from tts.text_norm import normalize_text

# The default search (egs/synth_en/RESULTS.md, stop 39; every candidate of 168 dev and 126 test
# clones vocoded and judged): the token verifier keeps its best 4, which are vocoded and ranked
# by token + phone likelihood. Against the token verifier's best alone (stop 38's default): WER
# -0.035 +- 0.013 on dev, -0.012 +- 0.012 on test; end to end (126 test clones, two draws) N=8
# -0.022 +- 0.009 against it and -0.021 +- 0.012 against N=1. The speaker verifier bought no voice on the
# held-out speakers (SIM -0.001 +- 0.001 on test) and the character audio verifier fewer words
# than the phone one, so both are opt-in.
PRUNE_TO = 4
PHONE_VERIFIER = True
AUDIO_VERIFIER = False
SPEAKER_VERIFIER = False
INFEASIBLE = -100.0  # PhoneLikelihood's score where the audio is too short for the target's phones


@dataclass
class Candidate:
    tokens: list[int]  # speech token ids
    audio: np.ndarray | None = None  # float32 mono, once vocoded
    scores: dict[str, float] = field(default_factory=dict)
    total: float = 0.0  # weighted sum of the scores: the ranking key
    sentence: int = 0  # which sentence of the request it belongs to
    index: int = 0  # its place among the sentence's N samples (the order rank's ties keep)
    hit_max_length: bool = False


@dataclass
class VerifyRequest:
    text: str  # the target sentence
    prompt_embedding: np.ndarray | None = None  # the prompt's speaker embedding, when available
    sample_rate: int = 16000
    prompt_audio: np.ndarray | None = None  # the prompt at sample_rate (for verifiers with their own encoder)


class Verifier(Protocol):
    name: str
    needs_audio: bool
    weight: float

    def score(self, request: VerifyRequest, candidates: list[Candidate]) -> list[float]: ...


def one_minus_cer(text: str, hyps: list[str]) -> list[float]:
    """``1 - CER`` of each transcript against ``text`` (both normalised), floored at 0."""
    ref = normalize_text(text)
    return [1.0 - min(1.0, jiwer.cer(ref, normalize_text(h) or " ")) for h in hyps]


class TokenIntelligibility:
    name, needs_audio = "token_intelligibility", False

    def __init__(self, tokenizer, weight: float = 1.0):
        self.tokenizer, self.weight = tokenizer, weight

    def score(self, request: VerifyRequest, candidates: list[Candidate]) -> list[float]:
        return one_minus_cer(request.text, self.tokenizer.transcribe_tokens_batch([c.tokens or [0] for c in candidates]))


class AudioIntelligibility(TokenIntelligibility):
    name, needs_audio = "audio_intelligibility", True

    def score(self, request: VerifyRequest, candidates: list[Candidate]) -> list[float]:
        return one_minus_cer(request.text, [self.tokenizer.transcribe(c.audio, request.sample_rate) for c in candidates])


class PhoneLikelihood:
    """``log P(phones | audio) / len(phones)`` under the tokenizer's phone CTC head: the target's
    phones as the LLM's frontend spells them (:func:`tts.align.phone_targets`, the alignment's)."""

    name, needs_audio = "phone_likelihood", True

    def __init__(self, tokenizer, frontend, weight: float = 1.0):
        self.tokenizer, self.frontend, self.weight = tokenizer, frontend, weight

    @staticmethod
    def available(tokenizer) -> bool:
        """A phone head to read with (a tokenizer trained without one has none)."""
        return tokenizer.has_phone_head

    def score(self, request: VerifyRequest, candidates: list[Candidate]) -> list[float]:
        from tts.align import phone_targets

        targets, _ = phone_targets(self.frontend.symbols(self.frontend.transcript(request.text)))
        if not targets:
            return [0.0] * len(candidates)
        logps = self.tokenizer.phone_log_probs_batch([c.audio for c in candidates], request.sample_rate)
        return [ctc_log_likelihood(lp, targets) for lp in logps]


def ctc_log_likelihood(log_probs: np.ndarray, targets: list[int]) -> float:
    """(T, V) CTC log-posteriors (blank 0) -> ``log P(targets)`` per target label; INFEASIBLE
    where T frames cannot hold the labels."""
    nll = torch.nn.functional.ctc_loss(torch.as_tensor(log_probs)[:, None], torch.tensor([targets]),
                                       torch.tensor([len(log_probs)]), torch.tensor([len(targets)]),
                                       reduction="sum")
    return -float(nll) / len(targets) if torch.isfinite(nll) else INFEASIBLE


class SpeakerSimilarity:
    name, needs_audio = "speaker_similarity", True

    def __init__(self, encoder, weight: float = 1.0):
        self.encoder, self.weight = encoder, weight

    def score(self, request: VerifyRequest, candidates: list[Candidate]) -> list[float]:
        prompt = self.prompt_embedding(request)
        return [self.encoder.similarity(self.encoder.embed(c.audio, request.sample_rate), prompt) for c in candidates]

    def prompt_embedding(self, request: VerifyRequest) -> np.ndarray:
        if request.prompt_embedding is None:
            raise ValueError("speaker similarity needs the prompt's embedding")
        return request.prompt_embedding


class PromptSpeakerSimilarity(SpeakerSimilarity):
    """:class:`SpeakerSimilarity` under another encoder (a plug-in): it embeds the prompt itself."""

    def __init__(self, encoder, name: str, weight: float = 1.0):
        super().__init__(encoder, weight)
        self.name, self._prompt = name, (None, None)  # (the prompt array last seen, its embedding)

    def prompt_embedding(self, request: VerifyRequest) -> np.ndarray:
        if request.prompt_audio is None:
            raise ValueError(f"{self.name} needs the prompt's audio")
        cached = self._prompt  # one read: a demo serving requests side by side may replace it meanwhile
        if cached[0] is not request.prompt_audio:
            cached = (request.prompt_audio, self.encoder.embed(request.prompt_audio, request.sample_rate))
            self._prompt = cached
        return cached[1]


class VerifierSpecError(ValueError):
    """A ``--verifier`` spec that names nothing loadable; the message says why."""


def load_verifier(spec: str):
    """``DIR`` (a speaker-encoder directory), ``file.py:factory`` or ``module:factory``, each
    optionally ``@WEIGHT`` -> a verifier object (see the module docstring)."""
    target, weight = spec, None
    head, sep, tail = spec.rpartition("@")
    if sep:
        try:
            target, weight = head, float(tail)
        except ValueError:
            pass
    if Path(target).is_dir():
        from tts.speaker import SpeakerEncoder

        try:
            v = PromptSpeakerSimilarity(SpeakerEncoder.from_pretrained(target), f"speaker_similarity:{target}")
        except Exception as err:
            raise VerifierSpecError(f"verifier {target}: not a speaker-encoder directory: {err}") from err
    else:
        v = _call_factory(target)
    for attr in ("name", "needs_audio", "weight", "score"):
        if not hasattr(v, attr):
            raise VerifierSpecError(f"verifier {target}: the object has no {attr!r} (see tts.verifiers.Verifier)")
    if weight is not None:
        v.weight = weight
    return v


def _call_factory(target: str):
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise VerifierSpecError(f"verifier {target!r}: give a speaker-encoder directory, file.py:factory "
                                "or module:factory")
    if where.endswith(".py") and not Path(where).is_file():
        raise VerifierSpecError(f"verifier {target}: no file {where}")
    try:
        if where.endswith(".py"):
            loader = importlib.util.spec_from_file_location(f"voxlm_verifier_{Path(where).stem}", where)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except Exception as err:
        raise VerifierSpecError(f"verifier {target}: cannot import {where}: {err}") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise VerifierSpecError(f"verifier {target}: {where} has no callable {attr!r}")
    try:
        return factory()
    except Exception as err:  # e.g. its model file is missing: the user's error, said in one line
        raise VerifierSpecError(f"verifier {target}: {attr}() failed: {type(err).__name__}: {err}") from err


def check_verifiers(verifiers: list, builtin: list) -> list:
    """The plug-ins of one call, checked: names unique and none a built-in's."""
    taken = {v.name for v in builtin}
    for v in verifiers:
        if v.name in taken:
            raise ValueError(f"two verifiers are named {v.name!r}: each needs its own name")
        taken.add(v.name)
    return list(verifiers)


def rank(candidates: list[Candidate], verifiers: list) -> list[Candidate]:
    """Set each candidate's ``total`` from the verifiers that scored it; best first."""
    weights = {v.name: v.weight for v in verifiers}
    for c in candidates:
        c.total = sum(weights.get(k, 0.0) * s for k, s in c.scores.items())
    return sorted(candidates, key=lambda c: (c.hit_max_length, -c.total))
