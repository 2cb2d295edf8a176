"""Text frontend: written English -> sentence chunks -> text token ids.

Normalisation reuses ``tts.text_norm`` (the judge's normaliser) clause by
clause, so numbers, money, dates and abbreviations are read the same way the
WER judge reads them, while the prosody marks a TTS model needs survive: clause
breaks become ``,`` and each sentence ends in ``.``, ``?`` or ``!``.

    >>> normalize_for_tts("Dr. Smith paid $5.50, on May 3rd, 1984!")
    'doctor smith paid five dollars fifty cents, on may third, nineteen eighty four!'

The text units are characters (``units: chars``, a HF ``tokenizers`` WordLevel
model over single characters) or phones (``units: phones``): stressless ARPAbet
from CMUdict (:mod:`tts.g2p`), ``_`` between words, punctuation kept, and words
CMUdict lacks spelled in letters. Neither needs training or meets an unseen
word; phones spare a small LLM on a small corpus from learning English
spelling (the toy recipe uses them). The vocabulary is the first part of the
LLM's unified vocabulary: specials, then the units; ``tts.llm`` appends the
speech tokens after it and saves the whole thing as ``tokenizer.json`` next to
the model weights (for phones its pre-tokenizer splits on spaces, so stock
tooling encodes unit strings such as ``"HH AH L OW _ W ER L D ."``).

    >>> Frontend(FrontendConfig(units="phones")).symbols("hello, world.")
    ['HH', 'AH', 'L', 'OW', ',', '_', 'W', 'ER', 'L', 'D', '.']
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from tts.g2p import ARPABET, word_phones
from tts.text_norm import ABBREVIATIONS, DOTTED, normalize_text

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPEECH_START, SPEECH_END = "<|speech_start|>", "<|speech_end|>"
ADVANCE = "<|advance|>"  # interleaved LLM layout: "this text unit is spoken, feed the next one"
SPECIALS = [PAD, UNK, BOS, EOS, SPEECH_START, SPEECH_END, ADVANCE]
CHARS = " abcdefghijklmnopqrstuvwxyz',.?!"
WORD_BREAK, PUNCT, LETTERS = "_", list(",.?!"), list("abcdefghijklmnopqrstuvwxyz")
PHONE_UNITS = [WORD_BREAK, *PUNCT, *ARPABET, *LETTERS]  # letters spell words CMUdict lacks
UNITS = ("chars", "phones")
FRONTEND_FILE = "frontend.json"


class TextError(ValueError):
    """Text the frontend cannot turn into speech (empty, nothing speakable, not a str)."""


@dataclass
class FrontendConfig:
    max_chars: int = 200  # longest chunk (normalised chars) handed to the LLM at once
    punctuation: bool = True  # keep clause/sentence marks as tokens
    units: str = "chars"  # text units the LLM reads: "chars" or "phones" (CMUdict, see above)

    def __post_init__(self):
        if self.units not in UNITS:
            raise ValueError(f"frontend units must be one of {UNITS}, got {self.units!r}")


# Sentence ends: ., ! or ? (plus closing quotes/brackets), whitespace, then a capital/digit/quote.
_BOUNDARY_RE = re.compile(r"([.!?]+)[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_CLAUSE_RE = re.compile(r"\s*(?:[,;:]|\s-{1,2}|\u2014|\u2013)\s+")
_NOT_ENDS = set(ABBREVIATIONS) | {"st", "no", "vs", "mt"} | {k.rstrip(".") for k in DOTTED}


def split_sentences(text: str) -> list[str]:
    """Split written text at sentence ends, not after abbreviations or initials.

    >>> split_sentences("Dr. Smith left. He paid $5.50! J. R. Ewing stayed?")
    ['Dr. Smith left.', 'He paid $5.50!', 'J. R. Ewing stayed?']
    """
    _check_str(text)
    sentences, start = [], 0
    for m in _BOUNDARY_RE.finditer(text):
        word = re.search(r"([\w.]+)$", text[start:m.start(1)])
        prev = word.group(1).lower() if word else ""
        if m.group(1) == "." and (prev in _NOT_ENDS or len(prev) == 1 or (len(prev) > 2 and prev[-2] == ".")):
            continue  # "Dr.", "J.", "U.S."
        sentences.append(text[start:m.end()].strip())
        start = m.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def normalize_for_tts(sentence: str, punctuation: bool = True) -> str:
    """One sentence -> lowercase spoken words; clause breaks as ',' and a final . ? or !"""
    _check_str(sentence)
    stripped = sentence.strip()
    final = "?" if stripped.rstrip("\"')] ").endswith("?") else "!" if stripped.rstrip("\"')] ").endswith("!") else "."
    clauses = [normalize_text(c) for c in _CLAUSE_RE.split(stripped)]
    clauses = [c for c in clauses if c]
    if not clauses:
        return ""
    if not punctuation:
        return " ".join(clauses)
    return ", ".join(clauses) + final


def _check_str(text: object) -> None:
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")


def _chunk(text: str, max_chars: int) -> list[str]:
    """Split an over-long normalised sentence at commas, then at spaces."""
    if len(text) <= max_chars:
        return [text]
    chunks: list[str] = []
    current = ""
    pieces = re.findall(r"[^,]+,?", text) if "," in text else [text]
    for piece in pieces:
        piece = piece.strip()
        words = piece.split(" ") if len(piece) > max_chars else [piece]
        for word in words:
            candidate = f"{current} {word}".strip()
            if current and len(candidate) > max_chars:
                chunks.append(current)
                current = word[:max_chars]
            else:
                current = candidate[:max_chars] if not current else candidate
    if current:
        chunks.append(current)
    return [c if c[-1] in ".?!" else c.rstrip(",") + "." for c in chunks]


class CharTokenizer:
    """Specials + text units, as a HF ``tokenizers`` WordLevel model.

    ``chars`` a string: single characters (split character by character); a list:
    multi-character units such as phones (split on spaces).
    """

    def __init__(self, chars: str | list[str] = CHARS, specials: list[str] | None = None):
        self.chars, self.specials = chars, list(specials or SPECIALS)
        vocab = {tok: i for i, tok in enumerate(self.specials)}
        for c in chars:
            vocab.setdefault(c, len(vocab))
        self.vocab = vocab
        self.tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        self.tokenizer.pre_tokenizer = (pre_tokenizers.Split(Regex("."), behavior="isolated")
                                        if isinstance(chars, str) else pre_tokenizers.WhitespaceSplit())
        if isinstance(chars, str):  # characters join with nothing; units (phones) keep their spaces
            self.tokenizer.decoder = decoders.Fuse()
        self.tokenizer.add_special_tokens(self.specials)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_id(self, token: str) -> int:
        return self.vocab[token]

    @property
    def word_break_id(self) -> int:
        """The unit between words: a space, or ``_`` among phones."""
        return self.vocab[" " if " " in self.vocab else WORD_BREAK]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_units(self, units: list[str]) -> list[int]:
        unk = self.vocab[UNK]
        return [self.vocab.get(u, unk) for u in units]

    def decode(self, ids: list[int]) -> str:
        sep = "" if isinstance(self.chars, str) else " "
        return sep.join(self.tokenizer.id_to_token(i) or UNK for i in ids if i >= len(self.specials))

    def unified(self, speech_vocab_size: int) -> Tokenizer:
        """The LLM's whole vocabulary: this one plus ``<|s_0|>..`` speech tokens after it."""
        tok = Tokenizer.from_str(self.tokenizer.to_str())
        tok.add_special_tokens([f"<|s_{i}|>" for i in range(speech_vocab_size)])
        return tok


