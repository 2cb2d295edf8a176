"""Screenshot of the demo page after one synthesis (the README's docs/demo.png).

Serves `voxlm demo` in this process on a free loopback port, drives it in headless
Chromium (Debian's `chromium` + the playwright driver: `pip install -e .[dev]`), picks the
model dir's first example (or --prompt/--text), synthesizes, and saves the whole page.

    python tools/demo_screenshot.py --model egs/synth_en/exp/model --out docs/demo.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="VoxLM model directory")
    p.add_argument("--out", default="docs/demo.png")
    p.add_argument("--prompt", help="prompt wav (default: the model dir's first example)")
    p.add_argument("--prompt-text", default="", help="with --prompt: its transcript (empty: transcribed)")
    p.add_argument("--text", help="text to speak (default: the example's)")
    p.add_argument("--n-candidates", type=int, default=4)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the synthesis")
    a = p.parse_args(argv)
    if not shutil.which("chromium"):
        sys.exit("chromium not found: apt-get install chromium (recipes/setup.sh does)")
    from playwright.sync_api import sync_playwright

    from tts.demo import launch
    from tts.model_dir import read_examples

    if not a.prompt and not read_examples(a.model):
        sys.exit(f"{a.model} has no examples/: give --prompt and --text")
    port = _free_port()
    demo = launch(a.model, port=port, block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#synthesize").wait_for(timeout=60_000)
            if a.prompt:
                page.locator("#prompt-audio input[type=file]").set_input_files(a.prompt)
                page.locator("#prompt-text textarea").fill(a.prompt_text)
            else:
                page.locator("#examples tbody tr").first.click()
            page.locator("#prompt-audio time#duration").wait_for(timeout=30_000)
            if a.text:
                page.locator("#target-text textarea").fill(a.text)
            page.locator("#n-candidates input[type=number]").fill(str(a.n_candidates))
            page.locator("#n-candidates input[type=number]").press("Enter")
            page.locator("#synthesize").click()
            page.locator("#candidate-0 time#duration").wait_for(timeout=a.timeout * 1000)
            page.wait_for_timeout(1000)  # let the players draw their waveforms
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=a.out, full_page=True)
            browser.close()
    finally:
        demo.close()
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
