"""Vocoder speed on this CPU: real-time factor at batch 1, 1 and 2 threads; prints JSON.

    python benchmarks/bench_vocoder.py [--model exp/vocoder/model] [--seconds 5] [--repeats 3]

RTF = compute seconds / audio seconds (lower is faster; < 1 is faster than real time).
Without --model a freshly initialised default-config vocoder is timed (speed does
not depend on the weights). Griffin-Lim (32 iterations, NNLS mel inverse) is
timed beside it, and the chunked (streaming) mode with its default overlap.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from vocoder import GriffinLim, Vocoder, VocoderConfig


def rtf(fn, mel: torch.Tensor, audio_seconds: float, repeats: int) -> float:
    with torch.inference_mode():
        fn(mel)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(mel)
            best = min(best, time.perf_counter() - t0)
    return best / audio_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-frames", type=int, default=25)
    args = ap.parse_args()

    model = Vocoder.from_pretrained(args.model) if args.model else Vocoder(VocoderConfig()).eval()
    gl = GriffinLim(model.mel_config, n_iter=32)
    frames = int(args.seconds * model.mel_config.frame_rate)
    torch.manual_seed(0)
    mel = torch.randn(1, model.mel_config.n_mels, frames) - 5.0
    seconds = frames * model.hop / model.mel_config.sample_rate
    result = {
        "device": platform.processor() or platform.machine(),
        "audio_seconds": seconds, "batch": 1,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "context_frames": model.context_frames, "chunk_frames": args.chunk_frames,
    }
    for threads in (1, 2):
        torch.set_num_threads(threads)
        result[f"vocoder_rtf_{threads}thread"] = round(rtf(model, mel, seconds, args.repeats), 5)
        result[f"vocoder_chunked_rtf_{threads}thread"] = round(
            rtf(lambda m: model.vocode_chunked(m, args.chunk_frames), mel, seconds, args.repeats), 5)
        result[f"griffinlim_rtf_{threads}thread"] = round(rtf(gl, mel, seconds, 1), 5)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
