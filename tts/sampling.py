"""Speech-token generation: N candidates for one input (or many) in one batched, KV-cached loop.

Per step: logits over speech tokens and speech-end (and <|advance|>) only -> temperature ->
top-k -> top-p (transformers' logits warpers) -> sample; then repetition-aware
sampling (RAS, CosyVoice 2): if the sampled token already occurs at least
``ras_window * ras_tau`` times in the row's last ``ras_window`` tokens, draw it
again from the full (temperature-scaled) distribution instead of the nucleus.
Length guards bound the speech by the target text's length: speech-end is
masked until ``min_ratio * units`` tokens, and a row is cut at
``max_ratio * units`` tokens (``Generation.hit_max`` says so). In the
interleaved layout (``tts.llm``) the sampled space also holds ``<|advance|>``:
it feeds the row's next text unit.

Classifier-free guidance over the text (``text_guidance`` > 0; the LLM must have been trained with
``llm.uncond_prob`` > 0): every row runs twice, once with its text and once with
every text unit hidden (``<unk>``, same prompt speech), and the step samples from
``c + text_guidance * (c - u)`` of the two branches' log-probabilities, which sharpens
what the text says about each token (Koel-TTS; Sanchez et al. 2023 for text LMs).
It doubles the batch, not the number of steps.

The prompt is prefilled once with batch 1; its KV cache is then repeated for
the N candidates, and rows that finish are dropped from the cache, so N
candidates cost far less than N separate calls. Several inputs (other texts,
other prompts: :func:`generate_many`) share one loop the same way: their contexts
are left-padded to one length, with an attention mask and position ids that keep
every row as it would be alone, and each input samples from its own seeded
generator, so it gets the tokens it would get alone.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Generator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from tts.fast_decode import fast_step
from tts.kv_cache import growing_cache
from tts.llm import SpeechLM, hidden_unit_id


@functools.cache
def _cache_kwarg(model_cls: type) -> str:
    """transformers >= 5 names the KV cache argument ``cache``, older versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "past_key_values"


def _cache_call(model, ids: torch.Tensor, cache=None, mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None):
    """One forward keeping only the last position's logits: (B, T) ids -> (B, V) logits, cache.

    mask (B, past + T) and positions (B, T): for rows left-padded to one length (several
    requests in one batch); None when every row is whole (the model's defaults then).
    """
    kw = _cache_kwarg(type(model))
    if cache is None and isinstance(model, PreTrainedModel):
        cache = growing_cache()  # appends in place (tts.kv_cache); the onnxruntime adapter makes its own
    extra = {} if mask is None else {"attention_mask": mask, "position_ids": positions}
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **({kw: cache} if cache is not None else {}),
                **extra)
    return out.logits[:, -1], getattr(out, kw)


class GenerationError(ValueError):
    """The input cannot be generated from (too long for the model, empty text)."""


@dataclass
class SamplingConfig:
    temperature: float = 0.7  # dev (100 utts, toy LLM): CER from tokens 0.424 at 1.0, 0.355 at 0.7, greedy 0.344
    top_k: int = 25
    top_p: float = 0.8
    ras_window: int = 10  # 0 disables RAS
    ras_tau: float = 0.1  # resample when repeats in the window >= window * tau
    greedy: bool = False  # argmax, no RAS: deterministic
    min_ratio: float | None = None  # speech tokens per target char; None: the model's measured ratio
    max_ratio: float | None = None
    num_candidates: int = 1
    seed: int | None = 0  # None: torch's global RNG
    text_guidance: float = 0.0  # classifier-free guidance scale over the text; 0: the conditional model


@dataclass
class Generation:
    tokens: list[list[int]]  # speech token ids (0..codebook-1), one list per candidate
    hit_max: list[bool]  # the row was cut by the max-length guard
    min_len: int
    max_len: int
    steps: int  # decoding steps run (= longest candidate)


def length_bounds(num_chars: int, min_ratio: float, max_ratio: float) -> tuple[int, int]:
    return max(1, math.floor(min_ratio * num_chars)), max(2, math.ceil(max_ratio * num_chars))


