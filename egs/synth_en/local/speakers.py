"""The pseudo-speakers of synth_en and their split (train or test), fixed in code.

Train: six base voices, each with the same set of perturbations ("looks").
Test: speakers never in train: one base voice held out entirely (awb, with
several looks) plus looks of four train voices that train never uses, chosen
by measured pocketsphinx WER (see TEST_SPEAKERS).
Timbre: ten voices of other languages (Czech, Italian, Catalan, Finnish, Russian)
reading English sentences with their own rules, four looks each: more timbres for
the flow, which needs no transcript. Their speech is not English, so no model that
reads text trains on them.
"""

from __future__ import annotations

from voices import BASE_VOICES, Speaker

TRAIN_VOICES = ("rms", "kal", "slt", "fkal", "fked", "fslt")
HELD_OUT_VOICE = "awb"  # test only: an unseen base voice
# kal/fkal and slt/fslt are one voice each to resemblyzer (cosine 0.96 and 0.92), so train
# has four timbres; these add ten (cosine 0.42-0.82 to the train voices and each other).
TIMBRE_VOICES = ("cdita", "ckrb", "cmachac", "cph", "ilp", "ipc", "sona", "flj", "fmv", "rnsh")
TIMBRE_LOOKS = 4  # the first looks of _looks: as is, speed 0.94 and 1.06, pitch 250 cents


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


# Test speakers, never in train: awb held out entirely (4 looks) plus unseen looks
# of rms, kal, slt and fslt. Measured on 15 sentences each, stronger test looks
# (speed 0.92-0.94, pitch +150 on female voices) gave pocketsphinx WER 0.2-0.86, so
# test keeps to mild looks the judge can hear. The order fixes each one's sentences.
TEST_SPEAKERS: tuple[tuple[str, str, dict], ...] = (
    ("awb00", "awb", {}),
    ("awb06", "awb", {"speed": 1.03}),
    ("awb02", "awb", {"speed": 1.06}),
    ("awb05", "awb", {"bass": 3.0, "treble": -2.0}),
    ("fslt07", "fslt", {"speed": 0.97}),
    ("rms07", "rms", {"speed": 0.92, "treble": 4.0}),
    ("slt07", "slt", {"speed": 0.97, "treble": 3.0}),
    ("kal07", "kal", {"speed": 1.03, "treble": 3.0}),
    ("rms08", "rms", {"pitch": -100, "bass": 3.0}),
)


def _speakers(voices: tuple[str, ...], n_looks: int | None = None) -> list[Speaker]:
    return [Speaker(f"{voice}{n:02d}", voice, **look) for voice in voices
            for n, look in enumerate(_looks(BASE_VOICES[voice][2])[:n_looks])]


def speakers_by_split() -> dict[str, list[Speaker]]:
    """``{"train": [...], "test": [...], "timbre": [...]}``; ids are ``<voice><nn>``, all disjoint."""
    train = _speakers(TRAIN_VOICES)
    test = [Speaker(spk, voice, **look) for spk, voice, look in TEST_SPEAKERS]
    timbre = _speakers(TIMBRE_VOICES, TIMBRE_LOOKS)
    ids = [s.spk for s in train + test + timbre]
    assert len(ids) == len(set(ids)), "speaker ids must be unique"
    return {"train": train, "test": test, "timbre": timbre}
