"""Extract speech tokens for a data dir (recipe stage 2): ``<data>/tokens``, sharded and resumable.

    python -m tokenizer.extract --model exp/tokenizer/model --data data/train --nj 2
    srun -N 4 python -m tokenizer.extract --model ... --data data/train --nj 4 --device cuda --no-merge
    python -m tokenizer.extract --model ... --data data/train     # merges (and fills any gap)

Output is a Kaldi table, one ``<utt> <id> <id> ...`` line per utterance (25 ids
per second). The work is split over ``shards x nj`` workers: ``nj`` local
processes per shard, and one shard per rank of a launcher (``RANK``/``WORLD_SIZE``
from torchrun, ``SLURM_PROCID``/``SLURM_NTASKS`` from srun, or ``--shard``/
``--num-shards``). Worker ``k`` appends to ``<data>/tokens.parts/<model>/part.<k>of<K>``
as it goes; every run skips the utterances any part already holds, so a killed
run (or a rerun with other sizes) resumes. A single-shard run merges the parts
into ``<data>/tokens`` once they cover every utterance; sharded runs leave the
merge to one plain run afterwards. ``<data>/tokens.model`` records which
weights made the tokens (sha256): tokens of another model are extracted anew,
never mixed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from tts.audio import AudioError
from tts.datadir import launcher_shard, read_table, write_table

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


def _worker(model_dir: str, tasks: list[tuple[list[tuple[str, str]], str]], position: int, threads: int,
            batch_size: int, device: str = "cpu") -> int:
    """Encode each task's ``(utt, wav)`` items into its part file; the model loads once for all."""
    torch.set_num_threads(threads)
    tok = SpeechTokenizer.from_pretrained(model_dir, device=device)
    for items, part in tasks:
        _encode_part(tok, items, part, position, batch_size)
    return sum(len(items) for items, _ in tasks)


def _encode_part(tok: SpeechTokenizer, items: list[tuple[str, str]], part: str, position: int,
                 batch_size: int) -> None:
    done = _read_part(Path(part))
    with open(part, "w") as f:  # rewrite the clean lines, then append
        f.writelines(f"{u} {ids}\n" for u, ids in done.items())
        bar = tqdm(total=len(items), position=position, desc=f"tokens {Path(part).name}", mininterval=5)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
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


def worker_device(device: str, worker: int) -> str:
    """``cuda`` -> ``cuda:<i>``: the shard's local rank and worker index spread over the node's GPUs."""
    if device != "cuda":
        return device
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
    return f"cuda:{(local + worker) % max(1, torch.cuda.device_count())}"


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 of the weights: tokens made by another model are redone, not kept."""
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()[:16]


def extract(model_dir: str | Path, data_dir: str | Path, nj: int = 2, batch_size: int = 16,
            threads: int = 1, shard: int = 0, shards: int = 1, device: str = "cpu",
            merge: bool | None = None) -> Path | None:
    """Extract this shard's part of ``<data_dir>``; merge into ``<data_dir>/tokens`` when complete.

    merge: None merges only a single-shard run (sharded runs race each other otherwise).
    Returns the tokens path once written, else None (other shards still to finish).
    """
    return extract_all(model_dir, [data_dir], nj, batch_size, threads, shard, shards, device, merge)[0]


def extract_all(model_dir: str | Path, data_dirs: list[str | Path], nj: int = 2, batch_size: int = 16,
                threads: int = 1, shard: int = 0, shards: int = 1, device: str = "cpu",
                merge: bool | None = None) -> list[Path | None]:
    """:func:`extract` for several data dirs with one set of ``nj`` workers (each loads the
    model once for every dir: a worker's start costs more than a small split's work)."""
    nj, total = max(1, nj), shards * max(1, nj)
    model_id = model_fingerprint(model_dir)
    tasks: list[list[tuple[list[tuple[str, str]], str]]] = [[] for _ in range(nj)]
    todo = 0
    for data_dir in map(Path, data_dirs):
        wavs = read_table(data_dir / "wav.scp")
        if _complete(data_dir, wavs, model_id):
            log.info("%s complete (%d utterances): nothing to do", data_dir / "tokens", len(wavs))
            continue
        parts_dir = data_dir / "tokens.parts" / model_id  # another model's parts sit in another folder
        parts_dir.mkdir(parents=True, exist_ok=True)
        done: dict[str, str] = {}
        for part in sorted(parts_dir.glob("part.*")):
            done.update(_read_part(part))
        items = sorted(wavs.items())
        n = 0
        for j in range(nj):
            k = shard * nj + j
            left = [it for it in items[k::total] if it[0] not in done]
            if left:
                tasks[j].append((left, str(parts_dir / f"part.{k}of{total}")))
                n += len(left)
        log.info("%s: %d of %d utterances to extract on shard %d/%d (%d workers)",
                 data_dir, n, len(items), shard, shards, nj)
        todo += n
    t0 = time.time()
    args = [(str(model_dir), t, i, threads, batch_size, worker_device(device, i))
            for i, t in enumerate(tasks) if t]
    if len(args) == 1:
        _worker(*args[0])
    elif args:
        with mp.get_context("spawn").Pool(len(args)) as pool:
            pool.starmap(_worker, args)
    log.info("shard %d: %d utterances in %.0f s", shard, todo, time.time() - t0)
    if merge is None:
        merge = shards == 1
    return [_merge(Path(d), model_dir, model_id) if merge else None for d in data_dirs]


def _complete(data_dir: Path, wavs: dict[str, str], model_id: str) -> bool:
    out, stamp = data_dir / "tokens", data_dir / "tokens.model"
    same_model = stamp.is_file() and stamp.read_text().split()[0] == model_id
    return out.is_file() and same_model and set(read_table(out)) >= set(wavs)


def _merge(data_dir: Path, model_dir: str | Path, model_id: str) -> Path:
    """The parts -> ``<data_dir>/tokens`` (and its model stamp); the parts go once complete."""
    wavs, out = read_table(data_dir / "wav.scp"), data_dir / "tokens"
    if _complete(data_dir, wavs, model_id):
        return out
    table: dict[str, str] = {}
    for part in sorted((data_dir / "tokens.parts" / model_id).glob("part.*")):
        table.update(_read_part(part))
    write_table(out, {u: table[u] for u in wavs if u in table})
    (data_dir / "tokens.model").write_text(f"{model_id} {Path(model_dir).resolve()}\n")  # only now: these are its
    missing = len(wavs) - sum(u in table for u in wavs)
    log.info("wrote %s: %d utterances%s", out, len(wavs) - missing, f" ({missing} skipped)" if missing else "")
    if not missing:
        shutil.rmtree(data_dir / "tokens.parts")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="tokenizer model dir (config.json + model.safetensors)")
    p.add_argument("--data", required=True, nargs="+", help="one or more Kaldi data dirs")
    p.add_argument("--nj", type=int, default=2, help="worker processes (per shard)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (workers spread over the node's GPUs)")
    env_shard, env_shards = launcher_shard()
    p.add_argument("--shard", type=int, default=env_shard, help="this process's shard (default: launcher rank)")
    p.add_argument("--num-shards", type=int, default=env_shards, help="shards in all (default: launcher world)")
    p.add_argument("--no-merge", action="store_true", help="extract this shard only; a plain run merges later")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not 0 <= args.shard < args.num_shards:
        p.error(f"--shard {args.shard} outside 0..{args.num_shards - 1}")
    extract_all(args.model, args.data, args.nj, args.batch_size, args.threads, args.shard, args.num_shards,
                args.device, merge=False if args.no_merge else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
