"""Train the text-to-speech-token LLM on a Kaldi data dir with speech tokens.

    python -m tts.llm_train --config conf/llm.yaml --train data/train --dev data/dev \\
        --exp exp/llm --tokenizer exp/tokenizer/model

Reads ``text``, ``tokens`` (``<utt> <id id ...>``) and ``utt2spk``. Each example is
one utterance, and with probability ``data.prompt_prob`` another utterance of
the same speaker goes in front as the prompt (the inference layout). Batches
are length-bucketed; loss is on speech tokens only. Resumes from
``<exp>/checkpoints/last.ckpt``; writes the loadable model directory to
``<exp>/model`` at every checkpoint and at the end.

Multi-GPU / multi-node: ``--devices 8 --num-nodes 2 --strategy fsdp`` (or the
config's ``trainer`` section), under ``torchrun``/``srun`` or launched by
Lightning itself. FSDP wraps each decoder layer and gathers full weights for
checkpoints and ``<exp>/model``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from tts.config import ConfigError, from_dict, load_yaml  # noqa: F401  (re-exported for callers)
from tts.datadir import read_int_table, read_table
from tts.frontend import Frontend, TextError
from tts.llm import (
    IGNORE,
    LAYOUT_FILE,
    LengthRatio,
    LLMCheckpointError,
    LLMConfig,
    SpeechLM,
    hidden_unit_id,
    sequence_length,
)
from tts.training import (
    EMA,
    BucketBatchSampler,
    ResumableLoader,
    TrainerConfig,
    add_trainer_args,
    apply_trainer_args,
    average_checkpoints,
    build_trainer,
    last_checkpoint,
    warmup_cosine,
)


@dataclass
class DataConfig:
    max_tokens: int = 4000  # per batch, padding included (base lengths, before prompts)
    max_batch: int = 32
    prompt_prob: float = 0.5  # chance an example gets a same-speaker prompt in front
    loss_on_prompt: bool = True  # prompt speech tokens are speech too: learn them as well
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decays to lr * this at max_steps


@dataclass
class LLMTrainConfig:
    llm: LLMConfig = field(default_factory=LLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def load_config(path: str | Path) -> LLMTrainConfig:
    return load_yaml(LLMTrainConfig, path)


@dataclass
class Pair:
    utt: str
    spk: str
    text_ids: list[int]
    speech: list[int]
    text: str = ""  # the normalised transcript (what the report scores against)
    durations: list[int] | None = None  # speech tokens per text unit (interleaved layout, tts.align)


def synthetic_tokens(units: Sequence[str], speech_vocab_size: int) -> list[int]:
    """Stand-in speech tokens made from the text's units alone (an alignment warm-up).

    Each unit (a character or a phone, see ``Frontend.symbols``) becomes 1-3 tokens
    (vowels longer), punctuation a 4-token pause. A model trained on them learns to
    read its text monotonically at ~2 tokens per unit, before any real speech tokens
    exist; ``llm.init_from`` then starts from it.
    """
    return [t for unit in synthetic_units(units, speech_vocab_size) for t in unit]


def synthetic_units(units: Sequence[str], speech_vocab_size: int) -> list[list[int]]:
    """:func:`synthetic_tokens` unit by unit (their lengths are the durations)."""
    pause, out = speech_vocab_size - 1, []
    for u in units:
        if u in ",.?!":
            out.append([pause] * 4)
            continue
        code = sum(ord(ch) * 257 ** i for i, ch in enumerate(u))  # ord(u) for a character
        dur = 1 + (code % 3 == 0) + (u[0].lower() in "aeiou")
        out.append([(code * 37 + j * 101) % pause for j in range(dur)])
    return out


def load_pairs(data_dir: str | Path, frontend: Frontend, max_positions: int,
               synthetic_vocab: int | None = None, durations: bool = False, lookahead: int = 0) -> list[Pair]:
    """Utterances with text and tokens that fit the model alone; others are skipped.

    synthetic_vocab: ignore ``tokens`` and use :func:`synthetic_tokens` of this codebook size.
    durations: also read ``durations`` (``tts.align``); utterances whose durations do not
    match their units and tokens (stale files) are skipped, and all of them is an error.
    lookahead: the interleaved layout's unit lookahead (its places count towards the length).
    """
    d = Path(data_dir)
    texts = read_table(d / "text")
    tokens = read_int_table(d / "tokens") if synthetic_vocab is None else {u: [] for u in texts}
    utt2spk = read_table(d / "utt2spk") if (d / "utt2spk").is_file() else {}
    durs: dict[str, list[int]] = {}
    if durations and synthetic_vocab is None:
        if not (d / "durations").is_file():
            raise FileNotFoundError(f"{d}/durations missing: the interleaved layout needs it "
                                    f"(python -m tts.align --tokenizer ... --config ... --data {d})")
        durs = read_int_table(d / "durations")
    pairs, stale = [], 0
    for utt in sorted(set(texts) & set(tokens)):
        try:
            norm = frontend.transcript(texts[utt])
        except TextError:
            continue
        text_ids = frontend.encode_normalized(norm)
        if synthetic_vocab is None:
            speech, dur = tokens[utt], durs.get(utt)
        else:
            per_unit = synthetic_units(frontend.symbols(norm), synthetic_vocab)
            speech, dur = [t for u in per_unit for t in u], [len(u) for u in per_unit]
        if durations:
            if dur is None or len(dur) != len(text_ids) or sum(dur) != len(speech):
                stale += 1
                continue
        pair = Pair(utt, utt2spk.get(utt, utt), text_ids, speech, norm, dur if durations else None)
        if pair.speech and sequence_length(len(text_ids), len(speech), durations, lookahead) <= max_positions:
            pairs.append(pair)
    if not pairs:
        what = "durations that match text and tokens (rerun tts.align)" if stale else "both text and tokens"
        raise ValueError(f"{d}: no utterance has {what} (files text, tokens{', durations' if durations else ''})")
    return pairs


def measure_ratio(pairs: list[Pair]) -> LengthRatio:
    """Generation guards from data: 0.7x the 1st and 1.5x the 99th percentile of tokens/unit;
    with durations, 1.5x the longest unit's tokens (at least 10)."""
    r = np.array([len(p.speech) / len(p.text_ids) for p in pairs])
    longest = max((max(p.durations) for p in pairs if p.durations), default=0)
    return LengthRatio(float(0.7 * np.quantile(r, 0.01)), float(1.5 * np.quantile(r, 0.99)),
                       max(10, math.ceil(1.5 * longest)))


