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
import zlib
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


def case_seed(seed: int, utt: str) -> int:
    """A meta-list line's seed: ``seed`` plus a hash of its utterance id (crc32), so each
    line draws its own sampling and flow noise, the same whatever else the list holds."""
    return (seed + zlib.crc32(utt.encode())) % 2**31


def read_meta(path: str | Path) -> list[Case]:
    """Cases of a ``meta.lst``; relative wav paths are relative to the list's folder."""
    base = Path(path).parent

    def resolve(wav: str) -> str:
        return wav if not wav or Path(wav).is_absolute() else str(base / wav)
    cases = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) not in (4, 5):
            raise ValueError(f"{path}:{n}: expected 4 or 5 '|'-separated fields, got {len(parts)}")
        case = Case(*parts)
        case.prompt_wav, case.ground_truth_wav = resolve(case.prompt_wav), resolve(case.ground_truth_wav)
        cases.append(case)
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
            cases.append(Case(t.utt, prompt.text, str(Path(prompt.wav).resolve()), t.text, str(Path(t.wav).resolve())))
    return cases


def score_rows(cases: list[Case], systems: dict[str, Path], progress: bool = True, judge_jobs: int = 1) -> dict:
    """WER and SIM for the ground truth and for each system folder of ``<utt>.wav``
    (``judge_jobs``: processes for the ASR judge; the same transcripts)."""
    asr, spk = IntelligibilityJudge(progress=progress, jobs=judge_jobs), SpeakerJudge(progress=progress)
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
                      "utterances": len(cases),
                      "per_utt": [{"utt": c.utt, "wer": w, "sim": float(x), "ref": c.target_text, "hyp": h}
                                  for c, w, x, h in zip(cases, wer.per_utt, sims, wer.hyps, strict=True)]}
    return rows


def format_table(rows: dict) -> str:
    gt = rows.get("ground_truth", {})
    lines = ["| system | WER | WER / ground truth | SIM | SIM / ground truth | RTF |", "|---|---|---|---|---|---|"]
    def rel(r: dict, k: str) -> str:
        return f"{r[k] / gt[k]:.2f}" if gt.get(k) else "-"
    for name, r in rows.items():
        rtf = f"{r['rtf']:.3f}" if "rtf" in r else "-"
        lines.append(f"| {name} | {r['wer']:.3f} | {rel(r, 'wer')} | {r['sim']:.3f} | {rel(r, 'sim')} | {rtf} |")
    return "\n".join(lines)


def save_report(out: str | Path, rows: dict, table_note: str = "") -> str:
    """``summary.json`` (per system), ``utts.jsonl`` (per system and utterance), ``summary.md``; -> the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: {k: v for k, v in r.items() if k != "per_utt"} for name, r in rows.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "utts.jsonl", "w", encoding="utf-8") as f:
        for name, r in rows.items():
            for u in r.get("per_utt", []):
                f.write(json.dumps({"system": name, **u}) + "\n")
    table = format_table(summary) + (f"\n\n{table_note}" if table_note else "")
    (out / "summary.md").write_text(table + "\n")
    return table


def plot_spectrograms(out: str | Path, cases: list[Case], systems: dict[str, Path], mel_config,
                      count: int = 3) -> list[Path]:
    """``<out>/png/<utt>.png``: log-mel of the prompt, the ground truth and every system, stacked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tts.audio import load_audio
    from tts.mel import mel_spectrogram

    out = Path(out) / "png"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in cases[:count]:
        wavs = {"prompt": c.prompt_wav, "ground truth": c.ground_truth_wav,
                **{name: str(Path(d) / f"{c.utt}.wav") for name, d in systems.items()}}
        mels = {k: mel_spectrogram(load_audio(w, mel_config.sample_rate), mel_config)
                for k, w in wavs.items() if w and Path(w).is_file()}
        fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.0 * len(mels)), squeeze=False)
        for ax, (name, mel) in zip(axes[:, 0], mels.items(), strict=True):
            ax.imshow(mel, origin="lower", aspect="auto", vmin=float(mel.max()) - 10, cmap="magma")
            ax.set_title(name, fontsize=9)
        axes[-1, 0].set_xlabel("frame")
        fig.suptitle(f"{c.utt}: {c.target_text[:90]}", fontsize=10)
        fig.tight_layout()
        paths.append(out / f"{c.utt}.png")
        fig.savefig(paths[-1], dpi=70)
        plt.close(fig)
    return paths
