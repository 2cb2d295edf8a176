"""The flow's mel of each utterance of a data dir, for fine-tuning the vocoder on what it is given.

Each utterance is painted from its own real tokens with a prompt from another utterance of the
same speaker (as ``flow.report`` does), so the mel is time-aligned with the real audio: frame
``t`` covers samples ``t * hop`` on. ``vocoder.train --input-mels OUT`` then learns to turn the
flow's smoother mels into the real waveform (HiFi-GAN's fine-tuning on Tacotron 2's mels).
Writes ``OUT/<utt>.npy`` (n_mels, T), float32, each renamed into place when whole, so an
interrupted run resumes where it stopped; ``--shard K --num-shards N`` takes every N-th pair
from the K-th (run N processes side by side; under torchrun or srun the launcher's rank and
world size are the defaults, as for ``tokenizer.extract``).

    python -m flow.gta --model exp/flow/model --data data/train --out exp/flow/gta_train
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import torch
from tqdm import tqdm

from flow.data import cache_mels, read_tokens, save_mel
from flow.model import FlowModel
from flow.report import pick_prompts, prompt_inputs
from tts.datadir import launcher_shard, read_table
from tts.evaluate import case_seed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="flow model dir")
    p.add_argument("--data", required=True, help="data dir with wav.scp, utt2spk, tokens")
    p.add_argument("--out", required=True, help="folder for <utt>.npy")
    p.add_argument("--max-utts", type=int, help="N utterances (a fixed pseudo-random choice, the same for any --shard)")
    env_shard, env_shards = launcher_shard()
    p.add_argument("--shard", type=int, default=env_shard, help="this process's shard (default: launcher rank)")
    p.add_argument("--num-shards", type=int, default=env_shards, help="shards in all (default: launcher world)")
    p.add_argument("--prompt-seconds", type=float, default=6.0, help="cut prompts to at most this long")
    p.add_argument("--seed", type=int, default=0, help="each utterance's noise: seed + crc32(utt)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if not 0 <= args.shard < args.num_shards:
        p.error(f"--shard {args.shard} outside 0..{args.num_shards - 1}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = FlowModel.from_pretrained(args.model)
    cfg, d, out = model.config, Path(args.data), Path(args.out)
    tokens, utt2spk = read_tokens(d / "tokens"), read_table(d / "utt2spk")
    pairs = pick_prompts(utt2spk, sorted(set(tokens) & set(read_table(d / "wav.scp"))))
    pairs = sorted(pairs, key=lambda pair: zlib.crc32(pair[0].encode()))[: args.max_utts]  # all voices, any N
    if not pairs:
        raise SystemExit(f"flow.gta: no speaker in {d} has two utterances with tokens")
    mine = pairs[args.shard::args.num_shards]
    todo = [(u, pr) for u, pr in mine if not (out / f"{u}.npy").is_file()]
    out.mkdir(parents=True, exist_ok=True)
    cache_mels(d, cfg.mel_config, sorted({pr for _, pr in todo}))
    for utt, prompt in tqdm(todo, desc="flow.gta"):
        p_tok, p_mel = prompt_inputs(d, tokens, prompt, model, args.prompt_seconds)
        mel = model.generate(torch.from_numpy(tokens[utt]), p_tok, p_mel, seed=case_seed(args.seed, utt))
        save_mel(out / f"{utt}.npy", mel.numpy())  # (n_mels, up * N)
    print(f"flow.gta: {len(todo)} mels written to {out} ({len(mine) - len(todo)} were there)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
