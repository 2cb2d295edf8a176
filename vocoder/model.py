"""Vocos-style generator: ConvNeXt backbone over mel frames + iSTFT head.

mel (B, n_mels, T) at the shared 50 frames/s -> waveform (B, T * hop), exactly.

Two departures from plain Vocos, both aimed at phase, the part a small CPU-trained
Vocos gets wrong (see FIELD_NOTES.md):

* the head runs at a finer STFT grid than the mel's (``up`` sub-frames per mel frame)
  after a learned frame upsampling and a few ConvNeXt blocks there: the defaults are
  n_fft 320 / hop 80 (``up`` = 4); the toy recipe's n_fft 640 / hop 160 (``up`` = 2,
  25 Hz bins that resolve a low voice's harmonics) measured better;
* ``phase_mode="cumsum"``: the head predicts each bin's phase *advance* per hop
  (instantaneous frequency, around the bin-centre advance) and a local offset; the
  phase is the running sum of the advances plus the offset. A translation-
  equivariant network given a steady vowel outputs the same numbers every frame;
  with frame-local phase that forces frame-periodic (wrong) phase, with a running
  sum it yields a coherent sinusoid. ``phase_mode="local"`` is the Vocos/APNet
  frame-local phase (atan2 of two outputs), kept for comparison.

The log-magnitude is predicted as a correction on top of the mel pseudo-inverse
(FreeV's prior). ``amp_prior=False`` predicts it from scratch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tts.mel import MelConfig
from vocoder.source import harmonic_excitation, source_phase, upsample_frames
from vocoder.spectral import HeadSTFT, bin_advance, mel_pseudo_inverse


class VocoderInputError(ValueError):
    """A mel given to a vocoder has the wrong shape, size or values."""


class VocoderCheckpointError(RuntimeError):
    """A vocoder model directory is missing, incomplete or corrupt."""


@dataclass
class VocoderConfig:
    mel: dict = field(default_factory=lambda: MelConfig().to_dict())
    dim: int = 256
    intermediate_dim: int = 768
    num_layers: int = 8
    kernel_size: int = 7
    up: int = 4  # head sub-frames per mel frame: head hop = mel hop / up
    head_n_fft: int = 320
    sub_dim: int = 128
    sub_layers: int = 2
    amp_prior: bool = True
    phase_mode: str = "local"  # "local" (per frame) or "cumsum" (running per-bin phase advance)
    source: str = "none"  # "harmonic": F0-driven oscillator phase (source.py); "none"
    f0_min: float = 60.0
    f0_max: float = 400.0

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig(**self.mel)

    @property
    def head_hop(self) -> int:
        return self.mel_config.hop_length // self.up

    def validate(self) -> None:
        if self.mel_config.hop_length % self.up:
            raise ValueError(f"mel hop {self.mel_config.hop_length} is not divisible by up={self.up}")
        if self.phase_mode not in ("cumsum", "local"):
            raise ValueError(f"phase_mode must be 'cumsum' or 'local', got {self.phase_mode!r}")
        if self.source not in ("harmonic", "none"):
            raise ValueError(f"source must be 'harmonic' or 'none', got {self.source!r}")


@dataclass
class VocoderOutput:
    wav: torch.Tensor  # (B, T * hop)
    log_mag: torch.Tensor  # (B, bins, T * up) at the head's STFT grid
    phase: torch.Tensor  # (B, bins, T * up)
    f0: torch.Tensor | None = None  # (B, T) predicted F0 in Hz (source="harmonic")
    voiced_logit: torch.Tensor | None = None  # (B, T)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T) -> (B, C, T)
        y = self.dwconv(x).transpose(1, 2)
        y = self.pw2(self.act(self.pw1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class Backbone(nn.Module):
    """ConvNeXt at the mel rate (encode), then at the head rate (decode)."""

    def __init__(self, cfg: VocoderConfig, bins: int):
        super().__init__()
        n_mels, k = cfg.mel_config.n_mels, cfg.kernel_size
        self.up, self.sub_dim = cfg.up, cfg.sub_dim
        self.embed = nn.Conv1d(n_mels, cfg.dim, k, padding=k // 2)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, k, 1.0 / cfg.num_layers)
            for _ in range(cfg.num_layers))
        self.upsample = nn.Linear(cfg.dim, cfg.up * cfg.sub_dim)
        self.source_proj = nn.Linear(bins, cfg.sub_dim) if cfg.source != "none" else None
        self.sub_blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.sub_dim, 3 * cfg.sub_dim, k, 1.0 / max(cfg.sub_layers, 1))
            for _ in range(cfg.sub_layers))
        self.final_norm = nn.LayerNorm(cfg.sub_dim, eps=1e-6)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        # mel: (B, n_mels, T) -> (B, dim, T)
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return x

    def decode(self, h: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        # h: (B, dim, T), source: (B, bins, T * up) -> (B, T * up, sub_dim)
        b, _, t = h.shape
        x = self.upsample(h.transpose(1, 2)).reshape(b, t * self.up, self.sub_dim)
        if self.source_proj is not None and source is not None:
            x = x + self.source_proj(source.transpose(1, 2))
        x = x.transpose(1, 2)
        for block in self.sub_blocks:
            x = block(x)
        return self.final_norm(x.transpose(1, 2))


class Vocoder(nn.Module):
    """Mel -> waveform. ``vocoder(mel)``: (B, n_mels, T) log-mel -> (B, T * hop) float waveform."""

    def __init__(self, config: VocoderConfig | None = None):
        super().__init__()
        self.config = config = config or VocoderConfig()
        config.validate()
        self.mel_config = self.config.mel_config
        self.hop, self.sr = self.mel_config.hop_length, self.mel_config.sample_rate
        self.stft = HeadSTFT(config.head_n_fft, config.head_hop)
        bins = self.stft.bins
        self.backbone = Backbone(config, bins)
        # per bin: log-magnitude, phase advance, local phasor (re, im), source gain (re, im)
        self.out = nn.Linear(config.sub_dim, 6 * bins)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)
        with torch.no_grad():  # local phasor starts at 1 (phase 0), not at atan2's singularity
            self.out.bias[2 * bins:3 * bins] = 1.0
        self.f0_head = nn.Linear(config.dim, 2) if config.source != "none" else None
        self.register_buffer("advance", bin_advance(config.head_n_fft, config.head_hop), persistent=False)
        self.register_buffer("pinv", mel_pseudo_inverse(self.mel_config, config.head_n_fft), persistent=False)

    # ---- receptive field, for chunked/streaming use -------------------------------------
    @property
    def context_frames(self) -> int:
        """Mel frames of context on each side that make chunked output equal offline output."""
        c = self.config
        r = (c.kernel_size // 2) * (1 + c.num_layers)
        r += math.ceil((c.kernel_size // 2) * c.sub_layers / c.up)
        r += math.ceil((c.head_n_fft // 2) / self.hop) + 1  # iSTFT window spread
        if c.source != "none":
            r += 2  # F0 interpolation + the source's STFT window
        return r

    def check_mel(self, mel: torch.Tensor) -> None:
        n_mels = self.mel_config.n_mels
        if not isinstance(mel, torch.Tensor):
            raise VocoderInputError(f"mel must be a torch.Tensor, got {type(mel).__name__}")
        if mel.dim() != 3 or mel.shape[1] != n_mels:
            raise VocoderInputError(f"mel must have shape (B, {n_mels}, T), got {tuple(mel.shape)}")
        if mel.shape[0] == 0 or mel.shape[2] == 0:
            raise VocoderInputError(f"mel is empty: shape {tuple(mel.shape)}")
        if not torch.isfinite(mel).all():
            raise VocoderInputError("mel contains NaN or infinite values")

    # ---- the network ----------------------------------------------------------------------
    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, n_mels, T) -> hidden (B, dim, T), F0 in Hz (B, T) and voicing logit (B, T)."""
        h = self.backbone.encode(mel.float())
        if self.f0_head is None:
            return h, None, None
        lf0, vlogit = self.f0_head(h.transpose(1, 2)).unbind(-1)
        lo, hi = math.log(self.config.f0_min), math.log(self.config.f0_max)
        return h, torch.exp(lo + (hi - lo) * torch.sigmoid(lf0)), vlogit

    def source_spectrum(self, phi: torch.Tensor, f0: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        """Oscillator phase (B, S) float64 + frame F0/voicing (B, T) -> source STFT (B, bins, T * up)."""
        f0_s, v_s = upsample_frames(f0, self.hop), upsample_frames(voiced.float(), self.hop)
        exc = harmonic_excitation(phi, f0_s, v_s, self.sr)
        return self.stft.stft(exc, f0.shape[1] * self.config.up)

    def decode(self, h: torch.Tensor, mel: torch.Tensor, src: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> log-magnitude, phase advance, local phase: each (B, bins, T * up)."""
        src_feat = torch.log1p(src.abs()) if src is not None else None
        x = self.out(self.backbone.decode(h, src_feat)).transpose(1, 2)  # (B, 6 * bins, J)
        log_mag, adv, re, im, c_re, c_im = x.chunk(6, dim=1)
        if self.config.amp_prior:
            prior = torch.log(torch.clamp(self.pinv @ mel.float().exp(), min=1e-5))
            log_mag = log_mag + prior.repeat_interleave(self.config.up, dim=2)
        z = torch.complex(re, im)
        if src is not None:
            z = z + torch.complex(c_re, c_im) * (src / (src.abs() + 1.0))
        local = torch.atan2(z.imag, z.real + 1e-7)
        adv = adv + self.advance[:, None] if self.config.phase_mode == "cumsum" else torch.zeros_like(adv)
        return log_mag.clamp(max=8.0), adv, local

    @staticmethod
    def integrate(adv: torch.Tensor, start: torch.Tensor | float = 0.0) -> torch.Tensor:
        """(B, bins, J) advances -> running phase (wrapped), in float64 to keep long sums exact."""
        phase = torch.cumsum(adv.double(), dim=2) + (start if isinstance(start, float) else start.double())
        return torch.remainder(phase, 2 * math.pi).float()

    def synthesize(self, log_mag: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """(B, bins, J) log-magnitude and phase -> (B, length) waveform."""
        spec = torch.polar(log_mag.exp(), phase)
        return self.stft.istft(spec, length)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # mel: (B, n_mels, T) -> (B, T * hop)
        return self.generate(mel).wav

    def generate(self, mel: torch.Tensor, f0: torch.Tensor | None = None,
                 voiced: torch.Tensor | None = None) -> VocoderOutput:
        """(B, n_mels, T) -> :class:`VocoderOutput`. ``f0``/``voiced`` (B, T) override the
        predicted ones (teacher forcing in training); by default the model's own are used."""
        self.check_mel(mel)
        h, f0_hat, vlogit = self.encode(mel)
        src = None
        if self.f0_head is not None:
            f0_use = f0 if f0 is not None else f0_hat.detach()
            v_use = voiced if voiced is not None else vlogit.detach() > 0
            phi = source_phase(upsample_frames(f0_use, self.hop), self.sr)
            src = self.source_spectrum(phi, f0_use, v_use)
        log_mag, adv, local = self.decode(h, mel, src)
        phase = self.integrate(adv) + local
        wav = self.synthesize(log_mag, phase, mel.shape[2] * self.hop)
        return VocoderOutput(wav, log_mag, phase, f0_hat, vlogit)

    # ---- chunked (streaming) mode ----------------------------------------------------------
    @torch.no_grad()
    def vocode_chunked(self, mel: torch.Tensor, chunk_frames: int = 50,
                       overlap_frames: int | None = None) -> torch.Tensor:
        """Vocode ``chunk_frames`` at a time with ``overlap_frames`` of context on each side.

        (B, n_mels, T) -> (B, T * hop). Each chunk's output is cut from a window padded by
        ``overlap_frames`` of mel on both sides, and the running phases (the source
        oscillator's and, for ``phase_mode="cumsum"``, each bin's) are carried from chunk
        to chunk, so with ``overlap_frames >= self.context_frames`` (the default) the
        output equals :meth:`forward`'s up to float rounding: seamless. Latency: a chunk
        needs ``overlap_frames`` of look-ahead.
        """
        self.check_mel(mel)
        if chunk_frames < 1:
            raise VocoderInputError(f"chunk_frames must be >= 1, got {chunk_frames}")
        ov = self.context_frames if overlap_frames is None else int(overlap_frames)
        if ov < 0:
            raise VocoderInputError(f"overlap_frames must be >= 0, got {ov}")
        hop, t_total = self.hop, mel.shape[2]
        outs: list[torch.Tensor] = []
        bin_run, src_run = self.running_sums(ov)
        for s in range(0, t_total, chunk_frames):
            e = min(s + chunk_frames, t_total)
            a, b = max(0, s - ov), min(t_total, e + ov)
            wav = self.vocode_window(mel[:, :, a:b], s - a, e - a, bin_run, src_run)
            outs.append(wav[:, (s - a) * hop:(e - a) * hop])
        return torch.cat(outs, dim=1)

    def running_sums(self, context: int) -> tuple[_RunningSum, _RunningSum]:
        """The phase accumulators :meth:`vocode_window` carries across windows with ``context`` frames."""
        return _RunningSum(context * self.config.up), _RunningSum(context * self.hop)

    @torch.no_grad()
    def vocode_window(self, mel: torch.Tensor, keep_from: int, keep_to: int, bin_run: _RunningSum,
                      src_run: _RunningSum) -> torch.Tensor:
        """(B, n_mels, W) window -> (B, W * hop). Frames before ``keep_from`` were final in an
        earlier window; ``[keep_from, keep_to)`` become final now (their running phases advance)."""
        up, hop = self.config.up, self.hop
        h, f0, vlogit = self.encode(mel)
        src = None
        if f0 is not None:
            inc = upsample_frames(f0, hop).double() * (2 * math.pi / self.sr)
            phi = src_run.step(inc, keep_from * hop, keep_to * hop)
            src = self.source_spectrum(phi, f0, vlogit > 0)
        log_mag, adv, local = self.decode(h, mel, src)
        run = bin_run.step(adv.double(), keep_from * up, keep_to * up)
        phase = torch.remainder(run, 2 * math.pi).float() + local
        return self.synthesize(log_mag, phase, mel.shape[2] * hop)

    # ---- model directory ----------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = asdict(self.config)
        (path / "config.json").write_text(json.dumps({"model": "vocos-istft", **cfg}, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Vocoder:
        path = Path(path)
        cfg_file, weights = path / "config.json", path / "model.safetensors"
        for f in (cfg_file, weights):
            if not f.is_file():
                raise VocoderCheckpointError(f"vocoder model dir {path} lacks {f.name}")
        try:
            raw = json.loads(cfg_file.read_text())
            raw.pop("model", None)
            config = VocoderConfig(**raw)
        except (json.JSONDecodeError, TypeError) as err:
            raise VocoderCheckpointError(f"bad vocoder config {cfg_file}: {err}") from err
        model = cls(config)
        try:
            state = load_file(str(weights))
            model.load_state_dict(state, strict=True)
        except Exception as err:  # safetensors raises SafetensorError, torch RuntimeError
            raise VocoderCheckpointError(f"cannot load vocoder weights {weights}: {err}") from err
        return model.eval()


class _RunningSum:
    """Cumulative sum over a stream of overlapping windows, equal to the offline cumsum.

    ``step(inc, keep_from, keep_to)``: ``inc`` (..., L) holds the window's increments; the
    window's positions before ``keep_from`` are already final (earlier chunks) and come
    from the history, those from ``keep_from`` on are the running total plus the cumsum
    of ``inc``. Positions ``[keep_from, keep_to)`` then become final.
    """

    def __init__(self, keep: int):
        self.keep = max(keep, 1)
        self.history: torch.Tensor | None = None
        self.total: torch.Tensor | float = 0.0

    def step(self, inc: torch.Tensor, keep_from: int, keep_to: int) -> torch.Tensor:
        ahead = self.total + torch.cumsum(inc[..., keep_from:], dim=-1)
        past = self.history[..., self.history.shape[-1] - keep_from:] if keep_from else inc[..., :0]
        final = ahead[..., :keep_to - keep_from]
        self.history = final if self.history is None else torch.cat([self.history, final], -1)
        self.history = self.history[..., -self.keep:]
        self.total = final[..., -1:]
        return torch.cat([past, ahead], dim=-1)
