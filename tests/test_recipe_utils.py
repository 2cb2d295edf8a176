"""The shell helpers every recipe uses: option parsing, run_once sentinels, data-dir validation."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tts.datadir import DataDirError, read_int_table, validate_data_dir, write_table

ROOT = Path(__file__).resolve().parents[1]


def bash(script: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "recipe", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT)


OPTS = (
    "set -euo pipefail; stage=0; stop_stage=7; nj=2; train_hours=3.0; recipe_options='stage nj';"
    f" . {ROOT}/recipes/parse_options.sh;"
    ' echo "$stage $stop_stage $nj $train_hours $#:$*"'
)


def test_options_override_variables():
    r = bash(OPTS, "--stage", "2", "--stop-stage=4", "--nj", "8", "--train_hours", "0.5", "pos")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2 4 8 0.5 1:pos"


def test_unknown_option_and_missing_value_fail():
    r = bash(OPTS, "--stagee", "2")
    assert r.returncode != 0 and "unknown option --stagee" in r.stderr
    r = bash(OPTS, "--nj")
    assert r.returncode != 0 and "needs a value" in r.stderr


def test_config_file_then_later_options_win(tmp_path):
    conf = tmp_path / "opts.sh"
    conf.write_text("nj=16\nstage=3\n")
    r = bash(OPTS, "--config", str(conf), "--stage", "5")
    assert r.stdout.strip() == "5 7 16 3.0 0:"
    r = bash(OPTS, "--config", str(tmp_path / "missing.sh"))
    assert r.returncode != 0 and "config file not found" in r.stderr


def test_help_lists_options():
    r = bash(OPTS, "--help")
    assert r.returncode == 0 and "--stage 0" in r.stdout and "--nj 2" in r.stdout


def test_stage_enabled_and_run_once(tmp_path):
    script = (
        f"set -euo pipefail; stage=1; stop_stage=2; . {ROOT}/recipes/utils.sh;"
        " for s in 0 1 2 3; do stage_enabled $s && echo on$s; done;"
        f" run_once {tmp_path}/s.done bash -c 'echo ran >> {tmp_path}/count';"
        f" run_once {tmp_path}/s.done bash -c 'echo ran >> {tmp_path}/count'"
    )
    r = bash(script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["on1", "on2"]
    assert (tmp_path / "count").read_text() == "ran\n"  # the second call was skipped
    assert "skip:" in r.stderr
    # a failing command leaves no sentinel, so a rerun retries it
    r = bash(f". {ROOT}/recipes/utils.sh; set -e; run_once {tmp_path}/f.done false")
    assert r.returncode != 0 and not (tmp_path / "f.done").exists()


def make_data_dir(root: Path, n_spk=2, n_utt=2) -> Path:
    d = root / "data"
    d.mkdir()
    wavs, texts, u2s = {}, {}, {}
    for s in range(n_spk):
        for u in range(n_utt):
            utt = f"spk{s}-utt{u}"
            path = root / f"{utt}.wav"
            sf.write(path, np.full(1600, 0.1, np.float32), 16000)
            wavs[utt], texts[utt], u2s[utt] = str(path), f"hello number {u}", f"spk{s}"
    write_table(d / "wav.scp", wavs)
    write_table(d / "text", texts)
    write_table(d / "utt2spk", u2s)
    write_table(d / "spk2utt", {f"spk{s}": " ".join(f"spk{s}-utt{u}" for u in range(n_utt)) for s in range(n_spk)})
    return d


def test_valid_data_dir_summary(tmp_path):
    summary = validate_data_dir(make_data_dir(tmp_path))
    assert summary["utterances"] == 4 and summary["speakers"] == 2
    assert summary["hours"] == pytest.approx(4 * 0.1 / 3600)


def _edit(path: Path, fn):
    path.write_text(fn(path.read_text()))


@pytest.mark.parametrize("breakage, match", [
    (lambda d: (d / "text").unlink(), "missing text"),
    (lambda d: _edit(d / "text", lambda t: "\n".join(reversed(t.splitlines())) + "\n"), "not sorted"),
    (lambda d: _edit(d / "text", lambda t: t.replace("spk1-utt1 hello number 1\n", "")), "text and wav.scp differ"),
    (lambda d: _edit(d / "utt2spk", lambda t: t + "spk1-utt9 spk1\n"), "utt2spk and wav.scp differ"),
    (lambda d: _edit(d / "text", lambda t: t.replace("spk0-utt0 hello number 0", "spk0-utt0 ")), "empty transcript"),
    (lambda d: _edit(d / "utt2spk", lambda t: t.replace("spk0-utt1 spk0", "spk0-utt1 spk1")), "does not start with its speaker"),
    (lambda d: _edit(d / "spk2utt", lambda t: t.replace(" spk0-utt1", "")), "not the inverse"),
    (lambda d: _edit(d / "wav.scp", lambda t: t.replace("spk0-utt0.wav", "gone.wav")), "unreadable audio"),
    (lambda d: _edit(d / "text", lambda t: t + "spk1-utt1 again\n"), "duplicate key|not sorted"),
])
def test_validator_catches_each_inconsistency(tmp_path, breakage, match):
    d = make_data_dir(tmp_path)
    breakage(d)
    with pytest.raises(DataDirError, match=match):
        validate_data_dir(d)


def test_validator_cli(tmp_path):
    d = make_data_dir(tmp_path)
    import sys
    ok = subprocess.run([sys.executable, "-m", "tts.datadir", str(d)], capture_output=True, text=True)
    assert ok.returncode == 0 and '"utterances": 4' in ok.stdout
    (d / "spk2utt").unlink()
    bad = subprocess.run([sys.executable, "-m", "tts.datadir", str(d)], capture_output=True, text=True)
    assert bad.returncode == 1 and "missing spk2utt" in bad.stdout


def run_stages_dry(tmp_path: Path, init_model: str, flow_extra_data: str = "", flow_ft_conf: str = "none",
                   settings: str = "") -> list[str]:
    """recipes/stages.sh's run_stages, every python command (py, launch) logged instead of run;
    settings: more shell assignments before it (e.g. "flow_ft_threads=2;")."""
    for flow in ("flow", "flow_ft"):
        (tmp_path / "exp" / flow / "report").mkdir(parents=True, exist_ok=True)
        (tmp_path / "exp" / flow / "report" / "report.md").write_text("")  # what the reports print
    (tmp_path / "exp" / "eval").mkdir(parents=True, exist_ok=True)
    (tmp_path / "exp" / "eval" / "summary.md").write_text("")
    script = (
        f"set -euo pipefail; . {ROOT}/recipes/utils.sh; . {ROOT}/recipes/stages.sh;"
        f" py() {{ echo \"$*\" >> {tmp_path}/calls; }}; launch() {{ py \"$@\"; }}; stage0() {{ :; }};"
        f" stage=0; stop_stage=7; nj=1; data={tmp_path}/data; exp={tmp_path}/exp; stage0_desc=none;"
        " mel_preset=16k; ngpu=0; num_nodes=1; launcher=''; tokenizer_conf=tok.yaml; tokenizer_ft_conf=ft.yaml;"
        " llm_conf=llm.yaml; llm_align_conf=none; flow_conf=flow.yaml; vocoder_conf=voc.yaml;"
        " vocoder_gan_conf=gan.yaml; llm_report_utts=1; vocoder_report_utts=1; flow_report_utts=1;"
        f" speaker_steps=1; n_candidates=2; eval_per_speaker=1; onnx_export=false; init_model='{init_model}';"
        f" flow_extra_data='{flow_extra_data}'; flow_ft_conf={flow_ft_conf}; {settings} run_stages"
    )
    r = bash(script)
    assert r.returncode == 0, r.stderr
    return (tmp_path / "calls").read_text().splitlines()


def test_fine_tuning_a_packaged_model_wires_its_parts(tmp_path):
    """init_model: no tokenizer or speaker-verifier training, the model's tokenizer throughout,
    its LLM, flow and vocoder as starting points, its verifier packaged, nothing written into it."""
    init = tmp_path / "init"
    calls = run_stages_dry(tmp_path / "ft", str(init))
    exp = tmp_path / "ft" / "exp"
    assert calls[0] == f"-m tts.model_dir --check {init} --mel-preset 16k"  # refuses a broken or other-mel model
    assert not [c for c in calls if "tokenizer.train" in c or "tts.speaker_train" in c]
    called = {c.split()[1]: c for c in calls}  # module -> its last call
    assert f"--tokenizer {init}/tokenizer" in called["tts.llm_train"]
    assert f"--init-from {init}/llm" in called["tts.llm_train"]
    assert f"--init {init}/flow" in called["flow.train"]
    voc = [c for c in calls if c.startswith("-m vocoder.train")]
    assert f"--init {init}/vocoder" in voc[0] and f"--init {exp}/vocoder/model" in voc[1]  # then the GAN phase
    assert f"--out {exp}/tokenizer/report.json" in called["tokenizer.report"]
    assert f"--speaker {init}/speaker" in called["tts.model_dir"] and f"--out {exp}/model" in called["tts.model_dir"]
    assert not any(f"--out {init}" in c for c in calls)
    plain = run_stages_dry(tmp_path / "plain", "")  # without it: every part trains from scratch
    assert sum("tokenizer.train" in c for c in plain) == 2 and any("tts.speaker_train" in c for c in plain)
    first = {}
    for c in plain:
        first.setdefault(c.split()[1], c)
    assert not any("--init" in first[m] for m in ("tts.llm_train", "flow.train", "vocoder.train"))


def threads_of(*calls: str) -> list[str]:
    """The --threads value of each logged command."""
    return [c.split()[c.split().index("--threads") + 1] for c in calls]


def test_flow_extra_data_gets_tokens_and_trains_only_the_flow(tmp_path):
    """flow_extra_data: stage 2 extracts its tokens and only the flow trains on it, beside train: in its
    one phase, or with flow_ft_conf in the second one (from the first's model), which is then packaged."""
    more = f"{tmp_path}/more/timbre"
    data, exp = f"{tmp_path}/one/data", f"{tmp_path}/one/exp"
    calls = run_stages_dry(tmp_path / "one", "", flow_extra_data=more)
    (extract,) = [c for c in calls if c.startswith("-m tokenizer.extract")]
    assert extract.endswith(f"--data {data}/train {data}/dev {data}/test {more}")
    (flow,) = [c for c in calls if c.startswith("-m flow.train")]
    assert f"--train {data}/train {more} --dev {data}/dev" in flow
    assert not [c for c in calls if more in c and c.split()[1] not in ("tokenizer.extract", "flow.train")]
    data, exp = f"{tmp_path}/two/data", f"{tmp_path}/two/exp"
    calls = run_stages_dry(tmp_path / "two", "", flow_extra_data=more, flow_ft_conf="ft.yaml")
    first, second = [c for c in calls if c.startswith("-m flow.train")]
    assert threads_of(first, second) == ["1", "1"]  # flow_ft_threads unset: one thread each
    assert f"--train {data}/train --dev" in first and more not in first and f"--exp {exp}/flow " in first
    assert f"--config ft.yaml --init {exp}/flow/model --train {data}/train {more} --dev" in second
    called = {c.split()[1]: c for c in calls}
    assert f"--flow {exp}/flow_ft/model" in called["tts.model_dir"]
    assert f"--model {exp}/flow_ft/model" in called["flow.report"] and f"--out {exp}/flow_ft/report" in called["flow.report"]
    calls = run_stages_dry(tmp_path / "three", "", flow_extra_data=more, flow_ft_conf="ft.yaml", settings="flow_ft_threads=2;")
    assert threads_of(*[c for c in calls if c.startswith("-m flow.train")]) == ["1", "2"]  # the second phase runs alone


def test_flow_procs_hands_the_flow_over_to_processes_once_alone(tmp_path):
    """parallel=true, flow_procs=2: the first phase trains at one thread until the jobs beside it are
    done, then resumes in two one-thread DDP processes that split its batches; the second phase runs
    so from the start. flow_procs=1: one process, flow_ft_threads threads once alone."""
    exp = f"{tmp_path}/a/exp"
    calls = run_stages_dry(tmp_path / "a", "", flow_extra_data=f"{tmp_path}/more", flow_ft_conf="ft.yaml",
                           settings="parallel=true; flow_procs=2; flow_ft_threads=2;")
    first, resumed, second = [c.split() for c in calls if c.startswith("-m flow.train")]
    beside = [f"{exp}/llm/.stage3.done", f"{exp}/vocoder/.stage5.done", f"{exp}/speaker/.done"]
    ddp = ["--threads", "1", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--split-batches"]
    assert first[-6:] == ["--threads", "1", "--stop-when-done", *beside]
    assert resumed == first[:-6] + ddp  # the same run (its --exp, config and steps), resumed
    assert second[second.index("--exp") + 1] == f"{exp}/flow_ft" and " ".join(ddp) in " ".join(second)
    calls = run_stages_dry(tmp_path / "b", "", settings="parallel=true; flow_procs=1; flow_ft_threads=2;")
    (only,) = [c for c in calls if c.startswith("-m flow.train")]
    assert only.endswith("--threads 1 --threads-when-done 2 " + " ".join(b.replace("/a/", "/b/") for b in beside))
    assert "--devices" not in only


def test_phase_steps_reach_their_trainer_only(tmp_path):
    """<phase>_steps passes --max-steps to that phase's trainer (its LR schedule follows); unset, the
    config's trainer.max_steps stands."""
    settings = "tokenizer_steps=11; llm_steps=12; flow_steps=13; flow_ft_steps=14; vocoder_steps=15; vocoder_gan_steps=16;"

    def steps(calls):  # the trainer's --exp dir -> its --max-steps (None: not given)
        out = {}
        for c in (c.split() for c in calls):
            if c[1].endswith("train") and c[1] != "tts.speaker_train":
                out[Path(c[c.index("--exp") + 1]).name] = c[c.index("--max-steps") + 1] if "--max-steps" in c else None
        return out

    assert steps(run_stages_dry(tmp_path / "a", "", flow_ft_conf="ft.yaml", settings=settings)) == {
        "tokenizer": "11", "tokenizer_ft": None, "llm": "12", "flow": "13", "flow_ft": "14",
        "vocoder": "15", "vocoder_gan": "16"}
    assert set(steps(run_stages_dry(tmp_path / "b", "", flow_ft_conf="ft.yaml")).values()) == {None}


@pytest.mark.parametrize("conf", ["fast.sh", "medium.sh"])
def test_shorter_configs_set_only_recipe_options(conf):
    """conf/fast.sh and conf/medium.sh are sourced, not parsed: a misspelt name there would pass
    silently, so check each against the recipe's options, and that --help shows its values."""
    recipe = ROOT / "egs" / "synth_en"
    names = re.findall(r"^(\w+)=(\S+)", (recipe / "conf" / conf).read_text(), re.M)
    assert len(names) > 10
    r = subprocess.run(["bash", "run.sh", "--config", f"conf/{conf}", "--help"], capture_output=True, text=True,
                       cwd=recipe)
    assert r.returncode == 0, r.stderr
    shown = dict(line.split(maxsplit=1) for line in r.stdout.splitlines()[2:] if len(line.split()) == 2)
    assert {f"--{k}": v for k, v in names}.items() <= shown.items()


@pytest.mark.parametrize("row, match", [("u2 1 x 3", "u2: values must be integers"), ("u2", "u2: no values")])
def test_int_table_names_the_bad_row(tmp_path, row, match):
    (tmp_path / "tokens").write_text(f"u1 3 4 5\n{row}\n")
    with pytest.raises(DataDirError, match=match):
        read_int_table(tmp_path / "tokens")
    (tmp_path / "tokens").write_text("u1 3 4 5\nu2 0\n")
    assert read_int_table(tmp_path / "tokens") == {"u1": [3, 4, 5], "u2": [0]}


@pytest.mark.parametrize("recipe", ["synth_en", "libritts"])
def test_flow_and_vocoder_configs_use_the_recipes_mel(recipe):
    """Every flow and vocoder config of a recipe frames audio with its run.sh mel_preset
    (a disagreement would only surface at stage 6, after hours of training)."""
    import re

    import yaml

    from flow.config import FlowConfig
    from vocoder.train import TrainConfig

    egs = ROOT / "egs" / recipe
    preset = re.search(r"^mel_preset=(\S+)", (egs / "run.sh").read_text(), re.M).group(1)
    for conf in sorted((egs / "conf").glob("flow*.yaml")):
        assert yaml.safe_load(conf.read_text())["model"].get("mel", FlowConfig.mel) == preset, conf.name
    for conf in sorted((egs / "conf").glob("vocoder*.yaml")):
        assert yaml.safe_load(conf.read_text()).get("mel_preset", TrainConfig.mel_preset) == preset, conf.name
