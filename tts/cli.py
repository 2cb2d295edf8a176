"""The ``voxlm`` command line. Subcommands live here as small functions that call
the public APIs; later issues add synth, eval, export, demo and bench."""

from __future__ import annotations

import argparse
import json
import platform
import sys

from tts.model_dir import BACKENDS
from tts.stream_cli import add_stream_options
from tts.verifiers import AUDIO_VERIFIER, PHONE_VERIFIER, PRUNE_TO, SPEAKER_VERIFIER
from tts.version import __version__


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions of VoxLM and its main libraries, and torch's threads/device."""
    import importlib.metadata as md

    import torch

    from tts.training import bf16_supported

    packages = ["torch", "transformers", "lightning", "vector-quantize-pytorch", "librosa",
                "soundfile", "onnx", "onnxruntime", "jiwer", "gradio", "safetensors",
                "pocketsphinx", "resemblyzer"]
    versions = {}
    for name in packages:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info = {
        "voxlm": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "bf16_autocast_pays": bf16_supported(),
        "packages": versions,
    }
    print(json.dumps(info, indent=None if args.compact else 2))
    return 0


def _widths(text: str) -> list[int]:
    """'1,8' or '1' -> [1, 8]: the best-of-N widths to evaluate."""
    try:
        widths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 1,8, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (threads, processes)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _add_synthesis_options(p: argparse.ArgumentParser, widths: bool = False) -> None:
    p.add_argument("--model", required=True, help="VoxLM model directory")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="onnx: every network on onnxruntime (after `voxlm export onnx`); "
                        "onnx-int8: with the flow estimator's int8-weight graph")
    if widths:  # eval: one system row per width
        p.add_argument("--n-candidates", type=_widths, default=[1],
                       help="best-of-N widths, comma-separated (e.g. 1,8): one row each")
    else:
        p.add_argument("--n-candidates", type=int, default=1, help="best-of-N search width")
    _add_search_options(p)
    p.add_argument("--seed", type=int, default=0,
                   help="sampling and flow-noise seed; with --meta each line adds a hash of its utt id to it")
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads (default: torch's)")
    _add_sampling_options(p)


def _add_search_options(p: argparse.ArgumentParser) -> None:
    """Best-of-N's pruning and verifiers (synth, eval and bench); defaults: tts.verifiers."""
    p.add_argument("--prune-to", type=_positive, default=PRUNE_TO,
                   help="best-of-N: candidates the token verifier passes to flow and vocoder, for the verifiers "
                        "below that read audio to rank (1: its best alone)")
    p.add_argument("--phone-verifier", action=argparse.BooleanOptionalAction, default=PHONE_VERIFIER,
                   help="best-of-N: the tokenizer's phone CTC head reads each finalist (the target's phone likelihood)")
    p.add_argument("--audio-verifier", action=argparse.BooleanOptionalAction, default=AUDIO_VERIFIER,
                   help="best-of-N: the tokenizer's character ASR also reads each finalist (1 - CER)")
    p.add_argument("--speaker-verifier", action=argparse.BooleanOptionalAction, default=SPEAKER_VERIFIER,
                   help="best-of-N: VoxLM's speaker encoder also scores each finalist against the prompt")
    _add_verifier_option(p)


def _add_verifier_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verifier", action="append", default=[], metavar="SPEC",
                   help="best-of-N: your own verifier, repeatable: a speaker-encoder directory, file.py:factory "
                        "or module:factory, each optionally @WEIGHT (see tts/verifiers.py)")


def _plugin_verifiers(args: argparse.Namespace) -> list:
    """The --verifier plug-ins, loaded once per command (a bad spec raises VerifierSpecError)."""
    if not hasattr(args, "_verifiers"):
        from tts.verifiers import load_verifier
        args._verifiers = [load_verifier(spec) for spec in args.verifier]
    return args._verifiers


def _search_kwargs(args: argparse.Namespace) -> dict:
    return {"prune_to": args.prune_to, "phone_verifier": args.phone_verifier, "audio_verifier": args.audio_verifier,
            "use_speaker_verifier": args.speaker_verifier, "verifiers": _plugin_verifiers(args)}


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """How the LLM samples and the flow solves (synth, eval and bench): default the model's."""
    p.add_argument("--flow-steps", type=int, default=None, help="ODE steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="the flow's classifier-free guidance scale")
    p.add_argument("--text-guidance", type=float, default=None,
                   help="the LLM's classifier-free guidance over the text (a model trained with llm.uncond_prob)")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)


