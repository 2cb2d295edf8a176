"""``voxlm bench --backend onnx``: onnxruntime vs torch eager, per component and end to end, one run.

Both backends load the same model directory in the same process with the same
thread count and get identical inputs; each figure is the best of ``repeats``
timed calls after one warm-up call. ``speedup`` = torch seconds / onnx seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from tts.sampling import SamplingConfig, generate


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: onnxruntime plans its memory on the first call
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _component_calls(synth, prompt, tokens: list[int], mel: torch.Tensor, audio: np.ndarray) -> dict:
    """name -> zero-argument call doing that component's work on fixed inputs."""
    lm, sr = synth.lm, synth.sample_rate
    text_ids = lm.frontend.encode_normalized(" ".join(lm.frontend.normalize("a fixed length benchmark text")))
    prompt_ids = lm.frontend.encode_normalized(" ".join(lm.frontend.normalize(prompt.text)))
    ratio = len(tokens) / len(text_ids)  # min = max length: exactly len(tokens) decoding steps
    cfg = SamplingConfig(min_ratio=ratio, max_ratio=ratio, seed=0)
    keep = synth.flow.config.max_prompt_frames // synth.flow.config.upsample  # what the Synthesizer gives it
    p_tok, p_mel = torch.tensor(prompt.tokens[-keep:]), torch.from_numpy(prompt.mel[:, -keep * synth.flow.config.upsample:].copy())
    return {
        "tokenizer_encode": lambda: synth.tokenizer.encode(prompt.audio, sr),
        "token_verifier": lambda: synth.tokenizer.transcribe_tokens_batch([tokens] * 4),
        "llm_generate": lambda: generate(lm, text_ids, prompt_ids, prompt.tokens, cfg),
        "flow_generate": lambda: synth.flow.generate(torch.tensor(tokens), p_tok, p_mel, seed=0),
        "vocoder": lambda: synth.vocoder(mel),
        "speaker_embed": lambda: synth.speaker.embed(audio, sr),
    }


def bench(model_dir: str, text: str, prompt: str | None, prompt_text: str | None,
          n_candidates: list[int], repeats: int = 3, threads: int = 1, seconds: float = 4.0) -> dict:
    """Time both backends on the same inputs; ``seconds`` of speech for the component figures.

    prompt: an audio file, or None for a 3 s synthetic buzz (timing only).
    """
    from tts.audio import load_audio
    from tts.synthesizer import Synthesizer

    torch.set_num_threads(threads)  # onnxruntime sessions take the same count (tts.onnx_backend)
    synths = {b: Synthesizer.from_pretrained(model_dir, backend=b) for b in ("torch", "onnx")}
    sr = synths["torch"].sample_rate
    if prompt:
        prompt_audio = load_audio(prompt, sr)
    else:
        t = np.arange(3 * sr) / sr
        prompt_audio = (0.3 * np.sign(np.sin(2 * np.pi * 120 * t))).astype(np.float32)
    prompts = {b: s.prepare_prompt(prompt_audio, sr, prompt_text or "a prompt") for b, s in synths.items()}
    n_tok = int(seconds * 25)
    tokens = [int(t) for t in np.resize(prompts["torch"].tokens, n_tok)]
    mel = torch.from_numpy(np.resize(prompts["torch"].mel, (prompts["torch"].mel.shape[0], 2 * n_tok)))[None]
    audio = np.resize(prompts["torch"].audio, int(seconds * sr))
    out: dict = {"model": model_dir, "threads": threads, "repeats": repeats, "component_speech_s": seconds,
                 "providers": synths["onnx"].lm.model.prefill.session.get_providers(), "components": {}}
    calls = {b: _component_calls(s, prompts["torch"], tokens, mel, audio) for b, s in synths.items()}
    for name in calls["torch"]:
        t = {b: best_seconds(calls[b][name], repeats) for b in synths}
        out["components"][name] = {"torch_s": round(t["torch"], 5), "onnx_s": round(t["onnx"], 5),
                                   "speedup": round(t["torch"] / t["onnx"], 2)}
    out["end_to_end"] = []
    for n in n_candidates:
        row = {"n_candidates": n}
        for b, s in synths.items():
            secs = audio_s = 0.0
            s.synthesize(text, prompts[b], n_candidates=n, seed=0)  # warm-up
            for i in range(repeats):
                t0 = time.perf_counter()
                r = s.synthesize(text, prompts[b], n_candidates=n, seed=i)
                secs, audio_s = secs + time.perf_counter() - t0, audio_s + r.duration
            row[f"{b}_rtf"] = round(secs / audio_s, 5)
        row["speedup"] = round(row["torch_rtf"] / row["onnx_rtf"], 2)
        out["end_to_end"].append(row)
    return out
