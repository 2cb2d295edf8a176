"""How much each piece of context tells about a speech token: held-out bits per token.

For a tokenizer's tokens with their unit durations (``tts.align``), fits count models of
``p(token | context)`` on a train dir and scores a dev dir with them, each context
interpolated with the coarser one before it (additive smoothing, ``--alpha``). The
contexts grow from nothing to the token's text unit, its place in the unit (first,
second, later; last or not), then one more piece each: the previous unit, the next one
or two units (what ``llm.unit_lookahead`` shows the LLM), the previous token. Fewer bits
on dev mean a context the LLM can use; count models over sparse contexts overfit, so
held-out figures, not train entropies, decide.

    python tools/token_context.py --config egs/synth_en/conf/llm.yaml \\
        --train egs/synth_en/data/train --dev egs/synth_en/data/dev

Prints JSON: bits per dev token for each context.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tts.align import read_aligned  # noqa: E402
from tts.frontend import Frontend  # noqa: E402

BASE = ["unit", "place"]
CONTEXTS = {  # name -> the finest context (each also backs off to "unit, place" and "unit")
    "unit, place": BASE,
    "+ previous unit": BASE + ["prev"],
    "+ next unit": BASE + ["next1"],
    "+ next two units": BASE + ["next1", "next2"],
    "+ previous token": BASE + ["ptok"],
    "+ previous token, next unit": BASE + ["ptok", "next1"],
}


def token_rows(data_dir: Path, frontend: Frontend) -> list[dict]:
    """One dict per token of every aligned utterance: the token and its context."""
    units_of, tokens, durations = read_aligned(data_dir, frontend)
    rows = []
    for utt, d in durations.items():
        units, toks, i = units_of[utt], tokens[utt], 0
        for k, (unit, n) in enumerate(zip(units, d, strict=True)):
            after = units[k + 1:k + 3] + ["</s>", "</s>"]
            for j in range(n):
                rows.append({"unit": unit, "place": (min(j, 2), j == n - 1), "prev": units[k - 1] if k else "<s>",
                             "next1": after[0], "next2": after[1], "ptok": toks[i - 1] if i else -1,
                             "token": toks[i]})
                i += 1
    return rows


def held_out_bits(train: list[dict], dev: list[dict], keys: list[str], vocab: int, alpha: float) -> float:
    """Bits per dev token of p(token | keys), interpolated down to p(token | keys[:1]) and uniform."""
    levels = [keys[:n] for n in range(1, len(keys) + 1)]
    counts = [defaultdict(Counter) for _ in levels]
    for r in train:
        for c, lv in zip(counts, levels, strict=True):
            c[tuple(r[k] for k in lv)][r["token"]] += 1
    bits = 0.0
    for r in dev:
        p = 1.0 / vocab
        for c, lv in zip(counts, levels, strict=True):
            seen = c.get(tuple(r[k] for k in lv))
            if seen:
                p = (seen[r["token"]] + alpha * p) / (sum(seen.values()) + alpha)
        bits -= math.log2(p)
    return bits / len(dev)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the LLM's YAML (its llm.frontend gives the units)")
    p.add_argument("--train", required=True, type=Path, help="data dir with text, tokens, durations")
    p.add_argument("--dev", required=True, type=Path)
    p.add_argument("--alpha", type=float, default=10.0, help="additive smoothing towards the coarser context")
    args = p.parse_args(argv)
    from tts.llm_train import load_config

    llm = load_config(args.config).llm
    frontend = Frontend(llm.frontend)
    try:
        train, dev = token_rows(args.train, frontend), token_rows(args.dev, frontend)
    except (KeyError, ValueError) as err:  # missing files (DataDirError), durations of other text
        print(f"token_context: error: {type(err).__name__}: {err} (rerun tts.align on these dirs)", file=sys.stderr)
        return 2
    if not train or not dev:
        print("token_context: error: no aligned tokens in --train or --dev", file=sys.stderr)
        return 2
    vocab = llm.speech_vocab_size
    out = {"train_tokens": len(train), "dev_tokens": len(dev),
           "bits_per_token": {"none (uniform)": math.log2(vocab),
                              "unit": held_out_bits(train, dev, ["unit"], vocab, args.alpha)}}
    for name, keys in CONTEXTS.items():
        out["bits_per_token"][name] = held_out_bits(train, dev, keys, vocab, args.alpha)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
