"""The Synthesizer API and the model directory, on tiny untrained components.

Untrained parts speak gibberish; these tests check the plumbing: shapes, rates,
best-of-N bookkeeping, determinism, sentence joins and every clear error.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from tts.audio import AudioError
from tts.frontend import TextError
from tts.model_dir import ModelDirError, check_model_dir
from tts.synthesizer import Prompt, Synthesizer, join_with_pauses


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return Synthesizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def prompt_wav(tone):  # 2 s at 22.05 kHz: resampled at the edge
    rng = np.random.default_rng(1)
    return tone(2.0, 22050, freq=150.0) + 0.01 * rng.standard_normal(44100).astype(np.float32)


FAST = dict(flow_steps=2, min_ratio=0.5, max_ratio=1.0, seed=3)


def test_synthesize_returns_float32_audio_and_candidates(synth, prompt_wav):
    r = synth.synthesize("Hi there.", prompt_wav, 22050, prompt_text="a voice", n_candidates=3, prune_to=2,
                         **FAST)
    assert r.sample_rate == 16000 and r.audio.dtype == np.float32 and r.audio.ndim == 1
    assert r.duration > 0 and np.all(np.isfinite(r.audio))
    assert len(r.candidates) == 3 and r.chosen[0] is r.candidates[0]
    assert all("token_intelligibility" in c.scores for c in r.candidates)
    vocoded = [c for c in r.candidates if c.audio is not None]
    assert len(vocoded) == 2  # prune_to=2: the rest never reach flow/vocoder
    assert all("phone_likelihood" in c.scores and "speaker_similarity" not in c.scores for c in vocoded)
    # the chosen candidate has the best total among those vocoded
    assert r.chosen[0].total == max(c.total for c in vocoded)
    # the audio holds whole mel frames: 2 frames per token, hop samples per frame
    assert len(r.audio) == 2 * len(r.chosen[0].tokens) * 320


def test_default_search_ranks_four_finalists_by_tokens_and_phones(synth, prompt_wav, monkeypatch):
    """The default search: the token verifier's best 4 of 8 are vocoded, the phone verifier reads
    each, and the best token + phone total wins; the speaker verifier (opt-in) does not run."""
    scored = []
    monkeypatch.setattr(synth.similarity, "score", lambda req, cands: scored.append(cands) or [0.0] * len(cands))
    r = synth.synthesize("Hi there.", prompt_wav, 22050, prompt_text="a voice", n_candidates=8, **FAST)
    vocoded = [c for c in r.candidates if c.audio is not None]
    assert len(vocoded) == 4 and r.candidates[:4] == vocoded  # the finalists first, the pruned after
    pruned = [c.scores["token_intelligibility"] for c in r.candidates[4:]]
    assert min(c.scores["token_intelligibility"] for c in vocoded) >= max(pruned)
    assert all(set(c.scores) == {"token_intelligibility", "phone_likelihood"} for c in vocoded)
    assert all(c.scores["phone_likelihood"] <= 0.0 for c in vocoded)  # a log-likelihood
    totals = [c.scores["token_intelligibility"] + c.scores["phone_likelihood"] for c in vocoded]
    assert r.chosen[0] is vocoded[int(np.argmax(totals))]
    assert scored == [] and "phone_verifier_s" in r.timings and "speaker_verifier_s" not in r.timings


def test_no_audio_verifier_vocodes_the_token_verifiers_best_alone(synth, prompt_wav):
    """With every verifier that reads audio off, vocoding more than one candidate would buy nothing:
    the token verifier's best (the earliest of a tie) is the answer and the only one vocoded."""
    r = synth.synthesize("Hi there.", prompt_wav, 22050, prompt_text="a voice", n_candidates=4, prune_to=4,
                         phone_verifier=False, **FAST)
    best = max(c.scores["token_intelligibility"] for c in r.candidates)
    first_best = min(c.index for c in r.candidates if c.scores["token_intelligibility"] == best)
    assert r.chosen[0].index == first_best
    assert [c for c in r.candidates if c.audio is not None] == [r.chosen[0]]
    assert all(set(c.scores) == {"token_intelligibility"} for c in r.candidates)
    assert "phone_verifier_s" not in r.timings


