"""Supervised semantic speech tokenizer: an ASR encoder (CTC) with FSQ/VQ inside, 25 tokens/s."""

from .api import CheckpointError, SpeechTokenizer
from .frontend import num_tokens

__all__ = ["CheckpointError", "SpeechTokenizer", "num_tokens"]
