"""The text-to-speech-token LLM: layout, save/load as a stock HF model, training, sampling."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import write_even_durations
from transformers import AutoModelForCausalLM

from tts.datadir import write_table
from tts.frontend import FrontendConfig
from tts.llm import IGNORE, LLMCheckpointError, LLMConfig, SpeechLM, hidden_unit_id
from tts.llm_report import report
from tts.llm_train import (
    ConfigError,
    Pair,
    PairDataset,
    from_dict,
    load_config,
    synthetic_tokens,
    train,
)
from tts.sampling import GenerationError, SamplingConfig, generate, ras_resample, sample_step

CONF = Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf"
TINY = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
            max_positions=256, speech_vocab_size=16)


def tiny_lm(**kw) -> SpeechLM:
    torch.manual_seed(0)
    return SpeechLM(LLMConfig(**{**TINY, **kw})).eval()


def test_layout_and_labels():
    lm = tiny_lm()
    lay = lm.layout
    text, ptext = lm.frontend.encode_normalized("hi."), lm.frontend.encode_normalized("yo.")
    ids, labels = lay.example(text, [3, 4], ptext, [1, 2], loss_on_prompt=False)
    assert ids == [lay.bos_id, *ptext, lay.space_id, *text, lay.speech_start_id,
                   1 + lay.speech_offset, 2 + lay.speech_offset, 3 + lay.speech_offset,
                   4 + lay.speech_offset, lay.speech_end_id]
    assert [y for y in labels if y != IGNORE] == ids[-3:]  # target speech + speech-end only
    _, labels = lay.example(text, [3, 4], ptext, [1, 2], loss_on_prompt=True)
    assert [y for y in labels if y != IGNORE] == ids[-5:]
    assert all(i < lay.speech_offset for i in ids[: len(ptext) + len(text) + 2])  # text part is text
    with pytest.raises(ValueError, match="codebook"):
        lay.example(text, [16])
    fake = synthetic_tokens("hi, yo.", 16)  # the text-only alignment warm-up tokens
    assert fake[4:8] == [15] * 4 and all(0 <= t < 16 for t in fake)


def test_interleaved_layout_puts_each_unit_before_its_speech():
    lm = tiny_lm(layout="interleaved")
    lay = lm.layout
    text, ptext = lm.frontend.encode_normalized("hi."), lm.frontend.encode_normalized("yo.")
    assert len(text) == 3
    speech = [lay.speech_offset + t for t in (3, 4, 5)]
    ids, labels = lay.example(text, [3, 4, 5], ptext, [1, 2], loss_on_prompt=False, durations=[2, 0, 1])
    ctx = lay.context(text, ptext, [1, 2])
    assert ids == [*ctx, text[0], *speech[:2], text[1], text[2], speech[2], lay.speech_end_id]
    assert labels[len(ctx):] == [IGNORE, *speech[:2], lay.advance_id, lay.advance_id, speech[2], lay.speech_end_id]
    assert lay.start(text, ptext, [1, 2]) == [*ctx, text[0]]  # generation prefills the first unit
    with pytest.raises(ValueError, match="durations"):
        lay.example(text, [3, 4, 5], durations=[1, 1])
    with pytest.raises(ValueError, match="layout"):
        LLMConfig(layout="zigzag")


def test_unit_lookahead_feeds_each_unit_early_and_eos_after_the_last(tmp_path):
    lm = tiny_lm(layout="interleaved", unit_lookahead=1)
    lay = lm.layout
    text = lm.frontend.encode_normalized("hi.")
    speech = [lay.speech_offset + t for t in (3, 4, 5)]
    ids, labels = lay.example(text, [3, 4, 5], durations=[2, 0, 1])
    ctx = lay.context(text)
    # u1 u2 | s s (u1) | u3 (u2 had no speech) | <eos> s (u3) | end
    assert ids == [*ctx, text[0], text[1], *speech[:2], text[2], lay.eos_id, speech[2], lay.speech_end_id]
    assert labels[len(ctx):] == [IGNORE, IGNORE, *speech[:2], lay.advance_id, lay.advance_id, speech[2],
                                 lay.speech_end_id]
    assert lay.start(text) == [*ctx, text[0], text[1]]
    with pytest.raises(ValueError, match="unit_lookahead"):
        LLMConfig(unit_lookahead=1)  # the continuation layout has no units to feed early
    edited = LLMConfig(**{**TINY, "layout": "interleaved", "unit_lookahead": 1})
    edited.layout = "continuation"  # a loaded config changed in code: refused before any training
    with pytest.raises(ValueError, match="unit_lookahead"):
        SpeechLM(edited)
    lm.save_pretrained(tmp_path / "new")
    assert SpeechLM.from_pretrained(tmp_path / "new").layout == lay
    # a directory saved before the lookahead existed: no lookahead, no eos_id in its layout
    old = tiny_lm(layout="interleaved")
    old.save_pretrained(tmp_path / "old")
    meta_file = tmp_path / "old" / "voxlm_llm.json"
    meta = json.loads(meta_file.read_text())
    del meta["layout"]["eos_id"], meta["layout"]["lookahead"], meta["llm"]["unit_lookahead"]
    meta_file.write_text(json.dumps(meta))
    assert SpeechLM.from_pretrained(tmp_path / "old").layout.lookahead == 0


class ScriptedCache:
    """Each row's fed ids, with DynamicCache's batch operations."""

    def __init__(self, rows):
        self.rows = rows

    def batch_repeat_interleave(self, n):
        self.rows = [list(r) for r in self.rows for _ in range(n)]

    def batch_select_indices(self, idx):
        self.rows = [self.rows[i] for i in idx.tolist()]


class ScriptedModel(torch.nn.Module):
    """Says every text unit as two copies of (unit id % 16), then wants to advance (or end)."""

    def __init__(self, layout, advance: bool = True):
        super().__init__()
        self.layout, self.advance, self.fed = layout, advance, []
        self.config = SimpleNamespace(max_position_embeddings=256)

    def forward(self, input_ids, use_cache=True, logits_to_keep=1, cache=None):
        cache = cache or ScriptedCache([[] for _ in range(input_ids.shape[0])])
        logits = torch.zeros(input_ids.shape[0], 1, self.layout.vocab_size)
        for b, row in enumerate(cache.rows):
            row += input_ids[b].tolist()
            self.fed.append(row[-1])
            unit = max(i for i, t in enumerate(row) if t < self.layout.speech_offset)
            said = len(row) - 1 - unit
            if said < 2 or not self.advance:
                logits[b, 0, self.layout.speech_offset + row[unit] % 16] = 10.0
            else:
                logits[b, 0, self.layout.advance_id] = 10.0
                logits[b, 0, self.layout.speech_end_id] = 9.0  # wins where advancing is masked
        return SimpleNamespace(logits=logits, cache=cache)


def test_interleaved_decoding_feeds_each_unit_after_an_advance():
    lm = tiny_lm(layout="interleaved")
    text = lm.frontend.encode_normalized("hi, yo.")
    lm.model = ScriptedModel(lm.layout)
    gen = generate(lm, text, cfg=SamplingConfig(greedy=True, num_candidates=2, min_ratio=0.1, max_ratio=10))
    expect = [t % 16 for t in text for _ in range(2)]
    assert gen.tokens == [expect, expect] and gen.hit_max == [False, False]
    lm.model = ScriptedModel(lm.layout)
    generate(lm, text, cfg=SamplingConfig(greedy=True, min_ratio=0.1, max_ratio=10))
    assert [t for t in lm.model.fed if t < lm.layout.speech_offset] == text  # each unit once, in order
    # a unit that never ends is cut after ratio.max_unit tokens: the next unit is fed anyway
    lm.ratio.max_unit = 3
    lm.model = ScriptedModel(lm.layout, advance=False)
    gen = generate(lm, text, cfg=SamplingConfig(greedy=True, min_ratio=0.1, max_ratio=10))
    assert gen.tokens == [[t % 16 for t in text for _ in range(3)]] and not gen.hit_max[0]


def test_unit_lookahead_decoding_feeds_the_unit_after_next():
    lm = tiny_lm(layout="interleaved", unit_lookahead=1)
    text = lm.frontend.encode_normalized("hi, yo.")
    lm.model = ScriptedModel(lm.layout)  # says the newest unit it was fed: here the next one
    gen = generate(lm, text, cfg=SamplingConfig(greedy=True, min_ratio=0.1, max_ratio=10))
    fed = [*text[1:], lm.layout.eos_id]
    assert gen.tokens == [[t % 16 for t in fed for _ in range(2)]]
    # the prefill ends with the second unit (the model records each call's last id), then one per advance
    assert [t for t in lm.model.fed if t < lm.layout.speech_offset] == fed


class GuidedScript(ScriptedModel):
    """Text rows prefer a generic token a little over their unit's own (unit % 16); rows whose
    text is hidden prefer the generic one strongly. Only guidance, which subtracts the hidden-text branch, says
    the unit's own token. Records every id the hidden-text rows are fed."""

    def __init__(self, layout, hidden: int, generic: int):
        super().__init__(layout)
        self.hidden, self.generic, self.hidden_fed = hidden, generic, []

    def forward(self, input_ids, use_cache=True, logits_to_keep=1, cache=None):
        out = super().forward(input_ids, use_cache, logits_to_keep, cache)
        for b, row in enumerate(out.cache.rows):
            unit = max(i for i, t in enumerate(row) if t < self.layout.speech_offset)
            if len(row) - 1 - unit >= 2:
                continue  # advancing: both branches agree
            own = self.layout.speech_offset + row[unit] % 16
            generic = self.layout.speech_offset + self.generic
            if self.hidden in row:
                self.hidden_fed += input_ids[b].tolist()
                out.logits[b, 0, own], out.logits[b, 0, generic] = 0.0, 10.0
            else:
                out.logits[b, 0, own], out.logits[b, 0, generic] = 9.5, 10.0
        return out