def test_phone_verifier_prefers_the_audio_whose_phones_it_reads(synth, monkeypatch):
    """PhoneLikelihood: the CTC log-likelihood of the target's phones, per phone, from the tokenizer's
    phone head; posteriors that spell the phones score near 0, others lower, too few frames INFEASIBLE."""
    from tts.align import phone_targets
    from tts.verifiers import INFEASIBLE, Candidate, PhoneLikelihood, VerifyRequest
    from tts.verifiers import ctc_log_likelihood as loglik

    verifier = synth.phone_likelihood
    assert isinstance(verifier, PhoneLikelihood)
    fe = synth.lm.frontend
    targets, _ = phone_targets(fe.symbols(fe.transcript("Hi there.")))
    vocab = 1 + max(targets) + 5

    def posteriors(labels: list[int], frames_each: int = 3) -> np.ndarray:  # (T, V), nearly one-hot
        seq = [x for lab in labels for x in [lab] * frames_each + [0]]
        lp = np.full((len(seq), vocab), -20.0, np.float32)
        lp[np.arange(len(seq)), seq] = 0.0
        return lp - np.log(np.exp(lp).sum(1, keepdims=True))

    right, wrong = posteriors(targets), posteriors([(t % (vocab - 2)) + 1 if t != 1 else 2 for t in targets])
    assert loglik(right, targets) > -0.01 > -5 > loglik(wrong, targets)
    assert loglik(right[:2], targets) == INFEASIBLE
    monkeypatch.setattr(synth.tokenizer, "phone_log_probs_batch", lambda audios, sr: [wrong, right, right[:2]])
    cands = [Candidate([1], audio=np.zeros(1600, np.float32)) for _ in range(3)]
    scores = verifier.score(VerifyRequest("Hi there."), cands)
    assert scores[1] == max(scores) and scores[2] == INFEASIBLE


def test_audio_verifier_reads_the_vocoded_candidates(synth, prompt_wav, monkeypatch):
    """audio_verifier=True: the tokenizer's ASR reads each vocoded candidate's audio, and that
    score joins the ranking (here it decides it: the verifier 'hears' the text in one audio)."""
    heard = []

    def transcribe(audio, sr):
        heard.append(len(audio))
        return "four candidates here" if len(heard) == 2 else "zzz"

    monkeypatch.setattr(synth.tokenizer, "transcribe", transcribe)
    opts = dict(prompt_text="a voice", n_candidates=4, prune_to=3, phone_verifier=False, **FAST)
    r = synth.synthesize("Four candidates here.", prompt_wav, 22050, audio_verifier=True, **opts)
    vocoded = [c for c in r.candidates if c.audio is not None]
    assert len(vocoded) == 3 and len(heard) == 3  # one read per vocoded candidate, none of the pruned
    assert all("audio_intelligibility" in c.scores for c in vocoded)
    assert r.chosen[0].scores["audio_intelligibility"] == 1.0  # the one it heard right wins
    assert r.chosen[0].total == max(c.total for c in vocoded)
    off = synth.synthesize("Four candidates here.", prompt_wav, 22050, **opts)
    assert len(heard) == 3 and not any("audio_intelligibility" in c.scores for c in off.candidates)


def test_same_seed_same_audio_and_prompt_reuse(synth, prompt_wav):
    a = synth.synthesize("Hi there.", prompt_wav, 22050, prompt_text="a voice", **FAST)
    prompt = synth.prepare_prompt(prompt_wav, 22050, "a voice")
    assert isinstance(prompt, Prompt) and prompt.mel.shape == (80, 2 * len(prompt.tokens))
    b = synth.synthesize("Hi there.", prompt, **FAST)
    np.testing.assert_array_equal(a.audio, b.audio)


