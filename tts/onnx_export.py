"""``voxlm export onnx --model DIR``: every network of the chain to ``DIR/onnx/``, checked and measured.

    DIR/onnx/
      tokenizer_encoder.onnx  tokenizer_ctc.onnx  llm.onnx
      flow_tokens.onnx  flow_estimator.onnx  vocoder.onnx  speaker.onnx
      flow_estimator.int8.onnx   the same graph with int8 weights (backend "onnx-int8")
      manifest.json   the sha256 of every file of the component folders each graph was traced
                      from: a stale export (weights or configs changed since) is refused at load
      report.json     file sizes, opset, export seconds, parity against torch eager

Exporters: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript) for
the tokenizer, flow, vocoder and speaker graphs (:mod:`tts.onnx_graphs`), and
onnxruntime-genai's model builder for the LLM (:func:`export_llm`). The builder
knows the stock Llama/Qwen2 blocks and writes them with onnxruntime's fused
operators (GroupQueryAttention with rotary positions inside, SkipSimplified-
LayerNormalization): 56 nodes for the toy LLM where the dynamo trace of the HF
model gave 332, and a decode step about 1.7x faster on this CPU (the trace
concatenated and split a stacked KV cache every step). One graph serves prefill
and decode; its KV cache is one input and one output per layer and K/V.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.export import Dim

from tts import onnx_graphs as g
from tts.model_dir import COMPONENTS, check_model_dir

ONNX_DIR, MANIFEST, REPORT = "onnx", "manifest.json", "report.json"
MANIFEST_VERSION = 5  # 2: flow_estimator without a mask input; 3: flow_tokens graph; 4: llm by the builder;
# 5: the phone head's output in tokenizer_encoder (before, a tokenizer_phones graph held the encoder again)
OPSET = 18
GRAPHS = {  # graph -> the component folder it is traced from
    "tokenizer_encoder": "tokenizer", "tokenizer_ctc": "tokenizer", "llm": "llm",
    "flow_tokens": "flow", "flow_estimator": "flow", "vocoder": "vocoder", "speaker": "speaker",
}
LLM_EXPORTER = "onnxruntime-genai model builder (fp32, cpu)"
LLM_INPUTS = ["input_ids", "attention_mask", "past_key_values.{i}.key", "past_key_values.{i}.value"]
LLM_OUTPUTS = ["logits", "present.{i}.key", "present.{i}.value"]
PHONE_OUTPUT = "log_probs"  # tokenizer_encoder's third output, where the tokenizer has a phone head
INT8_GRAPHS = ("flow_estimator",)  # the compute-bound graph (~60% of end-to-end time); backend "onnx-int8"
INT8_METHOD = "onnxruntime quantize_dynamic: MatMul weights int8 per output channel, activations per call"


@dataclass
class GraphSpec:
    name: str
    module: torch.nn.Module
    args: tuple  # example inputs (sizes chosen apart from every model size, never 0 or 1)
    dynamic: tuple  # one {axis: Dim} (or None) per input
    inputs: list[str]
    outputs: list[str]


def _specs(parts: dict) -> list[GraphSpec]:
    """The traced graphs (all but the LLM) with example inputs and dynamic axes, from loaded torch components."""
    batch = Dim("batch", min=1, max=1024)
    tok, flow, voc, spk = (parts[c] for c in ("tokenizer", "flow", "vocoder", "speaker"))
    n_mels = tok.config.n_mels
    tokens = Dim("tokens", min=2, max=100_000)
    frames = Dim("frames", min=2, max=100_000)
    c_mel, t = flow.n_mels, 23
    ids = torch.randint(0, flow.config.vocab_size, (2, t))
    spk_args, spk_dyn, spk_names = (), (), []
    if flow.config.prior_speaker:  # the token encoder pools the prompt too
        spk_args = (torch.randn(2, c_mel, t), torch.arange(t).expand(2, t) < 9)
        spk_dyn, spk_names = ({0: batch, 2: frames}, {0: batch, 1: frames}), ["cond", "prompt_mask"]
    phones = [PHONE_OUTPUT] if tok.has_phone_head else []
    return [
        GraphSpec("tokenizer_encoder", g.TokenizerEncoderGraph(tok.model),
                  (torch.randn(2, 36, n_mels), torch.tensor([36, 28])),
                  ({0: batch, 1: 4 * tokens}, {0: batch}), ["feats", "feat_lengths"], ["ids", "lengths", *phones]),
        GraphSpec("tokenizer_ctc", g.TokenizerCTCGraph(tok.model),
                  (torch.randint(0, tok.codebook_size, (2, 9)), torch.tensor([9, 7])),
                  ({0: batch, 1: tokens}, {0: batch}), ["ids", "lengths"], ["logits"]),
        GraphSpec("flow_tokens", g.FlowTokensGraph(flow), (ids, *spk_args), ({0: batch, 1: frames},) + spk_dyn,
                  ["ids"] + spk_names, ["feats", "mu"]),
        GraphSpec("flow_estimator", g.FlowEstimatorGraph(flow),
                  (torch.randn(2, c_mel, t), torch.rand(2), torch.tensor([1.0, 0.0]),
                   torch.randn(2, t, flow.config.dim), torch.randn(2, c_mel, t),
                   torch.arange(t).expand(2, t) < 9),
                  ({0: batch, 2: frames}, {0: batch}, {0: batch}, {0: batch, 1: frames}, {0: batch, 2: frames},
                   {0: batch, 1: frames}),
                  ["x", "t", "keep", "feats", "cond", "prompt_mask"], ["v"]),
        GraphSpec("vocoder", g.VocoderGraph(voc), (torch.randn(2, voc.mel_config.n_mels, 19) - 4,),
                  ({0: batch, 2: frames},), ["mel"], ["wav"]),
        GraphSpec("speaker", g.SpeakerGraph(spk), (torch.randn(2, spk.mel_config.n_mels, 41) - 4,),
                  ({0: batch, 2: frames},), ["mel"], ["embedding"]),
    ]


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def source_hashes(root: Path, component: str) -> dict[str, str]:
    """sha256 of every file of a component folder (weights and configs): what its graphs depend on."""
    return {f"{component}/{p.name}": sha256(p) for p in sorted((root / component).iterdir()) if p.is_file()}


def _load_torch_parts(root: Path) -> dict:
    from flow.model import FlowModel
    from tokenizer.api import SpeechTokenizer
    from tts.llm import SpeechLM
    from tts.speaker import SpeakerEncoder
    from vocoder.model import Vocoder

    loaders = {"tokenizer": SpeechTokenizer, "llm": SpeechLM, "flow": FlowModel, "vocoder": Vocoder,
               "speaker": SpeakerEncoder}
    parts = {name: cls.from_pretrained(root / name) for name, cls in loaders.items()}
    for name in ("llm", "flow", "vocoder", "speaker"):
        parts[name].eval()
    return parts


def export_graph(spec: GraphSpec, path: Path, opset: int = OPSET) -> None:
    """Trace one graph with the dynamo exporter, save it and run onnx.checker on the file."""
    import onnx

    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress
        program = torch.onnx.export(spec.module.eval(), spec.args, dynamo=True, opset_version=opset,
                                    input_names=spec.inputs, output_names=spec.outputs,
                                    dynamic_shapes=spec.dynamic, verbose=False)
    tmp = path.with_suffix(".tmp.onnx")
    program.save(tmp)
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(path)


def export_llm(llm_dir: Path, path: Path) -> None:
    """The LLM dir (a stock HF causal LM) -> one fp32 graph by onnxruntime-genai's model builder, checked.

    inputs  input_ids (B, S) int64, attention_mask (B, P + S) int64,
            past_key_values.{i}.key / .value (B, H, P, hd) for every layer i
    outputs logits (B, S, V), present.{i}.key / .value (B, H, P + S, hd)

    The builder runs as its command line (its public interface) with the hub switched
    off; its output is saved as one self-contained file (weights inside). onnx.checker
    does not know onnxruntime's fused operators (the builder puts SimplifiedLayerNormalization
    in the default domain), so onnxruntime loading the file is this graph's check.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(llm_dir), "-m", str(llm_dir),
               "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(Path(tmp) / "cache")]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if run.returncode != 0:
            raise RuntimeError(f"the onnxruntime-genai builder failed on {llm_dir}:\n{run.stderr[-2000:]}")
        model = onnx.load(str(out / "model.onnx"))  # with its external weights
    tmp_path = path.with_suffix(".tmp.onnx")
    onnx.save_model(model, str(tmp_path))
    ort.InferenceSession(str(tmp_path), providers=["CPUExecutionProvider"])  # raises on an invalid graph
    tmp_path.replace(path)


