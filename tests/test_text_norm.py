"""normalize_text: one case per rule, and idempotence on its own output."""

import pytest

from tts.text_norm import normalize_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # lowercase, punctuation, whitespace
        ("Hello,   World!!  How are you?", "hello world how are you"),
        ("Wait... what?! (Really) [yes]; no: maybe", "wait what really yes no maybe"),
        # apostrophes kept inside words only
        (
            "Don't say 'hello' -- it's fine, the dogs' bowls",
            "don't say hello it's fine the dogs bowls",
        ),
        ("It\u2019s a \u201cquote\u201d", "it's a quote"),
        # hyphens and slashes split words
        ("A well-known and/or self-made man", "a well known and or self made man"),
        # cardinals, thousands separators, decimals, negatives
        ("I have 2 cats and 10,000 fish", "i have two cats and ten thousand fish"),
        ("Pi is 3.14", "pi is three point one four"),
        ("It was -5 outside", "it was minus five outside"),
        # ordinals
        ("The 1st, 2nd, 3rd and 21st", "the first second third and twenty first"),
        # years and decades
        ("In 1984 and 1492", "in nineteen eighty four and fourteen ninety two"),
        ("Back in 2005", "back in two thousand and five"),
        ("The 1960s were loud", "the nineteen sixties were loud"),
        # currency
        ("It costs $5.50", "it costs five dollars fifty cents"),
        ("Only $1 or \u00a32.01", "only one dollar or two pounds one penny"),
        ("A $3 million deal", "a three million dollars deal"),
        ("\u20ac20", "twenty euros"),
        # percent
        ("Up 20% or 7.5 %", "up twenty percent or seven point five percent"),
        # times
        ("At 3:30 or 10:00 or 9:05", "at three thirty or ten o'clock or nine oh five"),
        # abbreviations
        ("Mr. and Mrs. Smith met Dr. Who", "mister and missus smith met doctor who"),
        ("Main St. is near St. Louis", "main street is near saint louis"),
        ("Prof. Jones vs. Gen. Lee", "professor jones versus general lee"),
        ("Fruit, e.g. apples, i.e. food, etc.", "fruit for example apples that is food et cetera"),
        ("No. 7 and no way", "number seven and no way"),
        # symbols
        ("Tom & Jerry", "tom and jerry"),
        ("2 + 2 = 4", "two plus two equals four"),
        ("Mail me @ home, # 5", "mail me at home number five"),
        # unicode accents and dashes
        ("Caf\u00e9 na\u00efve \u2014 d\u00e9j\u00e0 vu", "cafe naive deja vu"),
        # empty and blank
        ("", ""),
        ("  ...  ", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_idempotent() -> None:
    text = "Dr. Smith paid $5.50 on May 3rd, 1984 -- 20% more at 3:30!"
    once = normalize_text(text)
    assert normalize_text(once) == once


def test_rejects_non_string() -> None:
    with pytest.raises(TypeError):
        normalize_text(None)  # type: ignore[arg-type]
