"""benchmarks/verifier_study.py replays best-of-N choices offline: the replay must pick what
the Synthesizer picks from the same scores, or its figures say nothing about the search."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tts.synthesizer import Synthesizer

spec = importlib.util.spec_from_file_location(
    "verifier_study", Path(__file__).parents[1] / "benchmarks" / "verifier_study.py")
study = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(study)

FAST = dict(flow_steps=2, min_ratio=0.5, max_ratio=1.0, prompt_text="a voice")


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return Synthesizer.from_pretrained(tiny_model_dir)


def _rows(result) -> list[dict]:
    return [{"index": c.index, "scores": c.scores, "hit_max_length": c.hit_max_length} for c in result.candidates]


@pytest.mark.parametrize("seed", [3, 4])
def test_replay_picks_what_the_synthesizer_picks(synth, tone, seed):
    prompt = synth.prepare_prompt(tone(2.0, 16000, freq=150.0), 16000, "a voice")
    full = synth.synthesize("Hi there, four of them.", prompt, n_candidates=4, prune_to=4, seed=seed, **FAST)
    assert sorted(c.index for c in full.candidates) == [0, 1, 2, 3]
    both = {"token_intelligibility": 1.0, "phone_likelihood": 1.0}  # the default search's verifiers
    assert study.choose(_rows(full), 4, both)["index"] == full.chosen[0].index
    # pruning to 2 in the synthesizer = pruning to 2 in the replay of the all-vocoded run
    pruned = synth.synthesize("Hi there, four of them.", prompt, n_candidates=4, prune_to=2, seed=seed, **FAST)
    assert study.choose(_rows(full), 2, both)["index"] == pruned.chosen[0].index
    by_index = {c.index: c for c in full.candidates}
    np.testing.assert_array_equal(by_index[pruned.chosen[0].index].audio, pruned.chosen[0].audio)
    # render(): a candidate's tokens through flow and vocoder as the search renders them (--rerender)
    np.testing.assert_array_equal(synth.render(full.chosen[0].tokens, prompt, seed), full.chosen[0].audio)


def test_rendering_share_is_one_when_the_renderings_agree_and_near_zero_when_unrelated():
    rng = np.random.default_rng(0)
    clones = {f"u{i}": [{"index": k, "wer": float(rng.uniform()), "sim": float(rng.uniform()),
                         "scores": {"token_intelligibility": float(rng.uniform())}} for k in range(8)]
              for i in range(300)}
    same = {u: {c["index"]: (c["wer"], c["sim"]) for c in cs} for u, cs in clones.items()}
    report = study.analyse_rendering(clones, same)
    for j in ("wer", "sim"):
        r = report[j]
        assert r["share in the tokens"] == pytest.approx(1.0)
        # the judge's pick on one rendering is its pick on the other: the oracle
        assert r["judge's pick on rendering 1, scored on rendering 2"] == pytest.approx(r["judge's pick on rendering 2"])
    assert report["wer"]["its gain over random"][0] < -0.2 and report["sim"]["its gain over random"][0] > 0.2
    other = {u: {k: (float(rng.uniform()), float(rng.uniform())) for k in range(8)} for u in clones}
    report = study.analyse_rendering(clones, other)
    assert report["clones"] == 300
    for j in ("wer", "sim"):
        assert abs(report[j]["share in the tokens"]) < 0.1 and abs(report[j]["its gain over random"][0]) < 0.05


def test_analyse_bounds_every_rule_by_the_oracle():
    rng = np.random.default_rng(0)
    clones = {f"u{i}": [{"index": k, "hit_max_length": False, "wer": float(rng.uniform()), "sim": float(rng.uniform()),
                         "scores": {v: float(rng.uniform()) for v in study.VERIFIERS}} for k in range(4)]
              for i in range(5)}
    report = study.analyse(clones, 4)
    assert report["clones"] == 5 and len(report["rules"]) == len(study.rules(4))
    for r in report["rules"].values():
        assert report["oracle WER (judge picks)"]["wer"] <= r["wer"] + 1e-12
        assert r["sim"] <= report["oracle SIM (judge picks)"]["sim"] + 1e-12
    # choosing by the speaker verifier alone returns the best speaker_similarity score of each clone
    picks = [study.choose(c, 4, {"speaker_similarity": 1.0}) for c in clones.values()]
    assert all(p["scores"]["speaker_similarity"] == max(x["scores"]["speaker_similarity"] for x in c)
               for p, c in zip(picks, clones.values(), strict=True))


def test_an_older_study_without_the_phone_verifier_is_replayed_against_the_token_verifier():
    rng = np.random.default_rng(1)
    old = [v for v in study.VERIFIERS if v != "phone_likelihood"]
    clones = {f"u{i}": [{"index": k, "hit_max_length": False, "wer": float(rng.uniform()), "sim": float(rng.uniform()),
                         "scores": {v: float(rng.uniform()) for v in old}} for k in range(4)] for i in range(5)}
    report = study.analyse(clones, 4)
    assert report["default rule"] == "token only" and report["rules"]["token only"]["wer_vs_default"] == [0.0, 0.0]
    assert not any("phone" in name for name in report["rules"])
    assert not any("phone" in key for key in report["within-clone rank correlation (higher: agrees with the judge)"])


def test_ties_go_to_the_earlier_sample_and_are_averaged_over_orders():
    tied = [{"index": k, "hit_max_length": False, "wer": float(k), "sim": 0.5,
             "scores": {"token_intelligibility": 1.0}} for k in range(2)]
    assert study.choose(tied, 2, {"token_intelligibility": 1.0})["index"] == 0
    assert study.choose(tied, 2, {"token_intelligibility": 1.0}, order=[1, 0])["index"] == 1
    assert study.expected_pick(tied, 2, {"token_intelligibility": 1.0}, [[0, 1], [1, 0]]) == (0.5, 0.5)
