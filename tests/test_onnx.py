"""ONNX export and the onnxruntime backend, on tiny untrained components.

One export (through the CLI) serves the module: every graph is checked by
onnx.checker at export, then compared with torch eager component by component,
and the ONNX backend synthesises from the exported directory.
"""

import collections
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import run_cli

from flow.model import FlowModel
from tts.cli import main
from tts.onnx_backend import OnnxDirError, check_onnx_dir
from tts.onnx_export import GRAPHS, INT8_GRAPHS, PHONE_OUTPUT
from tts.onnx_graphs import RealISTFT
from tts.synthesizer import Synthesizer


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model dir whose flow has random (not zero-initialised) output layers and
    speaker-aware prior (so the flow parity is not vacuous), exported with `voxlm export onnx`."""
    root = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, root)
    flow = FlowModel.from_pretrained(root / "flow")
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if "ada" in name or "out_proj" in name or "prior_spk" in name:
                p.normal_(0.0, 0.05)
        flow.set_mel_stats(torch.linspace(-8, -2, flow.n_mels), torch.linspace(1, 2, flow.n_mels))
    flow.save_pretrained(root / "flow")
    assert main(["export", "onnx", "--model", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def report(onnx_dir):
    return json.loads((onnx_dir / "onnx" / "report.json").read_text())


def test_export_writes_every_graph_manifest_and_report(onnx_dir, report):
    manifest = check_onnx_dir(onnx_dir)
    # every graph; the encoder's holds the phone head's output too (the tiny tokenizer has one, as the
    # recipe's does), so the encoder's weights are stored once
    assert set(manifest["graphs"]) == set(GRAPHS) and manifest["opset"] == 18
    assert manifest["graphs"]["tokenizer_encoder"]["outputs"] == ["ids", "lengths", PHONE_OUTPUT]
    assert all((onnx_dir / "onnx" / f"{g}.onnx").stat().st_size > 0 for g in manifest["graphs"])
    assert "flow/model.safetensors" in manifest["sources"] and "llm/config.json" in manifest["sources"]
    assert report["opset"] == 18 and set(report["graphs"]) == set(GRAPHS)
    assert all(g["mb"] > 0 for g in report["graphs"].values())
    # the LLM comes from onnxruntime-genai's builder, with onnxruntime's fused attention
    import onnx

    assert manifest["graphs"]["llm"]["exporter"].startswith("onnxruntime-genai")
    ops = {n.op_type for n in onnx.load(str(onnx_dir / "onnx" / "llm.onnx")).graph.node}
    assert "GroupQueryAttention" in ops


def test_parity_with_torch(report):
    p = report["parity"]
    assert p["tokenizer"]["tokens_identical"] and p["tokenizer"]["ctc_logits_max_abs_err"] <= 1e-3
    assert p["tokenizer"]["phone_log_probs_max_abs_err"] <= 1e-3
    assert p["llm"]["greedy_identical"] and p["llm"]["greedy_prompts"] == 3
    assert p["flow"]["step_max_abs_err"] <= 1e-3 and p["flow"]["solve_max_abs_err"] <= 1e-3
    assert p["vocoder"]["max_abs_err"] <= 1e-3 and p["speaker"]["max_abs_err"] <= 1e-3


def test_int8_flow_estimator_is_exported_and_runs(onnx_dir, report, tone, tmp_path):
    """The int8 twin: weight MatMuls quantized, listed in the manifest, near the fp32 solve,
    run by backend="onnx-int8" (and refused with a clear error where it was not exported)."""
    import onnx

    manifest = check_onnx_dir(onnx_dir)
    assert set(manifest["int8"]) == set(INT8_GRAPHS) == {"flow_estimator"}
    ops = collections.Counter(n.op_type for n in onnx.load(str(onnx_dir / "onnx" / "flow_estimator.int8.onnx")).graph.node)
    fp32 = collections.Counter(n.op_type for n in onnx.load(str(onnx_dir / "onnx" / "flow_estimator.onnx")).graph.node)
    assert ops["MatMulInteger"] > 0 and ops["MatMul"] < fp32["MatMul"]
    err = report["parity"]["flow_int8"]
    assert 0 < err["solve_rel_err"] < 0.05, err  # quantized, so not identical; but close
    prompt = tone(2.0, 16000, freq=150.0)
    kw = dict(prompt_text="a voice", flow_steps=3, min_ratio=0.5, max_ratio=1.0, seed=3, greedy=True)
    a, b = (Synthesizer.from_pretrained(onnx_dir, backend=k) for k in ("onnx", "onnx-int8"))
    assert b.flow.graph.path.name == "flow_estimator.int8.onnx" and a.flow.graph.path.name == "flow_estimator.onnx"
    ra, rb = (s.synthesize("Hi there.", prompt, 16000, **kw) for s in (a, b))
    assert [c.tokens for c in ra.chosen] == [c.tokens for c in rb.chosen] and ra.audio.shape == rb.audio.shape
    assert 0 < np.linalg.norm(ra.audio - rb.audio) / np.linalg.norm(ra.audio) < 0.2
    old = tmp_path / "old"
    shutil.copytree(onnx_dir, old)
    (old / "onnx" / "flow_estimator.int8.onnx").unlink()
    Synthesizer.from_pretrained(old, backend="onnx")  # fp32 needs no int8 file
    with pytest.raises(OnnxDirError, match="no int8 flow_estimator graph.*voxlm export onnx"):
        Synthesizer.from_pretrained(old, backend="onnx-int8")


def test_llm_decode_step_continues_the_prefill_cache(onnx_dir):
    """prefill(S) then decode(1) gives the logits of a full forward over S + 1 tokens; a
    swapped or stale KV cache shows here even where greedy tokens of a weak model agree."""
    t, o = (Synthesizer.from_pretrained(onnx_dir, backend=b).lm for b in ("torch", "onnx"))
    torch.manual_seed(0)
    for s in (3, 12):
        ids = torch.randint(0, t.layout.vocab_size, (2, s + 1))
        with torch.no_grad():
            full = t.model(input_ids=ids).logits[:, -1]
        cache = o.model(ids[:, :s]).cache
        step = o.model(ids[:, s:], cache=cache).logits[:, -1]
        assert torch.allclose(step, full, atol=1e-4), (step - full).abs().max()


def test_real_istft_matches_torch_istft():
    torch.manual_seed(0)
    n_fft, hop, frames = 320, 80, 37
    spec = torch.randn(2, n_fft // 2 + 1, frames, dtype=torch.complex64)
    want = torch.istft(spec, n_fft, hop, n_fft, torch.hann_window(n_fft), center=True, length=frames * hop)
    got = RealISTFT(n_fft, hop)(spec.abs(), spec.angle(), frames * hop)
    assert got.shape == want.shape and (got - want).abs().max() < 1e-4


def test_onnx_backend_synthesises_like_torch(onnx_dir, tone):
    prompt = tone(2.0, 16000, freq=150.0) + 0.01 * np.random.default_rng(1).standard_normal(32000).astype(np.float32)
    kw = dict(prompt_text="a voice", flow_steps=3, min_ratio=0.5, max_ratio=1.0, seed=3, greedy=True)
    a = Synthesizer.from_pretrained(onnx_dir).synthesize("Hi there. Bye.", prompt, 16000, **kw)
    o = Synthesizer.from_pretrained(onnx_dir, backend="onnx")
    b = o.synthesize("Hi there. Bye.", prompt, 16000, **kw)
    assert [c.tokens for c in a.chosen] == [c.tokens for c in b.chosen]
    assert b.audio.dtype == np.float32 and a.audio.shape == b.audio.shape
    assert np.abs(a.audio - b.audio).max() < 1e-3
    r = o.synthesize("Hi there.", prompt, 16000, prompt_text="a voice", n_candidates=3, flow_steps=2, seed=1,
                      prune_to=2, use_speaker_verifier=True)
    assert len(r.candidates) == 3 and r.duration > 0 and np.all(np.isfinite(r.audio))
    assert sum("speaker_similarity" in c.scores for c in r.candidates) == 2
    # the phone verifier (on by default) reads the finalists through the exported phone graph
    assert o.phone_likelihood is not None and sum("phone_likelihood" in c.scores for c in r.candidates) == 2


def test_missing_and_stale_exports_are_refused(onnx_dir, tiny_model_dir, tmp_path):
    with pytest.raises(OnnxDirError, match="no ONNX export.*voxlm export onnx"):
        Synthesizer.from_pretrained(tiny_model_dir, backend="onnx")
    stale = tmp_path / "stale"
    shutil.copytree(onnx_dir, stale)
    flow = FlowModel.from_pretrained(stale / "flow")
    with torch.no_grad():
        flow.token_emb.weight.add_(0.01)
    flow.save_pretrained(stale / "flow")
    with pytest.raises(OnnxDirError, match=r"stale: flow/model.safetensors changed"):
        Synthesizer.from_pretrained(stale, backend="onnx")
    (stale / "onnx" / "vocoder.onnx").unlink()
    with pytest.raises(OnnxDirError, match="lacks vocoder.onnx"):
        check_onnx_dir(stale)


def test_an_encoder_graph_without_the_phone_output_loads_without_the_phone_verifier(onnx_dir, tmp_path):
    """An export of a tokenizer without a phone head still serves: the phone verifier is skipped.
    An export of manifest version 4 (its phone head in a graph of its own) is refused by name."""
    old = tmp_path / "old"
    shutil.copytree(onnx_dir, old)
    manifest = json.loads((old / "onnx" / "manifest.json").read_text())
    manifest["graphs"]["tokenizer_encoder"]["outputs"].remove(PHONE_OUTPUT)
    (old / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    synth = Synthesizer.from_pretrained(old, backend="onnx")
    assert synth.phone_likelihood is None and not synth.tokenizer.has_phone_head
    assert synth.tokenizer.encode(np.zeros(16000, np.float32) + 0.1 * np.sin(np.arange(16000) / 5.0), 16000).size
    manifest["version"] = 4
    (old / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxDirError, match="has version 4"):
        check_onnx_dir(old)


def test_cli_backend_onnx(onnx_dir, tiny_model_dir, tmp_path, tone):
    import soundfile as sf

    sf.write(tmp_path / "p.wav", tone(2.0), 16000)
    args = ["--text", "Hi.", "--prompt", str(tmp_path / "p.wav"), "--prompt-text", "a voice",
            "--out", str(tmp_path / "o.wav"), "--flow-steps", "2", "--backend", "onnx"]
    r = run_cli("synth", "--model", str(onnx_dir), *args)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seconds"] > 0 and "onnxruntime runs on CPUExecutionProvider" in r.stderr
    r = run_cli("synth", "--model", str(tiny_model_dir), *args)
    assert r.returncode == 2 and "error:" in r.stderr and "voxlm export onnx" in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_compares_backends(onnx_dir):
    r = run_cli("bench", "--model", str(onnx_dir), "--backend", "onnx", "--text", "Hi.", "--n-candidates", "1",
                "--repeats", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"tokenizer_encode", "llm_generate", "flow_generate", "vocoder", "speaker_embed"} <= set(out["components"])
    assert all(c["torch_s"] > 0 and c["onnx_s"] > 0 for c in out["components"].values())
    assert out["end_to_end"][0]["n_candidates"] == 1 and out["end_to_end"][0]["speedup"] > 0
    assert out["end_to_end"][0]["int8_speedup"] > 0 and out["components"]["flow_generate"]["onnx_int8_s"] > 0
