"""Flow matching (flow/): maths, masks, streaming, persistence, errors, a tiny overfit, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from flow.backbone import attention_mask, chunk_mask
from flow.cfm import CFMConfig, cfm_loss, solve, time_grid
from flow.config import FlowConfig
from flow.model import FlowCheckpointError, FlowInputError, FlowModel
from flow.streaming import FlowStream, initial_noise, prompt_context
from flow.train import FlowTrainConfig, tokenizer_vocab_size
from tts.audio import load_audio
from tts.mel import MelConfig, mel_spectrogram

CONF = Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf"


def tiny(**kw) -> FlowModel:
    torch.manual_seed(0)
    cfg = dict(vocab_size=32, dim=32, layers=2, heads=2, max_prompt_frames=60, max_frames=400)
    model = FlowModel(FlowConfig(**{**cfg, **kw}))
    with torch.no_grad():  # leave the zero-initialised (identity) state so outputs depend on inputs
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """~2 s of flite speech as a (80, T) log-mel; a sine sweep when flite is missing."""
    d = tmp_path_factory.mktemp("flow")
    if shutil.which("flite"):
        wav = d / "x.wav"
        subprocess.run(["flite", "-voice", "rms", "-t", "The quick brown fox jumps.", "-o", str(wav)], check=True)
        audio = load_audio(wav, 16000)
    else:
        t = np.arange(32000) / 16000
        audio = (0.3 * np.sin(2 * np.pi * (200 + 100 * t) * t)).astype(np.float32)
    return mel_spectrogram(audio, MelConfig())


# ---- masks -------------------------------------------------------------------------------------
def test_chunk_mask_shape_and_causality():
    m = chunk_mask(7, 3)
    assert m.shape == (7, 7) and m.dtype == torch.bool
    i, j = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    assert torch.equal(m, j < (i // 3 + 1) * 3)  # own chunk + all the past, nothing later
    assert m[0, :3].all() and not m[0, 3:].any() and m[6].all()
    assert chunk_mask(5, None).all() and chunk_mask(5, 0).all()
    am = attention_mask(torch.tensor([5, 3]), 5, 2)
    assert am.shape == (2, 1, 5, 5)
    assert not am[1, 0, :, 3:].any()  # padded keys are never seen
    assert torch.equal(am[0, 0], chunk_mask(5, 2))


@pytest.mark.parametrize("encoder_layers, prior_start, prior_speaker, conv_kernel",
                         [(0, 0.0, False, 0), (2, 0.0, False, 0), (2, 0.5, False, 0), (2, 0.5, True, 0),
                          (0, 0.0, False, 5), (2, 0.5, True, 4)])
def test_chunked_generation_is_causal_and_streams(encoder_layers, prior_start, prior_speaker, conv_kernel):
    model = tiny(encoder_layers=encoder_layers, prior_speaker=prior_speaker, conv_kernel=conv_kernel,
                 cfm=CFMConfig(prior_start=prior_start))
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 32, (30,), generator=g)
    p_tok, p_mel = torch.randint(0, 32, (10,), generator=g), torch.randn(80, 20, generator=g)
    a = model.generate(tokens, p_tok, p_mel, chunk=10, steps=3)
    changed = tokens.clone()
    changed[20:] = (changed[20:] + 1) % 32  # target frames 40.. = sequence frames 60..
    b = model.generate(changed, p_tok, p_mel, chunk=10, steps=3)
    assert torch.allclose(a[:, :40], b[:, :40], atol=1e-5)  # earlier chunks do not see the change
    assert not torch.allclose(a[:, 40:], b[:, 40:])
    full_a = model.generate(tokens, p_tok, p_mel, steps=3)
    full_b = model.generate(changed, p_tok, p_mel, steps=3)
    assert not torch.allclose(full_a[:, :40], full_b[:, :40])  # offline attention sees the future
    pieces = list(model.stream(tokens, p_tok, p_mel, chunk=10, steps=3))
    assert [p.shape[1] for p in pieces] == [10] * 6
    assert torch.allclose(torch.cat(pieces, 1), a, atol=1e-4)
    odd = list(model.stream(tokens[:27], p_tok, p_mel, chunk=10, first_chunk=4, steps=3))  # short first, last
    assert [p.shape[1] for p in odd] == [4, 10, 10, 10, 10, 10]
    ref = model.generate(tokens[:27], p_tok, p_mel, chunk=10, first_chunk=4, steps=3)
    assert torch.allclose(torch.cat(odd, 1), ref, atol=1e-4)


@pytest.mark.parametrize("encoder_layers, conv_kernel", [(0, 0), (2, 0), (2, 5)])
def test_chunk_lookahead_sees_only_its_frames_and_streams(encoder_layers, conv_kernel):
    model = tiny(encoder_layers=encoder_layers, conv_kernel=conv_kernel)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 32, (30,), generator=g)
    p_tok, p_mel = torch.randint(0, 32, (10,), generator=g), torch.randn(80, 20, generator=g)
    a = model.generate(tokens, p_tok, p_mel, chunk=10, lookahead=4, steps=3)
    assert a.shape == (80, 60)
    changed = tokens.clone()
    changed[20:] = (changed[20:] + 1) % 32  # target frames 40..
    b = model.generate(changed, p_tok, p_mel, chunk=10, lookahead=4, steps=3)
    assert torch.allclose(a[:, :30], b[:, :30], atol=1e-5)  # chunks ending by 30 see frames < 34 only
    assert not torch.allclose(a[:, 30:40], b[:, 30:40])  # the chunk [30, 40) sees 40..43
    no_la = model.generate(tokens, p_tok, p_mel, chunk=10, steps=3)
    assert not torch.allclose(a[:, :10], no_la[:, :10])  # lookahead changes what a chunk hears
    ctx = prompt_context(model, p_tok, p_mel, steps=3)
    stream, pieces = FlowStream(model, ctx, chunk=10, lookahead=4), []
    for tok in tokens.tolist():
        out = stream.push([tok])
        pieces += out
        if out:  # a chunk leaves as soon as its lookahead frames have arrived, not before
            assert stream.frames == stream.done + 4
    pieces += stream.finish()
    assert [p.shape[1] for p in pieces] == [10] * 6
    assert torch.allclose(torch.cat(pieces, 1), a, atol=1e-4)
    odd = model.generate(tokens[:27], p_tok, p_mel, chunk=10, first_chunk=4, lookahead=8, steps=3)
    assert odd.shape == (80, 54) and torch.isfinite(odd).all()
    with pytest.raises(ValueError, match="lookahead"):
        FlowStream(model, ctx, chunk=10, lookahead=-1)


def test_prior_start_grid_and_point():
    t = time_grid(4, "cosine", start=0.5)
    assert t[0] == 0.5 and t[-1] == 1.0 and (t[1:] > t[:-1]).all()
    model = tiny(encoder_layers=1)
    tokens = torch.arange(20) % 32
    a, b = model.generate(tokens, steps=4), model.generate(tokens, steps=4, prior_start=0.6)
    assert a.shape == b.shape and not torch.allclose(a, b)
    ids = model.frame_ids(tokens[None], 40)
    mu = model.denormalize(model.features(ids)[1][0])
    # an identity-like field (zero velocity) leaves the start point: closer to mu the later it starts
    for p in model.backbone.out_proj.parameters():
        torch.nn.init.zeros_(p)
    near = [float((model.generate(tokens, steps=2, prior_start=s) - mu).abs().mean()) for s in (0.2, 0.8)]
    assert near[1] < near[0]
    with pytest.raises(ValueError, match="prior"):
        tiny().generate(tokens, prior_start=0.5)  # no encoder, no prior
    with pytest.raises(ValueError, match="prior_start"):
        FlowConfig(encoder_layers=1, cfm=CFMConfig(prior_start=1.0)).validate()


def test_noise_scale_scales_the_start_and_streams():
    model = tiny()
    tokens, zero = torch.arange(20) % 32, torch.zeros(80, 40)
    p_tok, p_mel = torch.arange(6) % 32, torch.randn(80, 12)
    # the stream and the chunked offline pass agree under a noise scale too
    whole = model.generate(tokens, p_tok, p_mel, chunk=10, steps=2, noise_scale=0.6, seed=2)
    pieces = torch.cat(list(model.stream(tokens, p_tok, p_mel, chunk=10, steps=2, noise_scale=0.6, seed=2)), dim=1)
    assert torch.allclose(whole, pieces, atol=1e-4)
    assert not torch.allclose(whole, model.generate(tokens, p_tok, p_mel, chunk=10, steps=2, seed=2))
    for p in model.backbone.out_proj.parameters():  # zero velocity: the output is the (denormalised) start
        torch.nn.init.zeros_(p)
    centre = model.denormalize(zero)
    full, half = (model.generate(tokens, steps=2, seed=1, noise_scale=s) - centre for s in (1.0, 0.5))
    assert full.abs().mean() > 0.1 and torch.allclose(half, 0.5 * full, atol=1e-5)
    for bad in (0.0, -1.0, 3.0):
        with pytest.raises(ValueError, match="noise_scale"):
            model.generate(tokens, noise_scale=bad)
    with pytest.raises(ValueError, match="noise_scale"):
        CFMConfig(noise_scale=0.0).validate()


def test_token_encoder_prior():
    model = tiny(encoder_layers=1)
    assert tiny().encoder is None and model.encoder is not None
    ids = (torch.arange(40) % 32)[None]
    feats, mu = model.features(ids)
    assert feats.shape == (1, 40, 32) and mu.shape == (1, 80, 40)
    changed = ids.clone()
    changed[0, 30] = (changed[0, 30] + 1) % 32
    assert not torch.allclose(model.features(changed)[1][..., :30], mu[..., :30])  # full attention: context
    mask = chunk_mask(40, 10)[None, None]
    a, b = model.features(ids, mask)[1], model.features(changed, mask)[1]
    assert torch.allclose(a[..., :30], b[..., :30], atol=1e-6)  # chunk mask: never the future
    # the prior loss joins the CFM loss: it falls when mu is pulled onto the target
    mel, lens = torch.randn(1, 80, 40) * 2 - 5, torch.tensor([40])
    opt = torch.optim.Adam(model.encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(ids[:, ::2], mel, lens, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses[::10]


def test_speaker_aware_prior():
    plain = tiny(encoder_layers=1)
    torch.manual_seed(0)
    model = FlowModel(FlowConfig.from_dict({**plain.config.to_dict(), "prior_speaker": True}))
    model.load_state_dict(plain.state_dict(), strict=False)  # warm start: only prior_spk is new
    model.eval()
    ids = (torch.arange(40) % 32)[None]
    spk_a, spk_b = torch.randn(1, 32), torch.randn(1, 32)
    # zero-initialised: the speaker term starts at nothing, so the warm start is the old model
    assert torch.equal(model.features(ids, spk=spk_a)[1], plain.features(ids)[1])
    with torch.no_grad():
        model.prior_spk.weight.normal_(0, 0.1)
    mu_a, mu_b = model.features(ids, spk=spk_a)[1], model.features(ids, spk=spk_b)[1]
    assert not torch.allclose(mu_a, mu_b)  # the prior now follows the speaker vector
    assert torch.equal(plain.features(ids, spk=spk_a)[1], plain.features(ids)[1])  # off: ignored
    # the speaker vector comes from the prompt: another prompt, another prior start point
    tokens, p_tok = torch.arange(20) % 32, torch.arange(10) % 32
    a = model.generate(tokens, p_tok, torch.randn(80, 20), steps=2, guidance=0.0, prior_start=0.9)
    b = model.generate(tokens, p_tok, torch.randn(80, 20) + 3, steps=2, guidance=0.0, prior_start=0.9)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="prior_speaker"):
        FlowConfig(prior_speaker=True).validate()  # no token encoder
    with pytest.raises(ValueError, match="prior_speaker"):
        FlowConfig(prior_speaker=True, encoder_layers=1, speaker="none").validate()


# ---- flow matching maths ---------------------------------------------------------------------
def test_time_grids_and_options():
    for schedule in ("linear", "cosine", "sway"):
        t = time_grid(8, schedule)
        assert t.shape == (9,) and t[0] == 0 and t[-1] == 1 and (t[1:] > t[:-1]).all()
    assert time_grid(8, "cosine")[1] < time_grid(8, "linear")[1]  # small steps near the noise
    assert torch.allclose(time_grid(8, "sway"), time_grid(8, "cosine"))  # F5-TTS's s = -1 is the cosine grid
    assert torch.allclose(time_grid(8, "sway", sway=0.0), time_grid(8, "linear"))
    for bad in (dict(steps=0), dict(solver="rk4"), dict(schedule="exp")):
        with pytest.raises(ValueError):
            solve(lambda x, t, d: x, torch.zeros(1, 2, 3), **bad)


def test_solver_calls_and_exactness():
    calls = []

    def const(x, t, drop):
        calls.append(x.shape[0])
        return torch.ones_like(x)
    x0 = torch.zeros(1, 2, 3)
    for solver, per_step in (("euler", 1), ("midpoint", 2)):
        calls.clear()
        out = solve(const, x0, steps=5, solver=solver, schedule="sway")
        assert len(calls) == 5 * per_step and torch.allclose(out, torch.ones_like(out))  # dx/dt = 1 over [0, 1]


def test_cfg_scale_zero_is_the_conditional_path():
    model = tiny()
    tokens = torch.arange(20) % 32
    a = model.generate(tokens, steps=4, guidance=0.0, seed=3)
    ids, cond, spk, tp = model.prepare(tokens)
    field = model.estimator(model.features(ids)[0], cond, spk, attention_mask(torch.tensor([40]), 40, None))
    x = initial_noise(0, 40, 3, 80)  # the flow's noise: frame by frame from the seed
    ts = time_grid(4, model.config.cfm.schedule)
    with torch.no_grad():
        for i in range(4):  # plain Euler on the conditional field only
            x = x + (ts[i + 1] - ts[i]) * field(x, ts[i].view(1), torch.zeros(1, dtype=torch.bool))
    assert torch.allclose(a, model.denormalize(x[0]), atol=1e-5)
    assert not torch.allclose(a, model.generate(tokens, steps=4, guidance=1.0, seed=3))


def test_deterministic_under_seed_and_options():
    model = tiny()
    tokens = torch.arange(15) % 32
    a, b = model.generate(tokens, seed=5), model.generate(tokens, seed=5)
    assert torch.equal(a, b) and a.shape == (80, 30)
    assert not torch.equal(a, model.generate(tokens, seed=6))
    m = model.generate(tokens, seed=5, steps=6, solver="midpoint", schedule="linear")
    assert m.shape == a.shape and torch.isfinite(m).all()


def test_cfm_loss_masks_frames():
    x1 = torch.randn(2, 4, 6)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :3] = True

    def est(x, t, drop):
        v = torch.zeros_like(x)
        v[:, :, 3:] = 1e6  # masked frames may be anything
        return v
    loss = cfm_loss(est, x1, mask, CFMConfig(), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss < 10


def test_training_times_and_the_start_they_allow():
    x1, mask, seen = torch.randn(64, 4, 6), torch.ones(64, 6, dtype=torch.bool), []

    def est(x, t, drop):
        seen.append(t)
        return x * t.view(-1, 1, 1)
    for s in (0.0, 0.6):
        cfm_loss(est, x1, mask, CFMConfig(train_start=s), torch.Generator().manual_seed(0))
    assert seen[0].min() < 0.3 and seen[1].min() >= 0.6 and seen[1].max() <= 1.0
    model = tiny(encoder_layers=1, cfm=CFMConfig(train_start=0.5, prior_start=0.5))
    tokens = torch.arange(12) % 32
    assert model.generate(tokens, steps=2, prior_start=0.7).shape == (80, 24)
    with pytest.raises(ValueError, match="below train_start"):
        model.generate(tokens, steps=2, prior_start=0.3)
    for bad in (dict(train_start=0.5), dict(train_start=1.0, prior_start=0.5), dict(train_start=-0.1)):
        with pytest.raises(ValueError, match="train_start"):
            FlowConfig(encoder_layers=1, cfm=CFMConfig(**bad)).validate()


# ---- persistence and errors -----------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    model = tiny(speaker="external", speaker_dim=8)
    model.set_mel_stats(torch.full((80,), -5.0), torch.full((80,), 2.0))
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["speaker"] == "external" and cfg["cfm"]["steps"] == 10
    loaded = FlowModel.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    spk = torch.randn(8)
    tokens = torch.arange(12) % 32
    assert torch.equal(model.generate(tokens, spk=spk), loaded.generate(tokens, spk=spk))
    with pytest.raises(FlowCheckpointError, match="missing"):
        FlowModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(FlowCheckpointError, match="cannot read"):
        FlowModel.from_pretrained(tmp_path / "m")


def test_bad_inputs_give_clear_errors():
    model = tiny()
    p_tok, p_mel = torch.arange(10), torch.randn(80, 20)
    with pytest.raises(FlowInputError, match="empty"):
        model.generate(torch.tensor([], dtype=torch.long))
    with pytest.raises(FlowInputError, match="over the limit"):
        model.generate(torch.arange(5), torch.arange(40) % 32, torch.randn(80, 80))
    with pytest.raises(FlowInputError, match=r"ids must be in \[0, 32\)"):
        model.generate(torch.tensor([1, 99]))
    with pytest.raises(FlowInputError, match="n_mels"):
        model.generate(torch.arange(5), p_tok, torch.randn(40, 20))
    with pytest.raises(FlowInputError, match="both"):
        model.generate(torch.arange(5), p_tok, None)
    with pytest.raises(FlowInputError, match="do not match"):
        model.generate(torch.arange(5), torch.arange(3), p_mel)
    with pytest.raises(FlowInputError, match="max_frames"):
        model.generate(torch.arange(300) % 32)
    with pytest.raises(FlowInputError, match="speaker embedding"):
        tiny(speaker="external", speaker_dim=4).generate(torch.arange(5))
    with pytest.raises(ValueError, match="unknown field.*dims"):
        FlowConfig.from_dict({"dims": 3})


def test_conv_sublayer_is_causal_and_warm_starts_as_the_identity(tmp_path):
    """A conv model warm-started from one without it reproduces it; trained, its conv sees only the past."""
    from flow.train import init_from

    plain = tiny(encoder_layers=1)
    plain.save_pretrained(tmp_path / "plain")
    conv = FlowModel(FlowConfig(vocab_size=32, dim=32, layers=2, heads=2, max_prompt_frames=60, max_frames=400,
                                encoder_layers=1, conv_kernel=4)).eval()
    fresh = init_from(conv, tmp_path / "plain")
    assert fresh and all(".conv." in name for name in fresh)
    tokens, p_tok, p_mel = torch.arange(20) % 32, torch.arange(10), torch.randn(80, 20)
    torch.testing.assert_close(conv.generate(tokens, p_tok, p_mel, steps=2, seed=3),
                               plain.generate(tokens, p_tok, p_mel, steps=2, seed=3))
    layer = conv.backbone.blocks[0].conv
    with torch.no_grad():
        layer.out.weight.normal_()
        x = torch.randn(1, 12, 32)
        y = layer(x)
        x2 = x.clone()
        x2[:, 8:] += 1.0  # a change at frame 8 reaches frames 8.., never 0..7
        y2 = layer(x2)
    assert torch.equal(y[:, :8], y2[:, :8]) and not torch.allclose(y[:, 8:], y2[:, 8:])
    assert not torch.allclose(conv.generate(tokens, p_tok, p_mel, steps=2, seed=3),
                              plain.generate(tokens, p_tok, p_mel, steps=2, seed=3))
    with pytest.raises(ValueError, match="conv_kernel"):
        FlowConfig(conv_kernel=1).validate()
    with pytest.raises(ValueError, match="conv_kernel"):
        FlowConfig(conv_kernel=-2).validate()


def test_shipped_configs_build():
    for path in sorted(CONF.glob("flow*.yaml")):
        cfg = FlowTrainConfig.from_yaml(path)
        cfg.model.validate()
        assert cfg.model.upsample == 2, path


def test_tokenizer_vocab_size(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantizer": {"fsq_levels": [8, 5, 5, 5]}}))
    assert tokenizer_vocab_size(tmp_path) == 1000


# ---- learning ---------------------------------------------------------------------------------
@pytest.mark.parametrize("train_start", [0.0, 0.5])
def test_tiny_flow_overfits_one_utterance(speech, train_start):
    torch.manual_seed(0)
    t = speech.shape[1] // 2 * 2
    mel = torch.from_numpy(speech[:, :t]).unsqueeze(0)
    tokens = (torch.arange(t // 2) * 7 % 32).unsqueeze(0)  # fixed fake ids, one per 2 frames
    # train_start 0.5: trained only where a solver started on the prior at t = 0.5 goes
    cfm = CFMConfig(cfg_dropout=0.0, train_start=train_start, prior_start=train_start)
    cfg = FlowConfig(vocab_size=32, dim=64, layers=2, heads=2, prompt_prob=0.5, cfm=cfm,
                     encoder_layers=int(train_start > 0))
    model = FlowModel(cfg)
    model.set_mel_stats(mel[0].mean(1), mel[0].std(1))
    tp = 40
    gt = mel[0, :, tp:]

    def l1() -> float:
        model.eval()
        out = model.generate(tokens[0, tp // 2:], tokens[0, :tp // 2], mel[0, :, :tp], steps=8, guidance=0.0)
        model.train()
        return float((out[:, :gt.shape[1]] - gt).abs().mean())
    before = l1()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    lens, losses = torch.tensor([t]), []
    for _ in range(500):
        loss = model(tokens, mel, lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = l1()
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:25]), (losses[:5], losses[-5:])
    assert after < 0.6 * before, (before, after)


def _noise_data_dir(d, spk: str, n: int, seed: int = 0):
    """A Kaldi dir of ``n`` noise utterances ``<spk>-<i>`` (1 s + 0.2 s each) with random tokens."""
    from tts.audio import save_audio
    from tts.datadir import spk2utt_from_utt2spk, write_table

    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    wav, text, u2s, tok = {}, {}, {}, {}
    for i in range(n):
        utt = f"{spk}-{i}"
        audio = (rng.standard_normal(16000 + 3200 * i) * 0.1).astype(np.float32)
        save_audio(d / f"{utt}.wav", audio, 16000)
        frames = (16000 + 3200 * i) // 320
        wav[utt], text[utt], u2s[utt] = str(d / f"{utt}.wav"), "hello", spk
        tok[utt] = " ".join(str(x) for x in rng.integers(0, 256, frames // 2))
    for name, table in (("wav.scp", wav), ("text", text), ("utt2spk", u2s), ("tokens", tok),
                        ("spk2utt", spk2utt_from_utt2spk(u2s))):
        write_table(d / name, table)
    return d


def test_mel_cache_per_mel_definition(tmp_path):
    """Each mel definition has its own cache: a model on another mel never reads stale features."""
    from flow.data import FlowDataset, mel_dir

    d = _noise_data_dir(tmp_path / "d", "spk", 2)
    old, new = MelConfig.preset("16k"), MelConfig.preset("16k-w40")
    for cfg in (old, new):
        item = FlowDataset(d, cfg, upsample=2)[0]
        audio = load_audio(d / "spk-0.wav", 16000)
        np.testing.assert_allclose(item.mel.numpy(), mel_spectrogram(audio, cfg), atol=1e-5)
    assert mel_dir(d, old) != mel_dir(d, new)
    assert json.loads((mel_dir(d, new) / "config.json").read_text())["n_fft"] == 640


def test_dataset_of_several_dirs(tmp_path):
    """Two data dirs train as their union; mel statistics span both; repeated ids are refused."""
    from flow.data import FlowDataset, mel_path
    from tts.datadir import DataDirError
    from tts.mel import MelConfig

    a = _noise_data_dir(tmp_path / "a", "spka", 2)
    b = _noise_data_dir(tmp_path / "b", "spkb", 3, seed=1)
    for d, gain in ((a, 1.0), (b, 100.0)):  # b is 40 dB louder: its mels sit higher
        for wav in d.glob("*.wav"):
            audio, sr = sf.read(wav, dtype="float32")
            sf.write(wav, audio * gain / 100, sr)
    ds = FlowDataset([a, b], MelConfig(), upsample=2, crop_frames=1000)
    assert ds.utts == ["spka-0", "spka-1", "spkb-0", "spkb-1", "spkb-2"] and len(ds.lengths) == 5
    assert mel_path(b, "spkb-2", MelConfig()).is_file() and not mel_path(a, "spkb-2", MelConfig()).exists()
    item = ds[4]  # spkb-2: 1.4 s = 70 frames, 35 tokens
    assert item.utt == "spkb-2" and item.mel.shape == (80, 70) and item.tokens.numel() == 35
    only_a, both = FlowDataset(a, MelConfig(), 2).mel_stats()[0], ds.mel_stats()[0]
    assert (both - only_a).mean() > 1.0  # b's louder mels are in the statistics
    with pytest.raises(DataDirError, match="repeat across dirs"):
        FlowDataset([a, a], MelConfig(), upsample=2)


def test_train_and_report_cli(tmp_path, speech):
    """Data dir -> flow.train (2 steps, resumable) -> model dir -> flow.report (mel L1 only)."""
    from flow import report, train
    from flow.data import mel_path

    d = _noise_data_dir(tmp_path / "data", "spk", 3)
    exp = tmp_path / "exp"
    args = ["--config", str(CONF / "flow_tiny.yaml"), "--train", str(d), "--dev", str(d), "--exp", str(exp)]
    assert train.main([*args, "--max-steps", "2"]) == 0
    assert (exp / "model" / "model.safetensors").is_file() and (exp / "checkpoints" / "last.ckpt").is_file()
    assert mel_path(d, "spk-0", FlowModel.from_pretrained(exp / "model").config.mel_config).is_file()  # mel cache
    assert train.main([*args, "--max-steps", "3"]) == 0  # resumes from last.ckpt
    start = FlowModel.from_pretrained(exp / "model")  # fine-tuning: weights and mel statistics carry over
    start.set_mel_stats(torch.linspace(-6, -3, 80), torch.linspace(1, 2, 80))
    start.save_pretrained(tmp_path / "start")
    more = _noise_data_dir(tmp_path / "more", "voice2", 2, seed=2)  # a second train dir: their union
    ft = ["--config", str(CONF / "flow_tiny.yaml"), "--train", str(d), str(more), "--max-steps", "1"]
    assert train.main([*ft, "--exp", str(tmp_path / "ft"), "--init", str(tmp_path / "start")]) == 0
    tuned = FlowModel.from_pretrained(tmp_path / "ft" / "model")
    assert torch.equal(tuned.mel_mean, start.mel_mean) and torch.equal(tuned.mel_std, start.mel_std)
    FlowModel(FlowConfig(vocab_size=256, dim=32, layers=1, heads=2, mel="24k")).save_pretrained(tmp_path / "f24")
    with pytest.raises(SystemExit, match="mel definition"):  # another mel: nothing of it fits
        train.main([*ft, "--exp", str(tmp_path / "ft24"), "--init", str(tmp_path / "f24")])
    out = tmp_path / "report"
    assert report.main(["--model", str(exp / "model"), "--data", str(d), "--out", str(out), "--steps", "2",
                        "--chunk", "10", "--no-judges", "--max-utts", "2", "--png", "1"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["utterances"] == 2 and {"flow", "flow_chunked"} <= set(rep["mel_l1"])
    assert len(list((out / "png").glob("*.png"))) == 1
    from vocoder import Vocoder, VocoderConfig

    other = MelConfig.preset("24k").to_dict()  # a vocoder of another mel would vocode garbage: refused
    Vocoder(VocoderConfig(mel=other, dim=16, intermediate_dim=32, num_layers=1, sub_dim=8, sub_layers=1)).save_pretrained(
        tmp_path / "voc_other")
    with pytest.raises(SystemExit, match="another mel"):
        report.main(["--model", str(exp / "model"), "--data", str(d), "--out", str(tmp_path / "r2"),
                     "--vocoder", str(tmp_path / "voc_other"), "--no-judges", "--max-utts", "1"])


def test_gta_writes_aligned_seeded_mels_in_shards_and_resumes(tmp_path):
    """flow.gta: one (n_mels, up * N) mel per utterance, the same for a rerun (seeded), shards
    that add up to the whole, nothing rewritten when resumed, a bad --shard refused."""
    from flow import gta
    from flow.data import read_tokens

    d = _noise_data_dir(tmp_path / "data", "spk", 3)
    FlowModel(FlowConfig(vocab_size=256, dim=32, layers=1, heads=2)).save_pretrained(tmp_path / "m")
    out = tmp_path / "gta"
    args = ["--model", str(tmp_path / "m"), "--data", str(d), "--out", str(out), "--threads", "1"]
    assert gta.main([*args, "--shard", "0", "--num-shards", "2"]) == 0
    assert len(list(out.glob("*.npy"))) == 2
    assert gta.main([*args, "--shard", "1", "--num-shards", "2"]) == 0
    tokens = read_tokens(d / "tokens")
    mels = {u: np.load(out / f"{u}.npy") for u in tokens}
    assert all(m.shape == (80, 2 * tokens[u].size) and np.isfinite(m).all() for u, m in mels.items())
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert gta.main(args) == 0 and stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert gta.main([*args[:-3], str(tmp_path / "again"), "--max-utts", "1"]) == 0
    (again,) = (tmp_path / "again").glob("*.npy")
    np.testing.assert_array_equal(np.load(again), mels[again.stem])
    assert not list(out.glob("*.tmp.npy"))  # no temporary file left
    with pytest.raises(SystemExit):
        gta.main([*args, "--shard", "2", "--num-shards", "2"])


def test_ema_weights_are_the_saved_model_and_resume(tmp_path):
    """trainer.ema_decay: the checkpoint's state_dict and the final model are the average; a resumed run goes on."""
    from flow import train
    from tts.training import TrainerConfig, build_trainer

    d = _noise_data_dir(tmp_path / "data", "spk", 3)
    cfg = FlowTrainConfig.from_yaml(CONF / "flow_tiny.yaml")
    cfg.trainer.ema_decay, cfg.trainer.max_steps, cfg.trainer.progress_bar = 0.5, 3, False
    exp = tmp_path / "exp"
    train.train(cfg, d, None, exp, progress=False)
    ck = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)
    avg, raw = ck["state_dict"], ck["current_model_state"]
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(avg[k], raw[k])]
    assert moved  # the average lags the raw weights
    saved = FlowModel.from_pretrained(exp / "model").state_dict()
    assert all(torch.equal(saved[k.removeprefix("model.")], avg[k]) for k in moved)
    cfg.trainer.max_steps = 4
    train.train(cfg, d, None, exp, progress=False)  # resumes: the average goes on from the checkpoint's
    ck2 = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)
    assert ck2["global_step"] == 4 and not torch.equal(ck2["state_dict"][moved[0]], avg[moved[0]])
    with pytest.raises(ValueError, match="ema_decay"):
        build_trainer(TrainerConfig(ema_decay=1.0), tmp_path / "bad")


def test_ema_model_exported_mid_training_is_the_average(tmp_path):
    """The <exp>/model written with a checkpoint holds the checkpoint's average, not the raw weights."""
    from helpers import export_snapshot

    from flow import train

    d = _noise_data_dir(tmp_path / "data", "spk", 3)
    cfg = FlowTrainConfig.from_yaml(CONF / "flow_tiny.yaml")
    cfg.trainer.ema_decay, cfg.trainer.max_steps, cfg.trainer.checkpoint_every = 0.5, 3, 2
    exp = tmp_path / "exp"
    snapshot, callback = export_snapshot(FlowModel.from_pretrained, exp / "model", step=2)
    train.train(cfg, d, None, exp, progress=False, callbacks=[callback])
    ck = torch.load(exp / "checkpoints" / "step0000002.ckpt", weights_only=False)
    avg, raw = ck["state_dict"], ck["current_model_state"]
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(avg[k], raw[k])]
    assert moved and all(torch.equal(snapshot[k.removeprefix("model.")], avg[k]) for k in avg)