def _synthesis_kwargs(args: argparse.Namespace, search: bool = True) -> dict:
    """Synthesizer options from the command line; ``search``: with best-of-N's pruning and
    verifier choice (offline synthesis; streaming has no best-of-N over audio)."""
    kw = {"n_candidates": args.n_candidates, "seed": args.seed, **_sampling_kwargs(args)}
    if search:
        kw |= _search_kwargs(args)
    return kw


def _sampling_kwargs(args: argparse.Namespace) -> dict:
    """The sampling/flow options given on the command line (the others stay the model's)."""
    names = ("flow_steps", "guidance", "temperature", "top_k", "top_p", "text_guidance")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def cmd_synth(args: argparse.Namespace) -> int:
    """Speak --text in the voice of --prompt and write --out; or every line of --meta into --out-dir."""
    single, batch = (args.text, args.prompt, args.out), (args.meta, args.out_dir)
    is_batch = any(batch)
    valid = all(batch) and not any(single) and not args.stream if is_batch else all(single)
    if not valid:
        print("voxlm synth: error: give --text, --prompt and --out, or --meta and --out-dir (no --stream)",
              file=sys.stderr)
        return 2
    if is_batch:
        return synth_batch(args)
    if args.stream:  # written as it is synthesized; reports the time to the first audio
        from tts.stream_cli import synth_stream
        return synth_stream(args, _synthesis_kwargs(args, search=False))
    from tts.audio import save_audio
    from tts.synthesizer import Synthesizer

    synth = Synthesizer.from_pretrained(args.model, backend=args.backend)
    r = synth.synthesize(args.text, args.prompt, prompt_text=args.prompt_text, **_synthesis_kwargs(args))
    save_audio(args.out, r.audio, r.sample_rate)
    print(json.dumps({
        "out": args.out, "seconds": round(r.duration, 3), "rtf": round(r.timings["rtf"], 4),
        "prompt_text": r.prompt_text, "sentences": r.sentences,
        "candidates": [{"sentence": c.sentence, "tokens": len(c.tokens), "scores": c.scores,
                        "total": c.total, "chosen": any(c is x for x in r.chosen)} for c in r.candidates],
    }, indent=2))
    return 0


BATCH_REQUESTS = 8  # meta-list lines per Synthesizer.synthesize_batch call (synth --meta, eval)


def synthesize_cases(synth, cases: list, kwargs: dict, desc: str):
    """Meta-list cases -> ``(case, SynthesisResult or its user error)`` in order, their LLM
    decoding batched ``BATCH_REQUESTS`` lines at a time; each voice is analysed once. Each
    line is seeded by :func:`case_seed` from ``kwargs["seed"]``."""
    from tqdm import tqdm

    from tts.errors import USER_ERRORS
    from tts.evaluate import case_seed
    from tts.synthesizer import Request

    prompts: dict = {}
    with tqdm(total=len(cases), desc=desc) as bar:
        for k in range(0, len(cases), BATCH_REQUESTS):
            chunk, out, ready = cases[k:k + BATCH_REQUESTS], {}, []
            for c in chunk:
                key = (c.prompt_wav, c.prompt_text)
                if key not in prompts:
                    try:
                        prompts[key] = synth.prepare_prompt(c.prompt_wav, None, c.prompt_text or None)
                    except USER_ERRORS as err:  # every line of this voice fails the same way
                        prompts[key] = err
                if isinstance(prompts[key], Exception):
                    out[c.utt] = prompts[key]
                else:
                    ready.append(c)
            results = synth.synthesize_batch([Request(c.target_text, prompts[c.prompt_wav, c.prompt_text],
                                                      seed=case_seed(kwargs["seed"], c.utt)) for c in ready],
                                             errors="return", **kwargs)
            out |= {c.utt: r for c, r in zip(ready, results, strict=True)}
            for c in chunk:
                yield c, out[c.utt]
            bar.update(len(chunk))


