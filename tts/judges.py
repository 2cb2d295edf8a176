"""Independent judges of synthesized speech: intelligibility (WER) and speaker similarity.

Judges say how good VoxLM is; they are never a model input, a loss or a
verifier. Both run offline on models shipped inside their wheels:

- :class:`IntelligibilityJudge`: pocketsphinx 5.x with its bundled US English
  acoustic model, language model and dictionary; WER via jiwer after
  :func:`tts.text_norm.normalize_text` on both sides (seed-tts-eval style: WER
  averaged over utterances, with the corpus-level figure beside it).
- :class:`SpeakerJudge`: resemblyzer's bundled ``VoiceEncoder`` (GE2E, 256-d),
  cosine similarity of utterance embeddings.

Audio is float32 mono plus its sample rate (or a path); it is resampled to
16 kHz at the edge by :mod:`tts.audio`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer
import numpy as np
from tqdm import tqdm

from tts.audio import load_audio
from tts.text_norm import normalize_text

JUDGE_SR = 16000
AudioLike = str | Path | np.ndarray | tuple[np.ndarray, int]


class JudgeError(RuntimeError):
    """A judge's bundled model is missing or cannot be loaded."""


def _load(audio: AudioLike, sr: int | None = None) -> np.ndarray:
    """Path, ``(array, sr)`` or array + sr -> float32 mono at 16 kHz."""
    if isinstance(audio, tuple):
        audio, sr = audio
    return load_audio(audio, JUDGE_SR, sample_rate=sr)


