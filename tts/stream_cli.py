"""``voxlm synth|bench|eval --stream``: the command-line side of :mod:`tts.streaming`.

Kept apart from :mod:`tts.cli` so that the parser stays one screen; torch loads lazily.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def add_stream_options(p: argparse.ArgumentParser, bench: bool = False) -> None:
    p.add_argument("--stream", action="store_true", help="streaming synthesis (tts.streaming)")
    if bench:
        p.add_argument("--chunk-tokens", type=int, nargs="+", default=[12, 25],
                       help="--stream: chunk sizes to time, in speech tokens (25 = 1 s)")
    else:
        p.add_argument("--chunk-tokens", type=int, default=None, help="--stream: tokens per chunk after the first")
    p.add_argument("--first-chunk-tokens", type=int, default=None, help="--stream: tokens in the first chunk")
    p.add_argument("--flow-lookahead-tokens", type=int, default=None,
                   help="--stream: tokens after each chunk that the flow sees with it (default: tts.streaming's)")
    p.add_argument("--vocoder-lookahead", type=int, default=None,
                   help="--stream: mel frames the vocoder waits for before a join (default: tts.streaming's)")


def stream_kwargs(args: argparse.Namespace) -> dict:
    from tts import streaming
    return {"chunk_tokens": getattr(args, "chunk_tokens", None) or streaming.CHUNK_TOKENS,
            "first_chunk_tokens": args.first_chunk_tokens or streaming.FIRST_CHUNK_TOKENS,
            "vocoder_lookahead": streaming.VOCODER_LOOKAHEAD if args.vocoder_lookahead is None
            else args.vocoder_lookahead,
            "flow_lookahead_tokens": streaming.FLOW_LOOKAHEAD_TOKENS if args.flow_lookahead_tokens is None
            else args.flow_lookahead_tokens}


def _timed(stream) -> tuple[list[float], list, float]:
    """Iterate a stream: -> (arrival times after the call, chunks, seconds to the end)."""
    t0, times, chunks = stream.t_start, [], []
    for c in stream:
        times.append(time.perf_counter() - t0)
        chunks.append(c)
    return times, chunks, time.perf_counter() - t0


def playback_stall(times: list[float], chunks: list, sample_rate: int) -> float:
    """Seconds a player starting at the first chunk would wait for later chunks (0 = no gap)."""
    clock = times[0]
    for t, c in zip(times, chunks, strict=True):
        clock = max(clock, t) + len(c) / sample_rate
    return clock - times[0] - sum(len(c) for c in chunks) / sample_rate


def synth_stream(args: argparse.Namespace, kwargs: dict) -> int:
    """Write the wav as chunks arrive; report the time to the first audio."""
    import numpy as np
    import soundfile as sf

    from tts.synthesizer import Synthesizer

    synth = Synthesizer.from_pretrained(args.model)
    stream = synth.stream(args.text, args.prompt, prompt_text=args.prompt_text, **kwargs, **stream_kwargs(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    samples, times = 0, []
    with sf.SoundFile(args.out, "w", synth.sample_rate, 1, subtype="PCM_16") as f:
        for chunk in stream:
            times.append(time.perf_counter() - stream.t_start)
            f.write(np.clip(chunk, -1.0, 1.0))
            f.flush()
            samples += len(chunk)
    seconds = samples / synth.sample_rate
    print(json.dumps({"out": args.out, "seconds": round(seconds, 3), "chunks": len(times),
                      "first_audio_s": round(times[0], 4), "total_s": round(times[-1], 4),
                      "rtf": round(times[-1] / max(seconds, 1e-6), 4), "sentences": stream.sentences,
                      "note": "first_audio_s counts the prompt analysis (no cached Prompt on the command line)"},
                     indent=2))
    return 0


def bench_stream(args: argparse.Namespace, synth, prompt_audio, prompt_text: str) -> int:
    """Median time to the first chunk (cached and uncached prompt), RTF and stalls per chunk size."""
    from tts.cli import _sampling_kwargs

    sr, kw = synth.sample_rate, {**stream_kwargs(args), **_sampling_kwargs(args)}
    prompt = synth.prepare_prompt(prompt_audio, sr, prompt_text)
    _timed(synth.stream(args.text, prompt, seed=0, **{**kw, "chunk_tokens": args.chunk_tokens[0]}))  # warm-up
    out = {"model": args.model, "threads": args.threads, "text": args.text, "repeats": args.repeats,
           "first_chunk_tokens": kw["first_chunk_tokens"], "vocoder_lookahead": kw["vocoder_lookahead"],
           "flow_lookahead_tokens": kw["flow_lookahead_tokens"],
           "load_average_1min": round(os.getloadavg()[0], 2), "runs": []}
    for chunk in args.chunk_tokens:
        for cached in (True, False):
            first, cpu, rtf, stall, audio = [], [], [], [], []
            for i in range(args.repeats):
                p = prompt if cached else prompt_audio
                s = synth.stream(args.text, p, sr, prompt_text, seed=i, **{**kw, "chunk_tokens": chunk})
                times, chunks, total = _timed(s)
                seconds = sum(len(c) for c in chunks) / sr
                first.append(times[0])
                cpu.append(s.first_audio_cpu_s)
                rtf.append(total / seconds)
                stall.append(playback_stall(times, chunks, sr))
                audio.append(seconds)
            out["runs"].append({"chunk_tokens": chunk, "prompt_cached": cached,
                                "first_audio_ms_median": round(1000 * statistics.median(first), 1),
                                "first_audio_ms_min": round(1000 * min(first), 1),
                                "first_audio_cpu_ms_median": round(1000 * statistics.median(cpu), 1),
                                "rtf_median": round(statistics.median(rtf), 4),
                                "stall_s_median": round(statistics.median(stall), 3),
                                "audio_s_mean": round(statistics.mean(audio), 2)})
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=2))
    return 0


def eval_stream(args: argparse.Namespace, cases: list, kwargs: dict) -> int:
    """Offline and streamed clones of the same list with the same seeds: WER, SIM, clicks, latency."""
    import numpy as np
    from tqdm import tqdm

    from tts.audio import save_audio
    from tts.evaluate import case_seed, save_report, score_rows
    from tts.judges import paired_difference
    from tts.streaming import click_ratio
    from tts.synthesizer import Synthesizer

    out = Path(args.out)
    synth = Synthesizer.from_pretrained(args.model)
    dirs = {"offline": out / "offline", "stream": out / "stream"}
    clicks = {"stream": [], "offline": []}
    first = []
    for c in tqdm(cases, desc="offline + stream"):
        prompt = synth.prepare_prompt(c.prompt_wav, None, c.prompt_text)
        kw = {**kwargs, "seed": case_seed(kwargs["seed"], c.utt)}
        offline = synth.synthesize(c.target_text, prompt, **kw).audio
        s = synth.stream(c.target_text, prompt, **kw, **stream_kwargs(args))
        times, chunks, _ = _timed(s)
        streamed = np.concatenate(chunks)
        first.append(times[0])
        save_audio(dirs["offline"] / f"{c.utt}.wav", offline, synth.sample_rate)
        save_audio(dirs["stream"] / f"{c.utt}.wav", streamed, synth.sample_rate)
        if s.joins and len(offline) == len(streamed):  # same tokens: same length; the offline audio at
            clicks["stream"].append(click_ratio(streamed, s.joins))  # the same places is the baseline
            clicks["offline"].append(click_ratio(offline, s.joins))
    rows = score_rows(cases, dirs, judge_jobs=args.judge_jobs)
    for name, vals in clicks.items():
        vals = [v for v in vals if np.isfinite(v)]
        rows[name]["click_ratio_at_stream_joins"] = float(np.mean(vals)) if vals else None
    rows["stream"]["stream_minus_offline_wer"] = paired_difference(  # per clone: the same tokens
        [u["wer"] for u in rows["stream"]["per_utt"]], [u["wer"] for u in rows["offline"]["per_utt"]])
    rows["stream"]["first_audio_ms_median"] = round(1000 * statistics.median(first), 1)
    rows["stream"]["stream_options"] = stream_kwargs(args)
    rows["stream"]["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(save_report(out, rows, "click ratio at the stream's joins (1 = seamless): " + ", ".join(
        f"{n} {rows[n]['click_ratio_at_stream_joins']}" for n in dirs)))
    return 0
