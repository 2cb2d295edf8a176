"""Natural English sentences from Debian's ``fortunes`` package (BSD licence).

Fortunes are split into sentences; a sentence is kept when it is plain prose
(5-20 words, no digits, URLs, code, dialogue tags or attributions) and every
word of its normalised form is in pocketsphinx's bundled dictionary, so the
WER judge can hear all of it. The result is deduplicated and sorted: the order
never depends on the file system, so a seeded shuffle of it is reproducible.
"""

from __future__ import annotations

import re
from pathlib import Path

from tts.text_norm import normalize_text

FORTUNE_DIR = Path("/usr/share/games/fortunes")
INSTALL_HINT = "install Debian's fortunes (BSD licence): apt-get install -y fortunes"
# Every collection of the (non-offensive) package except ascii-art, translate-me
# (not English), perl (code), pratchett (1 entry), drugs, ethnic and men-women
# (stereotypes). Code, IRC logs and glossary lines are removed by the filters below.
FORTUNE_FILES = (
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "education",
    "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux",
    "linuxcookie", "literature", "love", "magic", "medicine", "miscellaneous", "news",
    "paradoxum", "people", "pets", "platitudes", "politics", "riddles", "science",
    "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy",
)  # fmt: skip
MIN_WORDS, MAX_WORDS = 5, 20

_ATTRIBUTION = re.compile(r"^\s*(--|- |~~|\(\w)")  # "-- Mark Twain", "(Author, 1901)"
_DIALOGUE = re.compile(r"^\s*[A-Z][\w .]{0,20}:\s")  # "Q: ...", "Kirk: ..."
_BAD_CHARS = re.compile(r"[^A-Za-z ,.!?;'\-]")  # no digits, quotes, brackets, symbols
_QUOTES = re.compile(r'"|``|\'\'|\u201c|\u201d')
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ABBREV_END = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|Prof|Mt|[A-Z])\.$")


class CorpusTextError(RuntimeError):
    """The fortunes files or the pocketsphinx dictionary cannot be found."""


def pocketsphinx_dict_path() -> Path:
    """The bundled US English dictionary of the pocketsphinx wheel."""
    import pocketsphinx

    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    if not path.is_file():
        raise CorpusTextError(f"pocketsphinx dictionary not found at {path}")
    return path


def load_vocabulary(path: Path | None = None) -> set[str]:
    """Words of a CMU-style dictionary (``word(2)`` variants folded)."""
    vocab = set()
    with open(path or pocketsphinx_dict_path(), encoding="utf-8", errors="replace") as f:
        for line in f:
            word = line.split(" ", 1)[0]
            vocab.add(re.sub(r"\(\d+\)$", "", word).lower())
    return vocab


def read_fortunes(path: Path) -> list[str]:
    """One fortune file -> fortunes (attribution and dialogue lines dropped)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    fortunes = []
    for block in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = block.strip("\n").splitlines()
        if any(_DIALOGUE.match(line) for line in lines) or any("\t" in line for line in lines):
            continue  # dialogues, tables, indented code
        kept = []
        for line in lines:
            if _ATTRIBUTION.match(line):
                break  # the attribution and whatever follows it
            kept.append(line.strip())
        fortunes.append(" ".join(kept))
    return fortunes


def split_sentences(fortune: str) -> list[str]:
    """Split on ., ! or ? followed by a capital; keep abbreviations ("Mr. Smith") whole.

    Double quotes are dropped first (the words inside them are still prose).
    """
    fortune = _QUOTES.sub("", " ".join(fortune.split()))
    parts = _SENTENCE_END.split(fortune)
    out: list[str] = []
    for part in parts:
        if out and _ABBREV_END.search(out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


def is_good_sentence(sentence: str, vocab: set[str]) -> bool:
    """Plain prose of MIN..MAX words, every normalised word in ``vocab``."""
    if not sentence or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    if _BAD_CHARS.search(sentence) or "--" in sentence or "''" in sentence:
        return False
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if any(len(w) > 1 and w.strip(",.!?;'-").isupper() for w in words):
        return False  # SHOUTING and acronyms read letter by letter
    norm = normalize_text(sentence).split()
    if not MIN_WORDS <= len(norm) <= MAX_WORDS:
        return False
    return all(w in vocab for w in norm)


def load_sentences(
    fortune_dir: Path = FORTUNE_DIR, files: tuple[str, ...] = FORTUNE_FILES
) -> list[str]:
    """All qualifying sentences, deduplicated by normalised text, sorted."""
    if not fortune_dir.is_dir():
        raise CorpusTextError(f"{fortune_dir} not found: {INSTALL_HINT}")
    present = [fortune_dir / name for name in files if (fortune_dir / name).is_file()]
    if not present:
        raise CorpusTextError(f"no fortune files in {fortune_dir}: {INSTALL_HINT}")
    vocab = load_vocabulary()
    chosen: dict[str, str] = {}
    for path in present:
        for fortune in read_fortunes(path):
            for sentence in split_sentences(fortune):
                if is_good_sentence(sentence, vocab):
                    chosen.setdefault(normalize_text(sentence), sentence)
    return sorted(chosen.values())


if __name__ == "__main__":
    import random

    sents = load_sentences()
    print(len(sents), "sentences")
    for s in random.Random(0).sample(sents, 25):
        print(" ", s)
