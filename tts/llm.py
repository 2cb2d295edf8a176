"""The text-to-speech-token LLM: a stock ``transformers`` causal LM with one unified vocabulary.

Vocabulary (ids in this order): the frontend's specials and text units (characters or phones)
(``<pad> <unk> <bos> <eos> <|speech_start|> <|speech_end|> <|advance|>`` then the units),
then speech token ``k`` at id ``speech_offset + k``.

Sequence layouts (``LLMConfig.layout``). ``continuation`` (CosyVoice/Llasa)::

    <bos> prompt text ␣ target text <|speech_start|> prompt speech | target speech <|speech_end|>
    \\______________ context, no loss ______________/ \\___ loss on speech tokens only ___/

``interleaved`` (ELLA-V's phone-synchronous layout): the same context, then each
target text unit followed by the speech tokens it spans (``tts.align``)::

    ... <|speech_start|> prompt speech | u1 s s s u2 s s u3 s ... <|speech_end|>

The label at each unit ``u_k`` (k > 1) is ``<|advance|>``: the model says when a
unit is spoken, and generation then feeds the next unit itself, so it can
neither skip nor repeat text, and a small model on a small corpus need not learn
the text-to-speech alignment by attention. Speech-end is only allowed after the
last unit. The prompt's speech stays plain (it needs no alignment at inference).

``unit_lookahead: L`` (ELLA-V's local advance) feeds every unit L units early, so the
speech of ``u_k`` is generated knowing ``u_{k+1} .. u_{k+L}`` (coarticulation: the
tokens of a phone depend on the next one); ``<eos>`` fills the places after the last
unit. With L = 1::

    ... prompt speech | u1 u2 s s s u3 s s <eos> s ... <|speech_end|>

Training sees the same layout, with or without a prompt utterance of the same
speaker in front. The saved directory is a plain Hugging Face model directory
(``config.json`` + ``model.safetensors`` + ``tokenizer.json``), so
``AutoModelForCausalLM.from_pretrained(dir)`` and stock LLM engines load it with
no custom code; ``voxlm_llm.json`` and ``frontend.json`` beside it hold the
layout and the text frontend (an engine serving the interleaved layout feeds the
next unit after each ``<|advance|>``, as :func:`tts.sampling.decode` does).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from tts.frontend import (
    ADVANCE,
    BOS,
    EOS,
    PAD,
    SPEECH_END,
    SPEECH_START,
    UNK,
    Frontend,
    FrontendConfig,
)

LAYOUT_FILE = "voxlm_llm.json"
LAYOUTS = ("continuation", "interleaved")
IGNORE = -100  # label of positions without loss


class LLMCheckpointError(RuntimeError):
    """A model directory is missing or its files are unreadable or inconsistent."""


@dataclass
class LLMConfig:
    arch: str = "llama"  # "llama" or "qwen2": both stock transformers causal LMs
    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 768
    max_positions: int = 1024  # longest sequence: prompt text + text + prompt speech + speech
    rope_theta: float = 10000.0
    dropout: float = 0.0
    tie_embeddings: bool = True
    speech_vocab_size: int = 1000  # codebook size of the speech tokenizer
    init_from: str | None = None  # local HF causal-LM dir: start from its weights (vocab resized)
    layout: str = "continuation"  # or "interleaved": text units between their speech (module doc)
    unit_lookahead: int = 0  # interleaved: each unit fed this many units before its speech (module doc)
    # Training: the share of examples whose text units (target, prompt and interleaved) are all
    # <unk>: the unconditional branch of classifier-free guidance (SamplingConfig.text_guidance).
    uncond_prob: float = 0.0
    frontend: FrontendConfig = field(default_factory=FrontendConfig)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"llm.layout must be one of {LAYOUTS}, got {self.layout!r}")
        check_lookahead(self.layout, self.unit_lookahead)


def check_lookahead(layout: str, lookahead: int) -> None:
    """Lookahead is a count of units, and only the interleaved layout has units to feed early."""
    if lookahead < 0 or (lookahead and layout != "interleaved"):
        raise ValueError(f"llm.unit_lookahead {lookahead}: >= 0, and > 0 only with the interleaved layout "
                         f"(this one: {layout!r})")


@dataclass
class LengthRatio:
    """Speech tokens per target-text character, measured on training data (guards generation)."""

    min_ratio: float = 0.5
    max_ratio: float = 6.0
    max_unit: int = 40  # interleaved layout: most speech tokens one text unit may take


@dataclass
class Layout:
    text_vocab_size: int
    speech_vocab_size: int
    pad_id: int
    bos_id: int
    speech_start_id: int
    speech_end_id: int
    space_id: int
    advance_id: int  # -1 where the frontend has no <|advance|> (saved before the interleaved layout)
    interleaved: bool = False
    eos_id: int = -1  # fills the unit places after the last unit (unit_lookahead > 0)
    lookahead: int = 0  # interleaved: units fed this many units ahead of their speech

    @property
    def speech_offset(self) -> int:
        return self.text_vocab_size

    @property
    def vocab_size(self) -> int:
        return self.text_vocab_size + self.speech_vocab_size

    def context(self, text_ids: list[int], prompt_text_ids: list[int] | None = None,
                prompt_speech: list[int] | None = None) -> list[int]:
        """Ids up to where generation continues: text(s), speech-start, prompt speech."""
        text = list(text_ids)
        if prompt_text_ids:
            text = list(prompt_text_ids) + [self.space_id] + text
        return [self.bos_id, *text, self.speech_start_id, *self.speech_ids(prompt_speech or [])]

    def speech_ids(self, tokens: list[int]) -> list[int]:
        bad = [t for t in tokens if not 0 <= t < self.speech_vocab_size]
        if bad:
            raise ValueError(f"speech token {bad[0]} outside codebook of {self.speech_vocab_size}")
        return [t + self.speech_offset for t in tokens]

    def feed(self, text_ids: list[int]) -> list[int]:
        """The interleaved layout's unit places: the units, then ``<eos>`` for each lookahead one."""
        return list(text_ids) + [self.eos_id] * self.lookahead

    def start(self, text_ids: list[int], prompt_text_ids: list[int] | None = None,
              prompt_speech: list[int] | None = None) -> list[int]:
        """What generation prefills: the context, and for the interleaved layout the first unit
        (and the ``lookahead`` ones after it)."""
        ctx = self.context(text_ids, prompt_text_ids, prompt_speech)
        return ctx + self.feed(text_ids)[:1 + self.lookahead] if self.interleaved else ctx

    def example(self, text_ids: list[int], speech: list[int], prompt_text_ids: list[int] | None = None,
                prompt_speech: list[int] | None = None, loss_on_prompt: bool = True,
                durations: list[int] | None = None) -> tuple[list[int], list[int]]:
        """A training sequence and its labels (``IGNORE`` except speech tokens, advances, speech-end).

        durations: speech tokens per text unit; required by the interleaved layout.
        """
        ctx = self.context(text_ids, prompt_text_ids, prompt_speech)
        n_prompt = len(prompt_speech or [])
        first = len(ctx) - n_prompt if loss_on_prompt else len(ctx)
        labels = [IGNORE] * first + ctx[first:]
        if not self.interleaved:
            body = self.speech_ids(speech) + [self.speech_end_id]
            return ctx + body, labels + body
        if durations is None or len(durations) != len(text_ids) or sum(durations) != len(speech):
            raise ValueError(f"interleaved layout: durations must give one count per text unit "
                             f"({len(text_ids)}) summing to the speech length ({len(speech)})")
        feed, la = self.feed(text_ids), self.lookahead
        ids, pos = ctx + feed[:la], 0
        labels += [IGNORE] * la  # the first 1 + lookahead units are given, not predicted
        for k, d in enumerate(durations):
            ids.append(feed[k + la])
            labels.append(self.advance_id if k else IGNORE)
            chunk = self.speech_ids(speech[pos:pos + d])
            ids += chunk
            labels += chunk
            pos += d
        return ids + [self.speech_end_id], labels + [self.speech_end_id]