def test_text_guidance_subtracts_the_text_free_branch():
    lm = tiny_lm(layout="interleaved", uncond_prob=0.1)
    hidden = hidden_unit_id(lm.frontend)
    text, ptext = lm.frontend.encode_normalized("hi, yo."), lm.frontend.encode_normalized("ok.")
    generic = min(set(range(16)) - {t % 16 for t in text})
    cfg = dict(greedy=True, num_candidates=3, min_ratio=0.1, max_ratio=10)
    lm.model = GuidedScript(lm.layout, hidden, generic)
    plain = generate(lm, text, ptext, [1, 2], cfg=SamplingConfig(**cfg))
    assert plain.tokens == [[generic] * (2 * len(text))] * 3 and lm.model.hidden_fed == []
    lm.model = GuidedScript(lm.layout, hidden, generic)
    gen = generate(lm, text, ptext, [1, 2], cfg=SamplingConfig(**cfg, text_guidance=1.0))
    assert gen.tokens == [[t % 16 for t in text for _ in range(2)]] * 3
    # the hidden branch saw the prompt speech and its own tokens, never a text unit (only the
    # layout's break between prompt text and text, as in training)
    fed = set(lm.model.hidden_fed)
    assert hidden in fed and not fed & (set(text) | set(ptext)) - {lm.layout.space_id}
    assert {lm.layout.speech_offset + 1, lm.layout.speech_offset + 2} <= fed
    with pytest.raises(GenerationError, match="uncond_prob"):
        generate(tiny_lm(layout="interleaved"), text, cfg=SamplingConfig(text_guidance=1.0))
    with pytest.raises(GenerationError, match=">= 0"):
        generate(lm, text, cfg=SamplingConfig(text_guidance=-1.0))


