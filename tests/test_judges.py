"""Judges on short flite clips: WER low against the clip's own text, high against
another; cosine higher for two clips of one voice than for two different voices."""

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from tts.audio import read_audio
from tts.judges import (
    IntelligibilityJudge,
    SpeakerJudge,
    WerResult,
    paired_difference,
    word_error_rate,
)

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None, reason="needs flite (apt-get install flite)"
)

TEXT_A = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT_B = "Please call me tomorrow morning about the meeting."
OTHER = "Seven green apples fell from the old tree in the garden."


def flite(tmp: Path, voice: str, text: str, name: str) -> Path:
    out = tmp / f"{name}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("judges")
    return {
        "rms_a": flite(tmp, "rms", TEXT_A, "rms_a"),
        "rms_b": flite(tmp, "rms", TEXT_B, "rms_b"),
        "slt_b": flite(tmp, "slt", TEXT_B, "slt_b"),
    }


def test_word_error_rate_normalises_and_averages() -> None:
    r = word_error_rate(
        ["Dr. Smith paid $5.", "Hello there world"],
        ["doctor smith paid five dollars", "hello world"],
    )
    assert isinstance(r, WerResult)
    assert r.per_utt == [0.0, pytest.approx(1 / 3)]
    assert r.wer == pytest.approx(1 / 6)  # mean over utterances
    assert r.corpus_wer == pytest.approx(1 / 8)  # errors over all reference words
    assert word_error_rate(["..."], [""]).wer == 0.0
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])


def test_paired_difference() -> None:
    d = paired_difference([0.5, 0.2, 0.0, 0.3], [0.25, 0.4, 0.0, 0.1])
    assert d["wer_diff_mean"] == pytest.approx(0.0625) and (d["better"], d["worse"], d["equal"]) == (1, 2, 1)
    assert d["wer_diff_se"] == pytest.approx(np.std([0.25, -0.2, 0.0, 0.2], ddof=1) / 2)
    assert paired_difference([0.1], [0.3])["wer_diff_se"] is None
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([0.1, 0.2], [0.3])


def test_intelligibility_judge(clips) -> None:
    judge = IntelligibilityJudge(progress=False)
    hyp = judge.transcribe(clips["rms_a"])
    assert judge.wer([TEXT_A], [hyp]).wer <= 0.25, hyp
    assert judge.wer([OTHER], [hyp]).wer >= 0.7, hyp
    # arrays at another rate are resampled at the edge, paths and (array, sr) both work
    data, sr = read_audio(clips["rms_b"])
    data8k = data[::2, 0].copy()
    hyps = judge.transcribe_batch([clips["rms_b"], (data8k, sr // 2)])
    assert judge.score([TEXT_B, TEXT_B], [clips["rms_b"], (data, sr)]).wer <= 0.25
    assert all(isinstance(h, str) for h in hyps)


def test_intelligibility_judge_has_no_memory(clips) -> None:
    """An utterance scores the same whatever was decoded before it: pocketsphinx's front
    end would otherwise carry its noise and cepstral-mean estimates over (the hypothesis
    score moves, and on real dev audio the words did)."""
    judge = IntelligibilityJudge(progress=False)
    first = judge.transcribe(clips["rms_a"])
    score = judge._decoder.hyp().best_score
    quiet, sr = read_audio(clips["slt_b"])
    judge.transcribe((quiet[:, 0] * 0.05, sr))
    judge.transcribe(clips["rms_b"])
    assert judge.transcribe(clips["rms_a"]) == first
    assert judge._decoder.hyp().best_score == score


def test_speaker_judge(clips) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        judge = SpeakerJudge(progress=False)
    embs = judge.embed_batch([clips["rms_a"], clips["rms_b"], clips["slt_b"]])
    assert embs.shape == (3, 256)
    assert np.allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-3)
    same = judge.similarity(embs[0], embs[1])
    diff = judge.similarity(embs[1], embs[2])
    assert same > diff + 0.1, (same, diff)
    rowwise = judge.similarity(embs[:2], embs[1:])
    assert rowwise.shape == (2,) and rowwise[0] == pytest.approx(same, abs=1e-5)


def test_intelligibility_judge_jobs_give_the_same_transcripts(clips) -> None:
    """Two worker processes (each its own decoder) transcribe a list as one decoder does, in order."""
    audios = [clips[k] for k in sorted(clips)] * 2
    one = IntelligibilityJudge(progress=False).transcribe_batch(audios)
    assert IntelligibilityJudge(progress=False, jobs=2).transcribe_batch(audios) == one
    assert len(set(one)) > 1  # not all the same words: the order is checked
    with pytest.raises(ValueError, match="jobs"):
        IntelligibilityJudge(jobs=0)


def test_mel_words_benchmark(clips, tmp_path, capsys) -> None:
    """benchmarks/mel_words.py: a mel with a 256 ms window loses more words through
    Griffin-Lim than the 40 ms one; figures are paired against the real audio."""
    import importlib.util
    import json

    from tts.datadir import write_table

    spec = importlib.util.spec_from_file_location(
        "mel_words", Path(__file__).resolve().parents[1] / "benchmarks" / "mel_words.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.parse_mel("640/160").win_length == 640 and bench.parse_mel("16k-w40").hop_length == 320
    with pytest.raises(ValueError, match="two integers"):
        bench.parse_mel("640/x")
    utts = {"a": (clips["rms_a"], TEXT_A), "b": (clips["slt_b"], TEXT_B)}
    write_table(tmp_path / "wav.scp", {u: str(w) for u, (w, _) in utts.items()})
    write_table(tmp_path / "text", {u: t for u, (_, t) in utts.items()})
    write_table(tmp_path / "utt2spk", {u: u for u in utts})
    assert bench.main(["--data", str(tmp_path), "--mel", "16k-w40", "4096/1024"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["utterances"] == 2 and out["real_wer"] < 0.3
    fine, coarse = out["mels"]["16k-w40"], out["mels"]["4096/1024"]
    assert coarse["griffinlim_wer"] > fine["griffinlim_wer"] + 0.2
    assert coarse["minus_real"]["wer_diff_mean"] == pytest.approx(coarse["griffinlim_wer"] - out["real_wer"])