def ras_resample(tokens: torch.Tensor, history: torch.Tensor, full_probs: torch.Tensor,
                 window: int, tau: float, generator: torch.Generator | None,
                 num_speech: int | None = None) -> torch.Tensor:
    """Repetition-aware sampling. tokens (B,), history (B, T), full_probs (B, V) -> (B,).

    num_speech: only tokens below it (speech, not speech-end or advance) are resampled.
    """
    if window <= 0 or history.shape[1] == 0:
        return tokens
    repeats = (history[:, -window:] == tokens[:, None]).sum(dim=1)
    redo = repeats >= window * tau
    if num_speech is not None:
        redo &= tokens < num_speech
    if redo.any():
        fresh = torch.multinomial(full_probs[redo], 1, generator=generator).squeeze(1)
        tokens = tokens.clone()
        tokens[redo] = fresh
    return tokens


def sample_step(logits: torch.Tensor, history: torch.Tensor, cfg: SamplingConfig,
                generator: torch.Generator | None, num_speech: int | None = None) -> torch.Tensor:
    """One step for a batch. logits (B, V) -> ids (B,) in the same (restricted) index space;
    columns from ``num_speech`` on (speech-end, advance) are exempt from RAS."""
    # (B, V)
    if cfg.greedy:
        return logits.argmax(dim=-1)
    scores = logits.float() / max(cfg.temperature, 1e-5)
    full_probs = scores.softmax(dim=-1)
    if cfg.top_k > 0:
        scores = TopKLogitsWarper(top_k=cfg.top_k)(None, scores)
    if 0.0 < cfg.top_p < 1.0:
        scores = TopPLogitsWarper(top_p=cfg.top_p)(None, scores)
    tokens = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)
    return ras_resample(tokens, history, full_probs, cfg.ras_window, cfg.ras_tau, generator, num_speech)