def test_uncond_prob_hides_every_text_unit_and_keeps_the_labels():
    lm = tiny_lm(layout="interleaved")
    hidden = hidden_unit_id(lm.frontend)
    text = lm.frontend.encode_normalized("hi, yo.")
    pairs = [Pair(f"a-{i}", "a", text, [3, 4, 5] * len(text), durations=[3] * len(text)) for i in range(2)]
    shown = PairDataset(pairs, lm, prompt_prob=1.0, seed=0)
    hid = PairDataset(pairs, lm, prompt_prob=1.0, seed=0, uncond_prob=1.0)
    (ids, labels), (h_ids, h_labels) = shown[0], hid[0]
    assert h_labels == labels and len(h_ids) == len(ids)
    assert [h for h, i in zip(h_ids, ids, strict=True) if h != i] == [hidden] * (3 * len(text))  # 2 texts + units
    assert h_ids.count(lm.layout.space_id) == 1  # only the break between the prompt's text and the text
    half = PairDataset(pairs * 200, lm, uncond_prob=0.5, seed=0)
    share = sum(hidden in half[i][0] for i in range(len(half))) / len(half)
    assert 0.4 < share < 0.6


def test_save_load_autoclass_same_logits(tmp_path):
    lm = tiny_lm()
    lm.save_pretrained(tmp_path)
    x = torch.tensor([lm.layout.context(lm.frontend.encode("Hello, 2 worlds!")[0], None, [1, 5, 7])])
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)  # no custom code
    with torch.no_grad():
        assert torch.equal(hf(x).logits, lm(x))
        assert torch.equal(SpeechLM.from_pretrained(tmp_path)(x), lm(x))
        warm = SpeechLM(LLMConfig(**TINY, init_from=str(tmp_path)))
        assert warm.model.training  # a warm start trains with its dropout on
        assert torch.equal(warm.eval()(x), lm(x))