class Frontend:
    """Text -> normalised sentence chunks -> token ids."""

    def __init__(self, cfg: FrontendConfig | None = None, tokenizer: CharTokenizer | None = None):
        self.cfg = cfg or FrontendConfig()
        self.tokenizer = tokenizer or CharTokenizer(CHARS if self.cfg.units == "chars" else PHONE_UNITS)

    def normalize(self, text: str) -> list[str]:
        """Written text -> speakable chunks, each at most ``cfg.max_chars`` long.

        Raises TextError for empty text or text with nothing speakable.
        """
        _check_str(text)
        if not text.strip():
            raise TextError("text is empty")
        chunks: list[str] = []
        for sentence in split_sentences(text):
            norm = normalize_for_tts(sentence, self.cfg.punctuation)
            if re.search("[a-z]", norm):
                chunks.extend(_chunk(norm, self.cfg.max_chars))
        if not chunks:
            raise TextError(f"nothing speakable in text {text[:60]!r}")
        return chunks

    def transcript(self, text: str) -> str:
        """Written text -> its normalised chunks joined into one string (a training transcript or a
        prompt's text, fed whole: ``encode_normalized`` and ``symbols`` take it). Raises TextError."""
        return " ".join(self.normalize(text))

    def symbols(self, text: str) -> list[str]:
        """Normalised text -> its units: characters, or phones with ``_`` between words."""
        if self.cfg.units == "chars":
            return list(text)
        out: list[str] = []
        for item in re.findall(r"[a-z']+|[,.?!]", text):
            if item in PUNCT:
                out.append(item)
                continue
            if out:
                out.append(WORD_BREAK)
            out += word_phones(item) or [c for c in item if c.isalpha()]
        return out

    def encode(self, text: str) -> list[list[int]]:
        """Text -> one id list per chunk."""
        return [self.encode_normalized(c) for c in self.normalize(text)]

    def encode_normalized(self, text: str) -> list[int]:
        """Ids of text already normalised (one chunk, no splitting), e.g. a training transcript."""
        if self.cfg.units == "chars":
            return self.tokenizer.encode(text)
        return self.tokenizer.encode_units(self.symbols(text))

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"config": asdict(self.cfg), "chars": self.tokenizer.chars, "specials": self.tokenizer.specials}
        (path / FRONTEND_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Frontend:
        file = Path(path) / FRONTEND_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no {FRONTEND_FILE} in {path}")
        try:
            meta = json.loads(file.read_text())
            cfg = FrontendConfig(**meta["config"])
            return cls(cfg, CharTokenizer(meta["chars"], meta["specials"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"corrupt {file}: {e}") from e
