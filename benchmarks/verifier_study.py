"""Best-of-N verifiers against the judges: every candidate vocoded and judged. Prints JSON.

    python benchmarks/verifier_study.py --model egs/synth_en/exp/model \
        --meta egs/synth_en/exp/eval/meta.lst --out egs/synth_en/exp/verifier_study

Each clone's N candidates all go through flow and vocoder (``prune_to = N``) and are scored
by every VoxLM verifier (token intelligibility, speaker similarity, audio intelligibility)
and by both judges (pocketsphinx WER, resemblyzer SIM to the prompt). Selection rules are
then replayed on those scores with :func:`tts.verifiers.rank`, the ranking the Synthesizer
uses: what each rule picks, its mean WER and SIM, beside a random candidate (what N=1
gives on average) and the judges' own best candidate (the headroom). Also each verifier's
rank correlation with each judge within a clone. The judges only score here: they choose
nothing that a reported VoxLM figure comes from (DESIGN.md).

Resumable: a clone's candidates are kept in ``OUT/candidates.jsonl`` once judged;
``--replay`` skips synthesis and re-reads that file. Multi-sentence targets are skipped
(their candidates are per sentence, the judges score whole utterances).
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from tts.verifiers import Candidate, rank

VERIFIERS = ("token_intelligibility", "speaker_similarity", "audio_intelligibility")


@dataclass
class _Weight:  # a verifier as rank() sees it: a name and a weight
    name: str
    weight: float


def choose(cands: list[dict], prune_to: int, weights: dict[str, float]) -> dict:
    """The candidate the Synthesizer would return: the token verifier keeps the best
    ``prune_to``, then ``weights`` (verifier -> weight) rank those."""
    pool = [Candidate([1], scores=c["scores"], index=c["index"], hit_max_length=c["hit_max_length"])
            for c in sorted(cands, key=lambda c: c["index"])]
    keep = rank(pool, [_Weight("token_intelligibility", 1.0)])[:prune_to]
    best = rank(keep, [_Weight(k, w) for k, w in weights.items()])[0]
    return next(c for c in cands if c["index"] == best.index)


def rules(n: int) -> dict[str, tuple[int, dict[str, float]]]:
    """Selection rules to replay: name -> (prune_to, weights)."""
    out = {"token only": (n, {"token_intelligibility": 1.0})}
    for p, w in itertools.product((2, 4, n), (1, 2, 4, 8)):
        out[f"prune {p}, token + {w} x speaker"] = (p, {"token_intelligibility": 1.0, "speaker_similarity": w})
    for p in (2, 4, n):
        out[f"prune {p}, token + audio + speaker"] = (p, dict.fromkeys(VERIFIERS, 1.0))
    out["speaker only"] = (n, {"speaker_similarity": 1.0})
    return out


def _spearman(a, b) -> float | None:
    """Rank correlation (ties averaged); None where either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def analyse(clones: dict[str, list[dict]], n: int) -> dict:
    """Mean judge figures of each rule, random pick and oracles; verifier-judge correlations."""
    def summary(picks: list[dict]) -> dict:
        return {"wer": float(np.mean([c["wer"] for c in picks])), "sim": float(np.mean([c["sim"] for c in picks]))}

    utts = sorted(clones)
    out = {"clones": len(utts), "n_candidates": n,
           "random candidate (N=1 expectation)": {
               "wer": float(np.mean([np.mean([c["wer"] for c in clones[u]]) for u in utts])),
               "sim": float(np.mean([np.mean([c["sim"] for c in clones[u]]) for u in utts]))},
           "oracle WER (judge picks)": summary([min(clones[u], key=lambda c: (c["wer"], -c["sim"])) for u in utts]),
           "oracle SIM (judge picks)": summary([max(clones[u], key=lambda c: c["sim"]) for u in utts])}
    out["rules"] = {name: summary([choose(clones[u], p, w) for u in utts]) for name, (p, w) in rules(n).items()}
    corr = {}
    for v, j in itertools.product(VERIFIERS, ("wer", "sim")):
        sign = -1.0 if j == "wer" else 1.0  # a good verifier score goes with a low WER
        rs = [_spearman([c["scores"][v] for c in clones[u]], [sign * c[j] for c in clones[u]]) for u in utts]
        rs = [r for r in rs if r is not None]
        corr[f"{v} ~ {j}"] = {"mean_spearman": float(np.mean(rs)) if rs else None, "clones": len(rs)}
    out["within-clone rank correlation (higher: agrees with the judge)"] = corr
    return out


def synthesize_and_judge(args, cases, store: Path) -> None:
    """Every candidate of every clone not yet in ``store``: vocoded, scored, judged, appended."""
    import torch

    from tts.audio import save_audio
    from tts.cli import synthesize_cases
    from tts.judges import IntelligibilityJudge, SpeakerJudge
    from tts.synthesizer import Synthesizer

    if args.threads:
        torch.set_num_threads(args.threads)
    done = {json.loads(line)["utt"] for line in store.read_text().splitlines()} if store.is_file() else set()
    todo = [c for c in cases if c.utt not in done]
    if not todo:
        return
    synth = Synthesizer.from_pretrained(args.model)
    asr, spk = IntelligibilityJudge(progress=False), SpeakerJudge(progress=False)
    wav_dir = store.parent / "wavs"
    kwargs = {"n_candidates": args.n, "prune_to": args.n, "audio_verifier": True, "seed": args.seed}
    for case, r in synthesize_cases(synth, todo, kwargs, f"N={args.n}, all vocoded"):
        if isinstance(r, Exception):
            raise r
        if len(r.sentences) != 1:
            print(f"skipped {case.utt}: {len(r.sentences)} sentences")
            continue
        prompt = spk.embed(case.prompt_wav)
        rows = []
        for c in r.candidates:
            wav = wav_dir / f"{case.utt}_{c.index}.wav"
            save_audio(wav, c.audio, r.sample_rate)
            rows.append({"index": c.index, "scores": c.scores, "hit_max_length": c.hit_max_length,
                         "wer": asr.score([case.target_text], [str(wav)]).wer,
                         "sim": float(SpeakerJudge.similarity(spk.embed(str(wav)), prompt))})
        with store.open("a") as f:
            f.write(json.dumps({"utt": case.utt, "candidates": rows}) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="VoxLM model directory")
    p.add_argument("--meta", help="meta.lst (the one voxlm eval wrote)")
    p.add_argument("--out", required=True, help="folder for candidates.jsonl and the wavs")
    p.add_argument("--n", type=int, default=8, help="candidates per clone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--replay", action="store_true", help="only re-analyse OUT/candidates.jsonl")
    args = p.parse_args(argv)
    store = Path(args.out) / "candidates.jsonl"
    if not args.replay:
        if not (args.model and args.meta):
            p.error("--model and --meta are needed unless --replay")
        from tts.evaluate import read_meta
        store.parent.mkdir(parents=True, exist_ok=True)
        synthesize_and_judge(args, read_meta(args.meta), store)
    if not store.is_file():
        p.error(f"{store} does not exist: run without --replay first")
    clones = {r["utt"]: r["candidates"] for r in map(json.loads, store.read_text().splitlines())}
    report = analyse(clones, args.n)
    (store.parent / "study.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