def test_long_text_is_split_and_joined(synth, prompt_wav):
    r = synth.synthesize("One. Two! Three?", prompt_wav, 22050, prompt_text="a voice", **FAST)
    assert len(r.sentences) == 3 and len(r.chosen) == 3
    pieces = sum(len(c.audio) for c in r.chosen)
    assert len(r.audio) == pieces + 2 * int(0.15 * 16000)


def test_prompt_text_is_transcribed_when_absent(synth, prompt_wav, monkeypatch):
    monkeypatch.setattr(synth.tokenizer, "transcribe", lambda audio, sr: "hello world")
    r = synth.synthesize("Hi.", prompt_wav, 22050, **FAST)
    assert r.prompt_text == "hello world"
    monkeypatch.setattr(synth.tokenizer, "transcribe", lambda audio, sr: "  ")
    with pytest.raises(AudioError, match="no speech recognised"):
        synth.synthesize("Hi.", prompt_wav, 22050, **FAST)


@pytest.mark.parametrize("text, err", [("", TextError), ("   ", TextError), ("!!! ...", TextError), (42, TextError)])
def test_bad_text(synth, prompt_wav, text, err):
    with pytest.raises(err):
        synth.synthesize(text, prompt_wav, 22050, prompt_text="a voice", **FAST)


def test_bad_prompts(synth, tone):
    with pytest.raises(AudioError, match="silent"):
        synth.synthesize("Hi.", np.zeros(32000, np.float32), 16000, prompt_text="x", **FAST)
    with pytest.raises(AudioError, match="under the minimum"):
        synth.synthesize("Hi.", tone(0.3), 16000, prompt_text="x", **FAST)
    with pytest.raises(AudioError, match="over the limit"):
        synth.synthesize("Hi.", tone(30.0), 16000, prompt_text="x", **FAST)
    with pytest.raises(AudioError, match="required"):
        synth.synthesize("Hi.", None, **FAST)
    with pytest.raises(TypeError, match="unknown sampling"):
        synth.synthesize("Hi.", tone(2.0), 16000, prompt_text="x", temprature=0.5)
    with pytest.raises(ValueError, match="uncond_prob"):  # an LLM without the text-free branch
        synth.synthesize("Hi.", tone(2.0), 16000, prompt_text="x", text_guidance=0.3, **FAST)
    stereo = np.stack([tone(2.0), tone(2.0)], axis=1)  # stereo is downmixed, not refused
    assert synth.synthesize("Hi.", stereo, 16000, prompt_text="x", **FAST).duration > 0