def test_bad_checkpoints(tmp_path):
    with pytest.raises(LLMCheckpointError, match="missing"):
        SpeechLM.from_pretrained(tmp_path)
    tiny_lm().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LLMCheckpointError):
        SpeechLM.from_pretrained(tmp_path)


def test_configs_build():
    for path in sorted(CONF.glob("llm*.yaml")):
        cfg = load_config(path)
        assert cfg.llm.hidden_size % cfg.llm.num_heads == 0
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(type(cfg), {"llm": {"hidden": 3}})


def test_top_k_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    empty = torch.zeros(2000, 0, dtype=torch.long)
    picks = sample_step(logits, empty, SamplingConfig(top_k=2, top_p=1.0, ras_window=0), g)
    assert set(picks.tolist()) == {0, 1}
    picks = sample_step(logits, empty, SamplingConfig(top_k=0, top_p=0.7, ras_window=0), g)
    assert set(picks.tolist()) == {0, 1}  # 0.5 + 0.3 covers 0.7; 0.15 and 0.05 never drawn
    picks = sample_step(logits, empty, SamplingConfig(top_k=0, top_p=1.0, ras_window=0), g)
    assert set(picks.tolist()) == {0, 1, 2, 3}
    assert set(sample_step(logits, empty, SamplingConfig(greedy=True), g).tolist()) == {0}


def test_ras_resamples_only_repeats():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.0, 0.0, 1.0]]).repeat(3, 1)  # the full distribution says "2"
    history = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1], [0, 1, 0, 1]])
    out = ras_resample(torch.tensor([0, 0, 0]), history, probs, window=4, tau=0.5, generator=g)
    assert out.tolist() == [2, 0, 2]  # rows with >= 2 repeats of 0 in the window resample
    out = ras_resample(torch.tensor([0, 0, 0]), history, probs, window=3, tau=0.5, generator=g)
    assert out.tolist() == [2, 0, 0]  # only the last 3 tokens count: row 3 now has one 0
    same = ras_resample(torch.tensor([0, 0, 0]), history, probs, window=0, tau=0.5, generator=g)
    assert same.tolist() == [0, 0, 0]


