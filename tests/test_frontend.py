"""Text frontend: normalisation cases, sentence splitting, chunking, tokenizer, bad text."""

import pytest

from tts.frontend import (
    CharTokenizer,
    Frontend,
    FrontendConfig,
    TextError,
    normalize_for_tts,
    split_sentences,
)


@pytest.mark.parametrize("text, spoken", [
    ("I have 3 cats and 21 dogs.", "i have three cats and twenty one dogs."),
    ("It costs $5.50, or £3!", "it costs five dollars fifty cents, or three pounds!"),
    ("She paid €1,200 for it.", "she paid one thousand two hundred euros for it."),
    ("They raised $2 million.", "they raised two million dollars."),
    ("Born on May 3rd, 1984.", "born on may third, nineteen eighty four."),
    ("We met at 10:30 in the 1960s.", "we met at ten thirty in the nineteen sixties."),
    ("Dr. Smith and Mr. Jones live on Baker St.", "doctor smith and mister jones live on baker street."),
    ("Prices rose 12.5% vs. last year?", "prices rose twelve point five percent versus last year?"),
    ("Rock & roll, e.g. Elvis.", "rock and roll, for example elvis."),
    ("Café “naïve” text — fine", "cafe naive text, fine."),
])
def test_normalize_cases(text, spoken):
    assert normalize_for_tts(text) == spoken


def test_no_punctuation_mode():
    assert normalize_for_tts("Hello, world!", punctuation=False) == "hello world"


def test_split_sentences_respects_abbreviations():
    text = "Dr. Smith left at 5 p.m. on Jan. 3rd. He paid $5.50! Did J. R. Ewing stay? Yes."
    assert split_sentences(text) == [
        "Dr. Smith left at 5 p.m. on Jan. 3rd.", "He paid $5.50!", "Did J. R. Ewing stay?", "Yes."]
    assert split_sentences("no end mark") == ["no end mark"]


def test_long_text_is_split_into_chunks():
    fe = Frontend(FrontendConfig(max_chars=40))
    long = "This sentence has many words and keeps going, well past what one chunk may hold, and then some more."
    chunks = fe.normalize(long + " " + long)
    assert len(chunks) >= 6
    assert all(len(c) <= 40 and c[-1] in ".?!" for c in chunks)
    words = " ".join(chunks).replace(",", "").replace(".", "").split()
    assert words == (normalize_for_tts(long, punctuation=False).split()) * 2  # nothing lost
    assert fe.normalize("x" * 100)[0] == "x" * 40 + "."  # a giant "word" is cut, not a crash


@pytest.mark.parametrize("bad", ["", "   \n", "!!! ...", "--- ***", "\u200b"])
def test_bad_text_raises_clear_error(bad):
    with pytest.raises(TextError):
        Frontend().encode(bad)


def test_non_str_raises():
    with pytest.raises(TextError, match="str"):
        Frontend().encode(None)  # type: ignore[arg-type]


def test_tokenizer_roundtrip_and_save(tmp_path):
    fe = Frontend()
    (ids,) = fe.encode("Hello, World 2!")
    assert fe.tokenizer.decode(ids) == "hello, world two!"
    assert min(ids) >= len(fe.tokenizer.specials)
    fe.save_pretrained(tmp_path)
    assert Frontend.from_pretrained(tmp_path).encode("Hello, World 2!") == [ids]
    unified = CharTokenizer().unified(10)
    assert unified.get_vocab_size() == len(CharTokenizer()) + 10
    assert unified.token_to_id("<|s_0|>") == len(CharTokenizer())


def test_phone_units_lexicon_spelling_and_save(tmp_path):
    fe = Frontend(FrontendConfig(units="phones"))
    assert fe.symbols("hello, world.") == ["HH", "AH", "L", "OW", ",", "_", "W", "ER", "L", "D", "."]
    assert fe.symbols("zzyzx go!") == ["z", "z", "y", "z", "x", "_", "G", "OW", "!"]  # not in CMUdict: spelled
    (ids,) = fe.encode("Hello, 2 worlds!")
    assert fe.tokenizer.decode(ids) == "HH AH L OW , _ T UW _ W ER L D Z !"
    assert fe.tokenizer.vocab["<unk>"] not in ids and min(ids) >= len(fe.tokenizer.specials)
    fe.save_pretrained(tmp_path)
    again = Frontend.from_pretrained(tmp_path)
    assert again.cfg.units == "phones" and again.encode("Hello, 2 worlds!") == [ids]
    # the saved unified vocabulary encodes a unit string the same way (stock tokenizers tooling)
    unified = fe.tokenizer.unified(10)
    assert unified.encode(fe.tokenizer.decode(ids)).ids == ids
    assert unified.decode(ids) == fe.tokenizer.decode(ids)  # and decodes it with the spaces kept
    with pytest.raises(ValueError, match="units"):
        FrontendConfig(units="bpe")
