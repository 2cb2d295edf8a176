"""LLM generation speed on this machine: tokens/s at batch 1 and for N candidates, and
R requests (other texts and prompts) one by one against one batched call (JSON).

    python benchmarks/bench_llm.py [--model exp/llm/model | --config egs/synth_en/conf/llm.yaml]
        [--threads 1] [--candidates 8] [--tokens 200] [--repeats 3] [--requests 8]

Uses a saved model when given, else a randomly initialised one of the config's
size (speed does not depend on the weights). Generation is forced to exactly
``--tokens`` steps (min = max length) so every run does the same work.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from tts.llm import SpeechLM
from tts.llm_train import load_config
from tts.sampling import Item, SamplingConfig, generate, generate_many

TEXT = "The quick brown fox jumps over the lazy dog, then takes a long nap in the warm sun."


def bench(lm: SpeechLM, candidates: int, tokens: int, repeats: int) -> dict:
    text = lm.frontend.encode(TEXT)[0]
    prompt_text = lm.frontend.encode("A short prompt sentence, spoken before.")[0]
    prompt_speech = [i % lm.layout.speech_vocab_size for i in range(75)]  # 3 s at 25 Hz
    ratio = tokens / len(text)
    cfg = SamplingConfig(num_candidates=candidates, min_ratio=ratio, max_ratio=ratio, seed=0)
    generate(lm, text, prompt_text, prompt_speech, cfg)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen = generate(lm, text, prompt_text, prompt_speech, cfg)
        times.append(time.perf_counter() - t0)
    best = min(times)
    produced = sum(len(t) for t in gen.tokens)
    seconds = max(len(t) for t in gen.tokens) / 25.0  # 25 speech tokens/s (advance steps make no audio)
    return {"candidates": candidates, "steps": gen.steps, "seconds": round(best, 4),
            "tokens_per_s": round(produced / best, 1),
            "steps_per_s": round(gen.steps / best, 1),
            "rtf_per_candidate_set": round(best / seconds, 4)}


def bench_requests(lm: SpeechLM, requests: int, tokens: int, repeats: int) -> dict:
    """``requests`` inputs of other lengths, each with its own prompt: a loop of generate()
    calls against one generate_many() call (the same tokens either way)."""
    words = TEXT.split()
    items = []
    for r in range(requests):
        text = " ".join(words[: 6 + (r * 5) % (len(words) - 5)])  # 6..17 words
        prompt_speech = [(7 * r + i) % lm.layout.speech_vocab_size for i in range(50 + 10 * (r % 4))]
        items.append(Item(lm.frontend.encode(text)[0], lm.frontend.encode(f"Prompt number {r}.")[0],
                          prompt_speech, seed=r))
    ratio = tokens / len(lm.frontend.encode(TEXT)[0])
    cfg = SamplingConfig(min_ratio=ratio, max_ratio=ratio)
    generate_many(lm, items, cfg)  # warm-up
    alone, batched = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for it in items:
            generate_many(lm, [it], cfg)
        alone.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gens = generate_many(lm, items, cfg)
        batched.append(time.perf_counter() - t0)
    produced = sum(len(g.tokens[0]) for g in gens)
    return {"requests": requests, "tokens": produced, "one_by_one_s": round(min(alone), 4),
            "batched_s": round(min(batched), 4), "speedup": round(min(alone) / min(batched), 2),
            "batched_tokens_per_s": round(produced / min(batched), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="saved LLM dir")
    p.add_argument("--config", default="egs/synth_en/conf/llm.yaml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=8, help="inputs of the batched-requests run (0: skip it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = SpeechLM.from_pretrained(args.model) if args.model else SpeechLM(load_config(args.config).llm).eval()
    one = bench(lm, 1, args.tokens, args.repeats)
    many = bench(lm, args.candidates, args.tokens, args.repeats)
    print(json.dumps({
        "benchmark": "llm_generation", "parameters_M": round(lm.num_parameters() / 1e6, 2),
        "threads": args.threads, "machine": platform.machine(), "batch1": one,
        f"candidates{args.candidates}": many,
        "cost_ratio_N_vs_1": round(many["seconds"] / one["seconds"], 2),
        **({"requests": bench_requests(lm, args.requests, args.tokens, args.repeats)} if args.requests else {}),
        "note": "rtf: wall time / audio seconds of one candidate (25 tokens/s); the CPU may be shared",
    }, indent=2))


if __name__ == "__main__":
    main()