def synth_batch(args: argparse.Namespace) -> int:
    """``--meta`` (seed-tts-eval list) -> ``--out-dir/<utt>.wav``; a bad line is reported and skipped."""
    from pathlib import Path

    from tts.audio import save_audio
    from tts.errors import USER_ERRORS
    from tts.evaluate import read_meta
    from tts.synthesizer import Synthesizer

    cases = read_meta(args.meta)
    synth = Synthesizer.from_pretrained(args.model, backend=args.backend)
    failed = []
    for c, r in synthesize_cases(synth, cases, _synthesis_kwargs(args), "synthesize"):
        if isinstance(r, USER_ERRORS):
            failed.append(c.utt)
            print(f"voxlm synth: {c.utt}: error: {r}", file=sys.stderr)
            continue
        save_audio(Path(args.out_dir) / f"{c.utt}.wav", r.audio, r.sample_rate)
    print(json.dumps({"out_dir": args.out_dir, "written": len(cases) - len(failed), "failed": failed}))
    return 2 if failed else 0


def synthesize_into(synth, cases: list, kwargs: dict, wav_dir, desc: str) -> tuple[float, float, dict]:
    """Meta-list cases -> ``wav_dir/<utt>.wav`` (a user error raises); -> (audio seconds, synthesis
    seconds, {utt: each candidate's scores and whether it was chosen})."""
    from pathlib import Path

    from tts.audio import save_audio

    audio_s, compute_s, choices = 0.0, 0.0, {}
    for c, r in synthesize_cases(synth, cases, kwargs, desc):
        if isinstance(r, Exception):
            raise r
        save_audio(Path(wav_dir) / f"{c.utt}.wav", r.audio, r.sample_rate)
        audio_s, compute_s = audio_s + r.duration, compute_s + r.timings["total_s"]
        choices[c.utt] = [{"scores": x.scores, "total": x.total, "chosen": any(x is y for y in r.chosen)}
                          for x in r.candidates]
    return audio_s, compute_s, choices


def _synthesize_job(model: str, backend: str, specs: list[str], cases: list, kwargs: dict, wav_dir,
                    desc: str) -> tuple[float, float, dict]:
    """One ``eval --jobs`` process: its own Synthesizer and plug-in verifiers, one torch thread."""
    import torch

    from tts.synthesizer import Synthesizer
    from tts.verifiers import load_verifier

    torch.set_num_threads(1)
    synth = Synthesizer.from_pretrained(model, backend=backend)
    return synthesize_into(synth, cases, {**kwargs, "verifiers": [load_verifier(s) for s in specs]}, wav_dir, desc)


