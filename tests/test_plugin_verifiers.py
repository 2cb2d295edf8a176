"""Your own best-of-N verifiers: passed to synthesize(), or loaded from a local path
(tts.verifiers.load_verifier, `--verifier SPEC`), on the tiny untrained chain."""

import json
import textwrap

import numpy as np
import pytest

from tts.cli import main
from tts.synthesizer import Request, Synthesizer
from tts.verifiers import PromptSpeakerSimilarity, VerifierSpecError, load_verifier

FAST = dict(prompt_text="a voice", flow_steps=2, min_ratio=0.5, max_ratio=1.0, seed=3)


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return Synthesizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def prompt_wav(tone):
    return tone(2.0, 16000, freq=150.0)


class Shortest:
    """Needs no audio: prefers fewer tokens, strongly enough to decide."""
    name, needs_audio, weight = "shortest", False, 100.0

    def score(self, request, candidates):
        return [-float(len(c.tokens)) for c in candidates]


class Loudest:
    """Reads the vocoded finalists: prefers the highest RMS."""
    name, needs_audio, weight = "loudest", True, 1e6

    def __init__(self):
        self.seen = []

    def score(self, request, candidates):
        self.seen.append((request.prompt_audio is not None, len(candidates)))
        return [float(np.sqrt(np.mean(c.audio ** 2))) for c in candidates]


def test_a_verifier_without_audio_scores_every_candidate_before_pruning(synth, prompt_wav):
    r = synth.synthesize("Hi there.", prompt_wav, 16000, n_candidates=6, prune_to=2, phone_verifier=False,
                         verifiers=[Shortest()], **FAST)
    assert all("shortest" in c.scores for c in r.candidates)  # all six, the pruned too
    shortest = min(len(c.tokens) for c in r.candidates)
    assert len(r.chosen[0].tokens) == shortest  # its weight decides
    assert [c for c in r.candidates if c.audio is not None] == [r.chosen[0]]  # nothing reads audio


def test_an_audio_verifier_ranks_the_vocoded_finalists(synth, prompt_wav):
    loud = Loudest()
    r = synth.synthesize("Hi there.", prompt_wav, 16000, n_candidates=6, prune_to=3, phone_verifier=False,
                         verifiers=[loud], **FAST)
    vocoded = [c for c in r.candidates if c.audio is not None]
    assert len(vocoded) == 3 and loud.seen == [(True, 3)]  # the finalists, with the prompt's audio at hand
    rms = [float(np.sqrt(np.mean(c.audio ** 2))) for c in vocoded]
    assert r.chosen[0] is vocoded[int(np.argmax(rms))]
    assert "plugin_verifiers_s" in r.timings
    batch = synth.synthesize_batch([Request("Hi there.", prompt_wav, 16000, "a voice")], n_candidates=6,
                                   prune_to=3, phone_verifier=False, verifiers=[loud], seed=3,
                                   flow_steps=2, min_ratio=0.5, max_ratio=1.0)[0]
    assert np.array_equal(batch.audio, r.audio)  # the batched form searches the same way


def test_a_plugin_may_not_take_a_builtin_name(synth, prompt_wav):
    clash = Shortest()
    clash.name = "phone_likelihood"
    with pytest.raises(ValueError, match="phone_likelihood"):
        synth.synthesize("Hi there.", prompt_wav, 16000, n_candidates=2, verifiers=[clash], **FAST)


