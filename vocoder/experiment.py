"""Lightning training of the vocoder: reconstruction losses, then (optionally) GAN.

Manual optimisation with two optimisers (generator, discriminators). Only the
generator's step advances ``global_step`` (the discriminator steps its raw
optimizer), so ``max_steps``, ``checkpoint_every`` and ``gan_start_step`` count
generator updates. Gradients are clipped here (build the trainer with
``grad_clip=None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer

from tts.audio import save_audio
from tts.mel import MelSpectrogram
from vocoder.discriminators import Discriminators
from vocoder.losses import (
    MultiResolutionSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    phase_losses,
)
from vocoder.model import Vocoder, VocoderConfig
from vocoder.source import estimate_f0


@dataclass
class OptimConfig:
    segment_frames: int = 32  # random training segments, in mel frames (x hop samples)
    batch_size: int = 16
    lr: float = 1e-3
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    final_lr_ratio: float = 0.05  # cosine decay to lr * ratio at the end of the budget
    max_minutes: float | None = None  # training-time budget (resumable); None: max_steps only
    grad_clip: float = 10.0
    num_workers: int = 0
    # loss weights
    mel: float = 45.0
    mrstft: float = 15.0
    magnitude: float = 15.0  # log-magnitude L1 at the head's grid
    iaf: float = 15.0  # phase: instantaneous angular frequency
    gd: float = 15.0  # phase: group delay
    ip: float = 0.0  # phase: instantaneous phase (unlearnable in absolute terms)
    f0: float = 10.0  # F0 predictor (harmonic source): L1 of log F0 on voiced frames
    voicing: float = 5.0  # F0 predictor: voiced/unvoiced BCE
    # GAN (off when gan_start_step < 0)
    gan_start_step: int = -1
    adv: float = 1.0
    fm: float = 2.0
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (16, 64, 128, 128)
    resolution_channels: int = 16
    # validation output
    num_samples: int = 3  # wavs + spectrogram PNGs written per validation


def lr_factor(step: int, progress: float, warmup_steps: int, final_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay over ``progress`` in [0, 1]."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    p = min(1.0, max(0.0, progress))
    return warm * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


class VocoderExperiment(L.LightningModule):
    def __init__(self, model_cfg: VocoderConfig, optim: OptimConfig, max_steps: int,
                 exp_dir: str | Path | None = None):
        """max_steps and ``optim.max_minutes`` (whichever ends first) set the LR schedule's length."""
        super().__init__()
        self.automatic_optimization = False
        self.generator = Vocoder(model_cfg)
        self.optim, self.max_steps = optim, max_steps
        self.exp_dir = Path(exp_dir) if exp_dir else None
        self.mel = MelSpectrogram(self.generator.mel_config)
        self.mrstft = MultiResolutionSTFTLoss()
        self.discriminators = Discriminators(tuple(optim.periods), tuple(optim.period_channels),
                                             resolution_channels=optim.resolution_channels)

    def configure_optimizers(self):
        o = self.optim
        opt_g = torch.optim.AdamW(self.generator.parameters(), o.lr, tuple(o.betas), weight_decay=o.weight_decay)
        opt_d = torch.optim.AdamW(self.discriminators.parameters(), o.lr_d, tuple(o.betas),
                                  weight_decay=o.weight_decay)
        return [opt_g, opt_d]

    def progress(self) -> float:
        """Fraction of the budget spent: steps, or training time when ``max_minutes`` is set."""
        done = self.global_step / max(1, self.max_steps)
        if self.optim.max_minutes:
            timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
            if timer is not None:
                done = max(done, (timer.time_elapsed("train") or 0.0) / (60 * self.optim.max_minutes))
        return done

    def _set_lr(self, opt_g, opt_d) -> float:
        o = self.optim
        f = lr_factor(self.global_step, self.progress(), o.warmup_steps, o.final_lr_ratio)
        for opt, lr in ((opt_g, o.lr), (opt_d, o.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * f
        return o.lr * f

    def reconstruction_losses(self, wav: torch.Tensor, teacher: bool = True, mel_in: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """(B, S) real segment -> total loss, parts, generated (B, S).

        teacher: drive the harmonic source with F0 measured on the real audio (training);
        False uses the model's own F0 (inference path, for validation).
        mel_in: (B, n_mels, S / hop) the generator's input instead of the segment's own mel
        (another model's mel of it, ``SegmentDataset(input_mels=)``); the targets stay the real audio.
        """
        o, g = self.optim, self.generator
        mel = self.mel(wav)
        f0 = voiced = None
        if g.f0_head is not None:
            f0, voiced = estimate_f0(wav, g.sr, g.hop, g.config.f0_min, g.config.f0_max)
        x = mel if mel_in is None else mel_in
        out = g.generate(x, f0, voiced) if teacher else g.generate(x)
        target = g.stft.stft(wav, out.log_mag.shape[2])
        parts = {
            "mel": F.l1_loss(self.mel(out.wav), mel),
            "mrstft": self.mrstft(out.wav, wav),
            "magnitude": F.l1_loss(out.log_mag, target.abs().clamp(min=1e-5).log()),
            **phase_losses(out.phase, target),
        }
        if out.f0 is not None:
            v = voiced.float()
            parts["f0"] = (torch.abs(out.f0.log() - f0.log()) * v).sum() / v.sum().clamp(min=1.0)
            parts["voicing"] = F.binary_cross_entropy_with_logits(out.voiced_logit, v)
        total = sum(getattr(o, k) * v for k, v in parts.items() if getattr(o, k) > 0)
        return total, parts, out.wav

    def _clip(self, params) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, self.optim.grad_clip)

    def training_step(self, batch: torch.Tensor | list[torch.Tensor], batch_idx: int) -> None:
        # batch: (B, S) waveform segments, or [those, (B, n_mels, S / hop) input mels]
        batch, mel_in = batch if isinstance(batch, (list, tuple)) else (batch, None)
        opt_g, opt_d = self.optimizers()
        lr = self._set_lr(opt_g, opt_d)
        o = self.optim
        gan = 0 <= o.gan_start_step <= self.global_step
        total, parts, y_hat = self.reconstruction_losses(batch, mel_in=mel_in)
        if gan:
            real_logits, _ = self.discriminators(batch)
            fake_logits, _ = self.discriminators(y_hat.detach())
            loss_d = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad()
            self.manual_backward(loss_d)
            self._clip(self.discriminators.parameters())
            opt_d.optimizer.step()  # raw step: global_step counts generator updates only
            real_logits, real_feats = self.discriminators(batch)
            fake_logits, fake_feats = self.discriminators(y_hat)
            parts["adv"] = generator_loss(fake_logits)
            parts["fm"] = feature_matching_loss(real_feats, fake_feats)
            total = total + o.adv * parts["adv"] + o.fm * parts["fm"]
            self.log("train/loss_d", loss_d, prog_bar=True)
        opt_g.zero_grad()
        self.manual_backward(total)
        norm = self._clip(self.generator.parameters())
        opt_g.step()
        self.log("train/loss", total, prog_bar=True)
        self.log("train/grad_norm", norm)
        self.log("train/lr", lr)
        for k, v in parts.items():
            self.log(f"train/{k}", v, prog_bar=k == "mel")

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        total, parts, y_hat = self.reconstruction_losses(batch, teacher=False)
        for k, v in parts.items():
            self.log(f"val/{k}", v, batch_size=1)
        self.log("val/loss", total, batch_size=1)
        if batch_idx < self.optim.num_samples and self.exp_dir is not None and self.trainer.is_global_zero:
            self._write_sample(batch[0], y_hat[0], batch_idx)

    def _write_sample(self, real: torch.Tensor, fake: torch.Tensor, idx: int) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sr = self.generator.mel_config.sample_rate
        out = self.exp_dir / "samples" / f"step{self.global_step:07d}"
        out.mkdir(parents=True, exist_ok=True)
        save_audio(out / f"{idx}_generated.wav", fake.detach().float().cpu().numpy(), sr)
        save_audio(out / f"{idx}_real.wav", real.detach().float().cpu().numpy(), sr)
        plot_spectrograms({"real": real, "generated": fake}, out / f"{idx}.png", sr)
        plt.close("all")
        for logger in self.loggers:
            if hasattr(logger.experiment, "add_audio"):
                logger.experiment.add_audio(f"sample{idx}", fake.detach().float().cpu().clamp(-1, 1)[None],
                                            self.global_step, sr)

    def on_validation_epoch_end(self) -> None:
        if self.exp_dir is not None and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.generator.save_pretrained(self.exp_dir / "model")


def plot_spectrograms(wavs: dict[str, torch.Tensor], path: str | Path, sample_rate: int,
                      n_fft: int = 1024, hop: int = 128) -> None:
    """Stacked log-magnitude spectrograms (linear frequency, to show harmonics) saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(wavs), 1, figsize=(12, 3 * len(wavs)), squeeze=False)
    for ax, (name, wav) in zip(axes[:, 0], wavs.items(), strict=True):
        w = wav.detach().float().cpu()
        spec = torch.stft(w, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
        db = 20 * torch.log10(spec.clamp(min=1e-5))
        ax.imshow(db.numpy(), origin="lower", aspect="auto", vmin=float(db.max()) - 80,
                  extent=(0, len(w) / sample_rate, 0, sample_rate / 2), cmap="magma")
        ax.set_title(name)
        ax.set_ylabel("Hz")
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