def guided(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """(2B, V) logits, conditional rows then unconditional -> (B, V); ``scale`` 0: no second half."""
    if not scale:
        return logits
    c, u = logits.float().log_softmax(dim=-1).chunk(2)
    return c + scale * (c - u)


def generate(lm: SpeechLM, text_ids: list[int], prompt_text_ids: list[int] | None = None,
             prompt_speech: list[int] | None = None, cfg: SamplingConfig | None = None) -> Generation:
    """Continue ``[text] <speech_start> [prompt speech]`` with N candidate speech-token rows.

    text_ids: the target text's ids (one frontend chunk); the length guards count them.
    """
    return generate_many(lm, [Item(text_ids, prompt_text_ids, prompt_speech)], cfg)[0]


@dataclass
class Item:
    """One input of a batched call: a target text chunk and its prompt; ``seed`` (None: the
    config's) seeds this item's own generator, so its rows sample as they would alone."""

    text_ids: list[int]
    prompt_text_ids: list[int] | None = None
    prompt_speech: list[int] | None = None
    seed: int | None = None


def generate_many(lm: SpeechLM, items: list[Item], cfg: SamplingConfig | None = None) -> list[Generation]:
    """N candidates for each of several inputs (other texts, other prompts) in one batched loop.

    A model that takes no attention mask (the onnxruntime adapter) runs them one by one."""
    if len(items) > 1 and not isinstance(lm.model, PreTrainedModel):
        return [generate_many(lm, [it], cfg)[0] for it in items]
    steps = decode_many(lm, items, cfg)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def decode(lm: SpeechLM, text_ids: list[int], prompt_text_ids: list[int] | None = None,
           prompt_speech: list[int] | None = None,
           cfg: SamplingConfig | None = None) -> Generator[list[tuple[int, int]], None, Generation]:
    """:func:`generate` step by step (streaming): yields each step's new ``(candidate, token)``
    pairs as soon as they are sampled, and returns the :class:`Generation` at the end."""
    gens = yield from decode_many(lm, [Item(text_ids, prompt_text_ids, prompt_speech)], cfg)
    return gens[0]


def _plan(lm: SpeechLM, item: Item, cfg: SamplingConfig) -> tuple[list[int], int, int]:
    """An item's prefill ids and length bounds, or a GenerationError."""
    if not item.text_ids:
        raise GenerationError("empty target text")
    ctx = lm.layout.start(item.text_ids, item.prompt_text_ids, item.prompt_speech)
    min_len, max_len = length_bounds(
        len(item.text_ids), cfg.min_ratio if cfg.min_ratio is not None else lm.ratio.min_ratio,
        cfg.max_ratio if cfg.max_ratio is not None else lm.ratio.max_ratio)
    units_left = len(item.text_ids) - 1 if lm.layout.interleaved else 0  # each feeds one position too
    max_len = min(max_len, lm.max_positions - len(ctx) - units_left)
    if max_len < min_len:
        raise GenerationError(
            f"input too long: {len(ctx)} context ids leave {max_len} of {lm.max_positions} positions "
            f"for >= {min_len} speech tokens; split the text or shorten the prompt")
    return ctx, min_len, max_len


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of ids -> (B, T) left-padded ids and their (B, T) mask; no mask when none is padded."""
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long).reshape(len(rows), width)
    if all(len(r) == width for r in rows):
        return ids, None
    return ids, torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])


@torch.inference_mode()
def decode_many(lm: SpeechLM, items: list[Item],
                cfg: SamplingConfig | None = None) -> Generator[list[tuple[int, int]], None, list[Generation]]:
    """:func:`generate_many` step by step: yields each step's new ``(row, token)`` pairs, row
    ``i * N + j`` being item ``i``'s candidate ``j``, and returns one :class:`Generation` per item.

    Contexts of other lengths are left-padded (an attention mask and position ids keep each
    row as it would be alone). The interleaved layout (``tts.llm``) feeds the next text unit
    wherever a row samples ``<|advance|>`` (forced after ``ratio.max_unit`` tokens of one
    unit), and allows speech-end only at the last unit; a step then yields nothing for that row.
    """
    cfg = cfg or SamplingConfig()
    layout, model, g = lm.layout, lm.model, cfg.text_guidance
    if not items:
        return []
    if g < 0 or (g and lm.cfg.uncond_prob <= 0):
        raise GenerationError(f"text_guidance {g}: needs a scale >= 0 and an LLM trained with llm.uncond_prob > 0 "
                              f"(this one: {lm.cfg.uncond_prob}), which learns the text-free branch")
    plans = [_plan(lm, it, cfg) for it in items]
    prefill = [ctx for ctx, _, _ in plans]
    if g:  # the unconditional branch: the same layout with every text unit hidden
        hide = hidden_unit_id(lm.frontend)
        prefill += [layout.start([hide] * len(it.text_ids), [hide] * len(it.prompt_text_ids or []),
                                 it.prompt_speech) for it in items]
    n, offset, end = cfg.num_candidates, layout.speech_offset, layout.speech_vocab_size
    adv = end + 1  # local index of <|advance|> (interleaved layout only)
    # Sampling runs over speech tokens 0..K-1, speech-end at local index K (``end``), advance at K+1.
    allowed = [*range(offset, offset + end), layout.speech_end_id]
    if layout.interleaved:
        allowed.append(layout.advance_id)
    allowed = torch.tensor(allowed)
    generators = [torch.Generator().manual_seed(s) if s is not None else None
                  for s in (cfg.seed if it.seed is None else it.seed for it in items)]
    # per row (item-major: item i's N candidates are rows i*N .. i*N+N-1)
    item = torch.arange(len(items)).repeat_interleave(n)
    min_len = torch.tensor([p[1] for p in plans])[item]
    max_len = torch.tensor([p[2] for p in plans])[item]
    last_unit = torch.tensor([len(it.text_ids) - 1 for it in items])[item]
    # each row's unit places (the units, then the lookahead's <eos>), padded on the right
    units = _left_pad([layout.feed(it.text_ids)[::-1] for it in items], 0)[0].flip(1)[item]
    history = _left_pad([it.prompt_speech or [] for it in items], -1)[0][item]  # -1: never a repeat

    ids, mask = _left_pad(prefill, layout.pad_id)
    positions = None if mask is None else (mask.cumsum(1) - 1).clamp(min=0)
    last, cache = _cache_call(model, ids, mask=mask, positions=positions)
    fast = fast_step(model)  # the steps after the prefill without transformers' per-call overhead
    if n > 1:
        cache.batch_repeat_interleave(n)  # with guidance: conditional rows, then unconditional ones
    if mask is not None:
        mask, positions = mask.repeat_interleave(n, 0), positions[:, -1].repeat_interleave(n)
    logits = guided(last[:, allowed], g).repeat_interleave(n, 0)
    alive = torch.arange(len(items) * n)  # the row of each cache row
    unit = torch.zeros(len(alive), dtype=torch.long)  # the text unit each row is speaking (interleaved)
    in_unit = torch.zeros(len(alive), dtype=torch.long)  # speech tokens since that unit began
    length = torch.zeros(len(alive), dtype=torch.long)  # speech tokens so far
    rows: list[list[int]] = [[] for _ in alive]
    hit_max, ended = [False] * len(rows), [0] * len(rows)
    step = 0
    while True:
        logits = logits.clone()
        logits[length < min_len, end] = float("-inf")
        if layout.interleaved:
            at_last = unit == last_unit
            logits[~at_last, end] = float("-inf")
            logits[at_last, adv] = float("-inf")
            force = in_unit >= lm.ratio.max_unit  # a unit that runs on: advance (or end) now
            logits[force, :end] = float("-inf")
            logits[force & at_last, end] = 0.0
        nxt = torch.empty(len(alive), dtype=torch.long)
        for i in item.unique().tolist():  # each item from its own generator
            sel = (item == i).nonzero().squeeze(1)
            nxt[sel] = sample_step(logits[sel], history[sel], cfg, generators[i], end)
        step += 1
        speech = nxt < end
        new = list(zip(alive[speech].tolist(), nxt[speech].tolist(), strict=True))
        for r, tok in new:
            rows[r].append(tok)
        if new:
            yield new
        length = length + speech
        running = nxt != end
        cut = running & (length >= max_len)  # guard: rows still running at max_len are cut
        for r in alive[cut].tolist():
            hit_max[r] = True
        keep = running & ~cut
        for r in alive[~keep].tolist():
            ended[r] = step
        if not keep.all():
            if not keep.any():
                break
            idx = keep.nonzero().squeeze(1)
            both = torch.cat([idx, idx + len(alive)]) if g else idx
            cache.batch_select_indices(both)
            if mask is not None:
                mask, positions = mask[both], positions[both]
            alive, nxt, history, speech, unit, in_unit, length, item, min_len, max_len, last_unit, units = (
                x[idx] for x in (alive, nxt, history, speech, unit, in_unit, length, item, min_len, max_len,
                                 last_unit, units))
        history = torch.cat([history, nxt[:, None]], dim=1)
        in_unit = torch.where(speech, in_unit + 1, 0)
        unit = unit + ~speech
        place = torch.minimum(unit, last_unit)[:, None] + layout.lookahead  # the unit place to feed
        fed = torch.where(speech, nxt + offset, units.gather(1, place)[:, 0])
        if g:  # the text-free branch hides the units, not the lookahead's <eos>
            hidden = torch.where(place[:, 0] <= last_unit, hide, layout.eos_id)
            fed = torch.cat([fed, torch.where(speech, nxt + offset, hidden)])
        if mask is not None:
            mask = torch.cat([mask, torch.ones(len(mask), 1, dtype=mask.dtype)], dim=1)
            positions = positions + 1
        if fast is not None:
            last = fast(fed[:, None], cache, mask, None if mask is None else positions[:, None])
        else:
            last, cache = _cache_call(model, fed[:, None], cache, mask, None if mask is None else positions[:, None])
        logits = guided(last[:, allowed], g)
    return [Generation(rows[i * n:(i + 1) * n], hit_max[i * n:(i + 1) * n], p[1], p[2],
                       max(ended[i * n:(i + 1) * n])) for i, p in enumerate(plans)]
