"""Speech tokens -> mel by conditional flow matching, with an in-context prompt.

Conditioning (CosyVoice-style): token embeddings repeated from the token rate to
the mel frame rate; with ``encoder_layers > 0`` a small transformer over them
predicts a mel prior ``mu`` (Matcha-TTS: an L2 regression to the target mel, the
part of the mapping that is learned fastest), projected back and added to the
embeddings; the prompt's mel as an in-context condition (its frames are visible,
the target region is zero and masked); a speaker vector added to the time
conditioning. The prompt's tokens and mel come first in the sequence, the target
follows, and only the target is generated and returned. The encoder uses the
same attention mask as the estimator (full, or the streaming chunk mask).

    model = FlowModel.from_pretrained("exp/flow/model")
    mel = model.generate(tokens, prompt_tokens, prompt_mel, steps=10)   # (n_mels, 2 * len(tokens))
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from flow.backbone import (
    Backbone,
    KVSlot,
    attention_mask,
    block_mask,
    stream_blocks,
    timestep_embedding,
)
from flow.cfm import cfm_loss, check_solver_options, masked_mse, prior_point, solve
from flow.config import FlowConfig
from flow.streaming import FlowStream, initial_noise, prompt_context

if TYPE_CHECKING:
    from flow.phonetic import PhoneticLoss

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


class FlowInputError(ValueError):
    """Tokens, prompt or speaker embedding that the flow model cannot take; the message says why."""


class FlowCheckpointError(RuntimeError):
    """A model directory is missing, incomplete or does not match its config."""


class PromptPooling(nn.Module):
    """(B, C, T) prompt mel + (B, T) prompt mask -> (B, D): a learned attention-pooled speaker vector."""

    def __init__(self, n_mels: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(n_mels, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.score = nn.Linear(dim, 1)

    def forward(self, mel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # mel: (B, C, T), mask: (B, T) bool -> (B, D); zeros where a row has no prompt frame
        h = self.proj(mel.transpose(1, 2))  # (B, T, D)
        w = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        w = torch.nan_to_num(torch.softmax(w.float(), dim=-1), nan=0.0).to(h.dtype)
        return torch.einsum("bt,btd->bd", w, h)


class FlowModel(nn.Module):
    def __init__(self, config: FlowConfig | None = None):
        super().__init__()
        self.config = config = config or FlowConfig()
        config.validate()
        n_mels, dim = config.mel_config.n_mels, config.dim
        self.n_mels = n_mels
        self.token_emb = nn.Embedding(config.vocab_size, dim)
        self.time_mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        if config.speaker == "prompt":
            self.speaker = PromptPooling(n_mels, dim)
        elif config.speaker == "external":
            self.speaker = nn.Linear(config.speaker_dim, dim)
        self.backbone = Backbone(2 * n_mels, n_mels, dim, config.layers, config.heads,
                                 config.mlp_ratio, max_positions=config.max_frames,
                                 conv_kernel=config.conv_kernel)
        self.encoder = self.mu_proj = self.prior_spk = None
        if config.encoder_layers:
            self.encoder = Backbone(dim, n_mels, dim, config.encoder_layers, config.heads, config.mlp_ratio,
                                    max_positions=config.max_frames, conditioned=False,
                                    conv_kernel=config.conv_kernel)
            self.mu_proj = nn.Linear(n_mels, dim)
        if config.prior_speaker:
            # zero-initialised: a warm start from a model without it begins exactly where that one was
            self.prior_spk = nn.Linear(dim, dim)
            nn.init.zeros_(self.prior_spk.weight)
            nn.init.zeros_(self.prior_spk.bias)
        # per-bin log-mel statistics; the trainer sets them from the training data
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    # ---- features ----------------------------------------------------------------------------
    def set_mel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std.clamp(min=1e-3))

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mel_mean.view(-1, 1)) / self.mel_std.view(-1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mel_std.view(-1, 1) + self.mel_mean.view(-1, 1)

    def frame_ids(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, N) ids -> (B, frames) ids: each repeated to the frame rate, then cut or edge-padded."""
        ids = tokens.repeat_interleave(self.config.upsample, dim=1)[:, :frames]
        return torch.cat([ids, ids[:, -1:].expand(-1, frames - ids.shape[1])], dim=1)

    def features(self, ids: torch.Tensor, mask: torch.Tensor | None = None, spk: torch.Tensor | None = None):
        """(B, T) frame ids [+ (B, 1, T, T) mask, (B, D) speaker vector] -> (token features (B, T, D),
        prior mu (B, C, T) or None). ``spk`` reaches the encoder only with ``prior_speaker``."""
        h = self.token_emb(ids)
        if self.encoder is None:
            return h, None
        x = h if self.prior_spk is None or spk is None else h + self.prior_spk(spk).unsqueeze(1)
        mu = self.encoder(x.transpose(1, 2), None, mask)  # normalised-mel space
        return h + self.mu_proj(mu.transpose(1, 2)), mu

    def token_features(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, N) ids -> (B, frames, D) features under full attention."""
        return self.features(self.frame_ids(tokens, frames))[0]

    def speaker_vector(self, cond: torch.Tensor, prompt_mask: torch.Tensor,
                       spk: torch.Tensor | None) -> torch.Tensor | None:
        if self.config.speaker == "prompt":
            return self.speaker(cond, prompt_mask)
        if self.config.speaker == "external":
            if spk is None:
                raise FlowInputError("this model needs a speaker embedding (speaker='external')")
            return self.speaker(F.normalize(spk.float(), dim=-1))
        return None

    def estimator(self, tok: torch.Tensor, cond: torch.Tensor, spk: torch.Tensor | None,
                  mask: torch.Tensor | None, kv: Iterator[list[KVSlot]] | None = None, offset: int = 0):
        """Bind the conditions: -> ``(x_t, t, drop) -> v`` for :mod:`flow.cfm`.

        Streaming (:mod:`flow.streaming`): ``kv`` yields the cache slots of each successive
        evaluation, and ``offset`` is the position of the first frame.
        """
        def field(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
            # x: (B', C, T) with B' a multiple of the condition batch B (CFG doubles it)
            r = x.shape[0] // cond.shape[0]
            keep = (~drop).to(x.dtype)
            c_mel = cond.repeat(r, 1, 1) * keep.view(-1, 1, 1)
            c_tok = tok.repeat(r, 1, 1) * keep.view(-1, 1, 1)
            c = self.time_mlp(timestep_embedding(t, 256))
            if spk is not None:
                c = c + spk.repeat(r, 1) * keep.view(-1, 1)
            m = mask.repeat(r, 1, 1, 1) if mask is not None else None
            slots = next(kv) if kv is not None else None
            return self.backbone(torch.cat([x, c_mel], dim=1), c, m, extra=c_tok, kv=slots, offset=offset)
        return field

    # ---- training ----------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, mel: torch.Tensor, mel_lens: torch.Tensor,
                spk: torch.Tensor | None = None, generator: torch.Generator | None = None,
                phonetic: PhoneticLoss | None = None) -> torch.Tensor:
        # tokens: (B, N), mel: (B, C, T) log-mel, mel_lens: (B,) -> scalar OT-CFM loss
        # (+ prior_weight x the prior's L2, + phonetic.weight x flow.phonetic's KL when given)
        cfg, (b, _, t) = self.config, mel.shape
        dev = mel.device
        frames = torch.arange(t, device=dev).view(1, -1)
        valid = frames < mel_lens.view(-1, 1)
        x1 = self.normalize(mel) * valid.unsqueeze(1)
        ratio = cfg.prompt_min + (cfg.prompt_max - cfg.prompt_min) * torch.rand(b, device=dev, generator=generator)
        use = torch.rand(b, device=dev, generator=generator) < cfg.prompt_prob
        prompt_lens = (ratio * mel_lens * use).long()
        prompt = frames < prompt_lens.view(-1, 1)
        cond = x1 * prompt.unsqueeze(1)
        chunk = None
        if torch.rand(1, generator=generator).item() < cfg.chunk_prob:
            chunk = cfg.chunk_sizes[int(torch.randint(len(cfg.chunk_sizes), (1,), generator=generator))]
        mask = attention_mask(mel_lens, t, chunk)
        spk_vec = self.speaker_vector(cond, prompt, spk)
        tok, mu = self.features(self.frame_ids(tokens, t), mask, spk_vec)
        field = self.estimator(tok, cond, spk_vec, mask)
        region = valid & ~prompt
        if phonetic is None:
            loss = cfm_loss(field, x1, region, cfg.cfm, generator)
        else:  # rows late enough on the path, with their conditions kept
            loss, x1_hat, times, drop = cfm_loss(field, x1, region, cfg.cfm, generator, estimate=True)
            rows = (times >= phonetic.min_t) & ~drop  # (B,): only these go through the reader
            loss = loss + phonetic.weight * phonetic(x1_hat[rows], x1[rows], region[rows], mel_lens[rows])
        return loss if mu is None else loss + cfg.prior_weight * masked_mse(mu, x1, valid)

    # ---- inference ---------------------------------------------------------------------------
    def _check_tokens(self, tokens: torch.Tensor, what: str) -> torch.Tensor:
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2 and tokens.shape[0] == 1:
            tokens = tokens[0]
        if tokens.dim() != 1 or tokens.dtype.is_floating_point:
            raise FlowInputError(f"{what} must be a 1-D sequence of integer ids, got shape {tuple(tokens.shape)}")
        if tokens.numel() == 0:
            raise FlowInputError(f"{what} are empty: nothing to synthesize")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise FlowInputError(f"{what} ids must be in [0, {self.config.vocab_size}), got [{lo}, {hi}]")
        return tokens.long().to(self.mel_mean.device)

    def check_total_frames(self, total: int) -> None:
        if total > self.config.max_frames:
            raise FlowInputError(f"prompt + target is {total} frames, over max_frames={self.config.max_frames}")

    def prepare(self, tokens, prompt_tokens=None, prompt_mel=None, spk=None):
        """Check inputs; -> (frame ids (1, T), cond (1, C, T), speaker vector, prompt frames)."""
        tokens = self._check_tokens(tokens, "tokens")
        ids, cond, spk_vec, tp = self.prepare_prompt(prompt_tokens, prompt_mel, spk)
        target = tokens.numel() * self.config.upsample
        self.check_total_frames(tp + target)
        return torch.cat([ids, self.frame_ids(tokens[None], target)], 1), F.pad(cond, (0, target)), spk_vec, tp

    def prepare_prompt(self, prompt_tokens=None, prompt_mel=None, spk=None):
        """Check the prompt; -> (frame ids (1, Tp), cond (1, C, Tp), speaker vector, Tp)."""
        cfg = self.config
        if (prompt_tokens is None) != (prompt_mel is None):
            raise FlowInputError("give both prompt_tokens and prompt_mel, or neither")
        dev = self.mel_mean.device
        if prompt_mel is None:
            tp, p_mel, ids = 0, torch.zeros(self.n_mels, 0, device=dev), torch.zeros(1, 0, dtype=torch.long, device=dev)
        else:
            prompt_tokens = self._check_tokens(prompt_tokens, "prompt_tokens")
            p_mel = torch.as_tensor(prompt_mel, dtype=torch.float32, device=dev)
            if p_mel.dim() != 2 or p_mel.shape[0] != self.n_mels or p_mel.shape[1] == 0:
                raise FlowInputError(f"prompt_mel must be (n_mels={self.n_mels}, frames>0), got {tuple(p_mel.shape)}")
            if not torch.isfinite(p_mel).all():
                raise FlowInputError("prompt_mel contains NaN or infinite values")
            tp = p_mel.shape[1]
            if tp > cfg.max_prompt_frames:
                raise FlowInputError(f"prompt is {tp} frames, over the limit of {cfg.max_prompt_frames} "
                                     f"({cfg.max_prompt_frames / cfg.mel_config.frame_rate:.1f} s): cut it")
            if abs(prompt_tokens.numel() * cfg.upsample - tp) > 2 * cfg.upsample:
                raise FlowInputError(f"prompt_tokens ({prompt_tokens.numel()}) do not match prompt_mel "
                                     f"({tp} frames at {cfg.upsample} frames per token)")
            ids = self.frame_ids(prompt_tokens[None], tp)
        cond = self.normalize(p_mel).unsqueeze(0)
        prompt = torch.ones(1, tp, dtype=torch.bool, device=dev)
        if spk is not None:
            spk = torch.as_tensor(spk, dtype=torch.float32, device=dev).view(1, -1)
            if cfg.speaker == "external" and spk.shape[1] != cfg.speaker_dim:
                raise FlowInputError(f"speaker embedding has size {spk.shape[1]}, expected {cfg.speaker_dim}")
        return ids, cond, self.speaker_vector(cond, prompt, spk), tp

    def _run(self, ids, cond, spk_vec, noise, mask, *options) -> torch.Tensor:
        return self.solve_block(self.features(ids, mask, spk_vec), cond, spk_vec, noise, mask, options)

    def solve_block(self, feats: tuple, cond, spk_vec, noise, mask, options: tuple, kv=None, offset: int = 0):
        """Solve the ODE over one block of frames: offline (the whole sequence) or a streaming chunk.

        feats: (token features (B, T, D), prior mu (B, C, T) or None) from :meth:`features`;
        cond, noise: (B, C, T); options: :meth:`_options`' tuple; kv/offset: see :meth:`estimator`.
        """
        (tok, mu), (steps, solver, schedule, guidance, start, scale), cfm = feats, options, self.config.cfm
        field = self.estimator(tok, cond, spk_vec, mask, kv=kv, offset=offset)
        return solve(field, prior_point(scale * noise, mu, start, cfm.sigma_min), steps, solver, schedule,
                     guidance, sway=cfm.sway, start=start)

    def _options(self, steps, solver, schedule, guidance, start=None, noise_scale=None):
        """-> (steps, solver, schedule, guidance, prior start, noise scale): the call's, else the config's."""
        c = self.config.cfm
        steps, solver = steps or c.steps, solver or c.solver
        schedule, guidance = schedule or c.schedule, c.guidance if guidance is None else guidance
        start = c.prior_start if start is None else float(start)
        scale = c.noise_scale if noise_scale is None else float(noise_scale)
        check_solver_options(steps, solver, schedule, start, scale)
        c.check_start(start)
        return steps, solver, schedule, float(guidance), start, scale

    @torch.no_grad()
    def generate(self, tokens, prompt_tokens=None, prompt_mel=None, spk=None, *, steps: int | None = None,
                 solver: str | None = None, schedule: str | None = None, guidance: float | None = None,
                 chunk: int | None = None, first_chunk: int | None = None, lookahead: int = 0,
                 seed: int = 0, prior_start: float | None = None, noise_scale: float | None = None) -> torch.Tensor:
        """Tokens (N,) [+ prompt tokens (Np,) and log-mel (C, Tp)] -> target log-mel (C, upsample * N).

        ``chunk``: streaming-mask inference (None = offline, full attention): the prompt is
        one block, the target is cut into chunks of ``chunk`` frames after a first one of
        ``first_chunk`` (default ``chunk``), and a frame sees its own block and the past.
        What :meth:`stream` yields piece by piece. Deterministic for a given ``seed``.
        ``lookahead``: frames of the next chunk each chunk also sees (:mod:`flow.streaming`);
        then this runs the stream itself. ``prior_start``, ``noise_scale``: see :mod:`flow.cfm`
        (default: the config's ``cfm`` values).
        """
        if chunk and lookahead:
            return torch.cat(list(self.stream(tokens, prompt_tokens, prompt_mel, spk, chunk=chunk,
                                              first_chunk=first_chunk, lookahead=lookahead, steps=steps,
                                              solver=solver, schedule=schedule, guidance=guidance, seed=seed,
                                              prior_start=prior_start, noise_scale=noise_scale)), dim=1)
        opts = self._options(steps, solver, schedule, guidance, prior_start, noise_scale)
        ids, cond, spk_vec, tp = self.prepare(tokens, prompt_tokens, prompt_mel, spk)
        total = cond.shape[-1]
        noise = initial_noise(tp, total - tp, seed, self.n_mels).to(cond.device)
        mask = None
        if chunk:
            mask = block_mask(stream_blocks(tp, total, chunk, first_chunk), cond.device)[None, None]
        x = self._run(ids, cond, spk_vec, noise, mask, *opts)
        return self.denormalize(x[0, :, tp:])

    @torch.no_grad()
    def stream(self, tokens, prompt_tokens=None, prompt_mel=None, spk=None, *, chunk: int = 50,
               first_chunk: int | None = None, lookahead: int = 0, steps: int | None = None,
               solver: str | None = None, schedule: str | None = None, guidance: float | None = None,
               seed: int = 0, prior_start: float | None = None,
               noise_scale: float | None = None) -> Iterator[torch.Tensor]:
        """Yield the target log-mel chunk by chunk, (C, frames) each, as soon as each chunk is final.

        The pieces concatenate to ``generate(..., chunk=chunk, first_chunk=first_chunk,
        lookahead=lookahead)`` up to float rounding. Each chunk attends to the cached
        keys/values of the blocks before it (:mod:`flow.streaming`), so the cost is linear in
        the length. For tokens that arrive
        one by one, use :class:`flow.streaming.FlowStream` directly.
        """
        tokens = self._check_tokens(tokens, "tokens")
        ctx = prompt_context(self, prompt_tokens, prompt_mel, spk, steps=steps, solver=solver,
                             schedule=schedule, guidance=guidance, prior_start=prior_start,
                             noise_scale=noise_scale)
        stream = FlowStream(self, ctx, chunk=chunk, first_chunk=first_chunk, seed=seed, lookahead=lookahead)
        yield from stream.push(tokens.tolist())
        yield from stream.finish()

    # ---- persistence -------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt", "model": "voxlm-flow"})
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu") -> FlowModel:
        path = Path(path)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise FlowCheckpointError(f"{path}: missing {name} (not a flow model directory)")
        try:
            config = FlowConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
            state = load_file(str(path / WEIGHTS_NAME), device=map_location)
        except Exception as err:
            raise FlowCheckpointError(f"{path}: cannot read the model: {err}") from err
        model = cls(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise FlowCheckpointError(f"{path}: weights do not match config.json: {err}") from err
        return model.eval()
