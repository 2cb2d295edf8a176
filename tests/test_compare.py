"""voxlm compare: paired per-utterance differences read from the reports' own files."""

import json

import numpy as np
import pytest

from tts.cli import main
from tts.compare import CompareError, compare, format_table, load_scores


def flow_report(path, wers, sims, l1s, real_wer=0.2):
    # a flow.report output as it writes it: report.json with per_utt rows
    path.mkdir(parents=True)
    rows = [{"utt": f"u{i}", "prompt": "p", "mel_l1": l1, "wer_real": real_wer, "wer_flow": w, "hyp_flow": "x",
             "sim_to_real_flow": s, "sim_to_prompt_flow": s - 0.05, "sim_to_real_real": 1.0}
            for i, (w, s, l1) in enumerate(zip(wers, sims, l1s, strict=True))]
    (path / "report.json").write_text(json.dumps({"utterances": len(rows), "per_utt": rows}))
    return str(path)


def eval_run(path, n1, n8, gt=0.1):
    # a voxlm eval output: utts.jsonl, a row per system and utterance
    path.mkdir(parents=True)
    with open(path / "utts.jsonl", "w") as f:
        for system, wers in (("ground_truth", [gt] * len(n1)), ("voxlm_n1", n1), ("voxlm_n8", n8)):
            for i, w in enumerate(wers):
                f.write(json.dumps({"system": system, "utt": f"c{i}", "wer": w, "sim": 0.7 + w / 10,
                                    "ref": "r", "hyp": "h", "candidates": []}) + "\n")
    return str(path)


def test_paired_difference_over_seeds_is_per_utterance(tmp_path):
    base = [flow_report(tmp_path / f"b{s}", [0.4, 0.3, 0.5], [0.8, 0.9, 0.85], [0.7, 0.7, 0.7]) for s in (0, 1)]
    new = [flow_report(tmp_path / "n0", [0.3, 0.3, 0.6], [0.82, 0.9, 0.85], [0.6, 0.7, 0.7]),
           flow_report(tmp_path / "n1", [0.2, 0.4, 0.5], [0.84, 0.9, 0.85], [0.6, 0.6, 0.7])]
    r = compare(new, against=base)
    assert r["mode"] == "paired"
    w = r["result"]["flow"]["wer"]
    d = np.array([(-0.1 - 0.2) / 2, (0.0 + 0.1) / 2, (0.1 + 0.0) / 2])  # per utterance, averaged over the seeds
    assert w["diff"] == pytest.approx(d.mean())
    assert w["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert (w["better"], w["worse"], w["equal"]) == (1, 2, 0)
    assert w["per_seed"] == pytest.approx([0.0, -1 / 30])
    assert w["base"] == pytest.approx(0.4) and w["new"] == pytest.approx((1.2 + 1.1) / 6)
    assert r["result"]["flow"]["mel_l1"]["diff"] < 0 and r["result"]["flow"]["sim_to_real"]["diff"] > 0
    assert r["result"]["real"]["wer"]["diff"] == 0  # the same real audio on both sides
    table = format_table(r)
    assert "| flow | wer | 0.4000 | 0.3833 |" in table


def test_equal_seed_means_are_level(tmp_path):
    # 0/6 + 5/6 and 1/6 + 4/6 are the same WER over two seeds, whatever the float sums say
    new = [flow_report(tmp_path / "n0", [0.0], [0.8], [0.5]), flow_report(tmp_path / "n1", [5 / 6], [0.8], [0.5])]
    base = [flow_report(tmp_path / "b0", [1 / 6], [0.8], [0.5]), flow_report(tmp_path / "b1", [4 / 6], [0.8], [0.5])]
    w = compare(new, against=base)["result"]["flow"]["wer"]
    assert (w["better"], w["worse"], w["equal"]) == (0, 0, 1) and w["diff"] == pytest.approx(0.0, abs=1e-12)


def test_within_runs_and_summary_ratio(tmp_path):
    runs = [eval_run(tmp_path / "s0", [0.2, 0.3], [0.1, 0.3]), eval_run(tmp_path / "s1", [0.4, 0.2], [0.2, 0.2])]
    r = compare(runs, systems=("voxlm_n8", "voxlm_n1"))
    assert r["result"]["wer"]["diff"] == pytest.approx(np.mean([-0.15, 0.0]))
    assert (r["result"]["wer"]["better"], r["result"]["wer"]["equal"]) == (1, 1)
    assert "voxlm_n8 - voxlm_n1" in format_table(r)
    s = compare(runs)["result"]
    assert s["voxlm_n1"]["wer"]["per_seed"] == pytest.approx([0.25, 0.3])
    assert s["voxlm_n1"]["wer"]["ratio_to_ground_truth"] == pytest.approx(0.275 / 0.1)
    assert s["voxlm_n8"]["sim"]["mean"] == pytest.approx(0.7 + 0.2 / 10)
    assert "ratio_to_ground_truth" not in s["ground_truth"]["wer"]


def test_vocoder_report_utts(tmp_path):
    rows = [{"utt": "a", "ref": "r", "real": {"wer": 0.1, "hyp": ""}, "vocoder": {"wer": 0.2, "hyp": ""},
             "griffinlim": {"wer": 0.3, "hyp": ""}}]
    (tmp_path / "report.json").write_text(json.dumps({"systems": {}}))
    (tmp_path / "report_utts.jsonl").write_text(json.dumps(rows[0]) + "\n")
    scores = load_scores(tmp_path / "report.json")
    assert scores["vocoder"]["a"] == {"wer": 0.2}
    r = compare([str(tmp_path / "report.json")], systems=("vocoder", "griffinlim"))
    assert r["result"]["wer"]["diff"] == pytest.approx(-0.1) and r["result"]["wer"]["se"] is None


def test_runs_that_cannot_be_paired(tmp_path):
    a = flow_report(tmp_path / "a", [0.1, 0.2], [0.8, 0.8], [0.5, 0.5])
    b = flow_report(tmp_path / "b", [0.1, 0.2, 0.3], [0.8, 0.8, 0.8], [0.5, 0.5, 0.5])
    with pytest.raises(CompareError, match="other utterances"):
        compare([a], against=[b])
    with pytest.raises(CompareError, match="pairs runs in order"):
        compare([a, a], against=[b])
    with pytest.raises(CompareError, match="no system 'voxlm_n8'"):
        compare([a], systems=("voxlm_n8", "flow"))
    with pytest.raises(FileNotFoundError, match="neither report.json"):
        load_scores(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CompareError, match="not JSON"):
        load_scores(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text(json.dumps({"per_utt": [{"utt": "x", "prompt": "p"}]}))
    with pytest.raises(CompareError, match="no per-utterance scores"):
        load_scores(tmp_path / "empty.json")


def test_cli(tmp_path, capsys):
    a = flow_report(tmp_path / "a", [0.1, 0.2], [0.8, 0.8], [0.5, 0.5])
    b = flow_report(tmp_path / "b", [0.2, 0.2], [0.8, 0.8], [0.5, 0.5])
    assert main(["compare", a, "--against", b, "--json", str(tmp_path / "r.json")]) == 0
    assert "| flow | wer | 0.2000 | 0.1500 | -0.050 ± 0.050 (1 below, 0 above, 1 level) |" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["result"]["flow"]["wer"]["diff"] == pytest.approx(-0.05)
    assert main(["compare", a, "--systems", "flow"]) == 2
    assert main(["compare", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("voxlm compare: error: --systems takes two names") and "no such file" in err[1]
