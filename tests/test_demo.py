"""The gradio demo, served by `voxlm demo` on loopback with the tiny model, driven three ways:
headless Chromium (Debian's `chromium` + the playwright driver), gradio_client, and 8
simultaneous clients. The screenshot lands in tests/artifacts/ (gitignored)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ARTIFACTS = Path(__file__).parent / "artifacts"
START_TIMEOUT_S = 300  # imports + model load on a busy 2-core machine
REQUEST_TIMEOUT_S = 240

gradio_client = pytest.importorskip("gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _voice(seconds: float = 3.0, sr: int = 16000, f0: float = 120.0, amp: float = 0.3) -> np.ndarray:
    """A buzzy, syllable-rate modulated harmonic tone: enough of a 'voice' for the tiny model."""
    t = np.arange(int(seconds * sr)) / sr
    buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)
    return (amp * buzz / np.abs(buzz).max() * env).astype(np.float32)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("demo_wavs")
    out = {"voice": d / "voice.wav", "silent": d / "silent.wav", "long": d / "long.wav"}
    sf.write(out["voice"], _voice(), 16000)
    sf.write(out["silent"], np.zeros(3 * 16000, np.float32), 16000)
    sf.write(out["long"], _voice(25.0), 16000)
    return out


@pytest.fixture(scope="module")
def demo_url(tiny_model_dir, tmp_path_factory):
    """`voxlm demo` in a child process on a free loopback port; stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo_server") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tts.cli", "demo", "--model", str(tiny_model_dir),
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voxlm demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"voxlm demo did not answer in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(1.0)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _args(prompt, text: str, prompt_text: str = "a short prompt", n: int = 2, seed: int = 0) -> list:
    """The /synthesize inputs in order: prompt audio, prompt text, text, candidates, seed,
    temperature, top-k, top-p, flow steps, guidance, candidates vocoded, speaker verifier, stream."""
    return [prompt, prompt_text, text, n, seed, 1.0, 25, 0.8, 2, None, 8, True, False]


@pytest.fixture(scope="module")
def client(demo_url):
    return gradio_client.Client(demo_url, verbose=False)


def _audio_of(path: str) -> tuple[np.ndarray, int]:
    return sf.read(path, dtype="float32")


# ---- examples in the model dir --------------------------------------------------------------
def test_model_dir_examples_reach_the_page(tiny_model_dir, tmp_path):
    from tts.datadir import write_table
    from tts.demo import build_demo
    from tts.model_dir import check_model_dir, main, read_examples
    from tts.synthesizer import Synthesizer

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    data = tmp_path / "test"
    data.mkdir()
    utts = {f"{spk}-{i}": spk for spk in ("spkA", "spkB") for i in range(2)}
    for u in utts:
        sf.write(tmp_path / f"{u}.wav", _voice(1.5), 16000)
    write_table(data / "wav.scp", {u: str(tmp_path / f"{u}.wav") for u in utts})
    write_table(data / "text", {u: f"sentence {u[-1]} of {spk}" for u, spk in utts.items()})
    write_table(data / "utt2spk", utts)
    assert main(["--examples", str(data), "--out", str(model)]) == 0  # added to an existing dir
    check_model_dir(model)
    rows = read_examples(model)
    assert [(r[0], r[1], r[3]) for r in rows] == [("spkA", "sentence 0 of spkA", "sentence 1 of spkA"),
                                                  ("spkB", "sentence 0 of spkB", "sentence 1 of spkB")]
    assert all(r[2].is_file() and r[2].parent == model / "examples" for r in rows)
    page = build_demo(Synthesizer.from_pretrained(model), rows).config
    assert any(c.get("props", {}).get("elem_id") == "examples" for c in page["components"])


# ---- the API ------------------------------------------------------------------------------
def test_api_synthesize(client, wavs):
    out = client.predict(*_args(gradio_client.handle_file(str(wavs["voice"])), "Hello there. How are you?",
                                n=3), api_name="/synthesize")
    audio_path, prompt_used, summary, spectrogram, table, stream = out
    audio, sr = _audio_of(audio_path)
    assert sr == 16000 and len(audio) > sr // 10
    assert prompt_used == "a short prompt"
    assert "of audio" in summary and "2 sentence(s)" in summary
    assert Path(spectrogram).is_file()
    rows = table["data"]
    assert len(rows) == 6 and table["headers"][0] == "#"  # 2 sentences x 3 candidates
    assert sum(r[-1] == "✓" for r in rows) == 2  # one chosen per sentence
    assert not isinstance(stream, str)  # no file: the streaming player is left alone


def test_api_streams(client, wavs):
    from tts.demo import can_stream
    from tts.synthesizer import Synthesizer

    if why_not := can_stream(Synthesizer):
        pytest.skip(f"streaming: {why_not}")
    out = client.predict(*_args(gradio_client.handle_file(str(wavs["voice"])), "Hello there. Streaming now.",
                                n=4)[:-1], True, api_name="/synthesize")
    audio, sr = _audio_of(out[0])
    assert len(audio) > sr // 10
    assert "streamed, the first after" in out[2] and out[4]["data"] == []


