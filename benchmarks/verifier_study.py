"""Best-of-N verifiers against the judges: every candidate vocoded and judged. Prints JSON.

    python benchmarks/verifier_study.py --model egs/synth_en/exp/model \
        --meta egs/synth_en/exp/eval/meta.lst --out egs/synth_en/exp/verifier_study

Each clone's N candidates all go through flow and vocoder (``prune_to = N``) and are scored
by every VoxLM verifier (token intelligibility, phone likelihood, speaker similarity, audio
intelligibility)
and by both judges (pocketsphinx WER, resemblyzer SIM to the prompt). Selection rules are
then replayed on those scores with :func:`tts.verifiers.rank`, the ranking the Synthesizer
uses: what each rule picks, its mean WER and SIM, beside a random candidate (what N=1
gives on average) and the judges' own best candidate (the headroom). Ties are common (the
token verifier's 1 - CER takes few values) and go to the earlier sample, so each rule is
replayed under many random sampling orders and its figures are the mean over them. Also
each verifier's rank correlation with each judge within a clone. The judges choose only in
the oracle rows, which measure the headroom; no VoxLM output is chosen by them (DESIGN.md).

``--rerender`` renders every candidate's tokens a second time with other flow noise and
judges it again (``OUT/rerender.jsonl``): the covariance of the two renderings' judge
scores over a clone's candidates, against their variance, is the share of the candidates'
spread that lies in their tokens, and the judges' pick on one rendering scored on the other
is about the most a verifier of tokens could find.

Resumable: a clone's candidates (their tokens too, for rescoring) are kept in ``OUT/candidates.jsonl`` once judged;
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

from tts.judges import paired_difference
from tts.verifiers import Candidate, rank

VERIFIERS = ("token_intelligibility", "phone_likelihood", "speaker_similarity", "audio_intelligibility")
DEFAULT_RULE = "prune 4, token + phone"  # the Synthesizer's default search: the _vs_default pairs
ORDERS = 64  # sampling orders each rule is replayed under (ties go to the earlier sample)
RERENDER_SEED = 1000  # --rerender: a clone's second rendering is seeded case_seed(seed + this, utt)


@dataclass
class _Weight:  # a verifier as rank() sees it: a name and a weight
    name: str
    weight: float


def choose(cands: list[dict], prune_to: int, weights: dict[str, float], order=None) -> dict:
    """The candidate the Synthesizer would return: the token verifier keeps the best
    ``prune_to``, then ``weights`` (verifier -> weight) rank those. ``order``: positions
    of ``cands`` in sampling order (default: by index), which decides ties."""
    order = sorted(range(len(cands)), key=lambda k: cands[k]["index"]) if order is None else order
    pool = [Candidate([1], scores=cands[k]["scores"], index=k, hit_max_length=cands[k]["hit_max_length"])
            for k in order]
    keep = rank(pool, [_Weight("token_intelligibility", 1.0)])[:prune_to]
    return cands[rank(keep, [_Weight(k, w) for k, w in weights.items()])[0].index]


def expected_pick(cands: list[dict], prune_to: int, weights: dict[str, float], orders) -> tuple[float, float]:
    """A rule's mean judge (WER, SIM) over sampling orders: the N samples are exchangeable,
    so which of two tied candidates came first is chance, and one order's pick is one draw."""
    picks = [choose(cands, prune_to, weights, o) for o in orders]
    return float(np.mean([c["wer"] for c in picks])), float(np.mean([c["sim"] for c in picks]))


def rules(n: int) -> dict[str, tuple[int, dict[str, float]]]:
    """Selection rules to replay: name -> (prune_to, weights)."""
    out = {"token only": (n, {"token_intelligibility": 1.0})}
    for p in (2, 4, n):
        out[f"prune {p}, token + phone"] = (p, {"token_intelligibility": 1.0, "phone_likelihood": 1.0})
        out[f"prune {p}, phone only"] = (p, {"phone_likelihood": 1.0})
        out[f"prune {p}, token + phone + speaker"] = (
            p, {"token_intelligibility": 1.0, "phone_likelihood": 1.0, "speaker_similarity": 1.0})
    for p, w in itertools.product((2, 4, n), (0.1, 0.3, 1, 2, 4, 8)):
        out[f"prune {p}, token + {w} x speaker"] = (p, {"token_intelligibility": 1.0, "speaker_similarity": w})
    for p in (2, 4, n):
        out[f"prune {p}, token + audio + speaker"] = (
            p, dict.fromkeys(("token_intelligibility", "audio_intelligibility", "speaker_similarity"), 1.0))
        for w in (0.1, 0.3):
            out[f"prune {p}, token + audio + {w} x speaker"] = (
                p, {"token_intelligibility": 1.0, "audio_intelligibility": 1.0, "speaker_similarity": w})
        out[f"prune {p}, token + audio"] = (p, {"token_intelligibility": 1.0, "audio_intelligibility": 1.0})
        out[f"prune {p}, audio only"] = (p, {"audio_intelligibility": 1.0})
    out["speaker only"] = (n, {"speaker_similarity": 1.0})
    return out


