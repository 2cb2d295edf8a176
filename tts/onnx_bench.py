"""``voxlm bench --backend onnx``: onnxruntime vs torch eager, per component and end to end, one run.

Both backends load the same model directory in the same process with the same
thread count and get identical inputs; each figure is the best of ``repeats``
timed calls after one warm-up call. ``speedup`` = torch seconds / onnx seconds;
``int8_speedup`` the same for the ``onnx-int8`` backend (the flow estimator's int8
twin), measured when the export has it.
End to end, every candidate is held at ``TOKENS_PER_CHAR`` speech tokens per text
character (min = max length), so both backends do the same work whatever they sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from tts.sampling import SamplingConfig, generate

TOKENS_PER_CHAR = 1.7  # ~25 tokens/s of speech over ~15 characters/s of English


def best_seconds(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each call; the calls alternate, so a busy machine slows them alike."""
    for fn in calls.values():
        fn()  # warm-up: onnxruntime plans its memory on the first call
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _row(figures: dict[str, float], unit: str, digits: int) -> dict:
    """{"torch": a, "onnx": b, ...} -> {"torch_s": a, "onnx_s": b, "speedup": a / b, ...}."""
    row = {f"{b.replace('-', '_')}_{unit}": round(v, digits) for b, v in figures.items()}
    row["speedup"] = round(figures["torch"] / figures["onnx"], 2)
    if "onnx-int8" in figures:
        row["int8_speedup"] = round(figures["torch"] / figures["onnx-int8"], 2)
    return row


def _component_calls(synth, prompt, tokens: list[int], mel: torch.Tensor, audio: np.ndarray) -> dict:
    """name -> zero-argument call doing that component's work on fixed inputs."""
    lm, sr = synth.lm, synth.sample_rate
    text_ids = lm.frontend.encode_normalized(lm.frontend.transcript("a fixed length benchmark text"))
    prompt_ids = lm.frontend.encode_normalized(lm.frontend.transcript(prompt.text))
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
    """Time the backends on the same inputs; ``seconds`` of speech for the component figures.

    prompt: an audio file, or None for a 3 s synthetic buzz (timing only).
    """
    from tts.audio import load_audio
    from tts.onnx_backend import check_onnx_dir
    from tts.synthesizer import Synthesizer

    torch.set_num_threads(threads)  # onnxruntime sessions take the same count (tts.onnx_backend)
    backends = ("torch", "onnx") + (("onnx-int8",) if check_onnx_dir(model_dir).get("int8") else ())
    synths = {b: Synthesizer.from_pretrained(model_dir, backend=b) for b in backends}
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
                 "providers": synths["onnx"].lm.model.graph.session.get_providers(), "components": {}}
    calls = {b: _component_calls(s, prompts["torch"], tokens, mel, audio) for b, s in synths.items()}
    for name in calls["torch"]:
        t = best_seconds({b: calls[b][name] for b in synths}, repeats)
        out["components"][name] = _row(t, "s", 5)
    out["end_to_end"], fixed = [], {"min_ratio": TOKENS_PER_CHAR, "max_ratio": TOKENS_PER_CHAR}
    out["end_to_end_tokens_per_char"] = TOKENS_PER_CHAR
    for n in n_candidates:
        row, secs, audio_s = {"n_candidates": n}, dict.fromkeys(synths, 0.0), dict.fromkeys(synths, 0.0)
        for b, s in synths.items():
            s.synthesize(text, prompts[b], n_candidates=n, seed=0, **fixed)  # warm-up
        for i in range(repeats):
            for b, s in synths.items():
                t0 = time.perf_counter()
                r = s.synthesize(text, prompts[b], n_candidates=n, seed=i, **fixed)
                secs[b] += time.perf_counter() - t0
                audio_s[b] += r.duration
        out["end_to_end"].append(row | _row({b: secs[b] / audio_s[b] for b in synths}, "rtf", 5))
    return out
