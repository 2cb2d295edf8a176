"""Kaldi-style data directories: ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``.

Plain sorted text files, one ``<utt-id> <value>`` per line. This module reads
and writes them and validates a directory (the check every data prep ends with).
Extra per-utterance files produced later (speech tokens, embeddings) follow the
same ``<utt-id> <value>`` layout.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

REQUIRED = ("wav.scp", "text", "utt2spk", "spk2utt")


class DataDirError(ValueError):
    """A data directory is missing a file or is inconsistent; the message says where."""


def launcher_shard() -> tuple[int, int]:
    """(shard, shards): the share of a data dir this process handles, from a launcher's
    environment: torchrun's RANK/WORLD_SIZE, srun's SLURM_PROCID/SLURM_NTASKS; (0, 1) alone."""
    for rank, world in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank in os.environ and world in os.environ:
            return int(os.environ[rank]), int(os.environ[world])
    return 0, 1


def read_table(path: str | Path) -> dict[str, str]:
    """``<key> <rest of line>`` lines -> ordered dict; rejects duplicate keys."""
    table: dict[str, str] = {}
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"missing file: {path}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                raise DataDirError(f"{path}:{n}: empty line")
            key, _, value = line.partition(" ")
            if key in table:
                raise DataDirError(f"{path}:{n}: duplicate key {key!r}")
            table[key] = value.strip()
    return table


def read_int_table(path: str | Path) -> dict[str, list[int]]:
    """A table of integers per key (``tokens``, ``durations``) -> lists of ints; a row with no
    value or a non-integer is a :class:`DataDirError` naming the file and the key."""
    out = {}
    for key, value in read_table(path).items():
        try:
            out[key] = [int(x) for x in value.split()]
        except ValueError as err:
            raise DataDirError(f"{path}: {key}: values must be integers ({err})") from err
        if not out[key]:
            raise DataDirError(f"{path}: {key}: no values")
    return out


def write_table(path: str | Path, table: dict[str, str]) -> None:
    """Write sorted ``<key> <value>`` lines atomically (tmp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for key in sorted(table):
            f.write(f"{key} {table[key]}\n")
    tmp.replace(path)


@dataclass
class Utterance:
    utt: str
    wav: str
    text: str
    spk: str


def load_data_dir(data_dir: str | Path) -> list[Utterance]:
    """Read a data dir into utterances sorted by id (no validation of the audio)."""
    d = Path(data_dir)
    wavs, texts, spks = (read_table(d / n) for n in ("wav.scp", "text", "utt2spk"))
    return [Utterance(u, wavs[u], texts.get(u, ""), spks.get(u, u)) for u in sorted(wavs)]


def spk2utt_from_utt2spk(utt2spk: dict[str, str]) -> dict[str, str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for utt in sorted(utt2spk):
        groups[utt2spk[utt]].append(utt)
    return {spk: " ".join(utts) for spk, utts in groups.items()}


def validate_data_dir(data_dir: str | Path, check_audio: bool = True) -> dict:
    """Check a data dir; raise :class:`DataDirError` naming the first problem found.

    Checks: required files exist; each is sorted with unique keys; wav.scp, text
    and utt2spk hold the same utterances; spk2utt is the exact inverse of
    utt2spk; no empty transcript; utterance ids start with their speaker id
    (Kaldi's rule that keeps sorting consistent); every wav is readable and
    non-empty. Returns a summary: utterances, speakers, hours.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise DataDirError(f"data dir not found: {d}")
    for name in REQUIRED:
        if not (d / name).is_file():
            raise DataDirError(f"{d}: missing {name}")
    tables = {}
    for name in REQUIRED:
        keys = [line.split(" ", 1)[0] for line in open(d / name, encoding="utf-8")]
        if keys != sorted(keys):
            raise DataDirError(f"{d / name}: not sorted (run `LC_ALL=C sort`)")
        tables[name] = read_table(d / name)
    wavs, texts, utt2spk, spk2utt = (tables[n] for n in REQUIRED)
    for name, table in (("text", texts), ("utt2spk", utt2spk)):
        if set(table) != set(wavs):
            extra = sorted(set(table) - set(wavs))[:3]
            missing = sorted(set(wavs) - set(table))[:3]
            raise DataDirError(f"{d}: {name} and wav.scp differ (only in {name}: {extra}, missing: {missing})")
    for utt, text in texts.items():
        if not text.strip():
            raise DataDirError(f"{d / 'text'}: empty transcript for {utt}")
    for utt, spk in utt2spk.items():
        if not spk:
            raise DataDirError(f"{d / 'utt2spk'}: no speaker for {utt}")
        if not utt.startswith(spk):
            raise DataDirError(f"{d / 'utt2spk'}: utterance id {utt} does not start with its speaker id {spk}")
    if spk2utt != spk2utt_from_utt2spk(utt2spk):
        raise DataDirError(f"{d / 'spk2utt'}: not the inverse of utt2spk (regenerate it from utt2spk)")
    seconds = 0.0
    if check_audio:
        for utt, path in wavs.items():
            try:
                info = sf.info(path)  # absolute, or relative to the recipe dir (Kaldi rule)
            except Exception as err:
                raise DataDirError(f"{d / 'wav.scp'}: {utt}: unreadable audio {path}: {err}") from err
            if info.frames == 0:
                raise DataDirError(f"{d / 'wav.scp'}: {utt}: empty audio {path}")
            seconds += info.frames / info.samplerate
    return {"utterances": len(wavs), "speakers": len(spk2utt), "hours": seconds / 3600}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(description="Validate Kaldi-style data dirs.")
    p.add_argument("data_dirs", nargs="+")
    p.add_argument("--no-audio", action="store_true", help="skip reading every wav")
    args = p.parse_args(argv)
    for d in args.data_dirs:
        try:
            summary = validate_data_dir(d, check_audio=not args.no_audio)
        except DataDirError as err:
            print(f"INVALID {err}")
            return 1
        print(json.dumps({"data_dir": d, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