def test_length_guard_and_seed():
    lm = tiny_lm()
    text = lm.frontend.encode("Hi there.")[0]  # 9 chars
    cfg = SamplingConfig(min_ratio=2.0, max_ratio=3.0, num_candidates=4, seed=7)
    gen = generate(lm, text, cfg=cfg)
    assert (gen.min_len, gen.max_len) == (18, 27)
    assert all(18 <= len(t) <= 27 for t in gen.tokens)
    assert all(len(t) == 27 for t, hit in zip(gen.tokens, gen.hit_max, strict=True) if hit)
    assert all(0 <= x < 16 for t in gen.tokens for x in t)
    assert generate(lm, text, cfg=cfg).tokens == gen.tokens  # same seed, same tokens
    other = generate(lm, text, cfg=SamplingConfig(min_ratio=2.0, max_ratio=3.0, num_candidates=4, seed=8))
    assert other.tokens != gen.tokens
    # speech-end is forbidden before min_len even when the model wants to stop at once
    head = torch.nn.Linear(TINY["hidden_size"], lm.layout.vocab_size)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[lm.layout.speech_end_id] = 10.0
    lm.model.lm_head = head
    gen = generate(lm, text, cfg=SamplingConfig(min_ratio=1.0, max_ratio=3.0, greedy=True))
    assert len(gen.tokens[0]) == 9 and not gen.hit_max[0]
    with pytest.raises(GenerationError, match="too long"):
        generate(lm, text, prompt_speech=[1] * 250)
    with pytest.raises(GenerationError, match="empty"):
        generate(lm, [])


def _fake_data(d: Path, utts: dict[str, tuple[str, list[int]]]) -> None:
    d.mkdir(parents=True)
    write_table(d / "text", {u: t for u, (t, _) in utts.items()})
    write_table(d / "tokens", {u: " ".join(map(str, s)) for u, (_, s) in utts.items()})
    write_table(d / "utt2spk", {u: u.split("-")[0] for u in utts})


@pytest.mark.parametrize("units,layout,lookahead", [("chars", "continuation", 0), ("phones", "continuation", 0),
                                                    ("phones", "interleaved", 0), ("phones", "interleaved", 1)])
def test_overfit_two_utterances_greedy_reproduces(tmp_path, units, layout, lookahead):
    utts = {
        "a-1": ("Dr. Smith paid $5.", [3, 3, 7, 1, 9, 9, 12, 4, 4, 4, 30, 2, 8, 15, 15, 6]),
        "a-2": ("Hello, 2 worlds!", [20, 21, 22, 5, 5, 5, 0, 11, 11, 13, 27, 27, 19, 31]),
    }
    _fake_data(tmp_path / "train", utts)
    cfg = load_config(CONF / "llm_tiny.yaml")
    cfg.trainer.max_steps, cfg.trainer.val_every = 120, 1000
    cfg.llm.frontend.units, cfg.llm.layout, cfg.llm.unit_lookahead = units, layout, lookahead
    if layout == "interleaved":
        with pytest.raises(FileNotFoundError, match="tts.align"):
            train(cfg, tmp_path / "train", None, tmp_path / "exp")
        write_even_durations(tmp_path / "train", SpeechLM(cfg.llm).frontend)
    lm = train(cfg, tmp_path / "train", None, tmp_path / "exp", enable_model_summary=False)
    lm = SpeechLM.from_pretrained(tmp_path / "exp" / "model")
    assert lm.frontend.cfg.units == units and lm.layout.lookahead == lookahead
    for text, speech in utts.values():
        ids = lm.frontend.encode(text)[0]
        gen = generate(lm, ids, cfg=SamplingConfig(greedy=True, num_candidates=2))
        assert gen.tokens == [speech, speech] and gen.hit_max == [False, False]

    class LookupTokenizer:  # stands in for the speech tokenizer's CTC reading of tokens
        def transcribe_tokens(self, ids):
            return next((t for t, s in utts.values() if s == list(ids)), "")

    summary, rows = report(lm, LookupTokenizer(), tmp_path / "train", SamplingConfig(greedy=True))
    assert summary["utterances"] == 2 and summary["cer_real_tokens"] == 0.0
    assert 0.0 <= summary["teacher_forced_acc"] <= 1.0 and len(rows) == 2


