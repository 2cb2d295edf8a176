"""Train the tokenizer (recipe stage 1): CTC through the quantizer, Lightning, resumable.

    python -m tokenizer.train --config conf/tokenizer.yaml --train data/train --dev data/dev \\
        --exp exp/tokenizer

Writes <exp>/checkpoints/last.ckpt every trainer.checkpoint_every steps (a rerun
resumes from it), CSV + TensorBoard logs under <exp>, and the final model
directory <exp>/model (config.json + model.safetensors); with ``trainer.average_last: N``
that model is the mean of the newest N step checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

import jiwer
import lightning as L
import torch
import torch.nn.functional as F

from tts.training import (
    add_trainer_args,
    apply_trainer_args,
    average_checkpoints,
    build_trainer,
    last_checkpoint,
    warm_start,
    warmup_cosine,
)

from .api import CheckpointError, SpeechTokenizer
from .config import TokenizerTrainConfig, load_config
from .data import CTCDataset, compute_features, feature_stats, make_loader, spec_augment
from .frontend import CharVocab, PhoneLexicon
from .model import TokenizerModel

log = logging.getLogger("tokenizer.train")


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    # logits: (B, T', V), lengths: (B,) valid T' per clip
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    return F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=0, zero_infinity=True)


class TokenizerExperiment(L.LightningModule):
    """CTC (+ intermediate CTC before the quantizer, + VQ commitment) with warmup + cosine LR."""

    def __init__(self, cfg: TokenizerTrainConfig):
        super().__init__()
        self.cfg = cfg
        self.model = TokenizerModel(cfg.model)
        self.vocab = CharVocab(cfg.model.vocab)
        self.save_hyperparameters({"config": asdict(cfg)})
        self._val: list[tuple[str, str]] = []
        self._codes: list[torch.Tensor] = []

    def hardness(self) -> float:
        """How much of FSQ's rounding the forward pass applies (1 after the anneal)."""
        steps = self.cfg.model.quantizer.anneal_steps
        return 1.0 if steps <= 0 else min(1.0, self.global_step / steps)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        bypass_steps = self.cfg.model.quantizer.bypass_steps
        mix = 1.0 if bypass_steps <= 0 else min(1.0, self.global_step / bypass_steps)
        feats = spec_augment(batch["feats"], batch["feat_lengths"], self.cfg.data, self.model.feat_mean)
        out = self.model(feats, batch["feat_lengths"], hard=self.hardness(), mix=mix)
        up = self.cfg.model.ctc_upsample
        loss_ctc = ctc_loss(out.logits, out.lengths * up, batch["targets"], batch["target_lengths"])
        loss = loss_ctc + out.aux_loss
        w = self.cfg.model.inter_ctc_weight
        if out.inter_logits is not None:
            loss_inter = ctc_loss(out.inter_logits, out.lengths * up, batch["inter_targets"],
                                  batch["inter_target_lengths"])
            self.log("train/ctc_inter", loss_inter, batch_size=len(batch["utts"]))
            if out.inter_code_logits is not None:  # inter_from: both
                loss_codes = ctc_loss(out.inter_code_logits, out.lengths * up, batch["inter_targets"],
                                      batch["inter_target_lengths"])
                self.log("train/ctc_inter_codes", loss_codes, batch_size=len(batch["utts"]))
                loss_inter = (loss_inter + loss_codes) / 2
            loss = (1 - w) * loss_ctc + w * loss_inter + out.aux_loss
        bs = len(batch["utts"])
        self.log("train/ctc", loss_ctc, prog_bar=True, batch_size=bs)
        self.log("train/loss", loss, batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        self.log("train/hard", self.hardness(), batch_size=bs)
        self.log("train/mix", mix, batch_size=bs)
        self.log("train/aux", out.aux_loss, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model(batch["feats"], batch["feat_lengths"])
        up = self.cfg.model.ctc_upsample
        loss = ctc_loss(out.logits, out.lengths * up, batch["targets"], batch["target_lengths"])
        self.log("val/ctc", loss, batch_size=len(batch["utts"]))
        best = out.logits.argmax(-1)
        for i, ref in enumerate(batch["texts"]):
            self._val.append((ref, self.vocab.decode_ctc(best[i, : out.lengths[i] * up])))
            self._codes.append(out.ids[i, : out.lengths[i]].cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        refs, hyps = zip(*self._val, strict=True)
        self.log("val/cer", jiwer.cer(list(refs), list(hyps)))
        codes = torch.cat(self._codes)
        self.log("val/code_usage", torch.unique(codes).numel() / self.model.quantizer.size)
        log.info("step %d val cer %.3f | ref: %s | hyp: %s", self.global_step,
                 jiwer.cer(list(refs), list(hyps)), refs[0], hyps[0])
        self._val, self._codes = [], []

    def configure_optimizers(self):
        o = self.cfg.optim
        opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay,
                                betas=(0.9, 0.98))
        total = max(self.cfg.trainer.max_steps, o.warmup_steps + 1)

        schedule = warmup_cosine(o.warmup_steps, total, o.final_lr_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def init_from(experiment: TokenizerExperiment, init: str | Path) -> None:
    """Start from the weights (and feature statistics) of the tokenizer model dir ``init``."""
    try:
        source = SpeechTokenizer.from_pretrained(init).model
    except CheckpointError as err:
        raise SystemExit(f"--init: {err}") from err
    if source.cfg.vocab != experiment.cfg.model.vocab:
        raise SystemExit(f"--init {init}: its characters differ from this corpus's")
    fresh = warm_start(experiment.model, source.state_dict())
    if fresh:
        raise SystemExit(f"--init {init}: not a tokenizer of this config (missing or reshaped: {', '.join(fresh[:3])})")


def train(cfg: TokenizerTrainConfig, train_dir: str | Path, dev_dir: str | Path, exp_dir: str | Path,
          init: str | Path | None = None, **trainer_kwargs) -> SpeechTokenizer:
    """Train (or resume) and write <exp>/model; returns the trained tokenizer.

    ``init``: a tokenizer model dir whose weights start this run (a fine-tuning phase, e.g.
    with SpecAugment on; ignored when resuming). Set the quantizer's ``anneal_steps`` and
    ``bypass_steps`` to 0 then, or the run restarts FSQ's soft fade-in on trained codes.
    """
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.trainer.seed, workers=True)
    norm = cfg.data.normalize
    train_feats = compute_features(train_dir, cfg.model, norm, exp_dir / "cache" / "train_feats.safetensors")
    dev_feats = compute_features(dev_dir, cfg.model, norm, exp_dir / "cache" / "dev_feats.safetensors")
    if not cfg.model.vocab:
        from tts.datadir import load_data_dir

        vocab = CharVocab.from_texts(u.text for u in load_data_dir(train_dir))
        cfg = replace(cfg, model=replace(cfg.model, vocab=vocab.chars))
    vocab = CharVocab(cfg.model.vocab)
    phones = PhoneLexicon() if cfg.model.inter_targets == "phones" and cfg.model.inter_ctc_weight > 0 else None
    train_ds = CTCDataset(train_dir, train_feats, vocab, cfg.model.ctc_upsample, cfg.data.max_seconds,
                          phones=phones)
    dev_ds = CTCDataset(dev_dir, dev_feats, vocab, cfg.model.ctc_upsample, limit=cfg.optim.val_utterances,
                        phones=phones)
    log.info("train %d clips (%.2f h), dev %d clips scored; vocab %d; codebook %d",
             len(train_ds), sum(train_ds.lengths()) / 360000, len(dev_ds), len(vocab),
             cfg.model.quantizer.size)

    experiment = TokenizerExperiment(cfg)
    mean, std = feature_stats(train_feats)
    experiment.model.feat_mean.copy_(mean)
    experiment.model.feat_std.copy_(std)
    ckpt = last_checkpoint(exp_dir)
    if init and ckpt is None:
        init_from(experiment, init)
        log.info("initialised from %s", init)
    log.info("model: %.2fM parameters", sum(p.numel() for p in experiment.parameters()) / 1e6)

    trainer = build_trainer(cfg.trainer, exp_dir, **trainer_kwargs)
    if ckpt is not None:
        log.info("resuming from %s", ckpt)
    trainer.fit(experiment, make_loader(train_ds, cfg.data, shuffle=True, seed=cfg.trainer.seed),
                make_loader(dev_ds, cfg.data, shuffle=False), ckpt_path=ckpt)
    if trainer.is_global_zero and cfg.trainer.average_last > 1:  # rank 0 wrote the checkpoints
        state, steps = average_checkpoints(exp_dir, cfg.trainer.average_last)
        experiment.load_state_dict(state)
        log.info("model = mean of the checkpoints of steps %s", steps)
    tokenizer = SpeechTokenizer(experiment.model.cpu(), normalize=norm)
    if trainer.is_global_zero:
        tokenizer.save_pretrained(exp_dir / "model")
        log.info("wrote %s", exp_dir / "model")
    return tokenizer


def export_checkpoint(ckpt: str | Path, out_dir: str | Path) -> SpeechTokenizer:
    """A Lightning checkpoint (e.g. <exp>/checkpoints/last.ckpt mid-training) -> a model dir."""
    from .config import model_config_from_dict

    state = torch.load(ckpt, map_location="cpu", weights_only=False)  # our own checkpoint
    config = state["hyper_parameters"]["config"]
    model = TokenizerModel(model_config_from_dict(config["model"]))
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    tokenizer = SpeechTokenizer(model, normalize=config["data"]["normalize"])
    tokenizer.save_pretrained(out_dir)
    log.info("exported %s (step %d) -> %s", ckpt, state["global_step"], out_dir)
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--train", required=True, help="Kaldi data dir with wav.scp and text")
    p.add_argument("--dev", required=True)
    p.add_argument("--exp", required=True)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: optim.threads)")
    p.add_argument("--init", metavar="DIR", default=None,
                   help="tokenizer model dir to start from (a fine-tuning phase); ignored when resuming")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="only write <exp>/checkpoints/last.ckpt as a model dir DIR (no training)")
    add_trainer_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.export:
        ckpt = last_checkpoint(args.exp)
        if ckpt is None:
            raise SystemExit(f"no checkpoint in {args.exp}/checkpoints")
        export_checkpoint(ckpt, args.export)
        return 0
    cfg = load_config(args.config)
    apply_trainer_args(cfg.trainer, args)
    torch.set_num_threads(args.threads or cfg.optim.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    train(cfg, args.train, args.dev, args.exp, init=args.init)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
