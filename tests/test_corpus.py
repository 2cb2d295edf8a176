"""synth_en stage 0 at a tiny size: valid Kaldi dirs, disjoint test speakers, resumable."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from tts.datadir import read_table, validate_data_dir

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "synth_en"
TOOLS = ("flite", "text2wave", "sox")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS) or not Path("/usr/share/games/fortunes").is_dir(),
    reason="needs flite, festival, sox and fortunes (apt-get install ...)",
)
TINY = ["--train-hours", "0.004", "--dev-per-spk", "1", "--test-per-spk", "1", "--timbre-per-spk", "1", "--nj", "2"]


def prepare(data: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "local/prepare_corpus.py", "--data", str(data), *TINY]
    out = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def tables(data: Path) -> dict[str, dict[str, dict[str, str]]]:
    return {
        s: {n: read_table(data / s / n) for n in ("wav.scp", "text", "utt2spk")}
        for s in ("train", "dev", "test", "timbre")
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("synth_en") / "data"
    prepare(data)
    return data


def test_dirs_valid_and_test_speakers_unseen(corpus: Path) -> None:
    summaries = {s: validate_data_dir(corpus / s) for s in ("train", "dev", "test", "timbre")}
    assert all(v["utterances"] > 0 for v in summaries.values()), summaries
    t = tables(corpus)
    spk = {s: set(t[s]["utt2spk"].values()) for s in t}
    assert not spk["test"] & (spk["train"] | spk["dev"])
    assert spk["dev"] <= spk["train"]
    train_text = set(t["train"]["text"].values())
    held_out = set(t["dev"]["text"].values()) | set(t["test"]["text"].values())
    assert not train_text & held_out
    # timbre: 10 voices of other languages x 4 looks, only for the flow; no held-out sentence
    assert len(spk["timbre"]) == 40 and not spk["timbre"] & (spk["train"] | spk["test"])
    assert not set(t["timbre"]["text"].values()) & held_out
    for split in t:
        for utt, path in t[split]["wav.scp"].items():
            assert Path(path).is_absolute()
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), utt
            assert t[split]["text"][utt][0].isupper()  # the original cased sentence


def test_rerun_resumes_to_the_same_corpus(corpus: Path) -> None:
    before = tables(corpus)
    wavs = sorted(before["train"]["wav.scp"].values()) + sorted(before["test"]["wav.scp"].values())
    Path(wavs[0]).unlink()  # a missing utterance
    Path(wavs[-1]).write_bytes(b"RIFF")  # a truncated one
    (Path(wavs[1]).parent / "junk.wav.123.part").write_bytes(b"")  # a killed write
    mtime = Path(wavs[1]).stat().st_mtime_ns
    out = prepare(corpus)
    assert f"{sum(len(t['wav.scp']) for t in before.values()) - 2} of" in out.stdout
    assert tables(corpus) == before
    assert Path(wavs[1]).stat().st_mtime_ns == mtime  # complete wavs are not redone
    assert sf.info(wavs[0]).frames > 0 and sf.info(wavs[-1]).frames > 0
    assert not list(Path(wavs[1]).parent.glob("*.part"))


def test_an_utterance_a_timbre_voice_cannot_say_is_dropped_not_fatal(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(RECIPE / "local"))
    import prepare_corpus as pc
    from speakers import speakers_by_split

    def fake_synthesize(text, spk, wav):  # festival's Russian voice on some English sentences
        if "unsayable" in text:
            raise pc.SynthesisError("sox failed (2): WAVE: RIFF header not found")
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, [0.1] * 8000, 16000, subtype="PCM_16")
        return 0.5

    monkeypatch.setattr(pc, "synthesize", fake_synthesize)
    spk = {s: v[0] for s, v in speakers_by_split().items()}
    jobs = [pc.Job(f"u{i}", split, spk[split], text, tmp_path / f"u{i}.wav")
            for i, (split, text) in enumerate([("train", "Fine."), ("timbre", "An unsayable one."), ("timbre", "Fine.")])]
    durations = pc.synthesize_all(jobs, nj=1)
    assert durations == {"u0": 0.5, "u1": 0.0, "u2": 0.5}
    assert "1 utterances of ('timbre',) dropped" in capsys.readouterr().err
    train_job = pc.Job("u3", "train", spk["train"], "An unsayable one.", tmp_path / "u3.wav")
    with pytest.raises(pc.SynthesisError, match="1 utterances failed; rerun to retry"):
        pc.synthesize_all([train_job], nj=1)


def test_the_full_size_plan_keeps_dev_and_test_sentences_out_of_train(monkeypatch, tmp_path) -> None:
    monkeypatch.syspath_prepend(str(RECIPE / "local"))
    import prepare_corpus as pc
    from sentences import load_sentences

    jobs = pc.make_plan(load_sentences(), tmp_path, 3.0, 5, 15, 0, timbre_per_spk=30)  # run.sh's defaults
    assert pc.held_out_leaks(jobs) == []
    train = {j.text for j in jobs if j.split == "train"}
    assert any(j.text in train for j in jobs if j.split == "timbre")  # allowed: timbre reads train sentences
    first = next(j for j in jobs if j.split == "train")
    leaked = pc.Job("x", "dev", first.spk, first.text, tmp_path / "x.wav")
    assert pc.held_out_leaks([first, leaked]) == ["x"]