def _spearman(a, b) -> float | None:
    """Rank correlation (ties averaged); None where either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def analyse(clones: dict[str, list[dict]], n: int) -> dict:
    """Mean judge figures of each rule, random pick and oracles; verifier-judge correlations.
    Rules and correlations cover the verifiers every candidate was scored by (an older study
    lacks the phone verifier; its pairs are then against the token verifier alone)."""
    utts = sorted(clones)
    scored = [v for v in VERIFIERS if all(v in c["scores"] for u in utts for c in clones[u])]
    replayed = {name: r for name, r in rules(n).items() if set(r[1]) <= set(scored)}
    reference = DEFAULT_RULE if DEFAULT_RULE in replayed else "token only"
    rng = np.random.default_rng(0)
    orders = {u: [rng.permutation(len(clones[u])).tolist() for _ in range(ORDERS)] for u in utts}

    def run(prune_to: int, weights: dict[str, float]) -> np.ndarray:  # (clones, 2): WER, SIM
        return np.array([expected_pick(clones[u], prune_to, weights, orders[u]) for u in utts])

    default = run(*replayed[reference])

    def summary(picks: np.ndarray) -> dict:
        """Mean judge figures of a rule, and per clone against the default rule."""
        dw, ds = paired_difference(picks[:, 0], default[:, 0]), paired_difference(picks[:, 1], default[:, 1])
        return {"wer": float(picks[:, 0].mean()), "sim": float(picks[:, 1].mean()),
                "wer_vs_default": [dw["wer_diff_mean"], dw["wer_diff_se"]],
                "sim_vs_default": [ds["wer_diff_mean"], ds["wer_diff_se"]]}

    def judge_pick(key) -> np.ndarray:
        return np.array([[c["wer"], c["sim"]] for c in (min(clones[u], key=key) for u in utts)])

    out = {"clones": len(utts), "n_candidates": n, "sampling_orders": ORDERS, "default rule": reference,
           "random candidate (N=1 expectation)": summary(
               np.array([[np.mean([c[j] for c in clones[u]]) for j in ("wer", "sim")] for u in utts])),
           "oracle WER (judge picks)": summary(judge_pick(lambda c: (c["wer"], -c["sim"]))),
           "oracle SIM (judge picks)": summary(judge_pick(lambda c: -c["sim"]))}
    out["rules"] = {name: summary(run(p, w)) for name, (p, w) in replayed.items()}
    corr = {}
    for v, j in itertools.product(scored, ("wer", "sim")):
        sign = -1.0 if j == "wer" else 1.0  # a good verifier score goes with a low WER
        rs = [_spearman([c["scores"][v] for c in clones[u]], [sign * c[j] for c in clones[u]]) for u in utts]
        rs = [r for r in rs if r is not None]
        corr[f"{v} ~ {j}"] = {"mean_spearman": float(np.mean(rs)) if rs else None, "clones": len(rs)}
    out["within-clone rank correlation (higher: agrees with the judge)"] = corr
    return out


def analyse_rendering(clones: dict[str, list[dict]], second: dict[str, dict[int, tuple[float, float]]]) -> dict:
    """Two renderings of each candidate (``clones``' judge scores and ``second[utt][index]`` =
    (wer, sim) of the other): how much of the spread within a clone is the tokens'."""
    utts = sorted(set(clones) & set(second))
    out = {"clones": len(utts)}
    for k, j in enumerate(("wer", "sim")):
        sign = 1.0 if j == "wer" else -1.0  # lower is better after the sign
        one = [np.array([c[j] for c in clones[u]]) for u in utts]
        two = [np.array([second[u][c["index"]][k] for c in clones[u]]) for u in utts]
        var = np.mean([np.var(x, ddof=1) for x in one + two])
        cov = np.mean([np.cov(x, y)[0, 1] for x, y in zip(one, two, strict=True)])
        random2 = np.array([y.mean() for y in two])
        pick2 = np.array([y[np.argmin(sign * x)] for x, y in zip(one, two, strict=True)])
        gain = paired_difference(pick2, random2)
        corr = {}
        for v in VERIFIERS:
            rs = [_spearman([c["scores"][v] for c in clones[u]], -sign * (x + y))
                  for u, x, y in zip(utts, one, two, strict=True) if v in clones[u][0]["scores"]]
            rs = [r for r in rs if r is not None]
            corr[v] = float(np.mean(rs)) if rs else None
        out[j] = {"within-clone variance": float(var), "share in the tokens": float(cov / var) if var else None,
                  "random candidate, rendering 2": float(random2.mean()),
                  "judge's pick on rendering 1, scored on rendering 2": float(pick2.mean()),
                  "its gain over random": [gain["wer_diff_mean"], gain["wer_diff_se"]],
                  "judge's pick on rendering 2": float(np.mean([(sign * y).min() * sign for y in two])),
                  "verifiers' rank correlation with the two renderings' mean": corr}
    return out


