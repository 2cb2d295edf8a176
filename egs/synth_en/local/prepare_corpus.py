#!/usr/bin/env python
"""Stage 0 of synth_en: a multi-speaker toy corpus spoken by Debian's synthesizers.

    python local/prepare_corpus.py --data data --nj 2 --train-hours 3.0 [--wav-dir data/wav]

Sentences come from the ``fortunes`` package (see ``sentences.py``), voices
from flite/festival with fixed perturbations (see ``speakers.py``). Writes
Kaldi dirs ``<data>/{train,dev,test}`` (wav.scp with absolute paths, text with
the original cased sentence, utt2spk, spk2utt, plus utt2dur) and
``<data>/speakers.json``; with ``--timbre-per-spk N`` > 0 also ``<data>/timbre``:
train sentences read by voices of other languages, for the flow only (its
``text`` is what they were given, not what they say).

- dev: held-out sentences spoken by train speakers; test: held-out sentences
  spoken by speakers never in train. No dev/test sentence is in train.
- Deterministic: the plan (sentence, speaker per utterance) depends only on the
  sentence list, ``--seed`` and the sizes; a larger ``--train-hours`` extends the
  same plan.
- Resumable: every wav is written atomically; existing complete wavs are kept,
  so a killed run is finished by running it again. A wav's name carries a hash
  of its sentence and speaker settings, so a changed plan never reuses one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentences import CorpusTextError, load_sentences  # noqa: E402
from speakers import speakers_by_split  # noqa: E402
from voices import Speaker, SynthesisError, check_tools, synthesize, wav_seconds  # noqa: E402

from tts.datadir import spk2utt_from_utt2spk, write_table  # noqa: E402

SECONDS_PER_WORD = 0.30  # planning estimate (under the measured ~0.33) so the target is met
SECONDS_PER_UTT = 0.5


@dataclass(frozen=True)
class Job:
    utt: str
    split: str
    spk: Speaker
    text: str
    wav: Path


def estimate_seconds(text: str) -> float:
    return SECONDS_PER_UTT + SECONDS_PER_WORD * len(text.split())


def make_plan(
    sentences: list[str],
    wav_dir: Path,
    train_hours: float,
    dev_per_spk: int,
    test_per_spk: int,
    seed: int,
    timbre_per_spk: int = 0,
) -> list[Job]:
    """Deterministic list of utterances for all splits (timbre: only if ``timbre_per_spk``)."""
    splits = speakers_by_split()
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_test = test_per_spk * len(splits["test"])
    n_dev = dev_per_spk * len(splits["train"])
    if n_test + n_dev >= len(order) // 2:
        raise CorpusTextError(f"only {len(order)} sentences for {n_test} test + {n_dev} dev")
    pools = {"test": order[:n_test], "dev": order[n_test : n_test + n_dev]}
    train_pool = order[n_test + n_dev :]
    jobs: list[Job] = []

    def add(split: str, spk: Speaker, idx: int) -> None:
        utt, text = f"{spk.spk}-{idx:04d}", sentences[idx]
        # The file name carries a hash of what is spoken how, so a changed sentence
        # list or look never reuses a stale wav on resume.
        digest = hashlib.sha1(f"{text}|{spk.to_dict()}".encode()).hexdigest()[:8]
        jobs.append(Job(utt, split, spk, text, wav_dir / split / spk.spk / f"{utt}_{digest}.wav"))

    for s, spk in enumerate(splits["test"]):
        for idx in pools["test"][s * test_per_spk : (s + 1) * test_per_spk]:
            add("test", spk, idx)
    # Train: sentence k goes to speaker k mod S; every sentence once before any repeats,
    # and a repeat goes to another speaker (the pool size is not a multiple of S).
    train_spks = splits["train"]
    target, total, k = train_hours * 3600, 0.0, 0
    seen: set[tuple[str, int]] = set()
    while total < target:
        spk, idx = train_spks[k % len(train_spks)], train_pool[k % len(train_pool)]
        k += 1
        if (spk.spk, idx) in seen:
            continue
        if k > 50 * len(train_pool):
            raise CorpusTextError(f"cannot plan {train_hours} h from {len(train_pool)} sentences")
        seen.add((spk.spk, idx))
        add("train", spk, idx)
        total += estimate_seconds(sentences[idx])
    # Dev: held-out sentences of the speakers train has (all of them unless train is tiny).
    in_train = {j.spk.spk for j in jobs if j.split == "train"}
    for s, spk in enumerate(spk for spk in train_spks if spk.spk in in_train):
        for idx in pools["dev"][s * dev_per_spk : (s + 1) * dev_per_spk]:
            add("dev", spk, idx)
    # Timbre: train sentences only (from the end of the pool), so no dev/test sentence leaks.
    for s, spk in enumerate(splits["timbre"] if timbre_per_spk > 0 else []):
        for j in range(timbre_per_spk):
            add("timbre", spk, train_pool[-1 - (s * timbre_per_spk + j) % len(train_pool)])
    return jobs


def held_out_leaks(jobs: list[Job]) -> list[str]:
    """Dev and test utterances whose sentence train also reads (the timbre split may: it reads train sentences)."""
    train = {j.text for j in jobs if j.split == "train"}
    return [j.utt for j in jobs if j.split in ("dev", "test") and j.text in train]


def _work(job: Job) -> tuple[str, float, str]:
    try:
        return job.utt, synthesize(job.text, job.spk, job.wav), ""
    except SynthesisError as err:
        return job.utt, 0.0, str(err)


OPTIONAL_SPLITS = ("timbre",)  # extra voices for the flow: an utterance its voice cannot say is dropped


def synthesize_all(jobs: list[Job], nj: int) -> dict[str, float]:
    """Synthesize missing wavs in parallel; returns utt -> seconds for every job (0.0: dropped).

    A failed utterance of train, dev or test stops the run (a rerun retries it); one of an
    optional split (the timbre voices of other languages, which some English sentences break)
    is dropped with a warning, since no transcript depends on it."""
    for part in {j.wav.parent for j in jobs}:
        for stale in part.glob("*.part") if part.is_dir() else []:
            stale.unlink()  # left by a killed run
    durations = {j.utt: wav_seconds(j.wav) for j in jobs}
    todo = [j for j in jobs if durations[j.utt] <= 0]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} utterances already synthesized", flush=True)
    failures, dropped = [], []
    split_of = {j.utt: j.split for j in jobs}
    with Pool(nj) if nj > 1 and todo else nullcontext() as pool:  # nj 1: in this process
        results = pool.imap_unordered(_work, todo, chunksize=4) if pool else map(_work, todo)
        for utt, secs, err in tqdm(results, total=len(todo), desc="synthesize", smoothing=0.05, disable=not todo):
            durations[utt] = secs
            if err:
                (dropped if split_of[utt] in OPTIONAL_SPLITS else failures).append(f"{utt}: {err}")
    if dropped:
        print(f"WARNING: {len(dropped)} utterances of {OPTIONAL_SPLITS} dropped, their voice failed on the "
              f"sentence (e.g. {dropped[0][:160]})", file=sys.stderr, flush=True)
    if failures:
        raise SynthesisError(
            f"{len(failures)} utterances failed; rerun to retry. First: {failures[0]}"
        )
    return durations


def write_split(data: Path, split: str, jobs: list[Job], durations: dict[str, float]) -> dict:
    d = data / split
    d.mkdir(parents=True, exist_ok=True)
    mine = [j for j in jobs if j.split == split]
    utt2spk = {j.utt: j.spk.spk for j in mine}
    write_table(d / "wav.scp", {j.utt: str(j.wav.resolve()) for j in mine})
    write_table(d / "text", {j.utt: j.text for j in mine})
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    write_table(d / "utt2dur", {j.utt: f"{durations[j.utt]:.3f}" for j in mine})
    hours = sum(durations[j.utt] for j in mine) / 3600
    return {
        "utterances": len(mine),
        "speakers": len(set(utt2spk.values())),
        "hours": round(hours, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--wav-dir", type=Path, default=None, help="default: <data>/wav")
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--train-hours", type=float, default=3.0)
    p.add_argument("--dev-per-spk", type=int, default=5)
    p.add_argument("--test-per-spk", type=int, default=15)
    p.add_argument("--timbre-per-spk", type=int, default=0,
                   help="utterances per timbre speaker (voices of other languages, for the flow); 0: none")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    wav_dir = (args.wav_dir or args.data / "wav").resolve()
    try:
        sentences = load_sentences()
        jobs = make_plan(
            sentences, wav_dir, args.train_hours, args.dev_per_spk, args.test_per_spk, args.seed,
            args.timbre_per_spk,
        )
        check_tools(sorted({j.spk.voice for j in jobs}))
        print(f"{len(sentences)} sentences; plan: {len(jobs)} utterances", flush=True)
        durations = synthesize_all(jobs, args.nj)
        jobs = [j for j in jobs if durations[j.utt] > 0]  # optional-split utterances that failed
    except (CorpusTextError, SynthesisError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    splits = ("train", "dev", "test", *(("timbre",) if args.timbre_per_spk > 0 else ()))
    summary = {split: write_split(args.data, split, jobs, durations) for split in splits}
    spk_split: dict[str, str] = {}
    speakers: dict[str, Speaker] = {}
    for j in jobs:
        spk_split[j.spk.spk], speakers[j.spk.spk] = j.split if j.split != "dev" else "train", j.spk
    info = {s: {**speakers[s].to_dict(), "split": spk_split[s]} for s in sorted(speakers)}
    (args.data / "speakers.json").write_text(json.dumps(info, indent=1) + "\n")
    assert not held_out_leaks(jobs), f"dev/test sentence in train: {held_out_leaks(jobs)[:3]}"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
