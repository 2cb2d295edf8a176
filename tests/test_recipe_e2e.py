"""The whole toy recipe, stages 0-7, at a tiny size: every stage runs, chains into the
next and leaves its outputs; a rerun is a no-op. Marked slow (a few minutes)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "synth_en"
TOOLS = ("flite", "text2wave", "sox")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS)
                       or not Path("/usr/share/games/fortunes").is_dir(),
                       reason="needs flite, festival, sox and fortunes"),
]

TINY = ["--train_hours", "0.01", "--dev_per_spk", "2", "--test_per_spk", "2", "--timbre_per_spk", "1",
        "--tokenizer_conf", "conf/tokenizer_tiny.yaml", "--tokenizer_ft_conf", "conf/tokenizer_tiny.yaml",
        "--llm_conf", "conf/llm_tiny.yaml", "--llm_align_conf", "none",
        "--flow_conf", "conf/flow_tiny.yaml", "--flow_ft_conf", "conf/flow_tiny.yaml", "--vocoder_conf", "conf/vocoder_tiny.yaml",
        "--vocoder_gan_conf", "conf/vocoder_tiny.yaml",
        "--llm_report_utts", "2", "--vocoder_report_utts", "2", "--flow_report_utts", "2", "--speaker_steps", "20",
        "--n_candidates", "2", "--eval_per_speaker", "1",
        "--flow_ft_steps", "12",  # a phase's schedule set from the recipe (conf/fast.sh does it)
        "--onnx_export", "false"]  # the export stage runs in the LibriTTS recipe's test (and test_onnx)


def run(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = ["bash", str(RECIPE / "run.sh"), "--data", str(tmp / "data"), "--exp", str(tmp / "exp"), *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


def test_recipe_stages_0_to_7(tmp_path):
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    data, exp = tmp_path / "data", tmp_path / "exp"
    card = json.loads((data / "corpus_card.json").read_text())
    assert card["splits"]["timbre"]["speakers"] == 40  # stage 0 wrote its card, the flow's timbre split too
    for split in ("train", "dev", "test", "timbre"):
        assert (data / split / "tokens").is_file()  # stage 2
    for part in ("tokenizer", "llm", "flow", "vocoder", "speaker"):
        assert (exp / "model" / part / "model.safetensors").is_file()  # stage 6 packaged it
    assert not (exp / "model" / "onnx").exists()  # --onnx_export false
    tok = (exp / "model" / "tokenizer" / "model.safetensors").read_bytes()  # the fine-tuning phase's,
    assert tok == (exp / "tokenizer_ft" / "model" / "model.safetensors").read_bytes()  # started from stage 1's
    assert (exp / "tokenizer" / "model").is_dir() and (exp / "tokenizer_ft" / "report.json").is_file()
    packaged = (exp / "model" / "vocoder" / "model.safetensors").read_bytes()  # the GAN phase's generator,
    assert packaged == (exp / "vocoder_gan" / "model" / "model.safetensors").read_bytes()  # started from
    assert (exp / "vocoder" / "model").is_dir() and (exp / "vocoder_gan" / "report.json").is_file()  # phase 1
    voc = json.loads((exp / "vocoder_gan" / "report.json").read_text())
    paired = voc["vocoder_minus_griffinlim_wer"]  # per-utterance pairs, one line each beside the report
    assert paired["better"] + paired["worse"] + paired["equal"] == voc["utterances"] == 2
    assert len((exp / "vocoder_gan" / "report_utts.jsonl").read_text().splitlines()) == 2
    packaged = (exp / "model" / "flow" / "model.safetensors").read_bytes()  # the second phase's flow (on train
    assert packaged == (exp / "flow_ft" / "model" / "model.safetensors").read_bytes()  # + timbre), from phase 1
    assert (exp / "flow" / "model").is_dir()
    steps = {d: torch.load(exp / d / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
             for d in ("flow", "flow_ft")}
    assert steps == {"flow": 20, "flow_ft": 12}  # flow_tiny.yaml's max_steps, and --flow_ft_steps
    flow = json.loads((exp / "flow_ft" / "report" / "report.json").read_text())
    paired = flow["chunked_minus_offline_wer"]  # the streaming cost (chunks + lookahead), per utterance
    assert paired["better"] + paired["worse"] + paired["equal"] == flow["utterances"] and flow["lookahead"] == 4
    for name in ("stage5_speaker", "stage4"):  # parallel=true (the default): side by side, logged apart
        assert (exp / "logs" / f"{name}.log").is_file()
    report = json.loads((exp / "eval" / "summary.json").read_text())
    assert set(report) == {"ground_truth", "voxlm_n1", "voxlm_n2"}  # N=1 and N=--n_candidates
    assert report["voxlm_n2"]["utterances"] == report["ground_truth"]["utterances"] > 0
    assert 0.0 <= report["ground_truth"]["wer"] <= 1.0
    utts = [json.loads(line) for line in (exp / "eval" / "utts.jsonl").read_text().splitlines()]
    assert {u["system"] for u in utts} == set(report)
    assert all(len(u["candidates"]) == 2 for u in utts if u["system"] == "voxlm_n2")
    assert list((exp / "eval" / "png").glob("*.png"))
    from tts.compare import compare  # the reports' own files are what voxlm compare pairs
    n8 = compare([str(exp / "eval")], systems=("voxlm_n2", "voxlm_n1"))["result"]
    assert {"wer", "sim"} <= set(n8) and n8["wer"]["voxlm_n1"] == pytest.approx(report["voxlm_n1"]["wer"])
    chunk = compare([str(exp / "flow_ft" / "report")], systems=("flow_chunked", "flow"))["result"]
    assert chunk["wer"]["diff"] == pytest.approx(paired["wer_diff_mean"])
    assert {"mel_l1", "sim_to_real", "sim_to_prompt"} <= set(chunk)
    assert compare([str(exp / "vocoder_gan" / "report.json")])["result"]["vocoder"]["wer"]["utterances"] == 2
    # every stage left its sentinel: a rerun skips them all
    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    for done in ("data/.stage0.done", "tokenizer/.stage1.done", "tokenizer/.stage2.done", "llm/.stage3.done",
                 "flow_ft/report/.done", "model/.stage6.done", "eval/.stage7.done"):  # the background stages
        assert f"{done} exists" in again.stderr, done  # (5, 4, the speaker) log theirs in exp/logs:
    assert "flow/.stage4.done exists" in (exp / "logs" / "stage4.log").read_text()
    bg = (exp / "logs" / "stage5_speaker.log").read_text()
    assert "vocoder/.stage5.done exists" in bg and "speaker/.done exists" in bg
