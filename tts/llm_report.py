"""Stage-3 report: how well the LLM speaks, read from its tokens by the speech tokenizer's CTC head.

    python -m tts.llm_report --model exp/llm/model --tokenizer exp/tokenizer/model \\
        --data data/dev --out exp/llm/report.json

For every utterance of the data dir (the prompt is another utterance of the same
speaker, the inference layout):

- teacher-forced top-1 accuracy on the target speech tokens;
- N=1 generation from text + prompt, read back with ``transcribe_tokens``;
  CER against the reference (both through ``normalize_text``), beside the CER
  of the real tokens read the same way (the tokenizer's own ceiling);
- length of generated vs real tokens, and how many generations hit the max guard.

Writes a JSON summary and a per-utterance TSV next to it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import jiwer
import numpy as np
import torch
from tqdm import tqdm

from tts.llm import SpeechLM
from tts.llm_train import load_pairs, speech_accuracy
from tts.sampling import SamplingConfig, generate
from tts.text_norm import normalize_text


def _cer(ref: str, hyp: str) -> float:
    ref, hyp = normalize_text(ref), normalize_text(hyp)
    if not ref:
        return float(bool(hyp))
    return float(jiwer.cer(ref, hyp))


def report(lm: SpeechLM, tokenizer, data_dir: str | Path, sampling: SamplingConfig,
           max_utts: int | None = None) -> tuple[dict, list[dict]]:
    """Return (summary, per-utterance rows). ``tokenizer`` needs ``transcribe_tokens(ids) -> str``."""
    pairs = load_pairs(data_dir, lm.frontend, lm.max_positions, durations=lm.layout.interleaved,
                       lookahead=lm.layout.lookahead)
    by_spk: dict[str, list] = {}
    for p in pairs:
        by_spk.setdefault(p.spk, []).append(p)
    pairs = pairs[:max_utts] if max_utts else pairs
    rows, gen_time, gen_tokens = [], 0.0, 0
    for p in tqdm(pairs, desc="llm report", mininterval=10):
        same = by_spk[p.spk]
        prompt = same[(same.index(p) + 1) % len(same)] if len(same) > 1 else None
        ptext, pspeech = (prompt.text_ids, prompt.speech) if prompt else (None, None)
        ids, labels = lm.layout.example(p.text_ids, p.speech, ptext, pspeech, loss_on_prompt=False,
                                        durations=p.durations)
        if len(ids) > lm.max_positions:  # prompt too long for this one: go without
            ptext = pspeech = None
            ids, labels = lm.layout.example(p.text_ids, p.speech, durations=p.durations)
        with torch.inference_mode():
            acc = float(speech_accuracy(lm(torch.tensor([ids])), torch.tensor([labels]), lm.layout.speech_offset))
        t0 = time.perf_counter()
        gen = generate(lm, p.text_ids, ptext, pspeech, sampling)
        gen_time += time.perf_counter() - t0
        tokens = gen.tokens[0]
        gen_tokens += len(tokens)
        ref = p.text
        hyp = tokenizer.transcribe_tokens(tokens) if tokens else ""
        real = tokenizer.transcribe_tokens(p.speech)
        rows.append({"utt": p.utt, "prompt": prompt.utt if prompt else "", "tf_acc": acc,
                     "cer": _cer(ref, hyp), "cer_real_tokens": _cer(ref, real),
                     "gen_len": len(tokens), "real_len": len(p.speech), "hit_max": gen.hit_max[0],
                     "ref": ref, "hyp": hyp, "hyp_real_tokens": real})
    mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    summary = {
        "utterances": len(rows),
        "teacher_forced_acc": mean("tf_acc"),
        "cer_generated": mean("cer"),
        "cer_real_tokens": mean("cer_real_tokens"),
        "hit_max_length": int(sum(r["hit_max"] for r in rows)),
        "gen_over_real_length": float(np.sum([r["gen_len"] for r in rows]) / np.sum([r["real_len"] for r in rows])),
        "gen_tokens_per_s": gen_tokens / max(gen_time, 1e-9),
        "torch_threads": torch.get_num_threads(),
        "parameters_M": lm.num_parameters() / 1e6,
        "sampling": asdict(sampling),
    }
    return summary, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="saved LLM dir (exp/llm/model)")
    p.add_argument("--tokenizer", required=True, help="speech tokenizer model dir (transcribe_tokens)")
    p.add_argument("--data", required=True, help="data dir with text, tokens, utt2spk")
    p.add_argument("--out", required=True, help="summary JSON; the per-utterance TSV goes beside it")
    p.add_argument("--max-utts", type=int, default=None)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-guidance", type=float, default=0.0,
                   help="classifier-free guidance over the text (an LLM trained with llm.uncond_prob > 0)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tokenizer.api import SpeechTokenizer  # the tokenizer package: only the report needs it

    lm = SpeechLM.from_pretrained(args.model)
    tok = SpeechTokenizer.from_pretrained(args.tokenizer)
    sampling = SamplingConfig(greedy=args.greedy, seed=args.seed, text_guidance=args.text_guidance)
    summary, rows = report(lm, tok, args.data, sampling, args.max_utts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    cols = list(rows[0])
    with open(out.with_suffix(".tsv"), "w", encoding="utf-8") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