def sequence_length(n_text: int, n_speech: int, interleaved: bool, lookahead: int = 0) -> int:
    """Ids in a training sequence without a prompt: ``<bos> text <|speech_start|>``, the units
    again (and the lookahead's ``<eos>`` places) when interleaved, the speech, ``<|speech_end|>``."""
    return n_text * (1 + interleaved) + n_speech + 3 + (lookahead if interleaved else 0)


def make_layout(frontend: Frontend, speech_vocab_size: int, layout: str = "continuation",
                lookahead: int = 0) -> Layout:
    tok = frontend.tokenizer
    advance = tok.vocab.get(ADVANCE, -1)
    if layout == "interleaved" and advance < 0:
        raise LLMCheckpointError(f"the interleaved layout needs {ADVANCE} in the frontend's vocabulary")
    check_lookahead(layout, lookahead)  # again: a config may be edited after loading
    return Layout(len(tok), speech_vocab_size, tok.token_id(PAD), tok.token_id(BOS),
                  tok.token_id(SPEECH_START), tok.token_id(SPEECH_END), tok.word_break_id,
                  advance, layout == "interleaved", tok.token_id(EOS), lookahead)


def hidden_unit_id(frontend: Frontend) -> int:
    """The id (``<unk>``) that stands for every text unit in the unconditional branch of
    classifier-free guidance (``LLMConfig.uncond_prob``, ``SamplingConfig.text_guidance``)."""
    return frontend.tokenizer.token_id(UNK)


