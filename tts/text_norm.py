"""English text normalisation: the one normaliser for the WER judge and the frontend.

``normalize_text`` turns written English into the lowercase spoken-word form a
recogniser emits: numbers, ordinals, years, money, percentages and times become
words (num2words), common abbreviations and symbols are expanded, punctuation is
dropped except apostrophes inside words (``don't``), hyphens split words, and
whitespace is collapsed. The same function runs on reference and hypothesis, so
WER never counts "$5" against "five dollars".
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

# Abbreviations expanded when written with their period (matched case-insensitively).
ABBREVIATIONS: dict[str, str] = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miss",
    "dr": "doctor",
    "prof": "professor",
    "jr": "junior",
    "sr": "senior",
    "rev": "reverend",
    "gen": "general",
    "gov": "governor",
    "sen": "senator",
    "rep": "representative",
    "capt": "captain",
    "col": "colonel",
    "lt": "lieutenant",
    "sgt": "sergeant",
    "mt": "mount",
    "ave": "avenue",
    "blvd": "boulevard",
    "rd": "road",
    "co": "company",
    "corp": "corporation",
    "inc": "incorporated",
    "ltd": "limited",
    "dept": "department",
    "vs": "versus",
    "approx": "approximately",
    "min": "minutes",
    "hr": "hours",
    "hrs": "hours",
    "sec": "seconds",
    "jan": "january",
    "feb": "february",
    "aug": "august",
    "sept": "september",
    "oct": "october",
    "nov": "november",
    "dec": "december",
}
# Multi-period abbreviations, matched before anything else.
DOTTED: dict[str, str] = {
    "e.g.": "for example",
    "i.e.": "that is",
    "etc.": "et cetera",
    "a.m.": "a m",
    "p.m.": "p m",
    "u.s.": "u s",
    "u.k.": "u k",
}
SYMBOLS: dict[str, str] = {
    "&": " and ",
    "%": " percent ",
    "+": " plus ",
    "=": " equals ",
    "@": " at ",
    "#": " number ",
    "°": " degrees ",
}
CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    # symbol: (unit singular, unit plural, cent singular, cent plural)
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
SCALES = {"thousand", "million", "billion", "trillion"}

_DOTTED_RE = re.compile("|".join(re.escape(k) for k in DOTTED), re.IGNORECASE)
_ABBR_RE = re.compile(r"\b(" + "|".join(ABBREVIATIONS) + r")\.", re.IGNORECASE)
_ST_RE = re.compile(r"\bst\.(?=\s+[A-Z])|\bSt\.(?=\s+[A-Z])")  # "St. Louis" -> saint
_NO_RE = re.compile(r"\bno\.\s*(?=\d)", re.IGNORECASE)  # "No. 5" -> number five
_MONEY_RE = re.compile(
    r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?(?:\s+(thousand|million|billion|trillion)\b)?",
    re.IGNORECASE,
)
_PERCENT_RE = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_ORDINAL_RE = re.compile(r"\b(\d[\d,]*)(st|nd|rd|th)\b", re.IGNORECASE)
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_DECADE_RE = re.compile(r"\b(1[1-9]|20)(\d)0'?s\b")  # 1960s -> nineteen sixties
_YEAR_RE = re.compile(r"\b(1[1-9]\d\d|20\d\d)\b(?![.,]\d)")
_NUMBER_RE = re.compile(r"(?<![\w.])-?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _money(m: re.Match) -> str:
    unit1, units, cent1, cents = CURRENCIES[m.group(1)]
    whole, frac, scale = _int(m.group(2)), m.group(3), m.group(4)
    if scale:  # "$5 million" -> five million dollars
        amount = num2words(whole) + (f" point {_digits(frac)}" if frac else "")
        return f" {amount} {scale.lower()} {units} "
    words = f"{num2words(whole)} {unit1 if whole == 1 else units}"
    if frac:
        c = int(frac.ljust(2, "0"))
        if c:
            words += f" {num2words(c)} {cent1 if c == 1 else cents}"
    return f" {words} "


def _digits(frac: str) -> str:
    return " ".join(num2words(int(d)) for d in frac)


def _number(m: re.Match) -> str:
    whole, frac = m.group(1), m.group(2)
    sign = "minus " if m.group(0).startswith("-") else ""
    words = num2words(_int(whole))
    if frac:
        words += " point " + _digits(frac[1:])
    return f" {sign}{words} "


def _time(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if minute == 0:
        return f" {num2words(hour)} o'clock "
    if minute < 10:
        return f" {num2words(hour)} oh {num2words(minute)} "
    return f" {num2words(hour)} {num2words(minute)} "


def _decade(m: re.Match) -> str:
    year = num2words(int(m.group(1) + m.group(2) + "0"), to="year")
    head, _, last = year.rpartition(" ")
    last = last.rpartition("-")[2]
    plural = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f" {head} {plural} " if head else f" {plural} "


def normalize_text(text: str) -> str:
    """Written English -> lowercase spoken words, for WER and the TTS frontend.

    >>> normalize_text("Dr. Smith paid $5.50 on May 3rd, 1984 -- 20% more!")
    'doctor smith paid five dollars fifty cents on may third nineteen eighty four twenty percent more'
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects a str, got {type(text).__name__}")
    # Unicode: compatibility forms, curly quotes and dashes, strip accents (café -> cafe).
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = re.sub("[\u2010-\u2015\u2212]", "-", text)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))

    text = _DOTTED_RE.sub(lambda m: " " + DOTTED[m.group(0).lower()] + " ", text)
    text = _ST_RE.sub("saint", text)
    text = re.sub(r"\bst\.", "street", text, flags=re.IGNORECASE)
    text = _NO_RE.sub("number ", text)
    text = _ABBR_RE.sub(lambda m: ABBREVIATIONS[m.group(1).lower()], text)

    text = _MONEY_RE.sub(_money, text)
    text = _PERCENT_RE.sub(lambda m: f" {_number_text(m.group(1))} percent ", text)
    text = _ORDINAL_RE.sub(lambda m: f" {num2words(_int(m.group(1)), to='ordinal')} ", text)
    text = _TIME_RE.sub(_time, text)
    text = _DECADE_RE.sub(_decade, text)
    text = _YEAR_RE.sub(lambda m: f" {num2words(int(m.group(1)), to='year')} ", text)
    text = _NUMBER_RE.sub(_number, text)
    for sym, word in SYMBOLS.items():
        text = text.replace(sym, word)
    for sym, (_, units, _, _) in CURRENCIES.items():  # a lone currency sign
        text = text.replace(sym, f" {units} ")

    text = text.lower()
    text = re.sub(r"[-/_]", " ", text)  # hyphens and slashes split words
    text = re.sub(r"[^a-z0-9' ]+", " ", text)  # drop all other punctuation
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # keep only word-internal apostrophes
    return " ".join(text.split())


def _number_text(number: str) -> str:
    whole, _, frac = number.partition(".")
    words = num2words(_int(whole))
    return words + (" point " + _digits(frac) if frac else "")
