"""The onnxruntime backend: adapters with the torch components' call signatures over ``DIR/onnx``.

``Synthesizer.from_pretrained(dir, backend="onnx")`` builds the same Synthesizer
from these adapters, so prompt analysis, sampling (``tts.sampling.generate``),
best-of-N search, verifiers and the ODE loop (``flow.cfm.solve``) are the torch
backend's own code; only the networks run on onnxruntime:

    SpeechTokenizer(OnnxTokenizerModel)  tokens(), logits_from_tokens(): tokenizer_encoder/_ctc
    OnnxLM.model                         an HF-like causal LM with an explicit KV cache: llm
    OnnxFlow.generate()                  flow_tokens once, then the ODE loop in Python, one flow_estimator call per field evaluation
    OnnxVocoder(mel)                     vocoder
    OnnxSpeaker.embed()                  speaker

Feature extraction (log-mel) and sampling still use torch on the CPU: cheap
tensor code, shared with the torch backend so both see identical inputs.
Execution provider: CPU by default; CUDA when onnxruntime-gpu sees a GPU (logged).
Intra-op threads follow ``torch.get_num_threads()``, so one setting governs both backends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors import safe_open

from flow.config import FlowConfig
from flow.model import FlowModel
from tokenizer.api import SpeechTokenizer
from tokenizer.config import model_config_from_dict
from tts.frontend import Frontend
from tts.llm import LAYOUT_FILE, LengthRatio, LLMConfig, make_layout
from tts.model_dir import ModelDirError
from tts.onnx_export import (
    GRAPHS,
    INT8_GRAPHS,
    MANIFEST,
    MANIFEST_VERSION,
    ONNX_DIR,
    PHONE_OUTPUT,
    source_hashes,
)
from tts.speaker import SpeakerEncoder, SpeakerEncoderConfig
from vocoder.model import VocoderConfig, VocoderInputError


class OnnxDirError(ModelDirError):
    """The ONNX export of a model directory is missing, incomplete or stale."""


def check_onnx_dir(root: str | Path) -> dict:
    """The ONNX manifest of a model dir, after checking every graph file and source hash."""
    root = Path(root)
    out, hint = root / ONNX_DIR, f"run `voxlm export onnx --model {root}`"
    if not (out / MANIFEST).is_file():
        raise OnnxDirError(f"{root} has no ONNX export ({out}/{MANIFEST} missing): {hint}")
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except json.JSONDecodeError as err:
        raise OnnxDirError(f"corrupt {out / MANIFEST}: {err}; {hint}") from err
    if manifest.get("version") != MANIFEST_VERSION:
        raise OnnxDirError(f"{out / MANIFEST} has version {manifest.get('version')!r}: {hint}")
    for name in GRAPHS:
        if not (out / f"{name}.onnx").is_file():
            raise OnnxDirError(f"{out} lacks {name}.onnx: {hint}")
    now = {k: v for c in sorted(set(GRAPHS.values())) for k, v in source_hashes(root, c).items()}
    changed = sorted(k for k in set(now) | set(manifest["sources"]) if now.get(k) != manifest["sources"].get(k))
    if changed:
        raise OnnxDirError(f"{out} is stale: {', '.join(changed)} changed since the export; {hint}")
    return manifest


def providers() -> list[str]:
    """CUDA first when this onnxruntime has it and a GPU is there, else CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtGraph:
    """One onnxruntime session: ``graph(name=array, ...) -> list of arrays``."""

    def __init__(self, path: Path, provider_list: list[str]):
        import onnxruntime as ort

        self.path = path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        # no busy-waiting between calls: the chain's seven sessions (and torch) take turns on
        # the same cores, and spinning pools starved each other (2 threads, N=4: 0.57x of torch)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=provider_list)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise OnnxDirError(f"cannot load {path}: {err}") from err
        self.provider = self.session.get_providers()[0]

    def __call__(self, **feeds: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, feeds)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ---- tokenizer --------------------------------------------------------------------------------
