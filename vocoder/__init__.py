"""Mel -> waveform: a Vocos-style iSTFT generator, a Griffin-Lim baseline, GAN training."""

from vocoder.griffinlim import GriffinLim
from vocoder.model import Vocoder, VocoderCheckpointError, VocoderConfig, VocoderInputError

__all__ = ["GriffinLim", "Vocoder", "VocoderCheckpointError", "VocoderConfig", "VocoderInputError"]
