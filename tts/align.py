"""How many speech tokens each text unit spans: the durations the interleaved LLM layout trains on.

    python -m tts.align --tokenizer exp/tokenizer/model --config conf/llm.yaml --data data/train data/dev

(recipe stage 3, before the LLM trains; a no-op unless the config's ``llm.layout`` is
``interleaved``, which needs ``llm.frontend.units: phones``).

For every utterance, the LLM frontend's units of its normalised transcript
(phones, ``_`` between words, punctuation: ``Frontend.symbols``) are force-aligned
(CTC Viterbi) on the posteriors of the speech tokenizer's auxiliary phone CTC
(50 frames/s, two per 25 Hz token). A phone's span starts at the first frame of
its label; ``_`` and punctuation take the pause that follows the previous phone
when the blank run there is longer than ``pause_frames`` (else they get no
tokens); the first unit also takes any leading silence and the last one the
tail. Spans are rounded to token boundaries, so ``sum(durations) == len(tokens)``.

Writes ``<data>/durations``, one ``<utt> d_1 ... d_U`` line per utterance (a Kaldi
table like ``tokens``); utterances that cannot be aligned (no phone, fewer
frames than the labels need) are left out and counted. It then prints how much of a
token its unit predicts (:func:`unit_token_stats`): a tokenizer's figure of how much
the LLM must guess beyond the phones it reads.

The Viterbi is written here (numpy, ~20 lines) because torchaudio, whose
``forced_align`` does it, cannot be installed beside the CPU torch build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tts.audio import read_audio, to_mono
from tts.datadir import read_int_table, read_table, write_table
from tts.frontend import LETTERS, Frontend, TextError

PAUSE_FRAMES = 8  # a blank run longer than this (160 ms at 50 Hz) after a phone is a pause
PHONE_TAIL = 4  # frames of such a run that still belong to the phone before it


def ctc_viterbi(log_probs: np.ndarray, targets: list[int], blank: int = 0) -> np.ndarray | None:
    """Best CTC path of ``targets`` through log_probs (T, V) -> (T,) index of the target each
    frame emits, -1 for blank; None when T frames cannot hold the labels."""
    t_len, n = log_probs.shape[0], len(targets)
    labels = np.full(2 * n + 1, blank)
    labels[1::2] = targets
    s_len = len(labels)
    # a state may skip the blank before it when its label differs from the one two back
    skip = np.zeros(s_len, dtype=bool)
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    score = np.full(s_len, -np.inf)
    score[:2] = log_probs[0, labels[:2]]
    back = np.zeros((t_len, s_len), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, t_len):
        prev1 = np.concatenate([[-np.inf], score[:-1]])
        prev2 = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        cand = np.stack([score, prev1, prev2])  # (3, S)
        back[t] = cand.argmax(0)
        score = cand.max(0) + log_probs[t, labels]
    end = s_len - 1 if score[-1] >= score[-2] else s_len - 2
    if not np.isfinite(score[end]):
        return None
    path = np.empty(t_len, dtype=np.int64)
    s = end
    for t in range(t_len - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    return np.where(path % 2 == 1, path // 2, -1)


def unit_durations(path: np.ndarray, is_phone: list[bool], num_tokens: int, up: int = 2,
                   pause_frames: int = PAUSE_FRAMES, tail: int = PHONE_TAIL) -> list[int]:
    """Frame path (T,) of the phone units (see :func:`ctc_viterbi`) -> tokens per unit (all units)."""
    n_frames = len(path)
    phone_frames = [np.flatnonzero(path == j) for j in range(sum(is_phone))]
    starts, j = [], 0
    for k, phone in enumerate(is_phone):
        if phone:
            starts.append(int(phone_frames[j][0]) if k else 0)
            j += 1
            continue
        # a non-phone unit: the pause after the previous phone, if there is one
        last = int(phone_frames[j - 1][-1]) if j else -1
        nxt = int(phone_frames[j][0]) if j < len(phone_frames) else n_frames
        first_of_run = k == 0 or is_phone[k - 1]
        starts.append(last + 1 + tail if first_of_run and nxt - last - 1 > pause_frames else nxt)
    starts[0] = 0
    bounds = [min(num_tokens, round(s / up)) for s in starts] + [num_tokens]
    bounds = np.maximum.accumulate(bounds)
    return np.diff(bounds).tolist()


def phone_targets(units: list[str]) -> tuple[list[int], list[bool]]:
    """Frontend units -> tokenizer phone-CTC label ids of the phones, and which units are phones."""
    from tokenizer.frontend import PhoneLexicon

    index = dict(PhoneLexicon().index)
    for c in LETTERS:  # the frontend spells unknown words in letters, the tokenizer as <c>
        index[c] = index[f"<{c}>"]
    is_phone = [u in index for u in units]
    return [index[u] for u in units if u in index], is_phone


def align_dir(data_dir: str | Path, frontend: Frontend, tokenizer, batch_size: int = 16) -> tuple[int, int]:
    """Write ``<data_dir>/durations``; returns (aligned, skipped)."""
    d = Path(data_dir)
    texts, wavs = read_table(d / "text"), read_table(d / "wav.scp")
    tokens = {u: len(v.split()) for u, v in read_table(d / "tokens").items()}
    todo = []
    for utt in sorted(set(texts) & set(tokens) & set(wavs)):
        try:
            units = frontend.symbols(frontend.transcript(texts[utt]))
        except TextError:
            continue
        targets, is_phone = phone_targets(units)
        if targets:
            todo.append((utt, targets, is_phone))
    out, skipped, up = {}, 0, tokenizer.config.ctc_upsample
    for start in tqdm(range(0, len(todo), batch_size), desc=f"align {d}", mininterval=10):
        batch = todo[start:start + batch_size]
        audios, rates = zip(*(read_audio(wavs[utt]) for utt, _, _ in batch), strict=True)
        logps = tokenizer.phone_log_probs_batch([to_mono(a) for a in audios], list(rates))
        for (utt, targets, is_phone), logp in zip(batch, logps, strict=True):
            path = ctc_viterbi(logp, targets)
            if path is None or len(logp) != tokens[utt] * up:
                skipped += 1
                continue
            out[utt] = " ".join(map(str, unit_durations(path, is_phone, tokens[utt], up)))
    write_table(d / "durations", out)
    return len(out), skipped + len(set(texts) & set(tokens)) - len(todo)


def unit_token_stats(units: dict[str, list[str]], tokens: dict[str, list[int]],
                     durations: dict[str, list[int]]) -> dict[str, float]:
    """How far the phone a token belongs to predicts it: the interleaved LLM's easiest share.

    Over the tokens of every aligned utterance: ``h_token`` (bits, the tokens' unigram entropy),
    ``h_token_given_unit`` (bits, conditional on the unit whose span holds the token) and
    ``unit_majority`` (the share of tokens that are their unit's most frequent token: the
    accuracy of a model that knew only the unit). Tokenizers whose codes follow the phones
    give the LLM less to guess."""
    from collections import Counter, defaultdict

    per_unit: dict[str, Counter] = defaultdict(Counter)
    for utt, durs in durations.items():
        toks = iter(tokens[utt])
        for unit, d in zip(units[utt], durs, strict=True):
            if d:
                per_unit[unit].update(next(toks) for _ in range(d))
    overall = Counter()
    for c in per_unit.values():
        overall.update(c)
    n = sum(overall.values())
    if not n:
        return {"tokens": 0}

    def entropy(c: Counter) -> float:
        p = np.array(list(c.values()), dtype=np.float64) / sum(c.values())
        return float(-(p * np.log2(p)).sum())

    return {"tokens": n,
            "h_token": entropy(overall),
            "h_token_given_unit": sum(sum(c.values()) / n * entropy(c) for c in per_unit.values()),
            "unit_majority": sum(max(c.values()) for c in per_unit.values()) / n}


def read_aligned(data_dir: str | Path, frontend: Frontend):
    """A data dir's aligned utterances (``text``, ``tokens``, ``durations``) -> their units,
    tokens and durations, each keyed by utterance."""
    d = Path(data_dir)
    durations, texts = read_int_table(d / "durations"), read_table(d / "text")
    units = {u: frontend.symbols(frontend.transcript(texts[u])) for u in durations}
    return units, read_int_table(d / "tokens"), durations


def dir_token_stats(data_dir: str | Path, frontend: Frontend) -> dict[str, float]:
    """:func:`unit_token_stats` of a data dir with ``text``, ``tokens`` and ``durations``."""
    return unit_token_stats(*read_aligned(data_dir, frontend))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="speech tokenizer model dir (with a phone CTC head)")
    p.add_argument("--config", required=True, help="the LLM's training YAML (its llm.frontend sets the units)")
    p.add_argument("--data", nargs="+", required=True, help="data dirs with text, wav.scp, tokens")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    from tokenizer.api import SpeechTokenizer
    from tts.llm_train import load_config

    if args.threads:
        torch.set_num_threads(args.threads)
    llm = load_config(args.config).llm
    if llm.layout != "interleaved":
        print(f"{args.config}: llm.layout {llm.layout!r} needs no durations", file=sys.stderr)
        return 0
    if llm.frontend.units != "phones":
        print(f"{args.config}: the interleaved layout aligns phones (llm.frontend.units: phones)", file=sys.stderr)
        return 2
    from tts.errors import USER_ERRORS

    frontend = Frontend(llm.frontend)
    try:
        tok = SpeechTokenizer.from_pretrained(args.tokenizer)
        for d in args.data:
            n, skipped = align_dir(d, frontend, tok)
            print(f"{d}/durations: {n} utterances aligned, {skipped} skipped", file=sys.stderr)
            if not n:
                return 1
            stats = dir_token_stats(d, frontend)
            print(f"{d}: tokens given their unit: H {stats['h_token_given_unit']:.2f} bits of "
                  f"{stats['h_token']:.2f}, unit majority {stats['unit_majority']:.3f}", file=sys.stderr)
    except (*USER_ERRORS, ValueError) as err:  # bad data or model: one line (no durations file is written)
        print(f"tts.align: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
