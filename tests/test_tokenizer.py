"""Tests of the supervised semantic tokenizer (tokenizer/): tiny models, flite clips made here."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import jiwer
import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch

from tokenizer import CheckpointError, SpeechTokenizer, num_tokens
from tokenizer.config import ConfigError, ModelConfig, QuantizerConfig, load_config
from tokenizer.extract import extract, model_fingerprint
from tokenizer.frontend import (
    PHONES,
    CharVocab,
    FeatureExtractor,
    load_for_tokenizer,
    normalize_text,
)
from tokenizer.model import TokenizerModel
from tokenizer.train import ctc_loss, train
from tts.audio import AudioError
from tts.datadir import read_table, write_table

CONF = Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf"
TEXTS = ["the cat sat on a mat", "we saw seven green boats", "please call me back soon"]
VOCAB = list(" 'abcdefghijklmnopqrstuvwxyz")


def tiny_config(**kw) -> ModelConfig:
    cfg = ModelConfig(dim=64, heads=2, ff_mult=2, num_blocks=2, conv_kernel=7,
                      quantizer=QuantizerConfig(levels=[5, 5, 5]), vocab=VOCAB)
    return replace(cfg, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A Kaldi data dir of three flite clips (used as both train and dev)."""
    if shutil.which("flite") is None:
        pytest.skip("flite not installed")
    root = tmp_path_factory.mktemp("tokcorpus")
    wavs, texts = {}, {}
    for i, text in enumerate(TEXTS):
        utt = f"rms-{i:03d}"
        path = root / f"{utt}.wav"
        subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
        wavs[utt], texts[utt] = str(path), text
    d = root / "data"
    d.mkdir()
    write_table(d / "wav.scp", wavs)
    write_table(d / "text", texts)
    write_table(d / "utt2spk", {u: "rms" for u in wavs})
    write_table(d / "spk2utt", {"rms": " ".join(sorted(wavs))})
    return d


@pytest.fixture(scope="module")
def clips(corpus) -> list[np.ndarray]:
    return [sf.read(p, dtype="float32")[0] for p in read_table(corpus / "wav.scp").values()]


@pytest.fixture(scope="module")
def tokenizer() -> SpeechTokenizer:
    torch.manual_seed(0)
    return SpeechTokenizer(TokenizerModel(tiny_config()))


def test_num_tokens_rule():
    assert num_tokens(16000) == 25 and num_tokens(639) == 0 and num_tokens(640) == 1
    assert num_tokens(44100, 44100) == 25 and num_tokens(24000 * 3, 24000) == 75


def test_encode_length_deterministic_and_batched(tokenizer, clips):
    for clip in clips:
        ids = tokenizer.encode(clip, 16000)
        assert ids.dtype == np.int64 and len(ids) == num_tokens(len(clip))
        assert ids.min() >= 0 and ids.max() < tokenizer.codebook_size
        assert np.array_equal(ids, tokenizer.encode(clip, 16000))
    batched = tokenizer.encode_batch(clips, 16000)
    for clip, ids in zip(clips, batched, strict=True):
        assert np.array_equal(ids, tokenizer.encode(clip, 16000))


def test_encode_other_rate_and_length(tokenizer, clips):
    import librosa

    clip22 = librosa.resample(clips[0], orig_sr=16000, target_sr=22050)
    assert len(tokenizer.encode(clip22, 22050)) == num_tokens(len(clip22), 22050)
    assert len(tokenizer.encode(clips[0][:640], 16000)) == 1


def test_save_load_round_trip(tokenizer, clips, tmp_path):
    tokenizer.save_pretrained(tmp_path / "m")
    loaded = SpeechTokenizer.from_pretrained(tmp_path / "m")
    for clip in clips:
        assert np.array_equal(tokenizer.encode(clip, 16000), loaded.encode(clip, 16000))
    ids = tokenizer.encode(clips[1], 16000)
    assert loaded.transcribe_tokens(ids) == tokenizer.transcribe_tokens(ids)


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.zeros(16000, np.float32),
                                 np.full(16000, np.nan, np.float32), np.ones(100, np.float32) * 0.5,
                                 [0.1] * 16000, "speech.wav", np.array(["a", "b"])])
