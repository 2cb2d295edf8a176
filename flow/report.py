"""Score a trained flow model on a dev set: resynthesis of ground-truth tokens with a prompt.

For each dev utterance, the prompt is *another* utterance of the same speaker
(its tokens + mel); the flow paints the utterance's own ground-truth tokens.
Scores: log-mel L1 against the real mel, and the judges (pocketsphinx WER,
resemblyzer cosine) after a vocoder: ``--vocoder DIR`` (vocoder.Vocoder) when
it exists, else Griffin-Lim. Rows: the real audio, the real mel through the
same vocoder (the vocoder's ceiling), flow offline and flow with the streaming
chunk mask. Writes ``report.json``, ``report.md``, wavs and spectrogram PNGs.

    python -m flow.report --model exp/flow/model --data data/dev --out exp/flow/report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flow.data import cache_mels, load_mel, read_tokens
from flow.model import FlowModel
from tts.audio import save_audio
from tts.datadir import read_table


def pick_prompts(utt2spk: dict[str, str], utts: list[str]) -> list[tuple[str, str]]:
    """(target, prompt) pairs: the prompt is the next utterance of the same speaker (cyclic)."""
    by_spk: dict[str, list[str]] = {}
    for u in utts:
        by_spk.setdefault(utt2spk[u], []).append(u)
    pairs = []
    for u in utts:
        same = by_spk[utt2spk[u]]
        if len(same) > 1:
            pairs.append((u, same[(same.index(u) + 1) % len(same)]))
    return pairs


def prompt_inputs(data_dir: Path, tokens: dict[str, np.ndarray], prompt: str, model: FlowModel,
                  seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt utterance's (tokens (N,), mel (C, up * N)), cut to at most ``seconds`` (and the
    model's ``max_prompt_frames``)."""
    cfg = model.config
    up, pm = cfg.upsample, load_mel(data_dir, prompt, cfg.mel_config)
    max_prompt = min(cfg.max_prompt_frames, int(seconds * cfg.mel_config.frame_rate))
    tp = min(pm.shape[1], up * tokens[prompt].size, max_prompt) // up * up
    return torch.from_numpy(tokens[prompt][: tp // up]), torch.from_numpy(pm[:, :tp].copy())


def load_vocoder(path: str | None, mel_cfg):
    """-> (callable (B, C, T) -> (B, samples), name)."""
    if path and Path(path).is_dir():
        from vocoder import Vocoder
        voc = Vocoder.from_pretrained(path).eval()
        if voc.config.mel_config != mel_cfg:
            raise SystemExit(f"flow.report: the vocoder {path} was trained on another mel than the flow "
                             f"({voc.config.mel_config} vs {mel_cfg})")
        return (lambda mel: voc(mel)), f"vocoder:{path}"
    try:
        from vocoder import GriffinLim
        return GriffinLim(mel_cfg), "griffin-lim (vocoder.GriffinLim, 32 iterations)"
    except ImportError:
        import librosa

        def gl(mel: torch.Tensor) -> torch.Tensor:
            c = mel_cfg
            out = [librosa.feature.inverse.mel_to_audio(np.exp(m), sr=c.sample_rate, n_fft=c.n_fft,
                                                        hop_length=c.hop_length, fmin=c.f_min, fmax=c.f_max)
                   for m in mel.numpy()]
            return torch.from_numpy(np.stack(out).astype(np.float32))
        return gl, "griffin-lim (librosa)"


def plot(path: Path, title: str, panels: list[tuple[str, np.ndarray]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lo = min(float(p.min()) for _, p in panels)
    hi = max(float(p.max()) for _, p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), squeeze=False)
    for ax, (name, mel) in zip(axes[:, 0], panels, strict=True):
        ax.imshow(mel, origin="lower", aspect="auto", vmin=max(lo, hi - 12), vmax=hi, cmap="magma")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame (20 ms)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="flow model dir (config.json + model.safetensors)")
    p.add_argument("--data", required=True, help="dev data dir with wav.scp, text, utt2spk, tokens")
    p.add_argument("--out", required=True)
    p.add_argument("--vocoder", help="vocoder model dir; Griffin-Lim when absent")
    p.add_argument("--max-utts", type=int, default=30)
    p.add_argument("--steps", type=int, help="Euler/midpoint steps (default: the model's config)")
    p.add_argument("--solver", default=None)
    p.add_argument("--schedule", default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--prior-start", type=float, default=None, help="start time on the prior path (default: the config's)")
    p.add_argument("--noise-scale", type=float, default=None, help="the starting noise's scale (default: the config's)")
    p.add_argument("--chunk", type=int, default=50, help="streaming chunk in frames (0: skip the chunked row)")
    p.add_argument("--lookahead", type=int, default=0, help="frames of the next chunk each chunk sees")
    p.add_argument("--prompt-seconds", type=float, default=6.0, help="cut prompts to at most this long")
    p.add_argument("--png", type=int, default=4, help="spectrogram PNGs to write")
    p.add_argument("--no-judges", action="store_true", help="mel L1 only")
    p.add_argument("--judge-jobs", type=int, default=1, help="processes for the ASR judge (the same transcripts)")
    p.add_argument("--no-vocoded-gt", action="store_true", help="skip the real-mel-through-vocoder row (saves ASR time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.judge_jobs < 1:
        p.error(f"--judge-jobs must be >= 1, got {args.judge_jobs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    (out / "png").mkdir(exist_ok=True)
    model = FlowModel.from_pretrained(args.model)
    args.steps = args.steps or model.config.cfm.steps
    mel_cfg, d = model.config.mel_config, Path(args.data)
    tokens, wavs = read_tokens(d / "tokens"), read_table(d / "wav.scp")
    texts, utt2spk = read_table(d / "text"), read_table(d / "utt2spk")
    utts = sorted(set(tokens) & set(wavs))
    pairs = pick_prompts(utt2spk, utts)[: args.max_utts]
    if not pairs:
        raise SystemExit(f"flow.report: no speaker in {args.data} has two utterances with tokens "
                         "(each target needs a same-speaker prompt)")
    cache_mels(d, mel_cfg, sorted({u for pair in pairs for u in pair}))
    vocode, voc_name = load_vocoder(args.vocoder, mel_cfg)
    opts = dict(steps=args.steps, solver=args.solver, schedule=args.schedule, guidance=args.guidance,
                prior_start=args.prior_start, noise_scale=args.noise_scale)

    rows: dict[str, list] = {k: [] for k in ("real", "vocoded_gt", "flow", "flow_chunked")}
    per_utt, l1, l1_chunk, flow_sec, audio_sec = [], [], [], 0.0, 0.0
    for i, (utt, prompt) in enumerate(tqdm(pairs, desc="flow")):
        gt = load_mel(d, utt, mel_cfg)
        p_tok, p_mel = prompt_inputs(d, tokens, prompt, model, args.prompt_seconds)
        t0 = time.perf_counter()
        gen = model.generate(torch.from_numpy(tokens[utt]), p_tok, p_mel, seed=args.seed, **opts)
        flow_sec += time.perf_counter() - t0
        audio_sec += gen.shape[1] / mel_cfg.frame_rate
        n = min(gen.shape[1], gt.shape[1])
        gt_t = torch.from_numpy(gt[:, :n].copy())
        l1.append(float((gen[:, :n] - gt_t).abs().mean()))
        mels = {"flow": gen} if args.no_vocoded_gt else {"vocoded_gt": gt_t, "flow": gen}
        if args.chunk:
            gen_c = model.generate(torch.from_numpy(tokens[utt]), p_tok, p_mel, seed=args.seed, chunk=args.chunk,
                                   lookahead=args.lookahead, **opts)
            l1_chunk.append(float((gen_c[:, :n] - gt_t).abs().mean()))
            mels["flow_chunked"] = gen_c
        rows["real"].append(wavs[utt])
        for name, mel in mels.items():
            wav = vocode(mel.unsqueeze(0).float())[0].detach().numpy()
            path = out / "wav" / f"{utt}.{name}.wav"
            save_audio(path, wav, mel_cfg.sample_rate)
            rows[name].append(str(path))
        per_utt.append({"utt": utt, "prompt": prompt, "mel_l1": l1[-1],
                        **({"mel_l1_chunked": l1_chunk[-1]} if args.chunk else {})})
        if i < args.png:
            panels = [(f"prompt {prompt}", p_mel.numpy()), (f"ground truth {utt}", gt), ("flow, offline", gen.numpy())]
            if args.chunk:
                panels.append((f"flow, chunk mask {args.chunk} frames", gen_c.numpy()))
            plot(out / "png" / f"{utt}.png", f"{utt}: mel L1 {l1[-1]:.3f}, {args.steps} steps", panels)

    report = {"model": args.model, "data": args.data, "utterances": len(pairs), "vocoder": voc_name,
              "steps": args.steps, "chunk": args.chunk, "lookahead": args.lookahead, "seed": args.seed,
              "options": {k: v for k, v in opts.items() if v is not None},
              "mel_l1": {"flow": float(np.mean(l1))}, "flow_rtf": flow_sec / max(audio_sec, 1e-9)}
    if args.chunk:
        report["mel_l1"]["flow_chunked"] = float(np.mean(l1_chunk))
    rows = {k: v for k, v in rows.items() if v}
    if not args.no_judges:
        from tts.judges import IntelligibilityJudge, SpeakerJudge, paired_difference
        refs = [texts[u] for u, _ in pairs]
        asr, spk = IntelligibilityJudge(jobs=args.judge_jobs), SpeakerJudge()
        real_emb = spk.embed_batch(rows["real"], desc="spk real")
        prompt_emb = spk.embed_batch([wavs[pr] for _, pr in pairs], desc="spk prompt")
        report["systems"] = {}
        for name, audios in rows.items():
            w = asr.score(refs, audios)
            emb = real_emb if name == "real" else spk.embed_batch(audios, desc=f"spk {name}")
            to_real, to_prompt = spk.similarity(emb, real_emb), spk.similarity(emb, prompt_emb)
            report["systems"][name] = {
                "wer": w.wer, "corpus_wer": w.corpus_wer,
                "sim_to_real": float(np.mean(to_real)), "sim_to_prompt": float(np.mean(to_prompt)),
            }
            for row, hyp, err, sr, sp in zip(per_utt, w.hyps, w.per_utt, to_real, to_prompt, strict=True):
                row[f"hyp_{name}"], row[f"wer_{name}"] = hyp, err
                row[f"sim_to_real_{name}"], row[f"sim_to_prompt_{name}"] = float(sr), float(sp)
        if "flow_chunked" in rows:  # the streaming cost, paired per utterance
            report["chunked_minus_offline_wer"] = paired_difference(
                [r["wer_flow_chunked"] for r in per_utt], [r["wer_flow"] for r in per_utt])
    report["per_utt"] = per_utt
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# flow report: {args.model} on {args.data}", "",
             f"{len(pairs)} utterances, {args.steps} steps, vocoder: {voc_name}, flow RTF {report['flow_rtf']:.3f}"
             + (f"; flow_chunked: {args.chunk}-frame chunks, {args.lookahead} frames of lookahead" if args.chunk else ""),
             "", "| system | mel L1 | WER | SIM to real | SIM to prompt |", "|---|---|---|---|---|"]
    for name, s in report.get("systems", {n: {} for n in rows}).items():
        m = report["mel_l1"].get(name)
        cells = [f"{m:.3f}" if m is not None else "-"] + [
            f"{s[k]:.3f}" if k in s else "-" for k in ("wer", "sim_to_real", "sim_to_prompt")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "chunked_minus_offline_wer" in report:
        d = report["chunked_minus_offline_wer"]
        se = f" ± {d['wer_diff_se']:.3f}" if d["wer_diff_se"] is not None else ""
        lines += ["", f"chunked - offline WER per utterance: {d['wer_diff_mean']:+.3f}{se} "
                      f"({d['worse']} worse, {d['better']} better, {d['equal']} equal)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
