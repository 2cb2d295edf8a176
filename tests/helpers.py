"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

from pathlib import Path

import numpy as np

from tts.datadir import read_table, write_table


def write_even_durations(d: Path, frontend) -> None:
    """A ``durations`` file (what ``tts.align`` writes) sharing each utterance's tokens out
    evenly over its text units, for LLM training tests of the interleaved layout."""
    texts, tokens = read_table(d / "text"), read_table(d / "tokens")
    out = {}
    for utt, text in texts.items():
        n_units = len(frontend.encode_normalized(frontend.transcript(text)))
        edges = np.linspace(0, len(tokens[utt].split()), n_units + 1).round().astype(int)
        out[utt] = " ".join(map(str, np.diff(edges)))
    write_table(d / "durations", out)
