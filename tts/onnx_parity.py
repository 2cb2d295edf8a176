"""Parity of the onnxruntime backend with torch eager, component by component (the export report).

    tokenizer  token ids identical on a few clips; CTC logits max abs error; phone log-posteriors
               max abs error (where the export has the phone graph)
    llm        greedy tokens identical for the dev prompts; seeded best-of-3 sampling identical
    flow       one ODE step (Euler, steps=1) and the full default solve: max abs error of the mel;
               the same for the int8 estimator (``flow_int8``), with the solve's relative error
    vocoder    max abs error of the waveform
    speaker    max abs error of the embedding

Inputs are made here (synthetic audio, fixed texts), so the check runs on any model directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tts.sampling import SamplingConfig, generate

DEV_TEXTS = ("The quick brown fox jumps over the lazy dog.", "How are you today?",
             "Please call Stella and ask her to bring these things with her from the store.")
PROMPT_TEXT = "A short prompt sentence."


def parity_clips(sample_rate: int = 16000) -> list[np.ndarray]:
    """Three clips of 1.3-3.1 s: a buzz with vibrato, a chirp, noise bursts (deterministic)."""
    rng = np.random.default_rng(0)
    clips = []
    for seconds, f0 in ((1.3, 110.0), (2.2, 180.0), (3.1, 240.0)):
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / sample_rate
        x = 0.3 * np.sign(np.sin(phase)) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t) ** 2)
        clips.append((x + 0.02 * rng.standard_normal(len(t))).astype(np.float32))
    return clips


def _max_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@torch.no_grad()
def parity_report(root: str | Path, torch_parts: dict, onnx_parts: dict | None = None, int8: bool = False) -> dict:
    """torch components (``{"tokenizer": SpeechTokenizer, ...}``) vs their onnx adapters (and the int8 flow)."""
    from tts.onnx_backend import (
        OnnxFlow,
        OrtGraph,
        check_onnx_dir,
        graph_files,
        load_onnx_components,
        providers,
    )

    o = onnx_parts or load_onnx_components(root)
    t = torch_parts
    sr = t["vocoder"].mel_config.sample_rate
    clips = parity_clips(sr)
    rep: dict = {}

    ids_t = t["tokenizer"].encode_batch(clips, sr)
    ids_o = o["tokenizer"].encode_batch(clips, sr)
    same = sum(int((a == b).sum()) for a, b in zip(ids_t, ids_o, strict=True))
    total = sum(len(a) for a in ids_t)
    logits = [m.model.logits_from_tokens(torch.from_numpy(ids_t[-1])[None], torch.tensor([len(ids_t[-1])]))
              for m in (t["tokenizer"], o["tokenizer"])]
    rep["tokenizer"] = {"tokens_identical": same == total, "tokens_equal": f"{same}/{total}",
                        "ctc_logits_max_abs_err": _max_err(*logits)}
    if o["tokenizer"].has_phone_head:  # the phone verifier's posteriors
        phones = [m.phone_log_probs_batch(clips, sr) for m in (t["tokenizer"], o["tokenizer"])]
        rep["tokenizer"]["phone_log_probs_max_abs_err"] = max(_max_err(a, b) for a, b in zip(*phones, strict=True))

    prompt_speech = [int(x) for x in ids_t[1] % t["llm"].layout.speech_vocab_size]
    fe = t["llm"].frontend
    prompt_ids = fe.encode_normalized(fe.transcript(PROMPT_TEXT))
    greedy, sampled = [], []
    for text in DEV_TEXTS:
        ids = fe.encode_normalized(fe.transcript(text))
        for cfg, out in ((SamplingConfig(greedy=True), greedy), (SamplingConfig(num_candidates=3, seed=7), sampled)):
            a, b = (generate(m, ids, prompt_ids, prompt_speech, cfg).tokens for m in (t["llm"], o["llm"]))
            out.append(a == b)
    rep["llm"] = {"greedy_identical": all(greedy), "greedy_prompts": len(greedy),
                  "sampled_best_of_3_identical": f"{sum(sampled)}/{len(sampled)}"}

    tokens = torch.from_numpy(ids_t[1][:20] % t["flow"].config.vocab_size)
    keep = t["flow"].config.max_prompt_frames // t["flow"].config.upsample
    p_tok = torch.from_numpy(ids_t[2][-keep:] % t["flow"].config.vocab_size)
    from tts.mel import mel_spectrogram

    p_mel = torch.from_numpy(mel_spectrogram(clips[2], t["vocoder"].mel_config)[:, -2 * len(p_tok):].copy())
    flow = {}
    for label, kw in (("step", {"steps": 1, "solver": "euler", "guidance": 0.7}), ("solve", {})):
        a, b = (m.generate(tokens, p_tok, p_mel, seed=3, **kw) for m in (t["flow"], o["flow"]))
        flow[f"{label}_max_abs_err"] = _max_err(a, b)
    rep["flow"] = flow
    if int8:  # the int8 estimator beside the same flow_tokens graph (no second load of the chain)
        est = graph_files(Path(root), check_onnx_dir(root), int8=True)["flow_estimator"]
        o8 = OnnxFlow(Path(root) / "flow", o["flow"].tokens_graph, OrtGraph(est, providers()))
        a, b = (m.generate(tokens, p_tok, p_mel, seed=3) for m in (t["flow"], o8))
        rep["flow_int8"] = {"solve_max_abs_err": _max_err(a, b),
                            "solve_rel_err": float(torch.linalg.norm(a - b) / torch.linalg.norm(a))}

    mel = p_mel[None]
    rep["vocoder"] = {"max_abs_err": _max_err(t["vocoder"](mel), o["vocoder"](mel)),
                      "frames": int(mel.shape[-1])}
    rep["speaker"] = {"max_abs_err": max(_max_err(t["speaker"].embed(c, sr), o["speaker"].embed(c, sr)) for c in clips)}
    return rep