def test_bad_audio_raises(tokenizer, bad):
    with pytest.raises(AudioError):
        tokenizer.encode(bad, 16000)


def test_bad_token_ids_raise(tokenizer):
    for bad in ([], [-1, 2], [tokenizer.codebook_size], [[1, 2]]):
        with pytest.raises(ValueError):
            tokenizer.transcribe_tokens(bad)


def test_missing_and_corrupt_checkpoint(tokenizer, tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        SpeechTokenizer.from_pretrained(tmp_path / "nowhere")
    d = tokenizer.save_pretrained(tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        SpeechTokenizer.from_pretrained(d)
    d = tokenizer.save_pretrained(tmp_path / "m2")
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config"):
        SpeechTokenizer.from_pretrained(d)
    d = tokenizer.save_pretrained(tmp_path / "m3")
    big = SpeechTokenizer(TokenizerModel(tiny_config(dim=96)))
    big.save_pretrained(tmp_path / "m4")
    shutil.copy(tmp_path / "m4" / "model.safetensors", d / "model.safetensors")
    with pytest.raises(CheckpointError, match="do not match"):
        SpeechTokenizer.from_pretrained(d)


def test_phone_head_reads_what_it_was_trained_on(clips):
    """The phone log-posteriors (tts.align's input) come from the encoder features, or with
    inter_from: codes from the quantized codes: then they are a function of the token ids alone.
    With inter_from: both, training reads the same head on both (and alignment the features)."""
    torch.manual_seed(0)
    for source in ("encoder", "codes", "both"):
        tok = SpeechTokenizer(TokenizerModel(tiny_config(inter_targets="phones", inter_from=source)))
        tok.model.eval()
        ids = tok.encode(clips[0], 16000)
        logp = tok.phone_log_probs_batch([clips[0]], 16000)[0]
        assert logp.shape == (2 * len(ids), len(PHONES) + 1)
        codes = tok.model.quantizer.embed(torch.as_tensor(ids)[None])
        with torch.no_grad():
            from_codes = tok.model.ctc_logits(tok.model.inter_head, codes).log_softmax(-1)[0]
            feats = tok._features(clips[0], 16000)[None]
            out = tok.model(feats, torch.tensor([feats.shape[1]]))
        assert np.allclose(logp, from_codes.numpy(), atol=1e-4) == (source == "codes")
        assert (out.inter_code_logits is not None) == (source == "both")
        if source == "both":  # the second read is the codes', the first the features'
            assert torch.allclose(out.inter_code_logits[0].log_softmax(-1), from_codes, atol=1e-4)
            assert np.allclose(out.inter_logits[0].log_softmax(-1).numpy(), logp, atol=1e-4)


def test_vq_option_encodes(clips):
    torch.manual_seed(0)
    q = QuantizerConfig(kind="vq", codebook_size=32, codebook_dim=8)
    tok = SpeechTokenizer(TokenizerModel(tiny_config(quantizer=q)))
    ids = tok.encode(clips[0], 16000)
    assert len(ids) == num_tokens(len(clips[0])) and ids.max() < 32
    assert isinstance(tok.transcribe_tokens(ids), str)


def test_text_and_vocab():
    assert normalize_text("Hello,  World!  It's 5-ish.") == "hello world it's ish"
    v = CharVocab.from_texts(["ab ba"])
    assert v.decode_ctc([2, 2, 0, 2, 1, 3]) == "aa b"


def test_tiny_tokenizer_overfits(corpus, clips):
    """CTC loss falls and greedy decoding from the tokens alone recovers the clips' text."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = TokenizerModel(tiny_config(dim=96, num_blocks=2, inter_ctc_weight=0.0))
    tok = SpeechTokenizer(model)
    feats = [FeatureExtractor()(load_for_tokenizer(c, 16000)) for c in clips]
    cat = torch.cat(feats)
    model.feat_mean.copy_(cat.mean(0))
    model.feat_std.copy_(cat.std(0))
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    lengths = torch.tensor([f.shape[0] for f in feats])
    targets = [tok.vocab.encode(t) for t in TEXTS]
    flat, tlen = torch.tensor(sum(targets, [])), torch.tensor([len(t) for t in targets])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(250):
        out = model(x, lengths)
        loss = ctc_loss(out.logits, out.lengths * 2, flat, tlen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < 0.2 * losses[0]
    hyps = [tok.transcribe_tokens(tok.encode(c, 16000)) for c in clips]
    assert jiwer.cer(TEXTS, hyps) < 0.1, hyps


def test_train_resume_and_extract(corpus, tmp_path):
    """Lightning training writes a model, a rerun resumes the step count, extraction is resumable."""
    cfg = load_config(CONF / "tokenizer_tiny.yaml")
    cfg.trainer.max_steps, cfg.trainer.checkpoint_every, cfg.trainer.val_every = 6, 3, 3
    exp = tmp_path / "exp"
    train(cfg, corpus, corpus, exp, enable_model_summary=False)
    assert (exp / "model" / "model.safetensors").is_file()
    assert torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6

    class FirstStep(L.Callback):
        step = None

        def on_train_batch_start(self, trainer, *args):
            if FirstStep.step is None:
                FirstStep.step = trainer.global_step

    cfg.trainer.max_steps = 9
    train(cfg, corpus, corpus, exp, callbacks=[FirstStep()], enable_model_summary=False)
    assert FirstStep.step == 6
    assert torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 9

    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    tok = SpeechTokenizer.from_pretrained(exp / "model")
    parts = data / "tokens.parts" / model_fingerprint(exp / "model")
    parts.mkdir(parents=True)
    first = sorted(read_table(data / "wav.scp").items())[0]
    done = " ".join(map(str, tok.encode(sf.read(first[1], dtype="float32")[0], 16000)))
    (parts / "part.0of1").write_text(f"{first[0]} {done}\nrms-001 1 2")  # torn line
    extract(exp / "model", data, nj=1)
    table = read_table(data / "tokens")
    assert sorted(table) == sorted(read_table(data / "wav.scp"))
    for utt, wav in read_table(data / "wav.scp").items():
        audio = sf.read(wav, dtype="float32")[0]
        assert table[utt] == " ".join(map(str, tok.encode(audio, 16000)))
    assert not (data / "tokens.parts").exists()
    extract(exp / "model", data, nj=2)  # complete: a no-op
    assert read_table(data / "tokens") == table
    SpeechTokenizer(TokenizerModel(tiny_config())).save_pretrained(tmp_path / "other")
    extract(tmp_path / "other", data, nj=1)  # another model: extracted anew
    assert read_table(data / "tokens") != table


def test_train_reads_the_phone_head_on_the_codes_too(corpus, tmp_path):
    """inter_from: both trains through the codes' phone CTC as well (logged beside the features')."""
    import csv

    cfg = load_config(CONF / "tokenizer_tiny.yaml")
    cfg.model.inter_from = "both"
    cfg.trainer.max_steps, cfg.trainer.log_every = 4, 1
    train(cfg, corpus, corpus, tmp_path / "exp", enable_model_summary=False)
    rows = list(csv.DictReader(next((tmp_path / "exp").rglob("metrics.csv")).read_text().splitlines()))
    codes = [float(r["train/ctc_inter_codes"]) for r in rows if r.get("train/ctc_inter_codes")]
    feats = [float(r["train/ctc_inter"]) for r in rows if r.get("train/ctc_inter")]
    assert len(codes) == len(feats) >= 3 and codes != feats and all(np.isfinite(codes))


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("tokenizer*.yaml")))
def test_shipped_configs_build(name):
    cfg = load_config(CONF / name)
    model = TokenizerModel(replace(cfg.model, vocab=VOCAB))
    feats = torch.randn(1, 80, cfg.model.n_mels)
    assert model.tokens(feats, torch.tensor([80])).ids.shape == (1, 20)


def test_config_rejects_unknown_fields(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  dimm: 3\n")
    with pytest.raises(ConfigError, match="dimm"):
        load_config(tmp_path / "c.yaml")


def test_fsq_annealed_rounding_matches_library_when_hard():
    torch.manual_seed(0)
    model = TokenizerModel(tiny_config()).eval()
    x, lengths = torch.randn(2, 80, 80), torch.tensor([80, 40])
    a, b = model(x, lengths, hard=1.0), model(x, lengths, hard=1.0 - 1e-6)
    assert torch.equal(a.ids, b.ids)
    assert torch.allclose(a.logits, b.logits, atol=1e-4)
    soft = model(x, lengths, hard=0.0, mix=0.5)  # training-time paths run
    assert torch.equal(soft.ids, a.ids) and soft.logits.shape == a.logits.shape


def test_spec_augment_masks_bands_and_spans_inside_each_clip():
    from tokenizer.config import DataConfig
    from tokenizer.data import spec_augment

    torch.manual_seed(0)
    feats, lengths, fill = torch.randn(3, 200, 80), torch.tensor([200, 120, 60]), torch.full((80,), 7.0)
    assert spec_augment(feats, lengths, DataConfig(), fill) is feats  # off by default
    cfg = DataConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=0.1)
    seen = 0
    for _ in range(20):
        out = spec_augment(feats, lengths, cfg, fill)
        masked = out == 7.0
        assert out.shape == feats.shape and torch.equal(out[~masked], feats[~masked])
        for i, n in enumerate(lengths.tolist()):
            bands = masked[i, :n].all(0)  # mel bins masked over the whole clip
            spans = masked[i, :n].all(1)  # frames masked over every bin
            assert bands.sum() <= 2 * 10 and spans.sum() <= 2 * int(0.1 * n)
            assert not masked[i, n:].all(1).any()  # time masks stay inside the clip, never on padding
            seen += int(bands.any()) + int(spans.any())
    assert seen > 60  # masks do happen (widths are drawn from 0..max)


def test_train_init_from_model_dir(corpus, tmp_path):
    """--init starts a run from a model dir's weights; a model of another shape is refused."""
    cfg = load_config(CONF / "tokenizer_tiny.yaml")
    cfg.trainer.max_steps, cfg.trainer.checkpoint_every, cfg.trainer.val_every = 3, 3, 3
    first = train(cfg, corpus, corpus, tmp_path / "a", enable_model_summary=False)
    cfg.optim.lr = 0.0  # the weights cannot move: the second run ends where --init started it
    second = train(cfg, corpus, corpus, tmp_path / "b", init=tmp_path / "a" / "model",
                   enable_model_summary=False)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    SpeechTokenizer(TokenizerModel(tiny_config(dim=32, vocab=first.model.cfg.vocab))).save_pretrained(tmp_path / "o")
    with pytest.raises(SystemExit, match="not a tokenizer of this config"):
        train(cfg, corpus, corpus, tmp_path / "c", init=tmp_path / "o", enable_model_summary=False)
    with pytest.raises(SystemExit, match="--init"):
        train(cfg, corpus, corpus, tmp_path / "d", init=tmp_path / "missing", enable_model_summary=False)


def test_train_averages_the_last_checkpoints(corpus, tmp_path):
    """trainer.average_last: N keeps N step checkpoints and writes their element-wise mean."""
    cfg = load_config(CONF / "tokenizer_tiny.yaml")
    cfg.trainer.max_steps, cfg.trainer.checkpoint_every, cfg.trainer.val_every = 6, 2, 2
    cfg.trainer.average_last = 3  # (validating at each checkpoint: one batch per epoch defers saves to it)
    tok = train(cfg, corpus, corpus, tmp_path, enable_model_summary=False)
    ckpts = sorted((tmp_path / "checkpoints").glob("step*.ckpt"))
    assert [p.name for p in ckpts] == ["step0000002.ckpt", "step0000004.ckpt", "step0000006.ckpt"]
    states = [torch.load(p, weights_only=False)["state_dict"] for p in ckpts]
    saved = SpeechTokenizer.from_pretrained(tmp_path / "model").model.state_dict()
    name = "head.weight" if "head.weight" in saved else next(k for k, v in saved.items() if v.ndim == 2)
    mean = sum(s["model." + name] for s in states) / 3
    assert not torch.equal(states[0]["model." + name], states[2]["model." + name])  # the weights moved
    torch.testing.assert_close(saved[name], mean)
    torch.testing.assert_close(tok.model.state_dict()[name], mean)
