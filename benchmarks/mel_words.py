"""How many words a mel definition costs before any model: prints JSON.

    python benchmarks/mel_words.py --data egs/synth_en/data/test [--mel 16k 16k-w40 640/160]

Each real utterance of the data dir is turned into each mel (a ``tts.mel`` preset, or
``n_fft/hop`` at 16 kHz with the window = n_fft) and back into audio by Griffin-Lim (32
iterations, as ``vocoder.report``); pocketsphinx transcribes the real audio and every
inversion. Per mel: mean WER and the per-utterance difference to the real audio (mean,
standard error, counts). Griffin-Lim keeps the mel's envelope by construction, so what it
loses against the real audio is, to this judge, mostly what the mel itself has dropped.
"""

from __future__ import annotations

import argparse
import json

import torch

from tts.audio import load_audio
from tts.datadir import load_data_dir
from tts.judges import IntelligibilityJudge, paired_difference
from tts.mel import MelConfig, mel_spectrogram
from vocoder import GriffinLim


def parse_mel(name: str) -> MelConfig:
    """A preset name, or ``n_fft/hop`` (16 kHz, window = n_fft, the 16k preset's bins)."""
    if "/" not in name:
        return MelConfig.preset(name)
    try:
        n_fft, hop = (int(x) for x in name.split("/"))
    except ValueError:
        raise ValueError(f"mel {name!r}: give a preset or n_fft/hop, two integers") from None
    return MelConfig(n_fft=n_fft, hop_length=hop, win_length=n_fft)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="Kaldi data dir (wav.scp, text)")
    p.add_argument("--mel", nargs="+", default=["16k", "16k-w40", "1024/256", "640/160"])
    p.add_argument("--max-utts", type=int, default=0, help="the first N utterances (0: all)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        mels = {name: parse_mel(name) for name in args.mel}
    except ValueError as err:
        p.error(str(err))
    inverters = {name: GriffinLim(cfg) for name, cfg in mels.items()}  # one mel filterbank inverse each
    utts = load_data_dir(args.data)[: args.max_utts or None]
    judge = IntelligibilityJudge(progress=False)
    hyps: dict[str, list[str]] = {"real": [], **{name: [] for name in mels}}
    for u in utts:
        audio = {16000: load_audio(u.wav, 16000)}  # the clip at each rate the mels need, read once
        hyps["real"].append(judge.transcribe((audio[16000], 16000)))
        for name, cfg in mels.items():
            sr = cfg.sample_rate
            if sr not in audio:
                audio[sr] = load_audio(u.wav, sr)
            mel = torch.from_numpy(mel_spectrogram(audio[sr], cfg))[None]
            hyps[name].append(judge.transcribe((inverters[name](mel)[0].numpy(), sr)))
    per_utt = {k: judge.wer([u.text for u in utts], h).per_utt for k, h in hyps.items()}
    out = {"data": args.data, "utterances": len(utts), "real_wer": sum(per_utt["real"]) / len(utts), "mels": {}}
    for name, cfg in mels.items():
        out["mels"][name] = {"n_fft": cfg.n_fft, "hop": cfg.hop_length, "win": cfg.win_length,
                             "griffinlim_wer": sum(per_utt[name]) / len(utts),
                             "minus_real": paired_difference(per_utt[name], per_utt["real"])}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
