"""flow.phonetic: the tokenizer's phone reader as a training loss for the flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flow.config import FlowConfig
from flow.model import FlowModel
from flow.phonetic import PhoneticLoss
from tokenizer.api import SpeechTokenizer
from tokenizer.config import ModelConfig, QuantizerConfig
from tokenizer.model import TokenizerModel
from tts.mel import MelConfig

CONF = Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf"
MEL = MelConfig.preset("16k-w40")


def reader(**kw) -> TokenizerModel:
    torch.manual_seed(0)
    cfg = dict(dim=32, heads=2, ff_mult=2, num_blocks=2, conv_kernel=7, quantizer=QuantizerConfig(levels=[5, 5, 5]),
               vocab=list(" 'abcdefghijklmnopqrstuvwxyz"), inter_targets="phones", inter_ctc_weight=0.3)
    return TokenizerModel(ModelConfig(**{**cfg, **kw}))


def test_reads_one_posterior_per_mel_frame_and_is_zero_on_real():
    loss = PhoneticLoss(reader(), MEL, weight=1.0)
    real = torch.randn(2, 80, 41)  # odd: the last frame is dropped
    lengths = torch.tensor([41, 29])
    logp, valid = loss.log_probs(real, lengths)
    assert logp.shape[:2] == (2, 40) and valid.shape == (2, 40)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 40), atol=1e-5)
    assert valid[0].all() and valid[1, :28].all() and not valid[1, 28:].any()  # 29 frames -> 58 -> 56 feats -> 14 tokens -> 28
    frames = torch.ones(2, 41, dtype=torch.bool)
    assert loss(real, real, frames, lengths).item() == pytest.approx(0.0, abs=1e-6)
    other = real + torch.randn_like(real)
    assert loss(other, real, frames, lengths).item() > 0.0
    assert loss(other, real, torch.zeros_like(frames), lengths).item() == 0.0  # nothing to compare


def test_gradient_reaches_the_mel_not_the_reader_and_pulls_it_to_the_real_phones():
    tok = reader()
    loss = PhoneticLoss(tok, MEL)
    loss.train()  # its owner's train() leaves the reader in eval mode
    assert not tok.training
    torch.manual_seed(1)
    real, lengths = torch.randn(1, 80, 40), torch.tensor([40])
    gen = torch.zeros(1, 80, 40, requires_grad=True)
    frames = torch.ones(1, 40, dtype=torch.bool)
    opt = torch.optim.Adam([gen], lr=0.05)
    first = None
    for _ in range(40):
        opt.zero_grad()
        value = loss(gen, real, frames, lengths)
        value.backward()
        opt.step()
        first = value.item() if first is None else first
    assert all(p.grad is None for p in tok.parameters())
    assert value.item() < 0.5 * first


def test_flow_loss_adds_the_weighted_term_on_late_kept_rows_only():
    torch.manual_seed(0)
    model = FlowModel(FlowConfig(vocab_size=32, dim=32, layers=1, heads=2, encoder_layers=1, mel="16k-w40",
                                 max_prompt_frames=60, max_frames=400))
    tokens, mel, lens = torch.randint(0, 32, (2, 20)), torch.randn(2, 80, 40) - 5, torch.tensor([40, 34])

    def loss(phonetic=None):
        return model(tokens, mel, lens, generator=torch.Generator().manual_seed(3), phonetic=phonetic).item()

    plain = loss()
    never = PhoneticLoss(reader(), MEL, weight=2.0, min_t=1.1)  # no row is that late: the same draws, same loss
    assert loss(never) == pytest.approx(plain, rel=1e-6)
    always = PhoneticLoss(reader(), MEL, weight=2.0, min_t=0.0)
    total = loss(always)
    assert always.last.item() > 0 and total == pytest.approx(plain + 2.0 * always.last.item(), rel=1e-5)


def test_refuses_readers_and_mels_it_cannot_read():
    with pytest.raises(ValueError, match="phone CTC head"):
        PhoneticLoss(reader(inter_targets="chars"), MEL)
    with pytest.raises(ValueError, match="phone CTC head"):
        PhoneticLoss(reader(inter_ctc_weight=0.0), MEL)
    with pytest.raises(ValueError, match="frames/s"):
        PhoneticLoss(reader(), MelConfig.preset("24k"))  # 100 bins


def test_train_cli_with_the_phonetic_loss(tmp_path):
    """flow.train with phonetic.weight > 0: trains, resumes, logs the term; the model dir holds the flow only."""
    import yaml

    from flow import train
    from tests.test_flow import _noise_data_dir

    d = _noise_data_dir(tmp_path / "data", "spk", 3)
    SpeechTokenizer(reader(quantizer=QuantizerConfig(levels=[8, 8, 4]))).save_pretrained(tmp_path / "tok")  # 256 codes
    cfg = yaml.safe_load((CONF / "flow_tiny.yaml").read_text())
    cfg["phonetic"] = {"weight": 1.0, "min_t": 0.0}
    cfg["trainer"]["log_every"] = 1
    (tmp_path / "ph.yaml").write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    args = ["--config", str(tmp_path / "ph.yaml"), "--train", str(d), "--dev", str(d), "--exp", str(exp)]
    with pytest.raises(SystemExit, match="needs a tokenizer"):
        train.main([*args, "--max-steps", "1"])
    vocab = ["--tokenizer", str(tmp_path / "tok")]
    assert train.main([*args, *vocab, "--max-steps", "2"]) == 0
    assert train.main([*args, *vocab, "--max-steps", "3"]) == 0  # resumes: the reader is not in the checkpoint
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 and not any(k.startswith("phonetic") for k in ckpt["state_dict"])
    FlowModel.from_pretrained(exp / "model")  # strict load: the flow's weights only
    assert json.loads((exp / "model" / "config.json").read_text())["vocab_size"] == 256
    metrics = (exp / "logs").rglob("metrics.csv")
    assert any("phonetic_kl" in m.read_text().splitlines()[0] for m in metrics)
