"""Public interface: ``SpeechTokenizer`` (encode audio to 25 Hz ids, read ids back as text).

    tok = SpeechTokenizer.from_pretrained("exp/tokenizer/model")
    ids = tok.encode(audio, 16000)            # np.ndarray[int64], len == num_tokens(len(audio))
    tok.transcribe_tokens(ids)                # CTC greedy text from the tokens alone
    tok.transcribe(audio, 16000)              # the same through audio

A model directory holds ``config.json`` (human-readable: model config, vocab,
token rate) and ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tts.audio import AudioError

from .config import SAMPLES_PER_TOKEN, ModelConfig, model_config_from_dict
from .frontend import CharVocab, FeatureExtractor, load_for_tokenizer, num_tokens
from .model import TokenizerModel

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


class CheckpointError(RuntimeError):
    """A model directory or checkpoint is missing, incomplete or corrupt."""


class SpeechTokenizer:
    """Speech -> semantic token ids (25 Hz) and token ids -> text (CTC greedy)."""

    def __init__(self, model: TokenizerModel, normalize: str | None = "rms"):
        self.model = model.eval()
        self.config: ModelConfig = model.cfg
        self.vocab = CharVocab(self.config.vocab)
        self.features = FeatureExtractor(self.config.n_mels, self.config.n_fft)
        self.normalize = normalize
        self.token_rate = 16000 / SAMPLES_PER_TOKEN
        self.codebook_size = self.model.quantizer.size

    # ---- files -------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"model": asdict(self.config), "normalize": self.normalize, "sample_rate": 16000,
                "token_rate": self.token_rate, "codebook_size": self.codebook_size,
                "num_tokens": "num_samples_16k // 640"}
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / (WEIGHTS_NAME + ".tmp")))
        (directory / (WEIGHTS_NAME + ".tmp")).replace(directory / WEIGHTS_NAME)
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> SpeechTokenizer:
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CheckpointError(f"tokenizer model dir {directory}: missing {p.name}")
        try:
            meta = json.loads(cfg_path.read_text())
            cfg = model_config_from_dict(meta["model"])
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{cfg_path}: unreadable tokenizer config: {err}") from err
        try:
            state = load_file(str(w_path), device=device)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{w_path}: corrupt weights: {err}") from err
        model = TokenizerModel(cfg)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{w_path}: weights do not match config.json: {err}") from err
        return cls(model.to(device), normalize=meta.get("normalize", "rms"))

    # ---- audio -> tokens ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.feat_mean.device

    def _features(self, audio, sample_rate) -> torch.Tensor:
        if not isinstance(audio, (np.ndarray, torch.Tensor)):
            raise AudioError(f"audio must be a numpy array, got {type(audio).__name__}")
        return self.features(load_for_tokenizer(audio, sample_rate, self.normalize))

    def _batch(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([f.shape[0] for f in feats])
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        return padded.to(self.device), lengths.to(self.device)

    def _features_batch(self, audios: list[np.ndarray], sample_rate: int | list[int]) -> list[torch.Tensor]:
        """Clips at one rate or one rate each -> their features."""
        rates = sample_rate if isinstance(sample_rate, (list, tuple)) else [sample_rate] * len(audios)
        if len(rates) != len(audios):
            raise ValueError(f"{len(audios)} clips but {len(rates)} sample rates")
        return [self._features(a, sr) for a, sr in zip(audios, rates, strict=True)]

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """float mono audio at any rate -> int64 token ids, ``num_tokens(len(audio), sample_rate)`` long."""
        return self.encode_batch([audio], sample_rate)[0]

    @torch.no_grad()
    def encode_batch(self, audios: list[np.ndarray], sample_rate: int | list[int],
                     batch_size: int = 16) -> list[np.ndarray]:
        """Several clips -> one id array each (padded and masked: same ids as one by one)."""
        feats = self._features_batch(audios, sample_rate)
        out: list[np.ndarray] = []
        for start in range(0, len(feats), batch_size):
            x, lengths = self._batch(feats[start:start + batch_size])
            enc = self.model.tokens(x, lengths)
            out += [enc.ids[i, : enc.lengths[i]].cpu().numpy().astype(np.int64) for i in range(len(lengths))]
        return out

    @property
    def has_phone_head(self) -> bool:
        return self.model.has_phone_head

    @torch.no_grad()
    def phone_log_probs_batch(self, audios: list[np.ndarray], sample_rate: int | list[int],
                              batch_size: int = 16) -> list[np.ndarray]:
        """Clips -> log-posteriors of the auxiliary phone CTC, (num_tokens * ctc_upsample, 1 + len(PHONES))
        each; index 0 is the blank, phone ``p`` is ``1 + PHONES.index(p)`` (:mod:`tts.align` uses them).
        The head reads the quantized codes when it was trained on them alone (``inter_from: codes``),
        else the pre-quantizer features (``encoder``; ``both``, whose head learnt both)."""
        if not self.has_phone_head:
            raise ValueError("this tokenizer has no phone CTC head (train it with inter_targets: phones)")
        feats = self._features_batch(audios, sample_rate)
        up, out = self.config.ctc_upsample, []
        for start in range(0, len(feats), batch_size):
            x, lengths = self._batch(feats[start:start + batch_size])
            logp, tokens = self.model.phone_log_probs(x, lengths)  # (B, T * up, P), (B,)
            out += [logp[i, : int(tokens[i]) * up].cpu().numpy() for i in range(len(logp))]
        return out

    # ---- tokens / audio -> text --------------------------------------------------------------
    def _check_ids(self, ids) -> torch.Tensor:
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        if ids.ndim != 1 or ids.numel() == 0:
            raise ValueError(f"token ids must be a non-empty 1-D sequence, got shape {tuple(ids.shape)}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size:
            raise ValueError(f"token ids must lie in 0..{self.codebook_size - 1}")
        return ids

    @torch.no_grad()
    def transcribe_tokens_batch(self, token_ids: list) -> list[str]:
        """CTC greedy decoding from token ids alone (the cheap intelligibility verifier)."""
        ids = [self._check_ids(t) for t in token_ids]
        if not ids:
            return []
        lengths = torch.tensor([len(t) for t in ids], device=self.device)
        padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True).to(self.device)
        logits = self.model.logits_from_tokens(padded, lengths)
        best = logits.argmax(-1).cpu()
        up = self.config.ctc_upsample
        return [self.vocab.decode_ctc(best[i, : int(lengths[i]) * up]) for i in range(len(ids))]

    def transcribe_tokens(self, token_ids) -> str:
        return self.transcribe_tokens_batch([token_ids])[0]

    @torch.no_grad()
    def transcribe(self, audio: np.ndarray, sample_rate: int, bypass_quantizer: bool = False) -> str:
        """Audio -> text through the quantizer (or around it, to measure what quantizing costs)."""
        x, lengths = self._batch([self._features(audio, sample_rate)])
        out = self.model(x, lengths, bypass=bypass_quantizer)
        return self.vocab.decode_ctc(out.logits[0].argmax(-1))

    def num_tokens(self, num_samples: int, sample_rate: int = 16000) -> int:
        return num_tokens(num_samples, sample_rate)
