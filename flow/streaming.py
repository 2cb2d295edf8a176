"""Streaming flow matching: tokens arrive a few at a time, mel leaves chunk by chunk.

The layout is the one :func:`flow.backbone.stream_blocks` names: the prompt is one
block, the target follows in chunks (a first chunk that may be shorter, then fixed
ones), and a frame sees its own block and every earlier one. So a finished chunk
never changes, and solving chunk ``k`` needs only chunk ``k``'s frames plus the keys
and values the earlier blocks left at *the same* field evaluation (ODE step). Those
are kept, one :class:`~flow.backbone.KVSlot` per block per evaluation, so each chunk
is solved once, over its own frames only: linear in the length, not quadratic.

The prompt's share of that cache does not depend on the target. :func:`prompt_context`
solves it once (per speaker and solver options) and every stream starts from a copy.
Initial noise is drawn so that a frame's noise never depends on how many frames
follow (the target length is unknown while streaming): the prompt's from a fixed
seed, the target's from ``seed`` in fixed blocks of frames.

The pieces of a stream concatenate to ``FlowModel.generate(..., chunk=, first_chunk=)``
with the same seed, up to float rounding.

**Lookahead** (``lookahead=L`` frames): a chunk is solved together with the next ``L``
frames (their tokens must have arrived), which it sees with full attention, and only
the chunk is kept: its cache entries and its mel. The next chunk solves those ``L``
frames again from the same noise, now as its own. A chunk's last frames thus hear a
little of what follows (without it, chunk ends cost intelligibility: egs/synth_en/RESULTS.md),
for ``L`` frames of latency and ``(chunk + L) / chunk`` the compute. The token encoder
sees the same extended block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from flow.backbone import KVSlot, block_mask, stream_blocks

if TYPE_CHECKING:
    from flow.model import FlowModel

PROMPT_NOISE_SEED = 20_011  # the prompt's noise is the same for every seed: its cache is reusable
NOISE_BLOCK = 16  # frames per draw


class NoiseSource:
    """Standard normal noise, frame by frame: ``take(n)`` is a prefix of ``take(m)`` for n < m."""

    def __init__(self, seed: int, n_mels: int):
        self.gen = torch.Generator().manual_seed(int(seed))
        self.n_mels, self.blocks, self.frames = n_mels, [], 0

    def take(self, frames: int) -> torch.Tensor:
        """-> (n_mels, frames)."""
        while self.frames < frames:
            self.blocks.append(torch.randn(NOISE_BLOCK, self.n_mels, generator=self.gen))
            self.frames += NOISE_BLOCK
        if not self.blocks:
            return torch.zeros(self.n_mels, 0)
        return torch.cat(self.blocks)[:frames].T


def initial_noise(prompt_frames: int, target_frames: int, seed: int, n_mels: int) -> torch.Tensor:
    """(1, n_mels, prompt + target) starting point of the ODE."""
    p = NoiseSource(PROMPT_NOISE_SEED, n_mels).take(prompt_frames)
    return torch.cat([p, NoiseSource(seed, n_mels).take(target_frames)], dim=1)[None]


@dataclass
class FlowContext:
    """The prompt block solved once: reuse it for every stream of the same speaker and options."""

    prompt_frames: int
    prompt_ids: torch.Tensor  # (1, Tp) the prompt's frame-rate token ids (the token encoder's context)
    spk: torch.Tensor | None  # the speaker vector the model conditions on
    options: tuple  # (steps, solver, schedule, guidance, prior start, noise scale)
    kv: list[list[KVSlot]]  # per field evaluation, one slot per backbone block


@torch.no_grad()
def prompt_context(model: FlowModel, prompt_tokens=None, prompt_mel=None, spk=None, *, steps: int | None = None,
                   solver: str | None = None, schedule: str | None = None,
                   guidance: float | None = None, prior_start: float | None = None,
                   noise_scale: float | None = None) -> FlowContext:
    """Solve the prompt block; -> a context that :class:`FlowStream` starts from (never modified)."""
    options = model._options(steps, solver, schedule, guidance, prior_start, noise_scale)
    ids, cond, spk_vec, tp = model.prepare_prompt(prompt_tokens, prompt_mel, spk)
    evals = options[0] * (2 if options[1] == "midpoint" else 1)
    kv = [[KVSlot() for _ in model.backbone.blocks] for _ in range(evals)]
    if tp:
        x0 = initial_noise(tp, 0, 0, model.n_mels).to(cond.device)
        model.solve_block(model.features(ids, spk=spk_vec), cond, spk_vec, x0, None, options, kv=iter(kv))
    return FlowContext(tp, ids, spk_vec, options, kv)


class FlowStream:
    """Push speech tokens as they come; get each chunk's mel (C, frames) once it is final.

    ``chunk``/``first_chunk``/``lookahead`` are in mel frames. ``finish()`` solves the last,
    shorter chunk.
    """

    def __init__(self, model: FlowModel, context: FlowContext, *, chunk: int, first_chunk: int | None = None,
                 seed: int = 0, lookahead: int = 0):
        if chunk < 1 or (first_chunk is not None and first_chunk < 1):
            raise ValueError(f"chunk sizes must be positive, got chunk={chunk}, first_chunk={first_chunk}")
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0 frames, got {lookahead}")
        self.model, self.ctx, self.chunk, self.first_chunk = model, context, chunk, first_chunk
        self.lookahead = lookahead
        self.kv = [[s.copy() for s in slots] for slots in context.kv]  # the context stays as it is
        self.noise = NoiseSource(seed, model.n_mels)
        self.tokens: list[int] = []
        self.done, self.next_end = 0, first_chunk or chunk  # target frames solved; end of the next chunk

    @property
    def frames(self) -> int:
        return len(self.tokens) * self.model.config.upsample

    @torch.no_grad()
    def push(self, tokens: list[int]) -> list[torch.Tensor]:
        if tokens:
            self.tokens += self.model._check_tokens(torch.tensor(tokens), "tokens").tolist()
        self.model.check_total_frames(self.ctx.prompt_frames + self.frames)
        out = []
        while self.frames >= self.next_end + self.lookahead:
            out.append(self._solve(self.next_end, self.next_end + self.lookahead))
            self.next_end += self.chunk
        return out

    @torch.no_grad()
    def finish(self) -> list[torch.Tensor]:
        out = []
        while self.next_end < self.frames:  # chunks whose lookahead was cut short by the end
            out.append(self._solve(self.next_end, self.frames))
            self.next_end += self.chunk
        return out + ([self._solve(self.frames, self.frames)] if self.frames > self.done else [])

    def _solve(self, end: int, ahead: int) -> torch.Tensor:
        """Solve target frames [done, ahead), keep [done, end): -> their mel (C, end - done)."""
        m, start = self.model, self.done
        dev = m.mel_mean.device
        feats = self._features(start, ahead)
        cond = torch.zeros(1, m.n_mels, ahead - start, device=dev)
        x0 = self.noise.take(ahead)[None, :, start:].to(dev)
        x = m.solve_block(feats, cond, self.ctx.spk, x0, None, self.ctx.options, kv=iter(self.kv),
                          offset=self.ctx.prompt_frames + start)
        if ahead > end:  # forget the lookahead frames: the next chunk solves them as its own
            for slots in self.kv:
                for slot in slots:
                    slot.keep_first(end - start)
        self.done = end
        return m.denormalize(x[0, :, :end - start])

    def _features(self, start: int, end: int) -> tuple:
        """(token features (1, end - start, D), prior mu (1, C, end - start) or None) of target frames [start, end).

        Without a token encoder they are the embeddings of those frames' ids; with one, the
        encoder reruns over the prompt and target so far under the blocks' mask (a block
        sees itself and the past), so earlier frames' features never change. Its cost is
        one encoder pass per chunk, small beside the chunk's ODE evaluations.
        """
        m, tp = self.model, self.ctx.prompt_frames
        dev = m.mel_mean.device
        ids = m.frame_ids(torch.tensor(self.tokens, device=dev)[None], self.frames)[:, :end]
        if m.encoder is None:
            return m.features(ids[:, start:])
        ids = torch.cat([self.ctx.prompt_ids.to(dev), ids], dim=1)
        ends = stream_blocks(tp, tp + start, self.chunk, self.first_chunk) if start else ([tp] if tp else [])
        mask = block_mask(ends + [tp + end], dev)[None, None]  # the blocks so far, then [start, end)
        tok, mu = m.features(ids, mask, self.ctx.spk)
        return tok[:, tp + start:], mu[..., tp + start:]