def _checkpointing_run(tmp_path: Path, max_steps: int):
    """Two-utterance train/ data and the tiny config (chars, continuation), a checkpoint every 2 steps."""
    _fake_data(tmp_path / "train", {"a-1": ("Hello there.", [3, 3, 7, 1, 9, 9, 12, 4]),
                                    "a-2": ("Good day.", [20, 21, 22, 5, 5, 31])})
    cfg = load_config(CONF / "llm_tiny.yaml")
    cfg.llm.frontend.units, cfg.llm.layout, cfg.llm.unit_lookahead = "chars", "continuation", 0
    cfg.trainer.max_steps, cfg.trainer.checkpoint_every, cfg.trainer.val_every = max_steps, 2, 1000
    return cfg


def test_train_averages_the_last_checkpoints(tmp_path):
    """trainer.average_last: N keeps N step checkpoints and <exp>/model is their element-wise mean."""
    cfg = _checkpointing_run(tmp_path, 6)
    cfg.trainer.average_last = 3
    lm = train(cfg, tmp_path / "train", None, tmp_path / "exp", enable_model_summary=False)
    ckpts = sorted((tmp_path / "exp" / "checkpoints").glob("step*.ckpt"))
    assert [p.name for p in ckpts] == ["step0000002.ckpt", "step0000004.ckpt", "step0000006.ckpt"]
    name = "model.model.layers.0.mlp.up_proj.weight"
    states = [torch.load(p, weights_only=False)["state_dict"]["lm." + name] for p in ckpts]
    assert not torch.equal(states[0], states[2])  # the weights moved
    mean = sum(states) / 3
    torch.testing.assert_close(SpeechLM.from_pretrained(tmp_path / "exp" / "model").state_dict()[name], mean)
    torch.testing.assert_close(lm.state_dict()[name], mean)


def test_ema_model_exported_with_a_checkpoint_is_the_average(tmp_path):
    """trainer.ema_decay: <exp>/model written with a checkpoint holds the average (the checkpoint's
    state_dict), not the raw weights; the final model is the average too."""
    from helpers import export_snapshot

    cfg = _checkpointing_run(tmp_path, 3)
    cfg.trainer.ema_decay = 0.5
    exp = tmp_path / "exp"
    snapshot, callback = export_snapshot(SpeechLM.from_pretrained, exp / "model", step=2)
    train(cfg, tmp_path / "train", None, exp, enable_model_summary=False, callbacks=[callback])
    ck = torch.load(exp / "checkpoints" / "step0000002.ckpt", weights_only=False)
    name = "model.model.layers.0.mlp.up_proj.weight"
    avg, raw = ck["state_dict"]["lm." + name], ck["current_model_state"]["lm." + name]
    assert not torch.equal(avg, raw)
    torch.testing.assert_close(snapshot[name], avg)
    last = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]["lm." + name]
    torch.testing.assert_close(SpeechLM.from_pretrained(exp / "model").state_dict()[name], last)


def test_finetune_starts_from_a_saved_model_whatever_the_config_says(tmp_path):
    """init_from a saved VoxLM LLM: its architecture, frontend, layout and weights (lr 0: the
    result is the start), not the config's; a tokenizer of another vocabulary is refused."""
    _fake_data(tmp_path / "train", {"a-1": ("Hello there.", [3, 3, 7, 1, 9, 9, 12, 4]),
                                    "a-2": ("Good day.", [20, 21, 22, 5, 5, 31])})
    start = tiny_lm(speech_vocab_size=32, frontend=FrontendConfig(units="chars"))  # continuation layout
    start.save_pretrained(tmp_path / "start")
    cfg = load_config(CONF / "llm_tiny.yaml")  # hidden 64, 2 layers, phones, interleaved
    cfg.llm.init_from, cfg.llm.speech_vocab_size = str(tmp_path / "start"), 32
    cfg.trainer.max_steps, cfg.trainer.val_every, cfg.optim.lr = 3, 1000, 0.0
    train(cfg, tmp_path / "train", None, tmp_path / "exp", enable_model_summary=False)
    tuned = SpeechLM.from_pretrained(tmp_path / "exp" / "model")
    assert (tuned.cfg.hidden_size, tuned.cfg.num_layers, tuned.cfg.layout) == (32, 1, "continuation")
    assert tuned.frontend.cfg.units == "chars" and tuned.layout == start.layout
    x = torch.tensor([start.layout.context(start.frontend.encode("Hello there.")[0], None, [3, 3])])
    with torch.no_grad():
        assert torch.equal(tuned(x), start(x))
    cfg.llm.speech_vocab_size = 16
    with pytest.raises(LLMCheckpointError, match="speaks 32 speech tokens, the tokenizer has 16"):
        train(cfg, tmp_path / "train", None, tmp_path / "exp2")


