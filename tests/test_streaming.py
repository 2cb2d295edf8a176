"""Streaming synthesis (tts/streaming.py, flow/streaming.py, vocoder/streaming.py) on tiny models.

Reference behaviour: with the vocoder's look-ahead at its full context, the concatenated
stream equals join_with_pauses over sentences of vocoder(flow.generate(tokens, prompt,
chunk=, first_chunk=, seed=seed + i)) with exactly the tokens synthesize() samples.
"""

import threading

import numpy as np
import pytest
import torch

from flow.backbone import stream_blocks
from flow.config import FlowConfig
from flow.model import FlowModel
from flow.streaming import FlowStream, prompt_context
from tts import streaming
from tts.synthesizer import Synthesizer, join_with_pauses
from vocoder.model import Vocoder, VocoderConfig
from vocoder.streaming import VocoderStream

FAST = dict(flow_steps=2, min_ratio=0.5, max_ratio=2.0, seed=3)
HOP = 320


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return Synthesizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def prompt_wav():
    rng = np.random.default_rng(1)
    t = np.arange(32000) / 16000
    return (0.5 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(32000)).astype(np.float32)


def reference(synth, text, prompt, chunk, first, ahead=streaming.FLOW_LOOKAHEAD_TOKENS, seed=3, steps=2):
    r = synth.synthesize(text, prompt, **{**FAST, "seed": seed})
    pieces = []
    for i, c in enumerate(r.chosen):
        mel = synth.flow.generate(torch.tensor(c.tokens), *synth.flow_prompt(prompt), steps=steps,
                                  chunk=2 * chunk, first_chunk=2 * first, lookahead=2 * ahead, seed=seed + i)
        pieces.append(synth.vocoder(mel[None])[0].detach().numpy())
    return join_with_pauses(pieces, synth.sample_rate), r


def test_stream_equals_reference_and_reuses_the_prompt(synth, prompt_wav):
    prompt = synth.prepare_prompt(prompt_wav, 16000, "a voice")
    ref, r = reference(synth, "Hi there. Bye now!", prompt, chunk=5, first=3, ahead=2)
    s = synth.stream("Hi there. Bye now!", prompt, chunk_tokens=5, first_chunk_tokens=3,
                     vocoder_lookahead=None, flow_lookahead_tokens=2, **FAST)
    chunks = list(s)
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks) and len(chunks) > 2
    out = np.concatenate(chunks)
    assert out.shape == ref.shape and s.sentences == r.sentences
    np.testing.assert_allclose(out, ref, atol=1e-4 * np.abs(ref).max())
    assert s.first_audio_s is not None and s.first_audio_s > 0
    # the flow's prompt block was cached on the Prompt and reused; an uncached call is the same
    assert len(prompt.flow_contexts) == 1
    again = np.concatenate(list(synth.stream("Hi there. Bye now!", prompt_wav, 16000, "a voice",
                                             chunk_tokens=5, first_chunk_tokens=3, vocoder_lookahead=None,
                                             flow_lookahead_tokens=2, **FAST)))
    no_ahead = np.concatenate(list(synth.stream("Hi there. Bye now!", prompt, chunk_tokens=5, first_chunk_tokens=3,
                                                vocoder_lookahead=None, flow_lookahead_tokens=0, **FAST)))
    ref0, _ = reference(synth, "Hi there. Bye now!", prompt, chunk=5, first=3, ahead=0)
    np.testing.assert_allclose(no_ahead, ref0, atol=1e-4 * np.abs(ref0).max())
    np.testing.assert_allclose(again, out, atol=1e-6)


def test_default_lookahead_is_close_to_the_reference(synth, prompt_wav):
    prompt = synth.prepare_prompt(prompt_wav, 16000, "a voice")
    ref, _ = reference(synth, "Hello world.", prompt, chunk=4, first=2)
    out = np.concatenate(list(synth.stream("Hello world.", prompt, chunk_tokens=4, first_chunk_tokens=2,
                                           vocoder_lookahead=2, **FAST)))
    assert out.shape == ref.shape
    snr = 10 * np.log10((ref ** 2).sum() / ((out - ref) ** 2).sum())
    assert snr > 10, snr  # only the few frames before each join differ