def test_model_dir_errors(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir
    assert check_model_dir(model_dir)["format_version"] == 1
    with pytest.raises(ModelDirError, match="not found"):
        Synthesizer.from_pretrained(tmp_path / "nope")
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "flow" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelDirError, match="corrupt weights file .*flow"):
        Synthesizer.from_pretrained(bad)
    shutil.rmtree(bad / "flow")
    with pytest.raises(ModelDirError, match="missing component folder flow"):
        Synthesizer.from_pretrained(bad)
    pick = tmp_path / "pickle"
    shutil.copytree(model_dir, pick)
    torch.save({"x": torch.zeros(1)}, pick / "vocoder" / "extra.pt")
    with pytest.raises(ModelDirError, match="refusing pickled"):
        Synthesizer.from_pretrained(pick)
    drift = tmp_path / "drift"
    shutil.copytree(model_dir, drift)
    manifest = json.loads((drift / "voxlm.json").read_text())
    manifest["mel"]["n_mels"] = 100
    (drift / "voxlm.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="mel settings differ"):
        Synthesizer.from_pretrained(drift)


def test_join_fades_edges():
    pieces = [np.ones(1000, np.float32), np.ones(1000, np.float32)]
    out = join_with_pauses(pieces, 16000)
    assert out[0] == 0.0 and out[999] == 0.0 and 0.95 < out.max() < 1.0  # 1.0 is soft-limited
    assert np.abs(np.diff(out)).max() < 0.01  # no step anywhere: no click


def test_join_limits_peaks_over_full_scale():
    t = np.arange(16000) / 16000
    loud = (1.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)  # peaks at 1.2: would hard-clip on write
    out = join_with_pauses([loud], 16000)
    assert np.abs(out).max() < 1.0
    quiet = np.abs(loud) <= 0.8
    assert np.array_equal(out[160:-160][quiet[160:-160]], loud[160:-160][quiet[160:-160]])  # untouched below the knee


def test_prompt_longer_than_the_flow_allows_is_cut_for_the_flow(synth, tone, monkeypatch):
    limit = synth.flow.config.max_prompt_frames
    monkeypatch.setattr(synth.flow.config, "max_prompt_frames", 60)  # 1.2 s
    seen = {}
    generate = synth.flow.generate

    def spy(tokens, prompt_tokens, prompt_mel, **kw):
        seen["frames"] = prompt_mel.shape[1]
        seen["tokens"] = len(prompt_tokens)
        return generate(tokens, prompt_tokens, prompt_mel, **kw)

    monkeypatch.setattr(synth.flow, "generate", spy)
    r = synth.synthesize("Hi.", tone(3.0), 16000, prompt_text="a voice", **FAST)
    assert r.duration > 0 and seen == {"frames": 60, "tokens": 30} and limit >= 60


def test_batch_gives_each_request_what_synthesize_gives_it(synth, prompt_wav, tmp_path):
    """Requests of other texts, sentence counts and voices in one batched LLM loop: each
    result equals its own synthesize() call (same seed), in order; a bad request either
    raises before any audio or, with errors="return", takes its error's place."""
    import soundfile as sf

    from tts.synthesizer import Request

    other = synth.prepare_prompt(np.roll(prompt_wav, 7000), 22050, "another voice here")
    sf.write(tmp_path / "p.wav", prompt_wav, 22050)
    requests = [Request("Hi there.", prompt_wav, 22050, "a voice"),
                Request("One more. And a second, longer sentence!", other),
                Request("Good day.", str(tmp_path / "p.wav"), None, "a voice")]
    opts = dict(FAST, n_candidates=2)
    batch = synth.synthesize_batch(requests, batch_size=3, **opts)  # 4 sentences: two LLM batches
    for r, b in zip(requests, batch, strict=True):
        alone = synth.synthesize(r.text, r.prompt, r.prompt_sample_rate, r.prompt_text, **opts)
        assert b.sentences == alone.sentences and [c.tokens for c in b.candidates] == [c.tokens for c in alone.candidates]
        np.testing.assert_array_equal(b.audio, alone.audio)
        assert b.timings["llm_s"] > 0 and b.timings["rtf"] > 0
    own = synth.synthesize_batch([Request("Hi there.", prompt_wav, 22050, "a voice", seed=5)], **opts)[0]
    alone = synth.synthesize("Hi there.", prompt_wav, 22050, "a voice", **{**opts, "seed": 5})
    np.testing.assert_array_equal(own.audio, alone.audio)  # a request's own seed wins over the call's
    assert not np.array_equal(own.audio, batch[0].audio)
    bad = [requests[0], Request("   ", prompt_wav, 22050, "a voice"), Request("Hi.", np.zeros(16000), 16000, "x")]
    with pytest.raises(TextError):
        synth.synthesize_batch(bad, **FAST)
    out = synth.synthesize_batch(bad, errors="return", **FAST)
    assert isinstance(out[1], TextError) and isinstance(out[2], AudioError)
    np.testing.assert_array_equal(out[0].audio, synth.synthesize("Hi there.", prompt_wav, 22050, "a voice",
                                                                 **FAST).audio)
