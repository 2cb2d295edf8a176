"""The pseudo-speakers of synth_en and their split (train or test), fixed in code.

Train: six base voices, each with the same set of perturbations ("looks").
Test: speakers never in train: one base voice held out entirely (awb, with
several looks) plus a look of each of four train voices that train never uses.
The looks were chosen by measuring pocketsphinx WER and resemblyzer cosine on
10 sentences per look (see the recipe's README notes / corpus card).
"""

from __future__ import annotations

from voices import BASE_VOICES, Speaker

TRAIN_VOICES = ("rms", "kal", "slt", "fkal", "fked", "fslt")
HELD_OUT_VOICE = "awb"  # test only: an unseen base voice


def _looks(sex: str) -> list[dict]:
    """Perturbations used in train, per base voice (index = speaker number)."""
    down = -1 if sex == "m" else 1  # shift male voices down, female up: keeps WER low
    return [
        {},
        {"speed": 0.94},
        {"speed": 1.06},
        {"pitch": 250 * down},
        {"bass": 6.0, "treble": -4.0, "speed": 0.97},
        {"bass": -4.0, "treble": 6.0, "speed": 1.03},
        {"pitch": -150 * down, "stretch": 1.1},
    ]


def _test_looks(sex: str) -> list[dict]:
    """Looks only test uses (combinations train never has)."""
    down = -1 if sex == "m" else 1
    return [{"speed": 0.92, "treble": 4.0}, {"pitch": 150 * down, "bass": 4.0, "speed": 1.04}]


TEST_REUSED_VOICES = ("rms", "slt", "fkal", "fslt")  # train voices with unseen test looks


def speakers_by_split() -> dict[str, list[Speaker]]:
    """``{"train": [...], "test": [...]}``; ids are ``<voice><nn>``, train and test disjoint."""
    train, test = [], []
    for voice in TRAIN_VOICES:
        sex = BASE_VOICES[voice][2]
        for n, look in enumerate(_looks(sex)):
            train.append(Speaker(f"{voice}{n:02d}", voice, **look))
    sex = BASE_VOICES[HELD_OUT_VOICE][2]
    held = _looks(sex)[:3] + _test_looks(sex)
    for n, look in enumerate(held):
        test.append(Speaker(f"{HELD_OUT_VOICE}{n:02d}", HELD_OUT_VOICE, **look))
    for i, voice in enumerate(TEST_REUSED_VOICES):
        sex = BASE_VOICES[voice][2]
        look = _test_looks(sex)[i % 2]
        test.append(Speaker(f"{voice}{len(_looks(sex)) + i % 2:02d}", voice, **look))
    ids = [s.spk for s in train + test]
    assert len(ids) == len(set(ids)), "speaker ids must be unique"
    return {"train": train, "test": test}
