"""LibriTTS / LibriTTS-R -> Kaldi data dirs (recipe stage 0).

    python local/prepare_libritts.py --root /data/LibriTTS_R --data data \\
        --train train-clean-100 train-clean-360 --dev dev-clean --test test-clean

Reads the corpus's own layout, ``<root>/<split>/<speaker>/<chapter>/<utt>.wav``
with the transcript in ``<utt>.normalized.txt`` beside it, and writes
``<data>/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt,utt2dur}`` (absolute wav
paths; the audio stays where it is, at 24 kHz) plus ``<data>/corpus_card.json``.
Utterance ids are ``<speaker>-<chapter>_<paragraph>_<sentence>``, so they start
with their speaker id and sort with it. Utterances without a transcript, with an
empty one, or unreadable are skipped and counted; training utterances longer than
``--max-seconds`` are left out. LibriTTS's dev and test speakers are disjoint
from its training speakers, so the test split is a zero-shot test.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

from tts.datadir import spk2utt_from_utt2spk, write_table


def scan_split(split_dir: Path, nj: int) -> tuple[dict[str, dict], dict[str, int]]:
    """utt id -> {wav, text, spk, dur} for one split; and counts of what was skipped."""
    wavs = sorted(split_dir.glob("*/*/*.wav"))
    skipped = {"no_transcript": 0, "unreadable": 0}

    def one(wav: Path):
        txt = wav.with_suffix(".normalized.txt")
        text = " ".join(txt.read_text(encoding="utf-8").split()) if txt.is_file() else ""
        if not text:
            return wav, None, "no_transcript"
        try:
            info = sf.info(str(wav))
        except RuntimeError:
            return wav, None, "unreadable"
        return wav, (text, info.frames / info.samplerate), None

    utts: dict[str, dict] = {}
    with ThreadPoolExecutor(max(1, nj)) as pool:
        for wav, found, why in pool.map(one, wavs):
            if found is None:
                skipped[why] += 1
                continue
            spk = wav.parent.parent.name
            rest = wav.stem[len(spk) + 1:] if wav.stem.startswith(spk + "_") else wav.stem
            utts[f"{spk}-{rest}"] = {"wav": str(wav.resolve()), "text": found[0], "spk": spk, "dur": found[1]}
    return utts, skipped


def write_split(out: Path, utts: dict[str, dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    utt2spk = {u: v["spk"] for u, v in utts.items()}
    write_table(out / "wav.scp", {u: v["wav"] for u, v in utts.items()})
    write_table(out / "text", {u: v["text"] for u, v in utts.items()})
    write_table(out / "utt2spk", utt2spk)
    write_table(out / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    write_table(out / "utt2dur", {u: f"{v['dur']:.3f}" for u, v in utts.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the LibriTTS or LibriTTS-R folder holding the splits")
    p.add_argument("--data", required=True)
    p.add_argument("--train", nargs="+", default=["train-clean-100", "train-clean-360"])
    p.add_argument("--dev", default="dev-clean")
    p.add_argument("--test", default="test-clean")
    p.add_argument("--max-seconds", type=float, default=20.0, help="longest training utterance kept")
    p.add_argument("--nj", type=int, default=8, help="threads reading headers")
    a = p.parse_args(argv)
    root, data = Path(a.root), Path(a.data)
    card: dict[str, dict] = {}
    for name, splits in (("train", a.train), ("dev", [a.dev]), ("test", [a.test])):
        utts: dict[str, dict] = {}
        skipped = {"no_transcript": 0, "unreadable": 0, "too_long": 0}
        for split in splits:
            if not (root / split).is_dir():
                raise SystemExit(f"{root / split}: no such split (have: "
                                 f"{sorted(d.name for d in root.iterdir() if d.is_dir())})")
            found, why = scan_split(root / split, a.nj)
            for k, v in why.items():
                skipped[k] += v
            if name == "train":
                long = [u for u, v in found.items() if v["dur"] > a.max_seconds]
                skipped["too_long"] += len(long)
                for u in long:
                    del found[u]
            utts.update(found)
        if not utts:
            raise SystemExit(f"{root}: no usable utterances in {splits}")
        write_split(data / name, utts)
        card[name] = {"splits": splits, "utterances": len(utts), "speakers": len({v["spk"] for v in utts.values()}),
                      "hours": round(sum(v["dur"] for v in utts.values()) / 3600, 3), "skipped": skipped}
        print(f"{name}: {card[name]}", flush=True)
    (data / "corpus_card.json").write_text(json.dumps({"corpus": str(root.resolve()), **card}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