def quantize_int8(src: Path, dst: Path) -> None:
    """fp32 graph -> the same graph with int8 MatMul weights (onnxruntime dynamic quantization).

    Activations are quantized at run time, per call, for onnxruntime's int8 GEMM kernels
    (AVX-512 VNNI on this CPU). Only MatMuls against a weight are quantized (attention
    stays fp32). Built and measured for the CPU provider; on CUDA, ops without a CUDA
    kernel would fall back to the CPU (untested: no GPU here).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_suffix(".tmp.onnx")
    quantize_dynamic(src, tmp, weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    tmp.replace(dst)


def export_onnx(model_dir: str | Path, opset: int = OPSET, parity: bool = True, log=print) -> dict:
    """Export every graph of a model directory to ``model_dir/onnx``; return the report."""
    root = Path(model_dir)
    check_model_dir(root)
    out = root / ONNX_DIR
    out.mkdir(exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-finished export must never look current
    torch.manual_seed(0)
    parts = _load_torch_parts(root)
    hashes = {c: source_hashes(root, c) for c in COMPONENTS}
    graphs = {}
    jobs = {s.name: (lambda p, s=s: export_graph(s, p, opset), s.inputs, s.outputs) for s in _specs(parts)}
    jobs["llm"] = (lambda p: export_llm(root / "llm", p), LLM_INPUTS, LLM_OUTPUTS)
    for name in GRAPHS:  # the LLM among the traced graphs
        export, inputs, outputs = jobs[name]
        t0 = time.perf_counter()
        path = out / f"{name}.onnx"
        export(path)
        graphs[name] = {"file": path.name, "component": GRAPHS[name], "inputs": inputs,
                        "outputs": outputs,
                        "bytes": path.stat().st_size, "export_s": round(time.perf_counter() - t0, 2)}
        log(f"exported {path.name} ({path.stat().st_size / 1e6:.2f} MB, {graphs[name]['export_s']} s)")
    graphs["llm"]["exporter"] = LLM_EXPORTER
    int8 = {}
    for name in INT8_GRAPHS:
        path = out / f"{name}.int8.onnx"
        quantize_int8(out / f"{name}.onnx", path)
        int8[name] = {"file": path.name, "bytes": path.stat().st_size, "method": INT8_METHOD}
        log(f"quantized {path.name} ({path.stat().st_size / 1e6:.2f} MB)")
    manifest = {"version": MANIFEST_VERSION, "opset": opset, "exporter": "torch.onnx.export(dynamo=True)",
                "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "graphs": graphs, "int8": int8, "sources": {k: v for c in COMPONENTS for k, v in hashes[c].items()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    report = {"model": str(root), "opset": opset, "torch": torch.__version__,
              "total_mb": round(sum(x["bytes"] for x in graphs.values()) / 1e6, 3),
              "graphs": {k: {"mb": round(v["bytes"] / 1e6, 3), "export_s": v["export_s"]} for k, v in graphs.items()},
              "int8": {k: {"mb": round(v["bytes"] / 1e6, 3), "method": v["method"]} for k, v in int8.items()}}
    if parity:
        from tts.onnx_parity import parity_report

        report["parity"] = parity_report(root, parts, int8=bool(int8))
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Export a VoxLM model directory to ONNX (DIR/onnx).")
    p.add_argument("--model", required=True)
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--no-parity", action="store_true", help="skip the torch-vs-onnxruntime parity check")
    a = p.parse_args(argv)
    print(json.dumps(export_onnx(a.model, a.opset, parity=not a.no_parity), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