@dataclass
class WerResult:
    """WER of a set of utterances (seed-tts-eval: ``wer`` is the utterance mean)."""

    wer: float  # mean of per-utterance WERs
    corpus_wer: float  # total errors / total reference words
    utterances: int
    ref_words: int
    errors: int
    per_utt: list[float] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)

    def to_dict(self, details: bool = False) -> dict:
        d = asdict(self)
        if not details:
            d.pop("per_utt")
            d.pop("hyps")
        return d


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> WerResult:
    """WER of hypotheses against references, both normalised by ``normalize_text``.

    An empty normalised reference scores 0 if the hypothesis is empty too, else 1.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterances to score")
    per_utt, errors, words = [], 0, 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = normalize_text(ref), normalize_text(hyp)
        if not r:
            per_utt.append(0.0 if not h else 1.0)
            errors += len(h.split())
            continue
        if not h:
            n_err, n_ref = len(r.split()), len(r.split())
        else:
            out = jiwer.process_words(r, h)
            n_err = out.substitutions + out.deletions + out.insertions
            n_ref = out.substitutions + out.deletions + out.hits
        per_utt.append(n_err / n_ref)
        errors += n_err
        words += n_ref
    return WerResult(
        wer=float(np.mean(per_utt)),
        corpus_wer=errors / max(words, 1),
        utterances=len(per_utt),
        ref_words=words,
        errors=errors,
        per_utt=per_utt,
        hyps=list(hyps),
    )


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Per-item ``a - b`` (e.g. two systems' WER on the same utterances): mean, its standard
    error (None for one item) and how many items ``a`` is below, above and level with ``b``."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"need two equally long non-empty lists, got {len(a)} and {len(b)}")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return {"wer_diff_mean": float(d.mean()),
            "wer_diff_se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None,
            "better": int((d < 0).sum()), "worse": int((d > 0).sum()), "equal": int((d == 0).sum())}


class IntelligibilityJudge:
    """pocketsphinx (bundled US English model) transcribes; jiwer scores WER.

    ``jobs`` > 1: :meth:`transcribe_batch` spreads the utterances over that many processes,
    each with its own decoder (pocketsphinx runs on one core). The transcripts are the same
    (each utterance is decoded from a reset front end, whatever came before it).
    """

    def __init__(self, progress: bool = True, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        try:
            from pocketsphinx import Decoder
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise JudgeError(
                "pocketsphinx is not installed (pip install 'pocketsphinx>=5')"
            ) from err
        try:
            self._decoder = Decoder(samprate=JUDGE_SR, loglevel="FATAL")
        except Exception as err:
            raise JudgeError(f"cannot load pocketsphinx's bundled English model: {err}") from err
        self.progress = progress

    def transcribe(self, audio: AudioLike, sr: int | None = None) -> str:
        """One utterance (path, array + sr, or ``(array, sr)``) -> lowercase words."""
        wav = _load(audio, sr)
        pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        d = self._decoder
        # pocketsphinx's front end carries state from one utterance to the next (its
        # noise and cepstral-mean estimates): reset it, so that an utterance scores the
        # same whatever was decoded before it (measured: the same dev wav transcribed
        # differently after ten others; 10 of 60 real dev utts changed between two runs)
        d.reinit_feat()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def transcribe_batch(self, audios: Sequence[AudioLike], desc: str = "asr") -> list[str]:
        """Paths or ``(array, sr)`` pairs -> transcripts, in order, with a progress bar."""
        bar = {"desc": desc, "total": len(audios), "disable": not self.progress}
        if self.jobs == 1 or len(audios) < 2 * self.jobs:  # a worker's start costs a few utterances
            return [self.transcribe(a) for a in tqdm(audios, **bar)]
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(self.jobs, initializer=_start_worker) as pool:
            return list(tqdm(pool.imap(_transcribe_in_worker, audios, chunksize=2), **bar))

    @staticmethod
    def wer(refs: Sequence[str], hyps: Sequence[str]) -> WerResult:
        """WER of transcripts against reference texts (see :func:`word_error_rate`)."""
        return word_error_rate(refs, hyps)

    def score(self, refs: Sequence[str], audios: Sequence[AudioLike]) -> WerResult:
        """Transcribe ``audios`` and score them against ``refs``."""
        if len(refs) != len(audios):
            raise ValueError(f"{len(refs)} references but {len(audios)} audios")
        return word_error_rate(refs, self.transcribe_batch(audios))


_worker_judge: IntelligibilityJudge | None = None


def _start_worker() -> None:
    global _worker_judge
    _worker_judge = IntelligibilityJudge(progress=False)


def _transcribe_in_worker(audio: AudioLike) -> str:
    return _worker_judge.transcribe(audio)


class SpeakerJudge:
    """resemblyzer's bundled VoiceEncoder on CPU: 256-d embeddings, cosine similarity."""

    def __init__(self, progress: bool = True) -> None:
        with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            try:
                from resemblyzer import VoiceEncoder, preprocess_wav
            except ImportError as err:
                raise JudgeError(
                    f"cannot import resemblyzer ({err}); it needs webrtcvad and setuptools<81"
                ) from err
        try:
            self._encoder = VoiceEncoder(device="cpu", verbose=False)
        except Exception as err:
            raise JudgeError(f"cannot load resemblyzer's bundled voice encoder: {err}") from err
        self._preprocess = preprocess_wav
        self.progress = progress

    def embed(self, audio: AudioLike, sr: int | None = None) -> np.ndarray:
        """One utterance -> unit-norm (256,) float32 embedding."""
        wav = self._preprocess(_load(audio, sr), source_sr=JUDGE_SR)  # loudness + VAD trim
        if wav.size < JUDGE_SR // 10:  # VAD removed (nearly) everything: embed the raw audio
            wav = _load(audio, sr)
        return self._encoder.embed_utterance(wav).astype(np.float32)

    def embed_batch(self, audios: Sequence[AudioLike], desc: str = "spk") -> np.ndarray:
        """Paths or ``(array, sr)`` pairs -> (N, 256) embeddings, with a progress bar."""
        embs = [self.embed(a) for a in tqdm(audios, desc=desc, disable=not self.progress)]
        return np.stack(embs) if embs else np.zeros((0, 256), np.float32)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
        """Cosine similarity of two embeddings, or row-wise of two (N, D) arrays."""
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        num = (a * b).sum(-1)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
        out = num / den
        return float(out) if np.ndim(out) == 0 else out.astype(np.float32)

    def score(self, audios: Sequence[AudioLike], prompts: Sequence[AudioLike]) -> np.ndarray:
        """SIM of each output to its prompt (seed-tts-eval): (N,) cosines."""
        if len(audios) != len(prompts):
            raise ValueError(f"{len(audios)} outputs but {len(prompts)} prompts")
        return self.similarity(self.embed_batch(audios), self.embed_batch(prompts, desc="prompt"))