def test_api_transcribes_an_empty_prompt_text(client, wavs):
    try:
        out = client.predict(*_args(gradio_client.handle_file(str(wavs["voice"])), "Good morning.",
                                    prompt_text=""), api_name="/synthesize")
    except gradio_client.exceptions.AppError as err:  # the untrained tokenizer may hear nothing
        assert "no speech recognised" in str(err)
        return
    assert out[1].strip()  # the transcript is shown


@pytest.mark.parametrize("case, expected", [
    ("no audio", "Upload or record"),
    ("empty text", "Type the text"),
    ("long text", "at most 600"),
    ("silent audio", "silent"),
    ("long audio", "over the limit"),
])
def test_api_bad_input_is_a_clear_message(client, wavs, case, expected):
    prompt = None if case == "no audio" else gradio_client.handle_file(str(
        wavs["silent" if case == "silent audio" else "long" if case == "long audio" else "voice"]))
    text = {"empty text": "   ", "long text": "word " * 200}.get(case, "Hello.")
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        client.predict(*_args(prompt, text), api_name="/synthesize")
    assert expected in str(err.value) and "Traceback" not in str(err.value)


def test_concurrent_requests_are_queued_and_all_served(client, demo_url, wavs):
    prompt = gradio_client.handle_file(str(wavs["voice"]))
    texts = [f"Request number {w} says hello." for w in
             ("one", "two", "three", "four", "five", "six", "seven", "eight")]

    def one(i: int):  # each thread its own client: 8 independent users
        c = gradio_client.Client(demo_url, verbose=False)
        return c.submit(*_args(prompt, texts[i], n=1, seed=i), api_name="/synthesize").result(
            timeout=REQUEST_TIMEOUT_S)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    digests = [hashlib.sha1(_audio_of(r[0])[0].tobytes()).hexdigest() for r in results]
    assert len(set(digests)) == 8
    # no cross-talk between queued requests: a lone rerun of one gives the same audio
    again = client.predict(*_args(prompt, texts[5], n=1, seed=5), api_name="/synthesize")
    assert np.array_equal(_audio_of(again[0])[0], _audio_of(results[5][0])[0])


# ---- a real browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (recipes/setup.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright driver is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        yield b
        b.close()


def test_browser_clones_a_voice(browser, demo_url, wavs):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(demo_url)
    page.locator("#synthesize").wait_for(timeout=60_000)
    page.locator("#prompt-audio input[type=file]").set_input_files(str(wavs["voice"]))
    page.locator("#prompt-audio time#duration").wait_for(timeout=30_000)  # the upload is shown
    page.locator("#prompt-text textarea").fill("a short prompt")
    page.locator("#target-text textarea").fill("Hello from the browser test.")
    page.locator("#synthesize").click()
    link = page.locator("#output-audio a[data-testid=download-link]")
    link.wait_for(state="attached", timeout=REQUEST_TIMEOUT_S * 1000)
    wav = page.request.get(link.get_attribute("href")).body()
    audio, sr = sf.read(io.BytesIO(wav), dtype="float32")
    assert len(audio) / sr > 0.1  # the output has a duration
    assert page.locator("#output-audio time#duration").inner_text() != ""
    for i in range(2):  # both candidates were vocoded: each has its player
        page.locator(f"#candidate-{i} time#duration").wait_for(timeout=30_000)
    assert not page.locator("#candidate-2").is_visible()
    assert "✓" in page.locator("#candidates").inner_text()  # the chosen one is marked
    assert page.locator("#prompt-text-used textarea").input_value() == "a short prompt"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
    page.close()


def test_browser_empty_text_shows_the_message(browser, demo_url, wavs):
    page = browser.new_page()
    page.goto(demo_url)
    page.locator("#synthesize").wait_for(timeout=60_000)
    page.locator("#prompt-audio input[type=file]").set_input_files(str(wavs["voice"]))
    page.locator("#prompt-audio time#duration").wait_for(timeout=30_000)
    page.locator("#synthesize").click()
    toast = page.locator("[data-testid=toast-body]")
    toast.first.wait_for(timeout=60_000)
    assert "Type the text to speak." in toast.first.inner_text()
    assert "Traceback" not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_empty_text.png"))
    page.close()


def test_browser_streams_when_toggled(browser, demo_url, wavs):
    from tts.demo import can_stream
    from tts.synthesizer import Synthesizer

    if why_not := can_stream(Synthesizer):
        pytest.skip(f"streaming: {why_not}")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(demo_url)
    page.locator("#synthesize").wait_for(timeout=60_000)
    page.locator("#prompt-audio input[type=file]").set_input_files(str(wavs["voice"]))
    page.locator("#prompt-audio time#duration").wait_for(timeout=30_000)
    page.locator("#prompt-text textarea").fill("a short prompt")
    page.locator("#target-text textarea").fill("Streaming in the browser.")
    page.locator("#stream input[type=checkbox]").check()
    page.locator("#synthesize").click()
    page.locator("#output-audio a[data-testid=download-link]").wait_for(
        state="attached", timeout=REQUEST_TIMEOUT_S * 1000)
    assert "streamed, the first after" in page.locator("#summary").inner_text()
    page.close()
