#!/usr/bin/env python
"""The corpus card of synth_en: sizes per split and the judges' ground-truth baseline.

    python local/corpus_card.py --data data --out data/corpus_card.json [--splits test]

Prints and saves JSON: hours, speakers and utterances per split; the base
voices and the splits they appear in; on the judged splits (test by default)
pocketsphinx WER per base voice and overall, and resemblyzer's mean cosine over
pairs of utterances by the same speaker vs by different speakers. Judge results
are cached per wav (path, size, mtime) in ``<data>/.judge_cache``, so a rerun is
fast. Ends with the acceptance checks; ``--strict`` makes a failed check exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from tts.datadir import load_data_dir, read_table
from tts.judges import IntelligibilityJudge, SpeakerJudge, word_error_rate

SPLITS = ("train", "dev", "test")


class JudgeCache:
    """``key -> value`` JSON cache of judge outputs, keyed by the wav's path, size and mtime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}

    @staticmethod
    def key(wav: str) -> str:
        st = os.stat(wav)
        return f"{wav}|{st.st_size}|{st.st_mtime_ns}"

    def get_many(self, wavs: list[str], compute) -> list:
        keys = [self.key(w) for w in wavs]
        missing = [w for w, k in zip(wavs, keys, strict=True) if k not in self.data]
        if missing:
            for w, value in zip(missing, compute(missing), strict=True):
                self.data[self.key(w)] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)
        return [self.data[k] for k in keys]


def speaker_cosines(embs: np.ndarray, spks: list[str], voices: list[str]) -> dict:
    """Mean cosine over utterance pairs: same speaker, different speaker (same / other base voice)."""
    sims = embs @ embs.T  # rows are unit-norm
    iu = np.triu_indices(len(spks), k=1)
    spk, voice = np.array(spks), np.array(voices)
    same = spk[iu[0]] == spk[iu[1]]
    same_voice = voice[iu[0]] == voice[iu[1]]
    vals = sims[iu]

    def mean(mask: np.ndarray) -> float | None:
        return round(float(vals[mask].mean()), 4) if mask.any() else None

    out = {
        "same_speaker": mean(same),
        "different_speaker": mean(~same),
        "different_speaker_same_base_voice": mean(~same & same_voice),
        "different_speaker_other_base_voice": mean(~same & ~same_voice),
        "pairs_same": int(same.sum()),
        "pairs_different": int((~same).sum()),
    }
    if out["same_speaker"] is not None and out["different_speaker"] is not None:
        out["margin"] = round(out["same_speaker"] - out["different_speaker"], 4)
    return out


def judge_split(data: Path, split: str, spk_voice: dict[str, str]) -> dict:
    utts = load_data_dir(data / split)
    wavs = [u.wav for u in utts]
    cache = data / ".judge_cache"
    asr = JudgeCache(cache / "asr.json")
    hyps = asr.get_many(
        wavs, lambda ws: IntelligibilityJudge().transcribe_batch(ws, desc=f"asr {split}")
    )
    spk = JudgeCache(cache / "spk.json")
    embs = spk.get_many(
        wavs, lambda ws: SpeakerJudge().embed_batch(ws, desc=f"spk {split}").tolist()
    )
    embs = np.asarray(embs, np.float32)

    by_voice: dict[str, list[int]] = defaultdict(list)
    by_spk: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(utts):
        by_voice[spk_voice.get(u.spk, u.spk)].append(i)
        by_spk[u.spk].append(i)

    def wer(idx: list[int]) -> dict:
        r = word_error_rate([utts[i].text for i in idx], [hyps[i] for i in idx])
        return {
            "wer": round(r.wer, 4),
            "corpus_wer": round(r.corpus_wer, 4),
            "utterances": r.utterances,
        }

    return {
        "wer": wer(list(range(len(utts)))),
        "wer_per_base_voice": {v: wer(idx) for v, idx in sorted(by_voice.items())},
        "wer_per_speaker": {s: wer(idx)["wer"] for s, idx in sorted(by_spk.items())},
        "speaker_cosine": speaker_cosines(
            embs, [u.spk for u in utts], [spk_voice.get(u.spk, u.spk) for u in utts]
        ),
    }


def split_stats(data: Path, split: str) -> dict:
    utts = load_data_dir(data / split)
    durs = read_table(data / split / "utt2dur") if (data / split / "utt2dur").is_file() else {}
    if len(durs) != len(utts):
        import soundfile as sf

        durs = {u.utt: sf.info(u.wav).duration for u in utts}
    secs = np.array([float(durs[u.utt]) for u in utts])
    return {
        "hours": round(float(secs.sum()) / 3600, 3),
        "speakers": len({u.spk for u in utts}),
        "utterances": len(utts),
        "mean_seconds": round(float(secs.mean()), 2) if len(secs) else 0.0,
        "distinct_sentences": len({u.text for u in utts}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Corpus card: sizes and the judges' baseline.")
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--out", type=Path, default=None, help="default: <data>/corpus_card.json")
    p.add_argument(
        "--splits", nargs="+", default=["test"], help="splits to judge (dev too: --splits test dev)"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when an acceptance check fails")
    args = p.parse_args(argv)

    speakers = json.loads((args.data / "speakers.json").read_text())
    spk_voice = {s: v["voice"] for s, v in speakers.items()}
    splits = [*SPLITS, *(["timbre"] if (args.data / "timbre").is_dir() else [])]  # timbre: flow only
    card: dict = {"splits": {s: split_stats(args.data, s) for s in splits}}
    spk_sets = {s: {u.spk for u in load_data_dir(args.data / s)} for s in splits}
    voices: dict[str, list[str]] = defaultdict(list)
    for split in splits:
        for v in sorted({spk_voice[s] for s in spk_sets[split]}):
            voices[v].append(split)
    card["base_voices"] = dict(sorted(voices.items()))
    card["speakers_total"] = len(set().union(*spk_sets.values()))
    card["speakers"] = {s: {k: v for k, v in d.items() if k != "spk"} for s, d in speakers.items()}
    card["judges"] = {split: judge_split(args.data, split, spk_voice) for split in args.splits}

    checks = {
        "speakers_total>=40": card["speakers_total"] >= 40,
        "test_speakers_disjoint_from_train": not (
            spk_sets["test"] & (spk_sets["train"] | spk_sets["dev"] | spk_sets.get("timbre", set()))
        ),
        "train_hours>=3": card["splits"]["train"]["hours"] >= 3.0,
    }
    if "test" in card["judges"]:
        test = card["judges"]["test"]
        checks["test_wer<=0.20"] = test["wer"]["wer"] <= 0.20
        margin = test["speaker_cosine"].get("margin")
        checks["test_same_minus_different_cosine>=0.10"] = margin is not None and margin >= 0.10
    card["acceptance"] = {**checks, "passed": all(checks.values())}

    text = json.dumps(card, indent=1)
    print(text)
    out = args.out or args.data / "corpus_card.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    if not card["acceptance"]["passed"]:
        failed = [k for k, v in checks.items() if not v]
        print(f"WARNING: acceptance checks failed: {failed}", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