class PairDataset(Dataset):
    def __init__(self, pairs: list[Pair], lm: SpeechLM, prompt_prob: float = 0.0,
                 loss_on_prompt: bool = True, seed: int = 0, uncond_prob: float = 0.0):
        self.pairs, self.layout, self.max_pos = pairs, lm.layout, lm.max_positions
        self.prompt_prob, self.loss_on_prompt = prompt_prob, loss_on_prompt
        self.uncond_prob, self.hidden_id = uncond_prob, hidden_unit_id(lm.frontend)
        self.rng = random.Random(seed)
        self.by_spk: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            self.by_spk.setdefault(p.spk, []).append(i)

    def __len__(self) -> int:
        return len(self.pairs)

    def lengths(self) -> list[int]:
        return [sequence_length(len(p.text_ids), len(p.speech), self.layout.interleaved, self.layout.lookahead)
                for p in self.pairs]

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        p = self.pairs[i]
        # guidance's text-free branch; no draw at 0, so runs without it keep their stream of prompts
        hide = self.uncond_prob > 0 and self.rng.random() < self.uncond_prob
        text = [self.hidden_id] * len(p.text_ids) if hide else p.text_ids
        others = [j for j in self.by_spk[p.spk] if j != i]
        if others and self.rng.random() < self.prompt_prob:
            q = self.pairs[self.rng.choice(others)]
            q_text = [self.hidden_id] * len(q.text_ids) if hide else q.text_ids
            ids, labels = self.layout.example(text, p.speech, q_text, q.speech, self.loss_on_prompt,
                                              durations=p.durations)
            if len(ids) <= self.max_pos:
                return ids, labels
        return self.layout.example(text, p.speech, durations=p.durations)


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    n, t = len(batch), max(len(ids) for ids, _ in batch)
    ids = torch.full((n, t), pad_id, dtype=torch.long)
    labels = torch.full((n, t), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def make_loader(ds: PairDataset, cfg: DataConfig, shuffle: bool, seed: int = 0) -> DataLoader:
    sampler = BucketBatchSampler(ds.lengths(), cfg.max_tokens, cfg.max_batch, shuffle=shuffle, seed=seed)
    return ResumableLoader(ds, sampler, num_workers=cfg.num_workers,
                           collate_fn=lambda b: collate(b, ds.layout.pad_id))


def speech_accuracy(logits: torch.Tensor, labels: torch.Tensor, speech_offset: int = 0) -> torch.Tensor:
    """Teacher-forced top-1 accuracy on the labelled speech-token positions (ids >= speech_offset;
    0 counts speech-end and advances too). (B, T, V), (B, T) -> ()"""
    pred, target = logits[:, :-1].argmax(-1), labels[:, 1:]
    mask = target >= speech_offset
    return (pred[mask] == target[mask]).float().mean()


class LLMTask(L.LightningModule):
    def __init__(self, cfg: LLMTrainConfig, lm: SpeechLM):
        super().__init__()
        self.cfg, self.lm = cfg, lm

    def forward(self, batch: dict[str, torch.Tensor]):
        # input_ids/labels/attention_mask (B, T) -> HF output (loss, logits (B, T, V))
        return self.lm.model(**batch, use_cache=False)

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        out = self(batch)
        n = batch["input_ids"].shape[0]
        self.log(f"{split}/loss", out.loss, prog_bar=True, batch_size=n, sync_dist=split == "val")
        self.log(f"{split}/acc", speech_accuracy(out.logits, batch["labels"], self.lm.layout.speech_offset), prog_bar=True,
                 batch_size=n, sync_dist=split == "val")
        return out.loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        o, steps = self.cfg.optim, self.cfg.trainer.max_steps
        decay = [p for p in self.lm.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.lm.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=(0.9, 0.98))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(o.warmup_steps, steps, o.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _sharded(module: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return False
    return any(isinstance(m, FullyShardedDataParallel) for m in module.modules())


def save_from_state(lm: SpeechLM, state: dict[str, torch.Tensor], out_dir: Path, averaged: bool = False) -> None:
    """Save ``lm``'s directory; with the weights of the ``LLMTask`` ``state`` under FSDP (gathered) or
    when ``averaged`` (``state`` holds the EMA's weights, not ``lm``'s)."""
    if not (_sharded(lm) or averaged):
        lm.save_pretrained(out_dir)
        return
    copy = SpeechLM(lm.cfg)  # a plain copy holding the state's full weights
    copy.ratio = lm.ratio
    copy.load_state_dict({k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")})
    copy.save_pretrained(out_dir)


class ExportModel(L.Callback):
    """Write ``<exp>/model`` (the loadable directory) with every checkpoint (rank 0; under FSDP
    from the full state dict Lightning gathered for the checkpoint; with ``trainer.ema_decay``
    the average that state dict holds)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def on_save_checkpoint(self, trainer, module, checkpoint):
        if trainer.is_global_zero:
            save_from_state(module.lm, checkpoint["state_dict"], self.out_dir,
                            averaged=EMA.holds_average(checkpoint))  # trainer.ema_decay


def speech_vocab_from_tokenizer(path: str | Path) -> int:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"no tokenizer config at {cfg}")
    return int(json.loads(cfg.read_text())["codebook_size"])


def initial_model(cfg: LLMConfig) -> SpeechLM:
    """The model a run starts from: a new one (``init_from`` unset, or a plain HF causal LM
    whose weights it takes), or, when ``init_from`` is a saved VoxLM LLM, that model to
    fine-tune: its architecture, frontend and layout, whatever the config's ``llm`` section
    says of them (only ``uncond_prob`` is the config's). Its speech vocabulary must be the
    tokenizer's: tokens of another tokenizer mean nothing to it."""
    path = Path(cfg.init_from) if cfg.init_from else None
    if path is None or not (path / LAYOUT_FILE).is_file():
        return SpeechLM(cfg)
    lm = SpeechLM.from_pretrained(path)
    if lm.cfg.speech_vocab_size != cfg.speech_vocab_size:
        raise LLMCheckpointError(
            f"init_from {path} speaks {lm.cfg.speech_vocab_size} speech tokens, the tokenizer has "
            f"{cfg.speech_vocab_size}: fine-tune on tokens of the tokenizer it was trained with")
    lm.cfg = replace(lm.cfg, uncond_prob=cfg.uncond_prob)
    print(f"llm: fine-tuning {path} ({lm.cfg.arch}, {lm.cfg.layout} layout, {lm.cfg.frontend.units})", flush=True)
    return lm.train()


def train(cfg: LLMTrainConfig, train_dir: str | Path, dev_dir: str | Path | None, exp: str | Path,
          synthetic: bool = False, **trainer_kwargs) -> SpeechLM:
    """Train (or resume) and return the model; ``<exp>/model`` holds the saved directory.

    synthetic: train on :func:`synthetic_tokens` instead of the data's ``tokens``.
    """
    exp = Path(exp)
    L.seed_everything(cfg.trainer.seed, workers=True)
    lm = initial_model(cfg.llm)
    synth = cfg.llm.speech_vocab_size if synthetic else None
    inter = lm.layout.interleaved
    pairs = load_pairs(train_dir, lm.frontend, lm.max_positions, synth, durations=inter, lookahead=lm.layout.lookahead)
    lm.ratio = measure_ratio(pairs)
    train_ds = PairDataset(pairs, lm, cfg.data.prompt_prob, cfg.data.loss_on_prompt, cfg.trainer.seed,
                           cfg.llm.uncond_prob)
    loaders = {"train_dataloaders": make_loader(train_ds, cfg.data, True, cfg.trainer.seed)}
    if dev_dir:
        dev_ds = PairDataset(load_pairs(dev_dir, lm.frontend, lm.max_positions, synth, durations=inter,
                                         lookahead=lm.layout.lookahead), lm)
        loaders["val_dataloaders"] = make_loader(dev_ds, cfg.data, False)
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    task = LLMTask(cfg, lm)
    print(f"llm: {lm.num_parameters() / 1e6:.2f}M parameters, {len(pairs)} training utterances, "
          f"tokens/char guard {lm.ratio.min_ratio:.2f}..{lm.ratio.max_ratio:.2f}", flush=True)
    callbacks = [ExportModel(exp / "model"), *trainer_kwargs.pop("callbacks", [])]
    layer = type(lm.model.model.layers[0])  # FSDP shards decoder layer by decoder layer
    trainer = build_trainer(cfg.trainer, exp, callbacks=callbacks, fsdp_wrap={layer}, **trainer_kwargs)
    trainer.fit(task, **loaders, ckpt_path=last_checkpoint(exp))
    state = trainer.strategy.lightning_module_state_dict()  # collective under FSDP: every rank calls it
    if trainer.is_global_zero:
        if cfg.trainer.average_last > 1:  # rank 0 wrote the (full) step checkpoints
            state, steps = average_checkpoints(exp, cfg.trainer.average_last)
            if not _sharded(lm):
                task.load_state_dict(state)
            print(f"llm: model = mean of the checkpoints of steps {steps}", flush=True)
        save_from_state(lm, state, exp / "model")
    return lm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML mapping onto LLMTrainConfig")
    p.add_argument("--train", required=True, help="data dir with text, tokens, utt2spk")
    p.add_argument("--dev", help="data dir for validation loss/accuracy")
    p.add_argument("--exp", required=True, help="experiment dir (checkpoints, logs, model/)")
    p.add_argument("--tokenizer", help="speech tokenizer model dir: its codebook_size sets the speech vocab")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--synthetic-tokens", action="store_true",
                   help="alignment warm-up: train on tokens made from the text alone")
    p.add_argument("--init-from", help="override llm.init_from (a saved model dir to start from)")
    add_trainer_args(p)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    apply_trainer_args(cfg.trainer, args)
    if args.tokenizer:
        cfg.llm.speech_vocab_size = speech_vocab_from_tokenizer(args.tokenizer)
    if args.init_from:
        cfg.llm.init_from = args.init_from
    try:
        train(cfg, args.train, args.dev, args.exp, synthetic=args.synthetic_tokens)
    except LLMCheckpointError as err:  # a missing, corrupt or unfitting init_from: one line
        raise SystemExit(f"tts.llm_train: error: {err}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