def build_hf_model(cfg: LLMConfig, layout: Layout) -> PreTrainedModel:
    """A randomly initialised Llama/Qwen2 causal LM, or a local pretrained one with a resized vocab."""
    ids = dict(pad_token_id=layout.pad_id, bos_token_id=layout.bos_id, eos_token_id=layout.speech_end_id)
    if cfg.init_from:
        path = Path(cfg.init_from)
        if not (path / "config.json").is_file():
            raise LLMCheckpointError(f"init_from {path}: not a Hugging Face model directory")
        model = AutoModelForCausalLM.from_pretrained(path)
        model.resize_token_embeddings(layout.vocab_size)
        model.config.update(ids)
        return model.train()  # from_pretrained returns eval mode: dropout would stay off in training
    common = dict(
        vocab_size=layout.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
        rope_theta=cfg.rope_theta, attention_dropout=cfg.dropout, tie_word_embeddings=cfg.tie_embeddings,
        **ids,
    )
    if cfg.arch == "llama":
        hf_cfg = LlamaConfig(**common)
    elif cfg.arch == "qwen2":
        hf_cfg = Qwen2Config(**common)
    else:
        raise ValueError(f"arch must be 'llama' or 'qwen2', got {cfg.arch!r}")
    return AutoModelForCausalLM.from_config(hf_cfg)


class SpeechLM(torch.nn.Module):
    """The HF causal LM plus what it needs to speak: frontend, vocabulary layout, length ratios."""

    def __init__(self, cfg: LLMConfig, model: PreTrainedModel | None = None,
                 frontend: Frontend | None = None, ratio: LengthRatio | None = None):
        super().__init__()
        self.cfg = cfg
        self.frontend = frontend or Frontend(cfg.frontend)
        self.layout = make_layout(self.frontend, cfg.speech_vocab_size, cfg.layout, cfg.unit_lookahead)
        self.model = model if model is not None else build_hf_model(cfg, self.layout)
        self.ratio = ratio or LengthRatio()
        if self.model.config.vocab_size < self.layout.vocab_size:
            raise LLMCheckpointError(
                f"model vocab {self.model.config.vocab_size} < layout vocab {self.layout.vocab_size}")

    @property
    def max_positions(self) -> int:
        return self.model.config.max_position_embeddings

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # (B, T) ids -> (B, T, V) logits
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # ---- model directory -------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.frontend.save_pretrained(path)
        hf_tok = PreTrainedTokenizerFast(
            tokenizer_object=self.frontend.tokenizer.unified(self.layout.speech_vocab_size),
            bos_token=BOS, eos_token=SPEECH_END, pad_token=PAD, unk_token="<unk>")
        hf_tok.save_pretrained(path)
        cfg = asdict(self.cfg)
        cfg["init_from"] = None  # the weights are here now
        meta = {"llm": cfg, "layout": asdict(self.layout), "length_ratio": asdict(self.ratio),
                "speech_offset": self.layout.speech_offset}
        (path / LAYOUT_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> SpeechLM:
        path = Path(path)
        for name in ("config.json", "model.safetensors", LAYOUT_FILE):
            if not (path / name).is_file():
                raise LLMCheckpointError(f"{path}: missing {name} (not a saved VoxLM LLM directory)")
        try:
            meta = json.loads((path / LAYOUT_FILE).read_text())
            llm = dict(meta["llm"])
            llm["frontend"] = FrontendConfig(**llm["frontend"])
            cfg = LLMConfig(**llm)
            frontend = Frontend.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except Exception as e:  # json, safetensors and transformers each raise their own types
            raise LLMCheckpointError(f"{path}: cannot load ({type(e).__name__}: {e})") from e
        lm = cls(cfg, model, frontend, LengthRatio(**meta.get("length_ratio", {})))
        layout = asdict(lm.layout)  # directories saved before a field existed lack it
        if any(layout.get(k) != v for k, v in meta["layout"].items()):
            raise LLMCheckpointError(f"{path}: layout in {LAYOUT_FILE} does not match the frontend")
        return lm.eval()