def test_load_verifier_from_a_file_a_module_and_a_speaker_directory(tmp_path, synth, tiny_model_dir, prompt_wav):
    f = tmp_path / "my_verifier.py"
    f.write_text(textwrap.dedent("""
        class Rate:
            name, needs_audio, weight = "rate", False, 1.0
            def score(self, request, candidates):
                return [len(c.tokens) / max(1, len(request.text)) for c in candidates]
        def make():
            return Rate()
        not_callable = 3
        def broken():
            return object()
        def raising():
            raise FileNotFoundError("/models/x.onnx")
    """))
    v = load_verifier(f"{f}:make@2.5")
    assert v.name == "rate" and v.weight == 2.5 and not v.needs_audio
    assert load_verifier("tests.test_plugin_verifiers:Shortest").name == "shortest"  # module:factory
    spk = load_verifier(str(tiny_model_dir / "speaker"))
    assert isinstance(spk, PromptSpeakerSimilarity) and spk.needs_audio
    assert spk.name == f"speaker_similarity:{tiny_model_dir / 'speaker'}"
    r = synth.synthesize("Hi there.", prompt_wav, 16000, n_candidates=3, prune_to=2, phone_verifier=False,
                         verifiers=[spk], **FAST)
    assert all(-1.0 <= c.scores[spk.name] <= 1.0 for c in r.candidates if c.audio is not None)
    for spec, why in ((f"{tmp_path}/nothing.py:make", "no file"), (f"{f}:missing", "no callable"),
                      (f"{f}:not_callable", "no callable"), (f"{f}:broken", "has no 'name'"),
                      (f"{f}:raising", "raising\\(\\) failed: FileNotFoundError"),
                      ("no_such_module_xyz:make", "cannot import"), ("plainword", "give a speaker-encoder"),
                      (str(tmp_path), "not a speaker-encoder directory")):
        with pytest.raises(VerifierSpecError, match=why):
            load_verifier(spec)


def test_cli_verifier_option(tmp_path, tiny_model_dir, tone, capsys):
    import soundfile as sf

    sf.write(tmp_path / "p.wav", tone(2.0, 16000, freq=150.0), 16000)
    (tmp_path / "v.py").write_text("from tests.test_plugin_verifiers import Shortest as make\n")
    out = tmp_path / "x.wav"
    base = ["synth", "--model", str(tiny_model_dir), "--text", "Hi there.", "--prompt", str(tmp_path / "p.wav"),
            "--prompt-text", "a voice", "--n-candidates", "3", "--flow-steps", "2", "--no-phone-verifier"]
    assert main(base + ["--out", str(out), "--verifier", f"{tmp_path}/v.py:make"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.exists() and all("shortest" in c["scores"] for c in report["candidates"])
    bad = tmp_path / "y.wav"
    assert main(base + ["--out", str(bad), "--verifier", f"{tmp_path}/v.py:nope"]) == 2
    assert "no callable 'nope'" in capsys.readouterr().err and not bad.exists()


def test_demo_gives_each_plugin_a_column(synth, tiny_model_dir, tmp_path, tone, capsys):
    import soundfile as sf

    from tts.demo import build_demo, make_handler, table_headers

    sf.write(tmp_path / "p.wav", tone(2.0, 16000, freq=150.0), 16000)
    handler = make_handler(synth, [Shortest()])
    # the form: prompt, its text, text, candidates, seed, temperature, top-k, top-p, flow steps,
    # guidance, candidates vocoded, speaker verifier, stream
    *_, last = handler(str(tmp_path / "p.wav"), "a voice", "Hi there.", 3, 0, 1.0, 25, 0.8, 2, None, 8, False,
                       False, progress=lambda *a, **k: None)
    rows, col = last[4], table_headers(["shortest"]).index("shortest")
    assert len(rows) == 3 and all(isinstance(r[col], float) for r in rows)
    chosen = [r for r in rows if r[-1] == "✓"]
    assert chosen[0][col] == max(r[col] for r in rows)  # its weight decides the pick
    page = build_demo(synth, verifiers=[Shortest()]).config
    assert any("shortest" in (c.get("props", {}).get("headers") or []) for c in page["components"])
    assert main(["demo", "--model", str(tiny_model_dir), "--verifier", f"{tmp_path}/none.py:make"]) == 2
    assert "no file" in capsys.readouterr().err  # stopped before serving anything