def test_chunk_boundaries(synth, prompt_wav):
    prompt = synth.prepare_prompt(prompt_wav, 16000, "a voice")
    look, first, chunk = 2, 3, 5
    s = synth.stream("Hello there my friend.", prompt, chunk_tokens=chunk, first_chunk_tokens=first,
                     vocoder_lookahead=look, **FAST)
    sizes = [len(c) for c in s]
    total = sum(sizes)
    assert total % HOP == 0
    # a vocoder window ends the look-ahead short of each flow chunk's end (first one shorter),
    # and the last one at the end of the speech
    ends = stream_blocks(0, total // HOP, 2 * chunk, 2 * first)
    assert s.joins == [(e - look) * HOP for e in ends]
    assert sizes[0] == (2 * first - look) * HOP - 160  # the edge fade-out holds back 10 ms


def test_search_is_refused(synth, prompt_wav):
    with pytest.raises(ValueError, match="n_candidates=1"):
        synth.stream("Hi.", prompt_wav, 16000, "a voice", n_candidates=4)


def _llm_threads():
    return [t for t in threading.enumerate() if t.name == "voxlm-llm" and t.is_alive()]


def test_cancel_midway_releases_the_thread(synth, prompt_wav, monkeypatch):
    monkeypatch.setattr(streaming, "QUEUE_SIZE", 1)  # the LLM blocks at once, waiting for the consumer
    prompt = synth.prepare_prompt(prompt_wav, 16000, "a voice")
    s = synth.stream("One two three. Four five six. Seven eight nine.", prompt, chunk_tokens=2,
                     first_chunk_tokens=1, vocoder_lookahead=0, **FAST)
    next(s)
    assert _llm_threads()  # still decoding, blocked on the full queue
    s.close()
    assert not _llm_threads()
    with pytest.raises(StopIteration):
        next(s)


def test_producer_errors_reach_the_caller(synth, prompt_wav, monkeypatch):
    def broken(*args, **kwargs):
        yield [(0, 1), ]
        raise RuntimeError("LLM exploded")
    monkeypatch.setattr(streaming, "decode", broken)
    s = synth.stream("Hi there.", prompt_wav, 16000, "a voice", **FAST)
    with pytest.raises(RuntimeError, match="LLM exploded"):
        list(s)
    assert not _llm_threads()


def test_flow_stream_token_by_token_equals_generate():
    torch.manual_seed(0)
    model = FlowModel(FlowConfig(vocab_size=32, dim=32, layers=2, heads=2)).eval()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 32, (23,), generator=g)
    p_tok, p_mel = torch.randint(0, 32, (10,), generator=g), torch.randn(80, 20, generator=g)
    ref = model.generate(tokens, p_tok, p_mel, steps=3, chunk=10, first_chunk=4, seed=5)
    ctx = prompt_context(model, p_tok, p_mel, steps=3)
    for _ in range(2):  # the cached prompt context is not changed by a stream
        fs = FlowStream(model, ctx, chunk=10, first_chunk=4, seed=5)
        pieces = [m for t in tokens.tolist() for m in fs.push([t])] + fs.finish()
        assert [p.shape[1] for p in pieces] == [4, 10, 10, 10, 10, 2]
        torch.testing.assert_close(torch.cat(pieces, 1), ref, atol=1e-4, rtol=1e-4)


def test_vocoder_stream_exact_at_full_context_and_seamless_below():
    torch.manual_seed(0)
    voc = Vocoder(VocoderConfig(dim=32, intermediate_dim=64, num_layers=2, sub_dim=16, sub_layers=1)).eval()
    mel = torch.randn(80, 57) * 0.5 - 4
    with torch.no_grad():
        off = voc(mel[None])[0].numpy()
    for look in (None, 3, 0):
        vs = VocoderStream(voc, lookahead=look)
        out = np.concatenate([vs.push(mel[:, a:a + 9]) for a in range(0, 57, 9)] + [vs.finish()])
        assert out.shape == off.shape
        if look is None:
            np.testing.assert_allclose(out, off, atol=1e-5 * np.abs(off).max())