def _load_judged(args):
    """The Synthesizer and the two judges (after --threads)."""
    import torch

    from tts.judges import IntelligibilityJudge, SpeakerJudge
    from tts.synthesizer import Synthesizer

    if args.threads:
        torch.set_num_threads(args.threads)
    return Synthesizer.from_pretrained(args.model), IntelligibilityJudge(progress=False), SpeakerJudge(progress=False)


def rerender_and_judge(args, cases, store: Path, second: Path) -> None:
    """Every candidate in ``store`` rendered again (other flow noise) and judged, into ``second``."""
    from tqdm import tqdm

    from tts.evaluate import case_seed

    done = {json.loads(line)["utt"] for line in second.read_text().splitlines()} if second.is_file() else set()
    rows = [r for r in map(json.loads, store.read_text().splitlines()) if r["utt"] not in done]
    by_utt = {c.utt: c for c in cases}
    rows = [r for r in rows if r["utt"] in by_utt and "tokens" in r["candidates"][0]]
    if not rows:
        return
    synth, asr, spk = _load_judged(args)
    prompts = {}
    for r in tqdm(rows, desc="second rendering"):
        case = by_utt[r["utt"]]
        if case.prompt_wav not in prompts:
            prompts[case.prompt_wav] = (synth.prepare_prompt(case.prompt_wav, None, case.prompt_text or None),
                                        spk.embed(case.prompt_wav))
        prompt, embedding = prompts[case.prompt_wav]
        seed = case_seed(args.seed + RERENDER_SEED, r["utt"])
        scores = {}
        for c in r["candidates"]:
            audio = synth.render(c["tokens"], prompt, seed)
            scores[c["index"]] = (asr.score([case.target_text], [(audio, synth.sample_rate)]).wer,
                                  float(spk.similarity(spk.embed(audio, synth.sample_rate), embedding)))
        with second.open("a") as f:
            f.write(json.dumps({"utt": r["utt"], "second": scores}) + "\n")


def synthesize_and_judge(args, cases, store: Path) -> None:
    """Every candidate of every clone not yet in ``store``: vocoded, scored, judged, appended."""
    from tts.audio import save_audio
    from tts.cli import synthesize_cases
    from tts.judges import SpeakerJudge

    done = {json.loads(line)["utt"] for line in store.read_text().splitlines()} if store.is_file() else set()
    todo = [c for c in cases if c.utt not in done]
    if not todo:
        return
    synth, asr, spk = _load_judged(args)
    wav_dir = store.parent / "wavs"
    kwargs = {"n_candidates": args.n, "prune_to": args.n, "phone_verifier": True, "audio_verifier": True,
              "use_speaker_verifier": True, "seed": args.seed}
    prompts = {}  # prompt wav -> the judge's embedding: one per voice, shared by its clones
    for case, r in synthesize_cases(synth, todo, kwargs, f"N={args.n}, all vocoded"):
        if isinstance(r, Exception):
            raise r
        if len(r.sentences) != 1:
            print(f"skipped {case.utt}: {len(r.sentences)} sentences")
            continue
        if case.prompt_wav not in prompts:
            prompts[case.prompt_wav] = spk.embed(case.prompt_wav)
        prompt = prompts[case.prompt_wav]
        rows = []
        for c in r.candidates:
            wav = wav_dir / f"{case.utt}_{c.index}.wav"
            save_audio(wav, c.audio, r.sample_rate)
            rows.append({"index": c.index, "tokens": c.tokens, "scores": c.scores, "hit_max_length": c.hit_max_length,
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
    p.add_argument("--replay", action="store_true", help="only re-analyse OUT/candidates.jsonl (and rerender.jsonl)")
    p.add_argument("--rerender", action="store_true",
                   help="also render every candidate a second time (other flow noise) and judge it")
    args = p.parse_args(argv)
    store = Path(args.out) / "candidates.jsonl"
    if not args.replay:
        if not (args.model and args.meta):
            p.error("--model and --meta are needed unless --replay")
        from tts.evaluate import read_meta
        store.parent.mkdir(parents=True, exist_ok=True)
        cases = read_meta(args.meta)
        synthesize_and_judge(args, cases, store)
        if args.rerender:
            rerender_and_judge(args, cases, store, store.parent / "rerender.jsonl")
    if not store.is_file():
        p.error(f"{store} does not exist: run without --replay first")
    clones = {r["utt"]: r["candidates"] for r in map(json.loads, store.read_text().splitlines())}
    report = analyse(clones, args.n)
    second = store.parent / "rerender.jsonl"
    if second.is_file():
        rows = map(json.loads, second.read_text().splitlines())
        report["rendering"] = analyse_rendering(
            clones, {r["utt"]: {int(k): tuple(v) for k, v in r["second"].items()} for r in rows})
    (store.parent / "study.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
