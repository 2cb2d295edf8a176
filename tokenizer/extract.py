"""Extract speech tokens for a data dir (recipe stage 2): ``<data>/tokens``, sharded and resumable.

    python -m tokenizer.extract --model exp/tokenizer/model --data data/train --nj 2

Output is a Kaldi table, one ``<utt> <id> <id> ...`` line per utterance (25 ids
per second). Each of the ``nj`` workers appends to ``<data>/tokens.parts/<j>``
as it goes; a rerun skips utterances already there (or the whole dir when
``<data>/tokens`` is complete), then the parts are merged and sorted.
``<data>/tokens.model`` records which weights made them (sha256): tokens of
another model are extracted anew, never mixed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from tts.audio import AudioError
from tts.datadir import read_table, write_table

from .api import SpeechTokenizer
from .frontend import load_for_tokenizer

log = logging.getLogger("tokenizer.extract")


def _read_part(path: Path) -> dict[str, str]:
    """Lines of a part file; a torn last line (killed mid-write) is dropped."""
    done: dict[str, str] = {}
    if path.is_file():
        lines = path.read_text().split("\n")
        for line in lines[:-1]:  # the piece after the last newline is torn or empty
            utt, _, ids = line.partition(" ")
            if ids and all(t.isdigit() for t in ids.split()):
                done[utt] = ids
    return done


def _worker(model_dir: str, items: list[tuple[str, str]], part: str, position: int, threads: int,
            batch_size: int) -> int:
    torch.set_num_threads(threads)
    tok = SpeechTokenizer.from_pretrained(model_dir)
    done = _read_part(Path(part))
    todo = [(u, w) for u, w in items if u not in done]
    with open(part, "w") as f:  # rewrite the clean lines, then append
        f.writelines(f"{u} {ids}\n" for u, ids in done.items())
        bar = tqdm(total=len(todo), position=position, desc=f"tokens part {position}", mininterval=5)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            audios, utts = [], []
            for utt, wav in chunk:
                try:
                    audios.append(load_for_tokenizer(wav, normalize=tok.normalize))
                    utts.append(utt)
                except AudioError as err:
                    log.warning("skipping %s: %s", utt, err)
            for utt, ids in zip(utts, tok.encode_batch(audios, 16000, batch_size=batch_size), strict=True):
                f.write(f"{utt} {' '.join(map(str, ids.tolist()))}\n")
            f.flush()
            bar.update(len(chunk))
        bar.close()
    return len(todo)


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 of the weights: tokens made by another model are redone, not kept."""
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()[:16]


def extract(model_dir: str | Path, data_dir: str | Path, nj: int = 2, batch_size: int = 16,
            threads: int = 1) -> Path:
    """Write ``<data_dir>/tokens`` for every utterance of ``wav.scp``; returns its path."""
    data_dir = Path(data_dir)
    wavs = read_table(data_dir / "wav.scp")
    out, stamp = data_dir / "tokens", data_dir / "tokens.model"
    model_id = model_fingerprint(model_dir)
    same_model = stamp.is_file() and stamp.read_text().split()[0] == model_id
    if out.is_file() and same_model and set(read_table(out)) >= set(wavs):
        log.info("%s complete (%d utterances): nothing to do", out, len(wavs))
        return out
    parts_dir = data_dir / "tokens.parts"
    if not same_model and parts_dir.is_dir():  # parts of another model's tokens: start over
        for part in parts_dir.iterdir():
            part.unlink()
    parts_dir.mkdir(exist_ok=True)
    stamp.write_text(f"{model_id} {Path(model_dir).resolve()}\n")
    items = sorted(wavs.items())
    nj = max(1, min(nj, len(items)))
    shards = [items[j::nj] for j in range(nj)]
    parts = [str(parts_dir / f"{j}.of{nj}") for j in range(nj)]
    t0 = time.time()
    if nj == 1:
        _worker(str(model_dir), shards[0], parts[0], 0, threads, batch_size)
    else:
        with mp.get_context("spawn").Pool(nj) as pool:
            pool.starmap(_worker, [(str(model_dir), shards[j], parts[j], j, threads, batch_size)
                                   for j in range(nj)])
    table: dict[str, str] = {}
    for part in parts:
        table.update(_read_part(Path(part)))
    write_table(out, {u: table[u] for u in wavs if u in table})
    missing = len(wavs) - len(table)
    log.info("wrote %s: %d utterances in %.0f s%s", out, len(table), time.time() - t0,
             f" ({missing} skipped)" if missing else "")
    if not missing:
        for part in parts:
            os.remove(part)
        parts_dir.rmdir() if not any(parts_dir.iterdir()) else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="tokenizer model dir (config.json + model.safetensors)")
    p.add_argument("--data", required=True, nargs="+", help="one or more Kaldi data dirs")
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for d in args.data:
        extract(args.model, d, args.nj, args.batch_size, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
