"""Speed of the speech tokenizer: encode RTF (one clip, a batch) and transcribe_tokens latency.

    python benchmarks/bench_tokenizer.py [--model exp/tokenizer/model] [--threads 1] [--seconds 10]

Without --model it times a randomly initialised model of conf/tokenizer.yaml's
shape (speed does not depend on the weights). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tokenizer import SpeechTokenizer
from tokenizer.config import load_config
from tokenizer.model import TokenizerModel

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--config", default=str(ROOT / "egs/synth_en/conf/tokenizer.yaml"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        tok = SpeechTokenizer.from_pretrained(args.model)
    else:
        cfg = load_config(args.config).model
        tok = SpeechTokenizer(TokenizerModel(replace(cfg, vocab=list(" 'abcdefghijklmnopqrstuvwxyz"))))
    rng = np.random.default_rng(0)
    n = int(args.seconds * 16000)
    t = np.arange(n) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(n))
    clip = clip.astype(np.float32)
    one = timed(lambda: tok.encode(clip, 16000), args.repeat)
    batch = timed(lambda: tok.encode_batch([clip] * args.batch, 16000, batch_size=args.batch), args.repeat)
    ids = tok.encode(clip, 16000)
    read = timed(lambda: tok.transcribe_tokens(ids), args.repeat)
    read_b = timed(lambda: tok.transcribe_tokens_batch([ids] * args.batch), args.repeat)
    print(json.dumps({
        "model": args.model or f"random init, shape of {Path(args.config).name}",
        "parameters_m": round(sum(x.numel() for x in tok.model.parameters()) / 1e6, 2),
        "threads": args.threads, "clip_seconds": args.seconds, "tokens": len(ids),
        "encode_rtf": round(one / args.seconds, 5),
        f"encode_batch{args.batch}_rtf": round(batch / (args.seconds * args.batch), 5),
        "transcribe_tokens_ms": round(read * 1000, 2),
        f"transcribe_tokens_batch{args.batch}_ms": round(read_b * 1000, 2),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