def synthesize_in_jobs(args: argparse.Namespace, cases: list, kwargs: dict, wav_dir, desc: str):
    """:func:`synthesize_into` over ``args.jobs`` processes of one thread. Whole
    ``BATCH_REQUESTS`` groups are dealt out in turn, so each line is decoded in the batch, with
    the seed, that one process gives it: the same audio as ``--jobs 1 --threads 1``."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    parts: list[list] = [[] for _ in range(args.jobs)]
    for k in range(0, len(cases), BATCH_REQUESTS):
        parts[(k // BATCH_REQUESTS) % args.jobs] += cases[k:k + BATCH_REQUESTS]
    kwargs = {k: v for k, v in kwargs.items() if k != "verifiers"}  # objects: each process loads its own
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_synthesize_job, args.model, args.backend, args.verifier, part, kwargs, wav_dir,
                               f"{desc} [{i + 1}/{args.jobs}]") for i, part in enumerate(parts) if part]
        done = [f.result() for f in futures]
    return sum(d[0] for d in done), sum(d[1] for d in done), {k: v for d in done for k, v in d[2].items()}


def cmd_eval(args: argparse.Namespace) -> int:
    """Zero-shot clones of a test list (or of a data dir's speakers) at each best-of-N width, judged."""
    from pathlib import Path

    from tts.evaluate import (
        make_meta,
        plot_spectrograms,
        read_meta,
        save_report,
        score_rows,
        write_meta,
    )
    from tts.synthesizer import Synthesizer

    out = Path(args.out)
    if args.meta:
        cases = read_meta(args.meta)
    else:
        cases = make_meta(args.data, per_speaker=args.per_speaker)
        write_meta(out / "meta.lst", cases)
    widths = args.n_candidates
    if args.stream:  # offline and streamed side by side: WER, SIM, clicks at the joins
        from tts.stream_cli import eval_stream
        return eval_stream(args, cases, {**_synthesis_kwargs(args, search=False), "n_candidates": 1})
    synth = Synthesizer.from_pretrained(args.model, backend=args.backend)
    systems, timing, choices = {}, {}, {}
    for n in widths:
        name, wav_dir = f"voxlm_n{n}", out / f"wavs_n{n}"
        systems[name] = wav_dir
        todo = [c for c in cases if not (wav_dir / f"{c.utt}.wav").is_file()]  # resumable: finished ones kept
        kwargs, desc = {**_synthesis_kwargs(args), "n_candidates": n}, f"synthesize N={n}"
        if args.jobs > 1:
            audio_s, compute_s, chosen = synthesize_in_jobs(args, todo, kwargs, wav_dir, desc)
        else:
            audio_s, compute_s, chosen = synthesize_into(synth, todo, kwargs, wav_dir, desc)
        choices |= {(name, utt): c for utt, c in chosen.items()}
        if audio_s:
            timing[name] = compute_s / audio_s
    rows = score_rows(cases, systems, judge_jobs=args.judge_jobs)
    for name, rtf in timing.items():
        rows[name]["rtf"] = rtf
    for name, r in rows.items():  # the verifiers' view of each candidate beside the judges' figures
        for u in r.get("per_utt", []):
            if (name, u["utt"]) in choices:
                u["candidates"] = choices[(name, u["utt"])]
    print(save_report(out, rows))
    plot_spectrograms(out, cases, systems, synth.mel_config)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Time end-to-end synthesis (RTF) for a few best-of-N widths; print JSON."""
    import time

    import numpy as np

    from tts.audio import load_audio
    from tts.synthesizer import COMPONENTS, Synthesizer

    if args.backend == "onnx":  # onnxruntime vs torch eager, per component and end to end
        from tts.onnx_bench import bench

        print(json.dumps(bench(args.model, args.text, args.prompt, args.prompt_text, args.n_candidates,
                               args.repeats, args.threads), indent=2))
        return 0
    synth = Synthesizer.from_pretrained(args.model)
    if args.prompt:
        prompt_audio = load_audio(args.prompt, synth.sample_rate)
    else:  # no prompt given: a synthetic buzz (timing only)
        t = np.arange(3 * synth.sample_rate) / synth.sample_rate
        prompt_audio = (0.3 * np.sign(np.sin(2 * np.pi * 120 * t))).astype(np.float32)
    t0 = time.perf_counter()
    if args.stream:  # time to first audio (prompt cached or not), RTF, per chunk size
        from tts.stream_cli import bench_stream
        return bench_stream(args, synth, prompt_audio, args.prompt_text or "a prompt")
    prompt = synth.prepare_prompt(prompt_audio, synth.sample_rate, args.prompt_text or "a prompt")
    options, search = _sampling_kwargs(args), _search_kwargs(args)
    results = {"model": args.model, "threads": args.threads, "options": options,
               "search": {**search, "verifiers": args.verifier},
               "prompt_s": time.perf_counter() - t0, "runs": []}
    synth.synthesize(args.text, prompt, seed=0, **options)  # warm-up, not timed: lazy loads (g2p dictionary), allocator
    for n in args.n_candidates:
        secs = audio = 0.0
        parts: dict[str, float] = {}  # seconds per component (llm, flow, ...), summed over repeats
        for i in range(args.repeats):
            t0 = time.perf_counter()
            r = synth.synthesize(args.text, prompt, n_candidates=n, seed=i, **options, **search)
            secs += time.perf_counter() - t0
            audio += r.duration
            for name in COMPONENTS:
                if f"{name}_s" in r.timings:
                    parts[name] = parts.get(name, 0.0) + r.timings[f"{name}_s"]
        results["runs"].append({"n_candidates": n, "rtf": secs / audio, "audio_s": audio / args.repeats,
                                "compute_s": secs / args.repeats,
                                "component_rtf": {k: v / audio for k, v in sorted(parts.items())}})
    base = results["runs"][0]["compute_s"]  # cost of each width relative to the first (N=1 by default)
    for run in results["runs"]:
        run["cost_vs_first"] = run["compute_s"] / base
    results["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(results, indent=2))
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """Export every network of a model directory to DIR/onnx; print the report (JSON)."""
    from tts.onnx_export import export_onnx

    report = export_onnx(args.model, args.opset, parity=not args.no_parity, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(report, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the gradio voice-cloning page until interrupted."""
    from tts.demo import launch

    verifiers = _plugin_verifiers(args)  # a bad spec stops before the page
    launch(args.model, host=args.host, port=args.port, share=args.share == "on", concurrency=args.concurrency,
           verifiers=verifiers)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Paired per-utterance differences between judged runs (tts.compare); table, and JSON with --json."""
    from tts.compare import CompareError, compare, format_table

    systems = None
    if args.systems:
        systems = tuple(x.strip() for x in args.systems.split(","))
        if len(systems) != 2 or not all(systems):
            raise CompareError(f"--systems takes two names, A,B; got {args.systems!r}")
    result = compare(args.runs, args.against, systems)
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxlm", description="VoxLM: LLM-based zero-shot text-to-speech toolkit.")
    parser.add_argument("--version", action="version", version=f"voxlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, torch threads and device (JSON)")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("synth", help="zero-shot synthesis of one text in a prompt's voice")
    _add_synthesis_options(p)
    p.add_argument("--text", help="what to say")
    p.add_argument("--prompt", "--prompt-wav", dest="prompt", help="a few seconds of the voice to clone (audio file)")
    p.add_argument("--prompt-text", default=None, help="its transcript (default: transcribed)")
    p.add_argument("--out", help="output wav")
    p.add_argument("--meta", help="batch: a utt|prompt_text|prompt_wav|target_text[|gt_wav] list (paths "
                                  "relative to it); writes --out-dir/<utt>.wav")
    p.add_argument("--out-dir", help="batch: output folder")
    add_stream_options(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("eval", help="synthesize a zero-shot test list and score it (WER, SIM, RTF)")
    _add_synthesis_options(p, widths=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--meta", help="utt|prompt_text|prompt_wav|target_text|ground_truth_wav list")
    src.add_argument("--data", help="data dir of unseen speakers to build the list from")
    p.add_argument("--per-speaker", type=int, default=5, help="targets per speaker (with --data)")
    p.add_argument("--judge-jobs", type=_positive, default=1,
                   help="processes for the ASR judge (pocketsphinx uses one core; the same transcripts)")
    p.add_argument("--jobs", type=_positive, default=1,
                   help="processes that synthesize, one thread each (the audio of --jobs 1 --threads 1)")
    p.add_argument("--out", required=True,
                   help="output dir: wavs_n<N>/, summary.json, summary.md, utts.jsonl, png/")
    add_stream_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="end-to-end synthesis speed (RTF) as JSON")
    p.add_argument("--model", required=True)
    p.add_argument("--text", default="The quick brown fox jumps over the lazy dog near the river bank.")
    p.add_argument("--prompt", default=None, help="prompt audio (default: a synthetic buzz)")
    p.add_argument("--prompt-text", default=None)
    p.add_argument("--n-candidates", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: onnxruntime (fp32, and int8 where exported) vs torch eager, "
                        "each component and end to end")
    _add_search_options(p)
    _add_sampling_options(p)
    add_stream_options(p, bench=True)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("compare", help="paired per-utterance differences between judged runs (flow.report, "
                                       "voxlm eval, vocoder.report)")
    p.add_argument("runs", nargs="+", help="report dirs or files; several are seeds of one system")
    p.add_argument("--against", nargs="+", help="the base runs, paired in order with RUNS: prints new - base")
    p.add_argument("--systems", help="A,B: A - B within each run (e.g. voxlm_n8,voxlm_n1; flow_chunked,flow)")
    p.add_argument("--json", help="also write the result as JSON here")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="export a model directory for deployment")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    p = fmt.add_parser("onnx", help="every network to DIR/onnx (checked, with a parity report)")
    p.add_argument("--model", required=True, help="VoxLM model directory")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--no-parity", action="store_true", help="skip the torch-vs-onnxruntime parity check")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("demo", help="gradio voice-cloning page: prompt audio + text -> speech")
    p.add_argument("--model", required=True, help="VoxLM model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", choices=["off", "on"], default="off", help="a public gradio share link")
    p.add_argument("--concurrency", type=int, default=1, help="requests synthesized at once (others queue)")
    _add_verifier_option(p)  # every request's search; a table column each
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from tts.errors import USER_ERRORS

    if getattr(args, "threads", None):  # synth, eval, bench: torch's CPU threads
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except USER_ERRORS as err:  # bad input: one clear line, no traceback
        print(f"voxlm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