class OnnxTokenizerModel:
    """Stands in for TokenizerModel inside SpeechTokenizer (encode, transcribe, transcribe_tokens and,
    where the encoder graph has the phone head's output, phone_log_probs_batch)."""

    def __init__(self, config_path: Path, encoder: OrtGraph, ctc: OrtGraph, phones: bool = False):
        self.cfg = model_config_from_dict(json.loads(config_path.read_text())["model"])
        self.encoder, self.ctc, self.phones = encoder, ctc, phones
        self.quantizer = SimpleNamespace(size=self.cfg.quantizer.size)
        self.feat_mean = torch.zeros(0)  # SpeechTokenizer reads the device from it: the CPU

    def eval(self) -> OnnxTokenizerModel:
        return self

    def tokens(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> SimpleNamespace:
        # feats: (B, 4T, n_mels), feat_lengths: (B,) -> ids (B, T), lengths (B,)
        ids, lengths = self.encoder(feats=_np(feats).astype(np.float32), feat_lengths=_np(feat_lengths))[:2]
        return SimpleNamespace(ids=torch.from_numpy(ids), lengths=torch.from_numpy(lengths))

    def logits_from_tokens(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # ids: (B, T), lengths: (B,) -> CTC logits (B, T * up, V)
        return torch.from_numpy(self.ctc(ids=_np(ids), lengths=_np(lengths))[0])

    @property
    def has_phone_head(self) -> bool:  # a tokenizer without one exports no phone output
        return self.phones

    def phone_log_probs(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # feats: (B, 4T, n_mels) -> phone log-posteriors (B, T * up, P), token lengths (B,)
        _, lengths, logp = self.encoder(feats=_np(feats).astype(np.float32), feat_lengths=_np(feat_lengths))
        return torch.from_numpy(logp), torch.from_numpy(lengths)

    def __call__(self, feats: torch.Tensor, feat_lengths: torch.Tensor, bypass: bool = False) -> SimpleNamespace:
        # transcription through the tokens: what the CTC head reads from the quantizer's output
        if bypass:
            raise ValueError("the ONNX tokenizer has no quantizer bypass")
        enc = self.tokens(feats, feat_lengths)
        return SimpleNamespace(logits=self.logits_from_tokens(enc.ids, enc.lengths))


# ---- LLM --------------------------------------------------------------------------------------
class OrtKVCache:
    """The KV cache as the llm graph's inputs, ``past_key_values.{i}.key/value`` (B, H, P, hd) each,
    with DynamicCache's batch operations."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    @property
    def length(self) -> int:
        return next(iter(self.arrays.values())).shape[2]

    def batch_repeat_interleave(self, n: int) -> None:
        self.arrays = {k: np.repeat(v, n, axis=0) for k, v in self.arrays.items()}

    def batch_select_indices(self, idx: torch.Tensor) -> None:
        rows = _np(idx)
        self.arrays = {k: v[rows] for k, v in self.arrays.items()}


class OnnxCausalLM:
    """What tts.sampling calls: ``model(input_ids=, use_cache=, logits_to_keep=, cache=)``."""

    def __init__(self, graph: OrtGraph, layers: int, kv_heads: int, head_dim: int):
        self.graph, self.kv_heads, self.head_dim = graph, kv_heads, head_dim
        # graph input -> the output that carries it on: past_key_values.{i}.key -> present.{i}.key
        self.past_to_present = {f"past_key_values.{i}.{kv}": f"present.{i}.{kv}"
                                for i in range(layers) for kv in ("key", "value")}
        self.outputs = [o.name for o in graph.session.get_outputs()]

    def forward(self, input_ids: torch.Tensor, use_cache: bool = True, logits_to_keep: int = 1,
                cache: OrtKVCache | None = None) -> SimpleNamespace:
        # input_ids: (B, S) -> logits (B, 1, V), cache grown by S positions
        ids = _np(input_ids).astype(np.int64)
        b, s = ids.shape
        if cache is None:
            empty = np.zeros((b, self.kv_heads, 0, self.head_dim), np.float32)
            cache = OrtKVCache(dict.fromkeys(self.past_to_present, empty))
        mask = np.ones((b, cache.length + s), np.int64)
        out = dict(zip(self.outputs, self.graph(input_ids=ids, attention_mask=mask, **cache.arrays), strict=True))
        cache.arrays = {past: out[present] for past, present in self.past_to_present.items()}
        return SimpleNamespace(logits=torch.from_numpy(out["logits"][:, -1:]), cache=cache)

    __call__ = forward


class OnnxLM:
    """SpeechLM's inference surface (frontend, layout, length ratios, model) without torch weights."""

    def __init__(self, path: Path, graph: OrtGraph):
        meta = json.loads((path / LAYOUT_FILE).read_text())
        self.frontend = Frontend.from_pretrained(path)
        self.cfg = LLMConfig(**{k: v for k, v in meta["llm"].items() if k != "frontend"})
        self.layout = make_layout(self.frontend, meta["layout"]["speech_vocab_size"], self.cfg.layout,
                                  self.cfg.unit_lookahead)
        self.ratio = LengthRatio(**meta.get("length_ratio", {}))
        hf = json.loads((path / "config.json").read_text())
        self.max_positions = hf["max_position_embeddings"]
        heads = hf.get("num_key_value_heads") or hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        self.model = OnnxCausalLM(graph, hf["num_hidden_layers"], heads, head_dim)

    def eval(self) -> OnnxLM:
        return self


# ---- flow -------------------------------------------------------------------------------------
class OnnxFlow:
    """FlowModel's own inference code (borrowed below, not copied) around the flow_estimator graph.

    The torch model turns tokens into features and the prompt into a speaker vector
    before the ODE; here the features come from the flow_tokens graph (once per
    utterance), and the estimator graph pools the prompt itself from the prompt mask.
    """

    generate = FlowModel.generate  # checks, noise, masks, flow.cfm.solve, denormalisation
    prepare = FlowModel.prepare
    _check_tokens = FlowModel._check_tokens
    check_total_frames = FlowModel.check_total_frames
    _options = FlowModel._options
    _run = FlowModel._run
    solve_block = FlowModel.solve_block
    normalize = FlowModel.normalize
    denormalize = FlowModel.denormalize

    def __init__(self, path: Path, tokens: OrtGraph, estimator: OrtGraph):
        self.tokens_graph = tokens
        self.config = FlowConfig.from_dict(json.loads((path / "config.json").read_text()))
        if self.config.speaker == "external":
            raise OnnxDirError(f"{path}: flow models with speaker='external' have no ONNX export")
        self.n_mels, self.graph = self.config.mel_config.n_mels, estimator
        with safe_open(str(path / "model.safetensors"), framework="np") as f:  # the two stats, no weights
            self.mel_mean = torch.from_numpy(f.get_tensor("mel_mean"))
            self.mel_std = torch.from_numpy(f.get_tensor("mel_std"))

    frame_ids = FlowModel.frame_ids

    def features(self, ids: torch.Tensor, mask=None, spk=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) frame ids [+ the prompt, see speaker_vector] -> (token features (B, T, D), prior mu
        (B, C, T) or None) from flow_tokens."""
        if mask is not None:
            raise NotImplementedError("chunk-masked (streaming) flow runs on the torch backend only")
        feeds = {"ids": ids.numpy()}
        if self.config.prior_speaker:
            feeds.update(_prompt_feeds(*spk, ids.shape[1]))
        feats, mu = self.tokens_graph(**feeds)
        return torch.from_numpy(feats), torch.from_numpy(mu) if self.config.encoder_layers else None

    def speaker_vector(self, cond: torch.Tensor, prompt_mask: torch.Tensor, spk) -> tuple:
        # the graphs pool the prompt into the speaker vector themselves: pass the prompt on,
        # cond (B, C, Tp) normalised prompt mel and prompt_mask (B, Tp) bool
        return cond, prompt_mask

    def prepare_prompt(self, prompt_tokens=None, prompt_mel=None, spk=None):
        """-> (frame token ids (1, Tp), cond (1, C, Tp), (cond, prompt mask (1, Tp)), Tp), as FlowModel's."""
        if prompt_tokens is None and prompt_mel is None:
            cond = torch.zeros(1, self.n_mels, 0)
            return torch.zeros(1, 0, dtype=torch.long), cond, (cond, torch.zeros(1, 0, dtype=torch.bool)), 0
        return FlowModel.prepare_prompt(self, prompt_tokens, prompt_mel, spk)

    def estimator(self, tok: torch.Tensor, cond: torch.Tensor, prompt: tuple,
                  mask: torch.Tensor | None, kv=None, offset: int = 0):
        """Bind the conditions: -> ``(x_t, t, drop) -> v`` for flow.cfm, one graph call per evaluation."""
        if mask is not None or kv is not None or offset:
            raise NotImplementedError("chunk-masked (streaming) flow runs on the torch backend only")
        feeds = {"feats": tok.float().numpy(), **_prompt_feeds(*prompt, cond.shape[-1])}

        def field(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
            # x: (B', C, T) with B' = r * B rows (CFG doubles them); t, drop: (B',)
            r = x.shape[0] // cond.shape[0]
            rep = {k: np.concatenate([v] * r) if r > 1 else v for k, v in feeds.items()}
            v = self.graph(x=_np(x).astype(np.float32), t=_np(t).astype(np.float32),
                           keep=(~drop).float().numpy(), **rep)[0]
            return torch.from_numpy(v)
        return field

    def stream(self, *args, **kwargs):
        raise NotImplementedError("flow streaming runs on the torch backend only")


def _prompt_feeds(cond: torch.Tensor, prompt_mask: torch.Tensor, total: int) -> dict:
    """The prompt's (B, C, Tp) normalised mel and (B, Tp) mask, zero-padded to ``total`` frames."""
    pad = (0, total - prompt_mask.shape[1])
    return {"cond": torch.nn.functional.pad(cond.float(), pad).numpy(),
            "prompt_mask": torch.nn.functional.pad(prompt_mask, pad).numpy()}


# ---- vocoder and speaker encoder --------------------------------------------------------------
class OnnxVocoder:
    """``vocoder(mel)``: (B, n_mels, T) log-mel tensor -> (B, T * hop) waveform tensor."""

    def __init__(self, path: Path, graph: OrtGraph):
        raw = json.loads((path / "config.json").read_text())
        raw.pop("model", None)
        self.config = VocoderConfig(**raw)
        self.mel_config, self.graph = self.config.mel_config, graph
        self.hop, self.sr = self.mel_config.hop_length, self.mel_config.sample_rate

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        # mel: (B, n_mels, T) -> (B, T * hop)
        if mel.dim() != 3 or mel.shape[1] != self.mel_config.n_mels or mel.shape[2] == 0:
            raise VocoderInputError(f"mel must have shape (B, {self.mel_config.n_mels}, T>0), got {tuple(mel.shape)}")
        return torch.from_numpy(self.graph(mel=_np(mel).astype(np.float32))[0])


class OnnxSpeaker:
    """SpeakerEncoder.embed()/similarity() on the speaker graph."""

    similarity = staticmethod(SpeakerEncoder.similarity)

    def __init__(self, path: Path, graph: OrtGraph):
        cfg = json.loads((path / "config.json").read_text())
        cfg["dilations"] = tuple(cfg.get("dilations", (2, 3, 4)))
        self.config = SpeakerEncoderConfig(**cfg)
        self.mel = SpeakerEncoder(self.config).mel  # the torch encoder's own front-end
        self.mel_config, self.graph = self.mel.config, graph

    @torch.no_grad()
    def embed(self, audio, sample_rate: int | None = None) -> np.ndarray:
        """One utterance (array + rate, or a path) -> (embed_dim,) float32 unit vector."""
        from tts.audio import load_audio

        wav = load_audio(audio, self.mel_config.sample_rate, sample_rate=sample_rate, min_seconds=0.1)
        return self.graph(mel=self.mel(torch.from_numpy(wav))[None].numpy())[0][0]


def graph_files(root: Path, manifest: dict, int8: bool) -> dict[str, Path]:
    """graph name -> the file to run: fp32, or with ``int8`` the quantized twin of each INT8_GRAPHS graph."""
    files = {name: root / ONNX_DIR / f"{name}.onnx" for name in GRAPHS}
    for name in INT8_GRAPHS if int8 else ():
        entry = manifest.get("int8", {}).get(name)  # the export names the file it wrote
        if entry is None or not (root / ONNX_DIR / entry["file"]).is_file():
            raise OnnxDirError(f"{root / ONNX_DIR} has no int8 {name} graph: run `voxlm export onnx --model {root}`")
        files[name] = root / ONNX_DIR / entry["file"]
    return files


def load_onnx_components(root: str | Path, int8: bool = False) -> dict:
    """The five components of a checked model dir as onnxruntime adapters (keys as COMPONENTS).

    int8: run the int8-weight twins of INT8_GRAPHS (the flow estimator) instead of fp32.
    """
    root = Path(root)
    manifest = check_onnx_dir(root)
    provider_list = providers()
    graphs = {name: OrtGraph(path, provider_list) for name, path in graph_files(root, manifest, int8).items()}
    print(f"voxlm: onnxruntime runs on {graphs['llm'].provider}", file=sys.stderr)
    tok_model = OnnxTokenizerModel(root / "tokenizer" / "config.json", graphs["tokenizer_encoder"],
                                   graphs["tokenizer_ctc"],
                                   PHONE_OUTPUT in manifest["graphs"]["tokenizer_encoder"]["outputs"])
    normalize = json.loads((root / "tokenizer" / "config.json").read_text()).get("normalize", "rms")
    return {"tokenizer": SpeechTokenizer(tok_model, normalize=normalize),
            "llm": OnnxLM(root / "llm", graphs["llm"]),
            "flow": OnnxFlow(root / "flow", graphs["flow_tokens"], graphs["flow_estimator"]),
            "vocoder": OnnxVocoder(root / "vocoder", graphs["vocoder"]),
            "speaker": OnnxSpeaker(root / "speaker", graphs["speaker"])}


