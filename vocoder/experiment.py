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


@dataclass
class OptimConfig:
    segment_frames: int = 32  # random training segments, in mel frames (x hop samples)
    batch_size: int = 16
    lr: float = 1e-3
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    final_lr_ratio: float = 0.05  # cosine decay to lr * ratio at max_steps
    grad_clip: float = 10.0
    num_workers: int = 0
    # loss weights
    mel: float = 45.0
    mrstft: float = 15.0
    magnitude: float = 15.0  # log-magnitude L1 at the head's grid
    iaf: float = 15.0  # phase: instantaneous angular frequency
    gd: float = 15.0  # phase: group delay
    ip: float = 0.0  # phase: instantaneous phase (unlearnable in absolute terms)
    # GAN (off when gan_start_step < 0)
    gan_start_step: int = -1
    adv: float = 1.0
    fm: float = 2.0
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (16, 64, 128, 128)
    resolution_channels: int = 16
    # validation output
    num_samples: int = 3  # wavs + spectrogram PNGs written per validation


@dataclass
class Schedule:
    max_steps: int = 1000
    warmup_steps: int = 200
    final_ratio: float = 0.05

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * t))


class VocoderExperiment(L.LightningModule):
    def __init__(self, model_cfg: VocoderConfig, optim: OptimConfig, max_steps: int,
                 exp_dir: str | Path | None = None):
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
        sched = Schedule(self.max_steps, o.warmup_steps, o.final_lr_ratio)
        sch_g = torch.optim.lr_scheduler.LambdaLR(opt_g, sched.factor)
        sch_d = torch.optim.lr_scheduler.LambdaLR(opt_d, sched.factor)
        return [opt_g, opt_d], [sch_g, sch_d]

    def reconstruction_losses(self, wav: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """(B, S) real segment -> total loss, parts, generated (B, S)."""
        o, g = self.optim, self.generator
        mel = self.mel(wav)
        y_hat, log_mag, phase = g.forward_with_spectrum(mel)
        target = g.stft.stft(wav, log_mag.shape[2])
        parts = {
            "mel": F.l1_loss(self.mel(y_hat), mel),
            "mrstft": self.mrstft(y_hat, wav),
            "magnitude": F.l1_loss(log_mag, target.abs().clamp(min=1e-5).log()),
            **phase_losses(phase, target),
        }
        total = sum(getattr(o, k) * v for k, v in parts.items() if getattr(o, k) > 0)
        return total, parts, y_hat

    def _clip(self, params) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, self.optim.grad_clip)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # batch: (B, S) waveform segments
        opt_g, opt_d = self.optimizers()
        sch_g, sch_d = self.lr_schedulers()
        o = self.optim
        gan = 0 <= o.gan_start_step <= self.global_step
        total, parts, y_hat = self.reconstruction_losses(batch)
        if gan:
            real_logits, _ = self.discriminators(batch)
            fake_logits, _ = self.discriminators(y_hat.detach())
            loss_d = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad()
            self.manual_backward(loss_d)
            self._clip(self.discriminators.parameters())
            opt_d.optimizer.step()  # raw step: global_step counts generator updates only
            sch_d.step()
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
        sch_g.step()
        self.log("train/loss", total, prog_bar=True)
        self.log("train/grad_norm", norm)
        self.log("train/lr", sch_g.get_last_lr()[0])
        for k, v in parts.items():
            self.log(f"train/{k}", v, prog_bar=k == "mel")

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        total, parts, y_hat = self.reconstruction_losses(batch)
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
