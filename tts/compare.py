"""Paired comparison of judged runs: is a change better, by more than its noise?

One training run or one flow seed moves VoxLM's dev WER by about 0.01 (RESULTS.md, stops 34
and 42), as much as most changes worth trying, so a change is judged on the *same* utterances
(and the same seeds), per utterance, never by two means side by side. This reads the
per-utterance scores the reports already write and prints the paired difference.

    voxlm compare NEW... --against BASE...     new - base, per utterance, for every shared system
    voxlm compare RUN... --systems A,B         A - B within each run (e.g. voxlm_n8,voxlm_n1)
    voxlm compare RUN...                       each system's mean per run and over the runs

A RUN is a ``flow.report`` output (its dir or ``report.json``), a ``voxlm eval`` output (its dir
or ``utts.jsonl``) or a ``vocoder.report`` JSON (its ``*_utts.jsonl`` beside it). Several runs on
one side are several seeds (or draws) of one system; ``--against`` pairs them in order. An
utterance's difference is averaged over the seeds first, so the standard error (``se``) is over
utterances, the unit the runs share; ``better`` counts utterances whose mean difference is below
zero (for WER and mel L1 lower is better; for SIM higher, read the sign).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tts.judges import paired_difference


class CompareError(ValueError):
    """Runs that cannot be paired, or a file that is no judged report."""


# system -> utt -> metric -> value
Scores = dict[str, dict[str, dict[str, float]]]
REFERENCE_SYSTEMS = ("real", "ground_truth")  # the rows a system's ratio is taken against


def _flow_report(report: dict) -> Scores:
    out: Scores = {}
    for row in report.get("per_utt", []):
        for key, value in row.items():
            for metric in ("wer", "sim_to_real", "sim_to_prompt"):
                if key.startswith(metric + "_") and isinstance(value, (int, float)):
                    out.setdefault(key[len(metric) + 1:], {}).setdefault(row["utt"], {})[metric] = float(value)
        for key, system in (("mel_l1", "flow"), ("mel_l1_chunked", "flow_chunked")):
            if key in row:
                out.setdefault(system, {}).setdefault(row["utt"], {})["mel_l1"] = float(row[key])
    return out


def _jsonl(path: Path) -> Scores:
    out: Scores = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CompareError(f"{path}:{n}: not JSON ({err.msg})") from None
        if "system" in row:  # voxlm eval: one row per system and utterance
            out.setdefault(row["system"], {})[row["utt"]] = {
                k: float(v) for k, v in row.items() if k in ("wer", "sim") and v is not None}
        else:  # vocoder.report: one row per utterance, a dict per system
            for system, v in row.items():
                if isinstance(v, dict) and "wer" in v:
                    out.setdefault(system, {})[row["utt"]] = {"wer": float(v["wer"])}
    return out


def load_scores(path: str | Path) -> Scores:
    """Per-utterance scores of one judged run (see the module doc for what it reads)."""
    p = Path(path)
    if p.is_dir():
        for name in ("report.json", "utts.jsonl"):
            if (p / name).is_file():
                return load_scores(p / name)
        raise FileNotFoundError(f"{p}: neither report.json (flow.report) nor utts.jsonl (voxlm eval) is in it")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.suffix == ".jsonl":
        scores = _jsonl(p)
    else:
        try:
            report = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CompareError(f"{p}: not JSON ({err.msg})") from None
        side = p.parent / (p.stem + "_utts.jsonl")
        scores = _flow_report(report) if "per_utt" in report else _jsonl(side) if side.is_file() else {}
    if not scores:
        raise CompareError(f"{p}: no per-utterance scores in it (a report written without judges?)")
    return scores


def _stats(a: np.ndarray, b: np.ndarray) -> dict:
    # a, b: (seeds, utts) -> a - b per utterance (averaged over the seeds): mean, standard error, signs; per seed.
    # The seed means are rounded to 12 places so that equal ones (WERs are ratios of small counts) count as level.
    d = paired_difference(a.mean(0).round(12), b.mean(0).round(12))
    return {"diff": d["wer_diff_mean"], "se": d["wer_diff_se"], "better": d["better"], "worse": d["worse"],
            "equal": d["equal"], "per_seed": [float(x) for x in (a - b).mean(1)]}


def _matrix(runs: list[Scores], system: str, metric: str, names: list[str]) -> np.ndarray:
    # -> (seeds, utts) values of one system's metric (which _metrics found in every run)
    utts = sorted(runs[0][system])
    rows = []
    for run, name in zip(runs, names, strict=True):
        got = run.get(system, {})
        if sorted(got) != utts:
            missing, extra = len(set(utts) - set(got)), len(set(got) - set(utts))
            raise CompareError(f"{name}: system {system!r} has other utterances than {names[0]} "
                               f"({missing} missing, {extra} extra): paired runs must judge the same ones")
        if any(metric not in got[u] for u in utts):
            raise CompareError(f"{name}: system {system!r} lacks {metric!r} for some utterances")
        rows.append([got[u][metric] for u in utts])
    return np.asarray(rows, np.float64)


def _metrics(runs: list[Scores], system: str) -> list[str]:
    return sorted(set.intersection(*({m for v in r.get(system, {}).values() for m in v} for r in runs)))


def summarize(runs: list[Scores], names: list[str]) -> dict:
    """Each system's mean per run and over the runs, and its ratio to the real row where there is one."""
    systems = sorted(set.intersection(*(set(r) for r in runs)))
    out: dict = {}
    for s in systems:
        for m in _metrics(runs, s):
            x = _matrix(runs, s, m, names)
            out.setdefault(s, {})[m] = {"mean": float(x.mean()), "per_seed": [float(v) for v in x.mean(1)],
                                        "utterances": x.shape[1]}
    ref = next((r for r in REFERENCE_SYSTEMS if r in out), None)
    for s, metrics in out.items():
        for m, v in metrics.items():
            base = out[ref].get(m, {}).get("mean") if ref and s != ref else None
            if base:
                v[f"ratio_to_{ref}"] = v["mean"] / base
    return out


