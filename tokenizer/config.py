"""Configs of the speech tokenizer: plain dataclasses that a YAML file maps onto 1:1.

    model:    what the network is (features, encoder sizes, quantizer)
    data:     how batches are made
    optim:    learning rate schedule
    trainer:  tts.training.TrainerConfig (steps, checkpoints, precision, devices)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tts.config import ConfigError, from_dict, load_yaml
from tts.training import TrainerConfig

SAMPLE_RATE = 16000
FEATURE_HOP = 160  # 100 feature frames per second
SUBSAMPLING = 4  # 4 feature frames per token: 25 tokens per second
SAMPLES_PER_TOKEN = FEATURE_HOP * SUBSAMPLING  # 640


@dataclass
class QuantizerConfig:
    kind: str = "fsq"  # "fsq" (finite scalar quantization) or "vq" (k-means init, EMA codebook)
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # fsq: codebook = prod(levels)
    codebook_size: int = 1024  # vq only
    codebook_dim: int = 16  # vq only: low-dimensional lookup (better usage)
    decay: float = 0.99  # vq only: EMA decay
    commitment_weight: float = 0.25  # vq only
    dead_code_threshold: float = 2.0  # vq only: re-seed codes used less than this per batch
    anneal_steps: int = 0  # fsq only: fade the rounding in linearly over this many steps (0 = hard)
    bypass_steps: int = 0  # fade the continuous bypass around the quantizer out over this many steps
    recon_weight: float = 0.0  # aux loss: quantized output should match its (detached) input

    @property
    def size(self) -> int:
        if self.kind == "fsq":
            n = 1
            for level in self.levels:
                n *= int(level)
            return n
        return self.codebook_size


@dataclass
class ModelConfig:
    n_mels: int = 80
    n_fft: int = 400
    dim: int = 256
    heads: int = 4
    ff_mult: int = 4
    num_blocks: int = 6  # the quantizer sits after the first half (quantize_after)
    quantize_after: int | None = None  # None: num_blocks // 2
    block: str = "conformer"  # "conformer" or "transformer"
    conv_kernel: int = 15
    dropout: float = 0.0
    ctc_upsample: int = 2  # CTC output frames per token frame (characters outrun 25 Hz)
    inter_ctc_weight: float = 0.3  # auxiliary CTC read from each quantized code by an MLP (0 = off)
    inter_targets: str = "phones"  # its targets: "phones" (CMUdict ARPAbet, training only) or "chars"
    inter_from: str = "encoder"  # read it from the pre-quantizer features ("encoder"), the "codes",
    # or "both": the same head reads both and the two CTC losses are averaged (the features teach
    # the head fast; the codes must then read as the same phones)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    vocab: list[str] = field(default_factory=list)  # CTC symbols after the blank; set from data

    @property
    def split(self) -> int:
        return self.num_blocks // 2 if self.quantize_after is None else self.quantize_after


@dataclass
class DataConfig:
    max_frames: int = 12000  # feature frames (10 ms) per batch, padding included
    max_batch: int = 64
    max_seconds: float = 20.0  # longer training clips are skipped
    normalize: str = "rms"  # audio level normalisation before features (train and inference)
    freq_masks: int = 0  # SpecAugment, training only: bands of up to freq_width mel bins ...
    freq_width: int = 15
    time_masks: int = 0  # ... and spans of up to time_width of each clip, set to the feature mean
    time_width: float = 0.05


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 300
    final_lr_ratio: float = 0.05  # cosine decay to lr * ratio at trainer.max_steps
    val_utterances: int = 200  # dev utterances scored (loss + CER) at each validation
    threads: int = 2


@dataclass
class TokenizerTrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def model_config_from_dict(values: dict) -> ModelConfig:
    cfg = from_dict(ModelConfig, values, "model")
    check_model_config(cfg)
    return cfg


def check_model_config(cfg: ModelConfig) -> None:
    if cfg.block not in ("conformer", "transformer"):
        raise ConfigError(f"model.block must be 'conformer' or 'transformer', got {cfg.block!r}")
    if cfg.quantizer.kind not in ("fsq", "vq"):
        raise ConfigError(f"model.quantizer.kind must be 'fsq' or 'vq', got {cfg.quantizer.kind!r}")
    if cfg.inter_targets not in ("chars", "phones"):
        raise ConfigError(f"model.inter_targets must be 'chars' or 'phones', got {cfg.inter_targets!r}")
    if cfg.inter_from not in ("encoder", "codes", "both"):
        raise ConfigError(f"model.inter_from must be 'encoder', 'codes' or 'both', got {cfg.inter_from!r}")
    if not 0 <= cfg.split <= cfg.num_blocks:
        raise ConfigError(f"model.quantize_after={cfg.split} outside 0..{cfg.num_blocks}")
    if cfg.dim % cfg.heads:
        raise ConfigError(f"model.dim={cfg.dim} not divisible by heads={cfg.heads}")


def load_config(path: str | Path) -> TokenizerTrainConfig:
    cfg = load_yaml(TokenizerTrainConfig, path)
    check_model_config(cfg.model)
    return cfg


def to_dict(cfg) -> dict:
    return asdict(cfg)
