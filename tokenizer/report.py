"""Score a trained tokenizer on a data dir (recipe stage 2): report.json.

    python -m tokenizer.report --model exp/tokenizer/model --data data/dev --out exp/tokenizer/report.json

Figures: codebook utilization (share of codes used, perplexity of the code
distribution), CTC CER/WER with the quantizer bypassed and through it (from the
token ids alone, as ``transcribe_tokens`` reads them), the token count against
``num_tokens(num_samples)`` for every clip, and the encoding real-time factor.
Uses ``<data>/tokens`` when extraction already wrote it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path

import jiwer
import soundfile as sf
import torch
from tqdm import tqdm

from tts.datadir import load_data_dir, read_table

from .api import SpeechTokenizer
from .frontend import load_for_tokenizer, normalize_text, num_tokens

log = logging.getLogger("tokenizer.report")


def code_stats(token_lists, codebook_size: int) -> dict:
    counts = Counter(int(t) for ids in token_lists for t in ids)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return {"codebook_size": codebook_size, "codes_used": len(counts),
            "utilization": len(counts) / codebook_size, "perplexity": math.exp(entropy),
            "tokens": total}


def error_rates(refs: list[str], hyps: list[str]) -> dict:
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"cer": jiwer.cer(refs, hyps), "wer": jiwer.wer(refs, hyps)}


def evaluate(model_dir: str | Path, data_dir: str | Path, limit: int | None = None,
             batch_size: int = 16) -> dict:
    tok = SpeechTokenizer.from_pretrained(model_dir)
    data_dir = Path(data_dir)
    utts = load_data_dir(data_dir)
    if limit:
        utts = utts[:limit]
    extracted = read_table(data_dir / "tokens") if (data_dir / "tokens").is_file() else {}
    refs, hyp_bypass, tokens, count_errors = [], [], [], []
    audio_seconds, encode_seconds, exact = 0.0, 0.0, 0
    for start in tqdm(range(0, len(utts), batch_size), desc=f"report {data_dir}", mininterval=5):
        chunk = utts[start:start + batch_size]
        audios = [load_for_tokenizer(u.wav, normalize=tok.normalize) for u in chunk]
        t0 = time.perf_counter()
        ids = tok.encode_batch(audios, 16000, batch_size=batch_size)
        encode_seconds += time.perf_counter() - t0
        for u, a, i in zip(chunk, audios, ids, strict=True):
            info = sf.info(u.wav)
            expected = num_tokens(info.frames, info.samplerate)
            if u.utt in extracted:  # check what stage 2 wrote, not only a fresh encode
                stored = [int(t) for t in extracted[u.utt].split()]
                if stored != i.tolist():
                    count_errors.append({"utt": u.utt, "error": "stored tokens differ from a fresh encode"})
            exact += len(i) == expected
            if abs(len(i) - expected) > 1:
                count_errors.append({"utt": u.utt, "tokens": len(i), "expected": expected})
            audio_seconds += len(a) / 16000
            refs.append(normalize_text(u.text))
            tokens.append(i)
            hyp_bypass.append(tok.transcribe(a, 16000, bypass_quantizer=True))
    hyp_tokens = []
    for start in range(0, len(tokens), batch_size):
        hyp_tokens += tok.transcribe_tokens_batch(tokens[start:start + batch_size])
    examples = [{"utt": u.utt, "ref": r, "from_tokens": h}
                for u, r, h in list(zip(utts, refs, hyp_tokens, strict=True))[:5]]
    return {
        "data": str(data_dir), "utterances": len(utts), "hours": audio_seconds / 3600,
        "codebook": code_stats(tokens, tok.codebook_size),
        "through_quantizer_from_tokens": error_rates(refs, hyp_tokens),
        "quantizer_bypassed": error_rates(refs, hyp_bypass),
        "token_count": {"rule": "num_tokens = num_samples_16k // 640 (25 Hz)",
                        "exact": exact, "within_one": len(utts) - len(count_errors),
                        "failures": count_errors[:20]},
        "encode_rtf": encode_seconds / max(audio_seconds, 1e-9),
        "torch_threads": torch.get_num_threads(),
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int, default=None, help="score only the first N utterances")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    report = evaluate(args.model, args.data, args.limit)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("codebook", "through_quantizer_from_tokens",
                                             "quantizer_bypassed", "encode_rtf")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
