"""One rank of the 2-process DDP test (tests/test_distributed.py), started by torchrun:

    torchrun --nproc_per_node 2 tests/ddp_worker.py DATA_DIR OUT_DIR

Trains every component a few steps with the tiny configs (CPU, gloo, strategy ddp)
and saves each rank's parameters to OUT_DIR/<component>.rank<r>.pt, plus the
utterances of the batches that rank trained on to OUT_DIR/<component>.rank<r>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

from tts.training import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "egs" / "synth_en" / "conf"
STEPS = 4


class Dump(L.Callback):
    """At the end of training: this rank's parameters and the utterances it saw."""

    def __init__(self, out: Path, name: str):
        self.out, self.name, self.utts = out, name, []

    def on_train_start(self, trainer, module):  # after RankSeed: each rank's own random stream
        self.draw = torch.rand(4).tolist()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if isinstance(batch, dict) and "utts" in batch:
            self.utts.append(list(batch["utts"]))

    def on_train_end(self, trainer, module):
        rank = trainer.global_rank
        params = {n: p.detach().cpu().clone() for n, p in module.named_parameters()}
        torch.save(params, self.out / f"{self.name}.rank{rank}.pt")
        info = {"world_size": trainer.world_size, "global_step": trainer.global_step, "utts": self.utts,
                "draw": self.draw}
        (self.out / f"{self.name}.rank{rank}.json").write_text(json.dumps(info))


def ddp(trainer: TrainerConfig) -> TrainerConfig:
    trainer.accelerator, trainer.devices, trainer.strategy = "cpu", 2, "ddp"
    trainer.max_steps, trainer.checkpoint_every, trainer.val_every = STEPS, 2, 1000
    trainer.precision, trainer.progress_bar = "32-true", False
    return trainer


def main(data: Path, out: Path) -> None:
    torch.set_num_threads(1)
    which = sys.argv[3].split(",") if len(sys.argv) > 3 else ["tokenizer", "llm", "flow", "vocoder", "speaker"]
    if "tokenizer" in which:
        from tokenizer.config import load_config
        from tokenizer.train import train

        cfg = load_config(CONF / "tokenizer_tiny.yaml")
        ddp(cfg.trainer)
        train(cfg, data, data, out / "tokenizer", callbacks=[Dump(out, "tokenizer")])
    if "llm" in which:
        from tts.llm_train import load_config, train

        cfg = load_config(CONF / "llm_tiny.yaml")
        ddp(cfg.trainer)
        train(cfg, data, None, out / "llm", callbacks=[Dump(out, "llm")], enable_model_summary=False)
    if "flow" in which:
        from flow.train import FlowTrainConfig, train

        cfg = FlowTrainConfig.from_yaml(CONF / "flow_tiny.yaml")
        ddp(cfg.trainer)
        train(cfg, data, None, out / "flow", progress=False, callbacks=[Dump(out, "flow")])
    if "vocoder" in which:
        from vocoder.train import load_config, train

        cfg = load_config(CONF / "vocoder_tiny.yaml")
        ddp(cfg.trainer)
        train(cfg, data, data, out / "vocoder", callbacks=[Dump(out, "vocoder")])
    if "speaker" in which:
        from tts.speaker_train import SpeakerTrainConfig, train

        cfg = SpeakerTrainConfig(max_steps=STEPS, batch_size=4, channels=32, embed_dim=16, segment_frames=40)
        train(str(data), None, str(out / "speaker"), cfg, ddp(TrainerConfig(grad_clip=1.0)),
              callbacks=[Dump(out, "speaker")])
    print(f"rank {os.environ.get('RANK')} done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