def test_click_ratio_sees_a_step():
    rng = np.random.default_rng(0)
    smooth = np.convolve(rng.standard_normal(32000), np.hanning(9), "same").astype(np.float32)
    joins = list(range(500, 32000, 500))
    assert streaming.click_ratio(smooth, joins) == pytest.approx(1.0, abs=0.25)
    stepped = smooth.copy()
    for j in joins:
        stepped[j:] += 3.0 * smooth.std()  # a jump at every join
    assert streaming.click_ratio(stepped, joins) > 3


def test_cli_synth_and_bench_stream(tiny_model_dir, prompt_wav, tmp_path, capsys):
    import json

    import soundfile as sf

    from tts.audio import save_audio
    from tts.cli import main

    wav = tmp_path / "prompt.wav"
    save_audio(wav, prompt_wav, 16000)
    out = tmp_path / "out.wav"
    assert main(["synth", "--model", str(tiny_model_dir), "--text", "Hi there.", "--prompt", str(wav),
                 "--prompt-text", "a voice", "--out", str(out), "--stream", "--flow-steps", "2",
                 "--chunk-tokens", "3", "--first-chunk-tokens", "2"]) == 0
    rep = json.loads(capsys.readouterr().out)
    audio, sr = sf.read(out)
    assert sr == 16000 and len(audio) / sr == pytest.approx(rep["seconds"], abs=1e-3)
    assert 0 < rep["first_audio_s"] <= rep["total_s"] and rep["chunks"] >= 1
    assert main(["bench", "--model", str(tiny_model_dir), "--stream", "--repeats", "1", "--text", "Hi.",
                 "--chunk-tokens", "3", "5", "--first-chunk-tokens", "2"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [(r["chunk_tokens"], r["prompt_cached"]) for r in rep["runs"]] == [
        (3, True), (3, False), (5, True), (5, False)]
    assert all(r["first_audio_ms_median"] > 0 and r["rtf_median"] > 0 for r in rep["runs"])


def test_cli_eval_stream_reports_clicks_and_latency(tiny_model_dir, prompt_wav, tmp_path, monkeypatch, capsys):
    import json

    from tts import evaluate
    from tts.audio import save_audio
    from tts.cli import main

    wav = tmp_path / "p.wav"
    save_audio(wav, prompt_wav, 16000)
    meta = tmp_path / "meta.lst"
    meta.write_text(f"u1|a voice|{wav}|Hi there.\nu2|a voice|{wav}|Good morning to you.\n")
    seen = {}

    def judges(cases, systems, progress=True, judge_jobs=1):  # the real judges are tested in test_judges.py
        seen.update(systems)
        wer = {"ground_truth": 0.0, "offline": 0.5, "stream": 0.25}
        return {n: {"wer": wer[n], "sim": 1.0, "utterances": len(cases), "per_utt": [{"wer": wer[n]} for _ in cases]}
                for n in ["ground_truth", *systems]}
    monkeypatch.setattr(evaluate, "score_rows", judges)
    assert main(["eval", "--model", str(tiny_model_dir), "--meta", str(meta), "--out", str(tmp_path / "ev"),
                 "--stream", "--flow-steps", "2", "--chunk-tokens", "3", "--first-chunk-tokens", "2"]) == 0
    capsys.readouterr()
    rep = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert set(seen) == {"offline", "stream"}
    assert all((tmp_path / "ev" / d / f"{u}.wav").is_file() for d in seen for u in ("u1", "u2"))
    assert rep["stream"]["first_audio_ms_median"] > 0
    assert rep["stream"]["click_ratio_at_stream_joins"] is not None
    paired = rep["stream"]["stream_minus_offline_wer"]  # clone by clone, the same tokens
    assert paired["wer_diff_mean"] == pytest.approx(-0.25) and (paired["better"], paired["worse"]) == (2, 0)
