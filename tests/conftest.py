import numpy as np
import pytest
import torch


@pytest.fixture
def tone():
    """Make a float32 sine of a given length/rate/channels."""
    def make(seconds=1.0, sr=16000, freq=220.0, channels=1, amp=0.5):
        t = np.arange(int(seconds * sr)) / sr
        x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        return np.stack([x] * channels, axis=1) if channels > 1 else x
    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A packaged model directory of tiny untrained components (plumbing tests only)."""
    from flow.cfm import CFMConfig
    from flow.config import FlowConfig
    from flow.model import FlowModel
    from tokenizer.api import SpeechTokenizer
    from tokenizer.config import ModelConfig, QuantizerConfig
    from tokenizer.model import TokenizerModel
    from tts.frontend import FrontendConfig
    from tts.llm import LLMConfig, SpeechLM
    from tts.mel import MelConfig
    from tts.model_dir import package
    from tts.speaker import SpeakerEncoder, SpeakerEncoderConfig
    from vocoder.model import Vocoder, VocoderConfig

    codes = 125  # FSQ levels [5, 5, 5]
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("parts")
    tok = TokenizerModel(ModelConfig(dim=32, heads=2, ff_mult=2, num_blocks=2, conv_kernel=7,
                                     quantizer=QuantizerConfig(levels=[5, 5, 5]),
                                     vocab=list(" 'abcdefghijklmnopqrstuvwxyz")))
    SpeechTokenizer(tok).save_pretrained(root / "tokenizer")
    SpeechLM(LLMConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
                       max_positions=512, speech_vocab_size=codes, layout="interleaved",
                       frontend=FrontendConfig(units="phones"))).save_pretrained(root / "llm")  # as the recipe
    FlowModel(FlowConfig(vocab_size=codes, dim=32, layers=1, heads=2, encoder_layers=1, prior_speaker=True, conv_kernel=3,
                         cfm=CFMConfig(prior_start=0.5))).save_pretrained(root / "flow")
    Vocoder(VocoderConfig(dim=32, intermediate_dim=64, num_layers=1, sub_dim=16, sub_layers=1)).save_pretrained(root / "vocoder")
    SpeakerEncoder(SpeakerEncoderConfig(channels=16, embed_dim=8)).save_pretrained(root / "speaker")
    mel = MelConfig()
    out = root / "model"
    package({n: root / n for n in ("tokenizer", "llm", "flow", "vocoder", "speaker")}, out, mel.to_dict(), mel.sample_rate)
    return out