def paired(new: list[Scores], base: list[Scores], new_names: list[str], base_names: list[str]) -> dict:
    """new - base per utterance (averaged over the paired seeds), for every system and metric both have."""
    if len(new) != len(base):
        raise CompareError(f"{len(new)} runs against {len(base)}: --against pairs runs in order (seed i with seed i)")
    out: dict = {}
    for s in sorted(set.intersection(*(set(r) for r in new + base))):
        for m in _metrics(new + base, s):
            x = _matrix(new + base, s, m, new_names + base_names)  # (2 * seeds, utts): the same utterances throughout
            a, b = x[: len(new)], x[len(new):]
            out.setdefault(s, {})[m] = {"new": float(a.mean()), "base": float(b.mean()), **_stats(a, b)}
    if not out:
        raise CompareError("the runs share no system with per-utterance scores")
    return out


def within(runs: list[Scores], names: list[str], system_a: str, system_b: str) -> dict:
    """system_a - system_b per utterance within each run (averaged over the runs)."""
    for r, name in zip(runs, names, strict=True):
        for s in (system_a, system_b):
            if s not in r:
                raise CompareError(f"{name}: no system {s!r} (it has {', '.join(sorted(r))})")
        if sorted(r[system_a]) != sorted(r[system_b]):
            raise CompareError(f"{name}: {system_a!r} and {system_b!r} judged other utterances")
    out: dict = {}
    for m in sorted(set(_metrics(runs, system_a)) & set(_metrics(runs, system_b))):
        a, b = _matrix(runs, system_a, m, names), _matrix(runs, system_b, m, names)
        out[m] = {system_a: float(a.mean()), system_b: float(b.mean()), **_stats(a, b)}
    return out


def _fmt(v: dict) -> str:
    se = f" ± {v['se']:.3f}" if v["se"] is not None else ""
    return f"{v['diff']:+.3f}{se} ({v['better']} below, {v['worse']} above, {v['equal']} level)"


def format_table(result: dict) -> str:
    """A markdown table of :func:`summarize`, :func:`paired` or :func:`within`'s result."""
    mode, body = result["mode"], result["result"]
    if mode == "summary":
        lines = ["| system | metric | mean | per run | ratio |", "|---|---|---|---|---|"]
        for s, metrics in body.items():
            for m, v in metrics.items():
                ratio = next((f"{x:.3f}" for k, x in v.items() if k.startswith("ratio_to_")), "-")
                lines.append(f"| {s} | {m} | {v['mean']:.4f} | {' / '.join(f'{x:.4f}' for x in v['per_seed'])} | {ratio} |")
    elif mode == "paired":
        lines = ["| system | metric | base | new | new - base per utterance |", "|---|---|---|---|---|"]
        for s, metrics in body.items():
            for m, v in metrics.items():
                lines.append(f"| {s} | {m} | {v['base']:.4f} | {v['new']:.4f} | {_fmt(v)} |")
    else:
        a, b = result["systems"]
        lines = [f"| metric | {a} | {b} | {a} - {b} per utterance |", "|---|---|---|---|"]
        for m, v in body.items():
            lines.append(f"| {m} | {v[a]:.4f} | {v[b]:.4f} | {_fmt(v)} |")
    return "\n".join(lines)


def compare(runs: list[str], against: list[str] | None = None, systems: tuple[str, str] | None = None) -> dict:
    """The ``voxlm compare`` result as a dict (``mode``, ``runs``, ``result``)."""
    if against and systems:
        raise CompareError("give --against or --systems, not both")
    loaded = [load_scores(r) for r in runs]
    if against:
        base = [load_scores(r) for r in against]
        return {"mode": "paired", "runs": runs, "against": against, "result": paired(loaded, base, runs, against)}
    if systems:
        return {"mode": "within", "runs": runs, "systems": list(systems),
                "result": within(loaded, runs, *systems)}
    return {"mode": "summary", "runs": runs, "result": summarize(loaded, runs)}
