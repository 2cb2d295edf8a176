"""egs/libritts/run.sh stages 0-7 on a miniature LibriTTS tree with the tiny configs.

The tree has the corpus's real layout (``<split>/<speaker>/<chapter>/<utt>.wav`` at
24 kHz with ``.normalized.txt`` beside it) for train-clean-100, dev-clean and
test-clean; the audio is flite speech when flite is installed, else harmonic
tones. Only the plumbing is checked: every stage runs, chains into the next and
leaves its outputs at 24 kHz; a rerun is a no-op. Marked slow (a few minutes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tts.audio import load_audio
from tts.datadir import read_table

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "libritts"
SR = 24000
SENTENCES = ["The boy went to the market early in the morning.", "She read the old letter twice.",
             "A cold wind came over the hills.", "They found the key under the stone.",
             "He said nothing for a long time.", "The river ran quickly past the mill.",
             "We will meet again at the station.", "Her voice was soft and clear."]
VOICES = ["kal16", "awb", "rms", "slt"]  # flite voices, one per speaker
SPLITS = {"train-clean-100": ["19", "103", "1034"], "dev-clean": ["84"], "test-clean": ["121", "237"]}



def speak(text: str, voice: int, out: Path, tmp: Path) -> None:
    """24 kHz speech of ``text``: flite when present, else a pitch-per-speaker harmonic tone."""
    if shutil.which("flite"):
        raw = tmp / "flite.wav"
        subprocess.run(["flite", "-voice", VOICES[voice % len(VOICES)], "-t", text, "-o", str(raw)], check=True)
        audio = load_audio(raw, SR, allow_silence=True)
    else:
        t = np.arange(int(0.07 * len(text) * SR)) / SR
        f0 = 100 + 30 * voice + 15 * np.sin(2 * np.pi * 3 * t)
        audio = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 6)).astype(np.float32)
        audio *= 0.3 / np.abs(audio).max()
    sf.write(out, audio, SR)


def make_tree(root: Path) -> None:
    n = 0
    for split, speakers in SPLITS.items():
        for s, spk in enumerate(speakers):
            chapter = str(1000 + s)
            d = root / split / spk / chapter
            d.mkdir(parents=True)
            for i in range(4):
                utt = f"{spk}_{chapter}_{i:06d}_000000"
                text = SENTENCES[(n + i) % len(SENTENCES)]
                speak(text, n, d / f"{utt}.wav", root)
                (d / f"{utt}.normalized.txt").write_text(text + "\n")
                (d / f"{utt}.original.txt").write_text(text + "\n")
            n += 1
    (root / "train-clean-100" / "19" / "1000" / "19_1000_000009_000000.wav").write_bytes(b"")  # no transcript


TINY = ["--train_sets", "train-clean-100", "--tokenizer_conf", "conf/tokenizer_tiny.yaml",
        "--llm_conf", "conf/llm_tiny.yaml", "--flow_conf", "conf/flow_tiny.yaml",
        "--vocoder_conf", "conf/vocoder_tiny.yaml", "--llm_report_utts", "2", "--vocoder_report_utts", "2",
        "--flow_report_utts", "2", "--speaker_steps", "20", "--n_candidates", "2", "--eval_per_speaker", "1",
        "--nj", "1"]


def run(tmp: Path) -> subprocess.CompletedProcess:
    cmd = ["bash", str(RECIPE / "run.sh"), "--libritts_root", str(tmp / "LibriTTS_R"),
           "--data", str(tmp / "data"), "--exp", str(tmp / "exp"), *TINY]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


@pytest.mark.parametrize("name", sorted(p.name for p in (RECIPE / "conf").glob("*.yaml")))
def test_every_libritts_config_loads(name):
    from flow.train import FlowTrainConfig
    from tokenizer.config import load_config as tokenizer_config
    from tts.llm_train import load_config as llm_config
    from vocoder.train import load_config as vocoder_config

    loaders = {"tokenizer": tokenizer_config, "llm": llm_config, "flow": FlowTrainConfig.from_yaml,
               "vocoder": vocoder_config}
    cfg = loaders[name.removesuffix(".yaml").removesuffix("_tiny")](RECIPE / "conf" / name)
    if name.startswith("flow"):
        cfg.model.validate()
        assert cfg.model.mel == "24k"
    if name.startswith("vocoder"):
        cfg.model.validate()
        assert cfg.mel_preset == "24k"


@pytest.mark.slow
def test_libritts_recipe_stages_0_to_7(tmp_path):
    make_tree(tmp_path / "LibriTTS_R")
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr[-5000:]
    data, exp = tmp_path / "data", tmp_path / "exp"
    card = json.loads((data / "corpus_card.json").read_text())
    assert card["train"]["speakers"] == 3 and card["train"]["utterances"] == 12
    assert card["train"]["skipped"]["no_transcript"] == 1
    assert card["test"]["speakers"] == 2
    utt2spk = read_table(data / "train" / "utt2spk")
    assert all(u.startswith(f"{s}-") for u, s in utt2spk.items())
    assert read_table(data / "train" / "text")["19-1000_000000_000000"] == SENTENCES[0]
    for split in ("train", "dev", "test"):
        assert (data / split / "tokens").is_file()  # stage 2
    mel = np.load(next((data / "train").glob("mel_*/*.npy")))
    assert mel.shape[0] == 100  # the 24 kHz mel: 100 bins
    for part in ("tokenizer", "llm", "flow", "vocoder", "speaker"):
        assert (exp / "model" / part / "model.safetensors").is_file()  # stage 6
    assert json.loads((exp / "model" / "voxlm.json").read_text())["sample_rate"] == SR
    onnx = json.loads((exp / "model" / "onnx" / "report.json").read_text())  # stage 6's export (onnx_export
    assert onnx["graphs"] and (exp / "model" / "onnx" / "vocoder.onnx").is_file()  # on): this test covers it
    report = json.loads((exp / "eval" / "summary.json").read_text())
    assert report["voxlm_n2"]["utterances"] == report["ground_truth"]["utterances"] > 0
    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("skip:") >= 8
