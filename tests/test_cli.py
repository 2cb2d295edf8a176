import json
import subprocess
import sys

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