@pytest.mark.parametrize("kw", [{}, {"layout": "interleaved", "frontend": FrontendConfig(units="phones")},
                                {"uncond_prob": 0.1},
                                {"layout": "interleaved", "frontend": FrontendConfig(units="phones"),
                                 "unit_lookahead": 2, "uncond_prob": 0.1}],
                         ids=["continuation", "interleaved", "text-guidance", "lookahead-guidance"])
def test_batched_inputs_decode_as_they_would_alone(kw):
    """Other texts and prompts (left-padded into one loop, each from its own seed) give the
    tokens each gives alone, greedy or sampled, with text guidance too."""
    from tts.sampling import Item, generate_many

    lm = tiny_lm(**kw)
    lm.ratio.max_ratio = 3.0
    texts, prompts = ["Hello there.", "A much longer sentence, with a comma.", "Hi."], ["a voice", "another one", "x"]
    items = [Item(lm.frontend.encode(t)[0], lm.frontend.encode(p)[0], ps, seed=s)
             for t, p, ps, s in zip(texts, prompts, [[1, 2, 3], [4] * 9, []], [3, 5, 7], strict=True)]
    for greedy in (True, False):
        cfg = SamplingConfig(greedy=greedy, num_candidates=3, text_guidance=0.5 if "uncond_prob" in kw else 0.0)
        for it, many in zip(items, generate_many(lm, items, cfg), strict=True):
            alone = generate(lm, it.text_ids, it.prompt_text_ids, it.prompt_speech,
                             SamplingConfig(**{**vars(cfg), "seed": it.seed}))
            assert (many.tokens, many.hit_max, many.steps) == (alone.tokens, alone.hit_max, alone.steps)
            assert (many.min_len, many.max_len) == (alone.min_len, alone.max_len)
    assert generate_many(lm, [], cfg) == []


@pytest.mark.parametrize("kw", [{}, {"layout": "interleaved", "frontend": FrontendConfig(units="phones"),
                                     "unit_lookahead": 2, "uncond_prob": 0.1}], ids=["continuation", "interleaved"])
def test_growing_cache_decodes_as_transformers_dynamic_cache(monkeypatch, kw):
    """tts.kv_cache appends in place; the tokens are those of transformers' own DynamicCache,
    through batched inputs, N candidates, finished rows dropped and the buffer regrown."""
    from transformers import DynamicCache

    import tts.sampling
    from tts.kv_cache import MIN_CAPACITY
    from tts.sampling import Item, generate_many

    lm = tiny_lm(**kw)
    lm.ratio.max_ratio = 6.0  # rows long enough to outgrow the first buffer
    items = [Item(lm.frontend.encode(t)[0], lm.frontend.encode("a voice")[0], ps, seed=s)
             for t, ps, s in [("A much longer sentence, with a comma, and more.", [4] * 9, 3), ("Hi.", [], 5)]]
    cfg = SamplingConfig(num_candidates=3, text_guidance=0.5 if "uncond_prob" in kw else 0.0)
    growing = generate_many(lm, items, cfg)
    assert max(len(lm.layout.start(it.text_ids, it.prompt_text_ids, it.prompt_speech)) + g.steps
               for it, g in zip(items, growing, strict=True)) > MIN_CAPACITY
    assert len({len(r) for g in growing for r in g.tokens}) > 1  # rows end at different steps
    monkeypatch.setattr(tts.sampling, "growing_cache", DynamicCache)
    dynamic = generate_many(lm, items, cfg)
    assert [(g.tokens, g.steps) for g in growing] == [(g.tokens, g.steps) for g in dynamic]


