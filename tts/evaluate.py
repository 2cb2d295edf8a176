"""Zero-shot evaluation in the seed-tts-eval style, scored by the independent judges.

A test list (``meta.lst``) has one line per case::

    utt|prompt_text|prompt_wav|target_text|ground_truth_wav

:func:`make_meta` builds one from a Kaldi data dir whose speakers are unseen in
training: each case clones a speaker from one of their utterances (the prompt)
and speaks another of their sentences (the target, whose real recording is the
ground truth). :func:`evaluate` scores a folder of ``<utt>.wav`` outputs: WER
(pocketsphinx + jiwer, averaged over utterances after one shared normaliser)
and SIM (resemblyzer cosine between output and prompt), with a ground-truth row
scored the same way beside every system row.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tts.datadir import load_data_dir
from tts.judges import IntelligibilityJudge, SpeakerJudge


@dataclass
class Case:
    utt: str
    prompt_text: str
    prompt_wav: str
    target_text: str
    ground_truth_wav: str = ""


def read_meta(path: str | Path) -> list[Case]:
    cases = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) not in (4, 5):
            raise ValueError(f"{path}:{n}: expected 4 or 5 '|'-separated fields, got {len(parts)}")
        cases.append(Case(*parts))
    return cases


def write_meta(path: str | Path, cases: list[Case]) -> None:
    lines = ["|".join([c.utt, c.prompt_text, c.prompt_wav, c.target_text, c.ground_truth_wav]) for c in cases]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_meta(data_dir: str | Path, per_speaker: int = 5, seed: int = 0) -> list[Case]:
    """Per speaker: one prompt utterance, up to ``per_speaker`` other utterances as targets."""
    by_spk: dict[str, list] = {}
    for u in load_data_dir(data_dir):
        by_spk.setdefault(u.spk, []).append(u)
    rng = random.Random(seed)
    cases = []
    for spk in sorted(by_spk):
        utts = by_spk[spk]
        if len(utts) < 2:
            continue
        prompt, *targets = rng.sample(utts, len(utts))
        for t in targets[:per_speaker]:
            cases.append(Case(t.utt, prompt.text, prompt.wav, t.text, t.wav))
    return cases


def score_rows(cases: list[Case], systems: dict[str, Path], progress: bool = True) -> dict:
    """WER and SIM for the ground truth and for each system folder of ``<utt>.wav``."""
    asr, spk = IntelligibilityJudge(progress=progress), SpeakerJudge(progress=progress)
    refs = [c.target_text for c in cases]
    prompts = spk.embed_batch([c.prompt_wav for c in cases], desc="prompts")
    rows = {}
    sources = {"ground_truth": [c.ground_truth_wav for c in cases]}
    sources.update({name: [str(Path(d) / f"{c.utt}.wav") for c in cases] for name, d in systems.items()})
    for name, wavs in sources.items():
        if not all(wavs) or not all(Path(w).is_file() for w in wavs):
            missing = [w for w in wavs if not w or not Path(w).is_file()]
            raise FileNotFoundError(f"{name}: {len(missing)} missing outputs, e.g. {missing[:2]}")
        wer = asr.score(refs, wavs)
        sims = np.asarray(SpeakerJudge.similarity(spk.embed_batch(wavs, desc=name), prompts))
        rows[name] = {"wer": wer.wer, "corpus_wer": wer.corpus_wer, "sim": float(np.mean(sims)),
                      "utterances": len(cases)}
    return rows


def format_table(rows: dict) -> str:
    lines = ["| system | WER | SIM | RTF |", "|---|---|---|---|"]
    for name, r in rows.items():
        rtf = f"{r['rtf']:.3f}" if "rtf" in r else "-"
        lines.append(f"| {name} | {r['wer']:.3f} | {r['sim']:.3f} | {rtf} |")
    return "\n".join(lines)


def save_report(path: str | Path, rows: dict) -> None:
    Path(path).write_text(json.dumps(rows, indent=2) + "\n")
