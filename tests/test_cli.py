import json
import subprocess
import sys

import numpy as np
from helpers import run_cli

from tts.cli import main
from tts.version import __version__


def test_version_and_help():
    r = subprocess.run([sys.executable, "-m", "tts.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"voxlm {__version__}"
    r = subprocess.run([sys.executable, "-m", "tts.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "info" in r.stdout


def test_info_reports_versions_and_device(capsys):
    assert main(["info", "--compact"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["voxlm"] == __version__
    assert info["device"] in ("cpu", "cuda") and info["torch_threads"] >= 1
    assert info["packages"]["torch"].startswith("2.")


def test_synth_writes_wav_and_reports_candidates(tiny_model_dir, tmp_path, tone):
    import soundfile as sf

    sf.write(tmp_path / "prompt.wav", tone(2.0, 24000), 24000)
    out = tmp_path / "out.wav"
    r = run_cli("synth", "--model", str(tiny_model_dir), "--text", "Hi there.", "--prompt",
                str(tmp_path / "prompt.wav"), "--prompt-text", "a voice", "--out", str(out),
                "--n-candidates", "3", "--prune-to", "2", "--audio-verifier", "--flow-steps", "2")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    audio, sr = sf.read(out)
    assert sr == 16000 and abs(len(audio) / sr - report["seconds"]) < 1e-3
    assert len(report["candidates"]) == 3 and sum(c["chosen"] for c in report["candidates"]) == 1
    heard = [c for c in report["candidates"] if "audio_intelligibility" in c["scores"]]
    assert len(heard) == 2 and report["candidates"][0] in heard  # --prune-to 2 vocoded and read


def test_cli_bad_input_is_one_clear_line(tiny_model_dir, tmp_path):
    r = run_cli("synth", "--model", str(tiny_model_dir), "--text", "   ", "--prompt", str(tmp_path / "x.wav"),
                "--out", str(tmp_path / "o.wav"))
    assert r.returncode == 2 and "error: text is empty" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("synth", "--model", str(tiny_model_dir), "--text", "Hi.", "--prompt", str(tmp_path / "x.wav"),
                "--out", str(tmp_path / "o.wav"))
    assert r.returncode == 2 and "audio file not found" in r.stderr
    r = run_cli("synth", "--model", str(tmp_path), "--text", "Hi.", "--prompt", "x.wav", "--out", "o.wav")
    assert r.returncode == 2 and "not a VoxLM model directory" in r.stderr


def test_bench_prints_rtf_json(tiny_model_dir):
    r = run_cli("bench", "--model", str(tiny_model_dir), "--text", "Hi.", "--n-candidates", "1", "2",
                "--repeats", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    runs = out["runs"]
    assert [x["n_candidates"] for x in runs] == [1, 2] and all(x["rtf"] > 0 for x in runs)
    for x in runs:  # every component timed; together they cannot exceed the end-to-end RTF
        parts = x["component_rtf"]
        assert {"llm", "token_verifier", "flow", "vocoder"} <= set(parts) and all(v > 0 for v in parts.values())
        assert sum(parts.values()) <= x["rtf"] * 1.001
    # the default search: the phone verifier ranks the vocoded finalists (none at N=1)
    assert out["search"] == {"prune_to": 4, "phone_verifier": True, "audio_verifier": False,
                             "use_speaker_verifier": False, "verifiers": []}
    assert "phone_verifier" in runs[1]["component_rtf"] and "phone_verifier" not in runs[0]["component_rtf"]
    assert not {"speaker_verifier", "audio_verifier"} & (set(runs[0]["component_rtf"]) | set(runs[1]["component_rtf"]))
    r = run_cli("bench", "--model", str(tiny_model_dir), "--text", "Hi.", "--n-candidates", "1", "2",
                "--repeats", "1", "--prune-to", "2", "--no-phone-verifier", "--speaker-verifier")
    runs = json.loads(r.stdout)["runs"]
    assert "speaker_verifier" in runs[1]["component_rtf"] and "speaker_verifier" not in runs[0]["component_rtf"]
    assert "phone_verifier" not in runs[1]["component_rtf"]
    assert runs[0]["cost_vs_first"] == 1.0 and runs[1]["cost_vs_first"] > 0
    assert out["peak_rss_mb"] > 50  # torch alone takes more


def test_synth_batch_from_meta_list(tiny_model_dir, tmp_path, tone):
    import soundfile as sf

    (tmp_path / "voices").mkdir()
    sf.write(tmp_path / "voices" / "p.wav", tone(2.0, 16000), 16000)
    meta = tmp_path / "meta.lst"  # prompt paths are relative to the list
    meta.write_text("u1|a voice|voices/p.wav|Hi there.\nu2||voices/p.wav|Good morning.\nu3|a voice|voices/p.wav|...\n"
                    "u4|a voice|voices/gone.wav|Hello.\n")  # u3, u4: one batch with u1, u2
    out = tmp_path / "out"
    r = run_cli("synth", "--model", str(tiny_model_dir), "--meta", str(meta), "--out-dir", str(out),
                "--flow-steps", "2")
    assert r.returncode == 2, r.stderr  # u3 has nothing to say: reported, skipped, no file
    assert "u3: error: nothing speakable" in r.stderr and "Traceback" not in r.stderr
    assert "u4: error: audio file not found" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["failed"] == ["u3", "u4"]
    assert sorted(p.name for p in out.iterdir()) == ["u1.wav", "u2.wav"]
    assert all(sf.info(out / f"u{i}.wav").duration > 0 for i in (1, 2))
    # each line is seeded by --seed + a hash of its utt id: a twin line draws other noise, and a
    # line is what `voxlm synth --seed case_seed(...)` makes of it alone
    from tts.evaluate import case_seed

    meta.write_text("u1|a voice|voices/p.wav|Hi there.\ntwin|a voice|voices/p.wav|Hi there.\n")
    r = run_cli("synth", "--model", str(tiny_model_dir), "--meta", str(meta), "--out-dir", str(tmp_path / "o2"),
                "--flow-steps", "2")
    assert r.returncode == 0, r.stderr
    u1, twin = (sf.read(tmp_path / "o2" / f"{u}.wav")[0] for u in ("u1", "twin"))
    assert not (len(u1) == len(twin) and np.allclose(u1, twin))
    np.testing.assert_array_equal(u1, sf.read(out / "u1.wav")[0])  # the same whatever else the list holds
    r = run_cli("synth", "--model", str(tiny_model_dir), "--text", "Hi there.", "--prompt",
                str(tmp_path / "voices" / "p.wav"), "--prompt-text", "a voice", "--out", str(tmp_path / "one.wav"),
                "--flow-steps", "2", "--seed", str(case_seed(0, "u1")))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(u1, sf.read(tmp_path / "one.wav")[0])
    r = run_cli("synth", "--model", str(tiny_model_dir), "--meta", str(meta), "--text", "Hi.")
    assert r.returncode == 2 and "--meta and --out-dir" in r.stderr


def test_sampling_options_and_threads_reach_the_synthesizer(tiny_model_dir, tmp_path, tone, monkeypatch):
    import soundfile as sf
    import torch

    from tts.synthesizer import Synthesizer

    seen, real = [], Synthesizer.synthesize

    def spy(self, *args, **kw):
        seen.append({**kw, "threads": torch.get_num_threads()})
        return real(self, *args, **kw)

    monkeypatch.setattr(Synthesizer, "synthesize", spy)
    r = run_cli("bench", "--model", str(tiny_model_dir), "--text", "Hi.", "--n-candidates", "1", "--repeats", "1",
                "--flow-steps", "2", "--top-k", "5")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["options"] == {"flow_steps": 2, "top_k": 5}
    assert len(seen) == 2 and all(kw["flow_steps"] == 2 and kw["top_k"] == 5 for kw in seen)  # warm-up + 1
    sf.write(tmp_path / "p.wav", tone(2.0), 16000)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = run_cli("synth", "--model", str(tiny_model_dir), "--text", "Hi.", "--prompt", str(tmp_path / "p.wav"),
                    "--prompt-text", "a voice", "--out", str(tmp_path / "o.wav"), "--threads", "1",
                    "--temperature", "0.5", "--flow-steps", "2")
    finally:
        torch.set_num_threads(before)
    assert r.returncode == 0, r.stderr
    assert seen[-1]["threads"] == 1 and seen[-1]["temperature"] == 0.5 and "top_k" not in seen[-1]
    # the search's defaults (tts.verifiers), and the flags that set each part
    assert (seen[-1]["prune_to"], seen[-1]["phone_verifier"], seen[-1]["audio_verifier"],
            seen[-1]["use_speaker_verifier"]) == (4, True, False, False)
    r = run_cli("synth", "--model", str(tiny_model_dir), "--text", "Hi.", "--prompt", str(tmp_path / "p.wav"),
                "--prompt-text", "a voice", "--out", str(tmp_path / "o.wav"), "--flow-steps", "2",
                "--prune-to", "3", "--audio-verifier", "--speaker-verifier", "--no-phone-verifier")
    assert r.returncode == 0, r.stderr
    assert (seen[-1]["prune_to"], seen[-1]["phone_verifier"], seen[-1]["audio_verifier"],
            seen[-1]["use_speaker_verifier"]) == (3, False, True, True)


def test_thread_and_judge_counts_must_be_positive(tiny_model_dir, tmp_path):
    for opt in (["--threads", "0"], ["--judge-jobs", "-1"], ["--judge-jobs", "two"]):
        r = run_cli("eval", "--model", str(tiny_model_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o"), *opt)
        assert r.returncode == 2 and "expected a positive integer" in r.stderr, opt
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_eval_jobs_make_the_audio_of_one_process(tiny_model_dir, tmp_path, tone):
    """`voxlm eval --jobs 2`: whole batches dealt out to two one-thread processes give the same
    files, candidates and audio seconds as one process at one thread."""
    import argparse

    import soundfile as sf
    import torch

    from tts.cli import synthesize_in_jobs, synthesize_into
    from tts.evaluate import read_meta
    from tts.synthesizer import Synthesizer

    for v, f in (("a", 180.0), ("b", 260.0)):
        sf.write(tmp_path / f"{v}.wav", tone(1.5, 16000, freq=f), 16000)
    texts = ["Hi there.", "Good morning to you.", "One two three.", "A cat sat.", "It rains."]
    meta = tmp_path / "meta.lst"
    meta.write_text("".join(f"u{i}|a voice|{'ab'[i % 2]}.wav|{texts[i % 5]}\n" for i in range(11)))
    cases = read_meta(meta)
    kwargs = {"n_candidates": 2, "seed": 3, "flow_steps": 2, "verifiers": []}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = synthesize_into(Synthesizer.from_pretrained(tiny_model_dir), cases, kwargs, tmp_path / "one", "one")
    finally:
        torch.set_num_threads(threads)
    args = argparse.Namespace(jobs=2, model=str(tiny_model_dir), backend="torch", verifier=[])
    two = synthesize_in_jobs(args, cases, kwargs, tmp_path / "two", "two")
    assert one[0] > 0 and abs(two[0] - one[0]) < 1e-6 and two[2] == one[2] and len(one[2]) == 11
    for c in cases:
        assert np.array_equal(sf.read(tmp_path / "one" / f"{c.utt}.wav")[0], sf.read(tmp_path / "two" / f"{c.utt}.wav")[0])