def test_growing_layer_keeps_dynamic_layer_contents():
    from transformers.cache_utils import DynamicLayer

    from tts.kv_cache import GrowingLayer

    torch.manual_seed(0)
    grow, dyn = GrowingLayer(), DynamicLayer()
    for t in [5, 1, 70, 1, 200]:  # the prefill, single steps, and chunks that outgrow the buffer
        k, v = torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 4)
        out_g, out_d = grow.update(k, v), dyn.update(k, v)
        assert all(torch.equal(a, b) for a, b in zip(out_g, out_d, strict=True))
        assert grow.get_seq_length() == dyn.get_seq_length()
    for layer in (grow, dyn):
        layer.batch_repeat_interleave(2)
        layer.batch_select_indices(torch.tensor([3, 0]))
    k, v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    assert all(torch.equal(a, b) for a, b in zip(grow.update(k, v), dyn.update(k, v), strict=True))
    grow.crop(-10)
    dyn.crop(-10)
    assert all(torch.equal(a, b) for a, b in zip(grow.update(k, v), dyn.update(k, v), strict=True))


@pytest.mark.parametrize("kw", [{}, {"arch": "qwen2"}, {"num_kv_heads": 1},
                                {"layout": "interleaved", "frontend": FrontendConfig(units="phones"),
                                 "unit_lookahead": 2, "uncond_prob": 0.1}],
                         ids=["llama", "qwen2", "gqa", "interleaved-guidance"])
def test_fast_step_decodes_as_transformers_forward(monkeypatch, kw):
    """tts.fast_decode's step gives transformers' logits (left-padded rows too) and, in the
    decoding loop, the same tokens as transformers' forward."""
    import tts.sampling
    from tts.fast_decode import fast_step
    from tts.kv_cache import growing_cache
    from tts.sampling import Item, generate_many

    lm = tiny_lm(**kw)
    step = fast_step(lm.model)
    assert step is not None
    torch.manual_seed(1)
    ids = torch.randint(0, lm.model.config.vocab_size, (3, 12))
    mask = torch.ones(3, 13, dtype=torch.long)
    mask[1, :4] = 0  # a left-padded row
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    new = torch.randint(0, lm.model.config.vocab_size, (3, 1))
    with torch.inference_mode():
        ref = lm.model(input_ids=torch.cat([ids, new], 1), attention_mask=mask, position_ids=positions).logits[:, -1]
        cache = growing_cache()
        lm.model(input_ids=ids, attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=cache,
                 use_cache=True)
        got = step(new, cache, mask, positions[:, -1:])
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    lm.ratio.max_ratio = 3.0
    items = [Item(lm.frontend.encode(t)[0], lm.frontend.encode("a voice")[0], ps, seed=s)
             for t, ps, s in [("A longer sentence, with a comma.", [4] * 9, 3), ("Hi.", [], 5)]]
    cfg = SamplingConfig(num_candidates=3, text_guidance=0.5 if "uncond_prob" in kw else 0.0)
    fast = generate_many(lm, items, cfg)
    monkeypatch.setattr(tts.sampling, "fast_step", lambda model: None)
    assert [(g.tokens, g.steps) for g in fast] == [(g.tokens, g.steps) for g in generate_many(lm, items, cfg)]


def test_fast_step_declines_what_it_does_not_reproduce():
    from tts.fast_decode import fast_step

    lm = tiny_lm()
    assert fast_step(lm.model) is not None
    assert fast_step(object()) is None
    lm.model.config.rope_parameters = {**lm.model.config.rope_parameters, "rope_type": "linear"}
    assert fast_step(lm.model) is None
    lm = tiny_lm()
    lm.model.config.hidden_act = "gelu"
    assert fast_step(lm.model) is None
