"""The ``voxlm`` command line. Subcommands live here as small functions that call
the public APIs; later issues add synth, eval, export, demo and bench."""

from __future__ import annotations

import argparse
import json
import platform
import sys

from tts.version import __version__


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions of VoxLM and its main libraries, and torch's threads/device."""
    import importlib.metadata as md

    import torch

    from tts.training import bf16_supported

    packages = ["torch", "transformers", "lightning", "vector-quantize-pytorch", "librosa",
                "soundfile", "onnx", "onnxruntime", "jiwer", "gradio", "safetensors",
                "pocketsphinx", "resemblyzer"]
    versions = {}
    for name in packages:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info = {
        "voxlm": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "bf16_autocast_pays": bf16_supported(),
        "packages": versions,
    }
    print(json.dumps(info, indent=None if args.compact else 2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxlm", description="VoxLM: LLM-based zero-shot text-to-speech toolkit.")
    parser.add_argument("--version", action="version", version=f"voxlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, torch threads and device (JSON)")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
