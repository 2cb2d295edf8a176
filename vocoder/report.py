"""Score a trained vocoder on a data dir: vocoded ground-truth mel vs real audio vs Griffin-Lim.

    python -m vocoder.report --model exp/vocoder/model --data data/dev --out exp/vocoder/report.json

For each utterance the shared mel of the real audio is vocoded by the model and by
Griffin-Lim (32 iterations); the judges then score all three: pocketsphinx WER
(against the transcript), resemblyzer cosine to the real audio, and the
multi-resolution STFT distance and mel L1 to the real audio. The JSON holds the
figures, the acceptance checks of issue 7, the measured real-time factors and
the paired per-utterance WER difference vocoder minus Griffin-Lim (mean, standard
error, counts); ``<out stem>_utts.jsonl`` beside it has every utterance's
transcripts and WERs.
Judges are used here only, never in training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tts.audio import load_audio, save_audio
from tts.datadir import load_data_dir
from tts.judges import IntelligibilityJudge, SpeakerJudge, paired_difference
from tts.mel import MelSpectrogram
from vocoder.experiment import plot_spectrograms
from vocoder.griffinlim import GriffinLim
from vocoder.losses import MultiResolutionSTFTLoss
from vocoder.model import Vocoder

SYSTEMS = ("real", "vocoder", "griffinlim")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="vocoder model dir (config.json + model.safetensors)")
    ap.add_argument("--data", required=True, help="Kaldi data dir (wav.scp, text)")
    ap.add_argument("--out", required=True, help="report JSON path; wavs and PNGs go beside it")
    ap.add_argument("--max-utts", type=int, default=None,
                    help="score N utterances spread evenly over the (sorted) data dir (default: all)")
    ap.add_argument("--gl-iters", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--num-plots", type=int, default=4)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wav_dir = out.parent / (out.stem + "_wavs")
    vocoder = Vocoder.from_pretrained(args.model)
    gl = GriffinLim(vocoder.mel_config, n_iter=args.gl_iters)
    mel_fn, mrstft = MelSpectrogram(vocoder.mel_config), MultiResolutionSTFTLoss()
    sr, hop = vocoder.mel_config.sample_rate, vocoder.hop
    utts = load_data_dir(args.data)
    if args.max_utts and args.max_utts < len(utts):  # evenly spaced: every speaker, not the first few
        utts = [utts[int(i)] for i in np.linspace(0, len(utts) - 1, args.max_utts).round()]

    paths: dict[str, list[Path]] = {s: [] for s in SYSTEMS}
    dist: dict[str, dict[str, list[float]]] = {s: {"mrstft": [], "mel_l1": []} for s in SYSTEMS[1:]}
    seconds, spent = 0.0, {"vocoder": 0.0, "griffinlim": 0.0}
    for i, u in enumerate(tqdm(utts, desc="vocode")):
        real = load_audio(u.wav, sr)
        real = torch.from_numpy(real[:len(real) // hop * hop])
        mel = mel_fn(real)[None]
        seconds += len(real) / sr
        wavs = {"real": real}
        with torch.inference_mode():
            for name, fn in (("vocoder", vocoder), ("griffinlim", gl)):
                t0 = time.perf_counter()
                wavs[name] = fn(mel)[0]
                spent[name] += time.perf_counter() - t0
                dist[name]["mrstft"].append(float(mrstft(wavs[name][None], real[None])))
                dist[name]["mel_l1"].append(float(F.l1_loss(mel_fn(wavs[name]), mel[0])))
        for name, w in wavs.items():
            p = wav_dir / name / f"{u.utt}.wav"
            save_audio(p, w.numpy(), sr)
            paths[name].append(p)
        if i < args.num_plots:
            plot_spectrograms(wavs, wav_dir / f"{u.utt}.png", sr)

    refs = [u.text for u in utts]
    asr, spk = IntelligibilityJudge(), SpeakerJudge()
    wer = {s: asr.score(refs, paths[s]) for s in SYSTEMS}
    emb = {s: spk.embed_batch(paths[s], desc=s) for s in SYSTEMS}
    systems = {}
    for s in SYSTEMS:
        row = {"wer": wer[s].wer, "corpus_wer": wer[s].corpus_wer}
        if s != "real":
            cos = spk.similarity(emb[s], emb["real"])
            row |= {"cosine_to_real": float(np.mean(cos)), "cosine_to_real_min": float(np.min(cos)),
                    "mrstft_distance": float(np.mean(dist[s]["mrstft"])),
                    "mel_l1": float(np.mean(dist[s]["mel_l1"])), "rtf": spent[s] / seconds}
        systems[s] = row

    paired = paired_difference(wer["vocoder"].per_utt, wer["griffinlim"].per_utt)  # per utterance
    with open(out.parent / (out.stem + "_utts.jsonl"), "w") as f:
        for i, u in enumerate(utts):
            row = {"utt": u.utt, "ref": u.text}
            for s in SYSTEMS:
                row[s] = {"wer": wer[s].per_utt[i], "hyp": wer[s].hyps[i]}
            f.write(json.dumps(row) + "\n")
    v, g, r = systems["vocoder"], systems["griffinlim"], systems["real"]
    checks = {
        "wer_le_1.2x_real": v["wer"] <= 1.2 * r["wer"] + 1e-9,
        "cosine_ge_0.90": v["cosine_to_real"] >= 0.90,
        "wer_better_than_griffinlim": v["wer"] < g["wer"],
        "wer_not_worse_than_griffinlim": v["wer"] <= g["wer"],
        "cosine_better_than_griffinlim": v["cosine_to_real"] > g["cosine_to_real"],
        "mrstft_better_than_griffinlim": v["mrstft_distance"] < g["mrstft_distance"],
    }
    report = {
        "model": str(args.model), "data": str(args.data), "utterances": len(utts),
        "audio_seconds": round(seconds, 2), "griffinlim_iters": args.gl_iters, "threads": args.threads,
        "systems": systems, "vocoder_minus_griffinlim_wer": paired, "checks": checks, "wavs": str(wav_dir),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
