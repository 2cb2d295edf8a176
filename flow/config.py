"""Flow model configuration: a plain dataclass that YAML/JSON maps onto one-to-one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from flow.cfm import CFMConfig
from tts.config import from_dict
from tts.mel import MelConfig

SPEAKER_MODES = ("none", "prompt", "external")


@dataclass
class FlowConfig:
    vocab_size: int = 4096  # speech-token codebook size (from the tokenizer's config)
    token_rate: float = 25.0  # speech tokens per second
    mel: str = "16k"  # tts.mel.MelConfig preset: THE mel definition shared with the vocoder
    dim: int = 256
    layers: int = 6
    heads: int = 4
    mlp_ratio: float = 2.75
    # kernel of a causal depthwise convolution sub-layer in every block of the estimator and the
    # token encoder (flow.backbone.CausalConv); 0 = none (attention and MLP only)
    conv_kernel: int = 0
    # token encoder (Matcha-TTS / CosyVoice): ``encoder_layers`` unconditioned blocks over the
    # frame-rate token embeddings predict a mel prior ``mu`` (trained by regression, weight
    # ``prior_weight``) that joins the estimator's conditions; 0 = embeddings only
    encoder_layers: int = 0
    prior_weight: float = 1.0
    # the token encoder also sees the speaker vector (added to its input), so the prior mu
    # carries the prompt's timbre instead of a speaker average (multi-speaker Matcha-TTS)
    prior_speaker: bool = False
    # speaker vector added to the time conditioning: "none"; "prompt" = learned
    # attention-pooling of the prompt mel (inside VoxLM); "external" = a given
    # embedding of size speaker_dim from a VoxLM speaker encoder (never a judge's)
    speaker: str = "prompt"
    speaker_dim: int = 0
    max_prompt_frames: int = 500  # 10 s at 50 fps
    max_frames: int = 3000  # prompt + target, 60 s
    # training: share of batches with a chunk (streaming) mask, and the chunk sizes in frames
    chunk_prob: float = 0.5
    chunk_sizes: list[int] = field(default_factory=lambda: [25, 50])
    # training: in-context prompt = a prefix of the utterance, ratio drawn in [min, max]
    prompt_prob: float = 0.8
    prompt_min: float = 0.1
    prompt_max: float = 0.5
    cfm: CFMConfig = field(default_factory=CFMConfig)

    @property
    def mel_config(self) -> MelConfig:
        return MelConfig.preset(self.mel)

    @property
    def upsample(self) -> int:
        """Mel frames per speech token (2 for 25 Hz tokens and 50 fps mel)."""
        return int(round(self.mel_config.frame_rate / self.token_rate))

    def validate(self) -> None:
        ratio = self.mel_config.frame_rate / self.token_rate
        if abs(ratio - round(ratio)) > 1e-6 or ratio < 1:
            raise ValueError(f"mel frame rate {self.mel_config.frame_rate} is not an integer multiple "
                             f"of the token rate {self.token_rate}")
        if self.speaker not in SPEAKER_MODES:
            raise ValueError(f"speaker must be one of {SPEAKER_MODES}, got {self.speaker!r}")
        if self.speaker == "external" and self.speaker_dim <= 0:
            raise ValueError("speaker='external' needs speaker_dim > 0")
        if self.vocab_size < 1 or self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError("need vocab_size >= 1 and dim divisible by heads into an even head size")
        if self.encoder_layers < 0 or self.prior_weight < 0 or self.conv_kernel < 0:
            raise ValueError("encoder_layers, prior_weight and conv_kernel must be >= 0")
        if self.conv_kernel == 1:
            raise ValueError("conv_kernel must be 0 (no convolution) or >= 2 (1 would see no other frame)")
        if self.prior_speaker and (not self.encoder_layers or self.speaker == "none"):
            raise ValueError("prior_speaker needs a token encoder (encoder_layers > 0) and a speaker vector")
        if self.cfm.prior_start and not self.encoder_layers:
            raise ValueError("cfm.prior_start > 0 needs a mel prior: set encoder_layers > 0")
        if any(c <= 0 for c in self.chunk_sizes) or not 0 <= self.chunk_prob <= 1:
            raise ValueError("chunk_sizes must be positive and chunk_prob in [0, 1]")
        if not 0 <= self.prompt_min <= self.prompt_max < 1:
            raise ValueError("need 0 <= prompt_min <= prompt_max < 1")
        self.cfm.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FlowConfig:
        return from_dict(cls, d, "flow config")


