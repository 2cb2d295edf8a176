"""Verifiers for best-of-N search (Llasa's inference-time scaling).

A verifier scores the N candidates of one request; higher is better. VoxLM's
defaults are its own models, never the judges:

- :class:`TokenIntelligibility`: the speech tokenizer's CTC head reads each
  candidate's *tokens* (no flow, no vocoder) and the score is ``1 - CER``
  against the normalised target text. Cheap, so it runs on every candidate
  and prunes before the expensive stages.
- :class:`SpeakerSimilarity`: VoxLM's own speaker encoder (``tts.speaker``),
  cosine between a candidate's audio and the prompt; it ranks the vocoded finalists
  when the search keeps two or more (``prune_to``; the default keeps one).
- :class:`AudioIntelligibility` (opt-in): the same tokenizer's ASR reads the
  candidate's *audio* (after flow and vocoder), ``1 - CER``: it sees what the flow
  made of the tokens, at one encoder pass per vocoded candidate.

Plug in another verifier by giving an object with ``name``, ``needs_audio``,
``weight`` and ``score(request, candidates) -> list[float]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import jiwer
import numpy as np

from tts.text_norm import normalize_text

# The default search (egs/synth_en/RESULTS.md, stop 38; every candidate of 168 dev and 126 test
# clones vocoded and judged): the token verifier's best is the answer, and only it is vocoded.
# Vocoding two finalists for the speaker verifier to rank was level in words on dev, cost words
# on test (+0.012 +- 0.008) and bought no voice on the held-out speakers, at twice the flow's cost. With ``prune_to`` > 1 the finalists are also ranked by the
# speaker verifier (and the audio verifier, when asked).
PRUNE_TO = 1
AUDIO_VERIFIER = False
SPEAKER_VERIFIER = True


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


class SpeakerSimilarity:
    name, needs_audio = "speaker_similarity", True

    def __init__(self, encoder, weight: float = 1.0):
        self.encoder, self.weight = encoder, weight

    def score(self, request: VerifyRequest, candidates: list[Candidate]) -> list[float]:
        if request.prompt_embedding is None:
            raise ValueError("speaker similarity needs the prompt's embedding")
        return [self.encoder.similarity(self.encoder.embed(c.audio, request.sample_rate), request.prompt_embedding)
                for c in candidates]


def rank(candidates: list[Candidate], verifiers: list) -> list[Candidate]:
    """Set each candidate's ``total`` from the verifiers that scored it; best first."""
    weights = {v.name: v.weight for v in verifiers}
    for c in candidates:
        c.total = sum(weights.get(k, 0.0) * s for k, s in c.scores.items())
    return sorted(candidates, key=lambda c: (c.hit_max_length, -c.total))
