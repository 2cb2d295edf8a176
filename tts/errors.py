"""The exceptions that mean "bad input or a bad file", not "a bug": the CLI prints them in one line."""

from flow.model import FlowCheckpointError, FlowInputError
from tokenizer.api import CheckpointError as TokenizerCheckpointError
from tts.audio import AudioError
from tts.compare import CompareError
from tts.datadir import DataDirError
from tts.frontend import TextError
from tts.llm import LLMCheckpointError
from tts.model_dir import ModelDirError
from tts.sampling import GenerationError
from tts.speaker import CheckpointError as SpeakerCheckpointError
from tts.verifiers import VerifierSpecError
from vocoder.model import VocoderCheckpointError, VocoderInputError

USER_ERRORS = (AudioError, TextError, GenerationError, ModelDirError, DataDirError, FileNotFoundError,
               FlowInputError, FlowCheckpointError, TokenizerCheckpointError, LLMCheckpointError,
               SpeakerCheckpointError, VocoderCheckpointError, VocoderInputError, VerifierSpecError,
               CompareError)
