"""The VoxLM model directory: one folder holds everything needed to synthesize.

    <model>/
      voxlm.json          format version, sample rate, the shared mel config, component folders
      tokenizer/          config + model.safetensors   (SpeechTokenizer.save_pretrained)
      llm/                a transformers causal-LM folder + the text frontend files
      flow/               config + model.safetensors
      vocoder/            config + model.safetensors
      speaker/            config + model.safetensors   (the speaker verifier)
      onnx/               optional, written by `voxlm export onnx`
      examples/           optional: meta.lst (name|prompt_text|prompt_wav|target_text, wavs
                          relative to examples/) + the prompt wavs; the demo offers them

Weights are safetensors only: :func:`check_model_dir` refuses pickled weights
(``*.bin``, ``*.pt``, ``*.ckpt``, ``*.pkl``) and names the first missing or
corrupt file. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors import safe_open

FORMAT_VERSION = 1
MANIFEST = "voxlm.json"
COMPONENTS = ("tokenizer", "llm", "flow", "vocoder", "speaker")
BACKENDS = ("torch", "onnx", "onnx-int8")  # onnx*: DIR/onnx on onnxruntime; -int8: the flow estimator's int8 twin
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
EXAMPLES = "examples"


class ModelDirError(RuntimeError):
    """A model directory is missing, incomplete, corrupt, or holds pickled weights."""


def _check_safetensors(path: Path) -> None:
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as err:
        raise ModelDirError(f"corrupt weights file {path}: {err}") from err
    if not keys:
        raise ModelDirError(f"weights file {path} holds no tensors")


def check_model_dir(path: str | Path, components: tuple[str, ...] = COMPONENTS) -> dict:
    """Validate a model directory; return its manifest. Raises :class:`ModelDirError`."""
    root = Path(path)
    if not root.is_dir():
        raise ModelDirError(f"model directory not found: {root}")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ModelDirError(f"{root} is not a VoxLM model directory: missing {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelDirError(f"corrupt {manifest_path}: {err}") from err
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{manifest_path}: format_version {manifest.get('format_version')!r}, "
                            f"this VoxLM reads {FORMAT_VERSION}")
    for pickle in (p for p in root.rglob("*") if p.suffix in PICKLE_SUFFIXES):
        raise ModelDirError(f"refusing pickled weights {pickle}: VoxLM loads safetensors only")
    for name in components:
        sub = root / manifest.get("components", {}).get(name, name)
        if not sub.is_dir():
            raise ModelDirError(f"{root}: missing component folder {sub.name}/ ({name})")
        weights = sorted(sub.glob("*.safetensors"))
        if not weights:
            raise ModelDirError(f"{sub}: no *.safetensors weights")
        for w in weights:
            _check_safetensors(w)
        if not any((sub / c).is_file() for c in ("config.json", "config.yaml")):
            raise ModelDirError(f"{sub}: missing config.json")
    return manifest


def write_manifest(root: str | Path, sample_rate: int, mel: dict, extra: dict | None = None) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "sample_rate": sample_rate, "mel": mel,
                "components": {c: c for c in COMPONENTS}, **(extra or {})}
    path = root / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def copy_component(src: str | Path, root: str | Path, name: str) -> None:
    """Copy a component's saved folder into the model dir (replacing an old copy atomically)."""
    src, dst = Path(src), Path(root) / name
    if not src.is_dir():
        raise ModelDirError(f"cannot package {name}: {src} does not exist (train it first)")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*(f"*{s}" for s in PICKLE_SUFFIXES)))
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)


def package(sources: dict[str, str | Path], out: str | Path, mel: dict, sample_rate: int) -> dict:
    """Copy each component's saved folder into ``out`` and write the manifest; then check it."""
    for name in COMPONENTS:
        copy_component(sources[name], out, name)
    write_manifest(out, sample_rate, mel)
    return check_model_dir(out)


def add_examples(root: str | Path, data_dir: str | Path, max_speakers: int = 6) -> Path:
    """Copy one prompt per speaker of a (held-out) data dir into ``root/examples/``.

    Each example pairs a speaker's first utterance (the prompt, with its transcript)
    with the text of another of their utterances (the target). Returns the meta.lst path.
    """
    import soundfile as sf

    from tts.audio import read_audio
    from tts.datadir import load_data_dir

    by_spk: dict[str, list] = {}
    for u in load_data_dir(data_dir):
        by_spk.setdefault(u.spk, []).append(u)
    out = Path(root) / EXAMPLES
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for spk in sorted(by_spk)[:max_speakers]:
        utts = by_spk[spk]
        if len(utts) < 2:
            continue
        audio, sr = read_audio(utts[0].wav)
        sf.write(out / f"{spk}.wav", audio, sr)
        lines.append("|".join([spk, utts[0].text, f"{spk}.wav", utts[1].text]))
    path = out / "meta.lst"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_examples(root: str | Path) -> list[tuple[str, str, Path, str]]:
    """``(name, prompt_text, prompt_wav, target_text)`` of a model dir's examples; [] if none."""
    meta = Path(root) / EXAMPLES / "meta.lst"
    if not meta.is_file():
        return []
    rows = []
    for line in meta.read_text(encoding="utf-8").splitlines():
        parts = line.split("|")
        if len(parts) == 4 and (meta.parent / parts[2]).is_file():
            rows.append((parts[0], parts[1], meta.parent / parts[2], parts[3]))
    return rows


def check_init_model(path: str | Path, mel_preset: str) -> int:
    """``--check``: 0 when ``path`` can start a fine-tuning run of a ``mel_preset`` recipe
    (which reads ``path/<component>``), else one ``ERROR:`` line and 1."""
    from tts.mel import MelConfig

    try:
        manifest = check_model_dir(path)
        moved = {c: f for c, f in manifest.get("components", {}).items() if c != f}
        if moved:
            raise ModelDirError(f"{path}: components in other folders ({moved}); the recipe reads <model>/<name>")
        if manifest.get("mel") != MelConfig.preset(mel_preset).to_dict():
            raise ModelDirError(f"{path} was trained on another mel than --mel-preset {mel_preset}: "
                                f"{manifest.get('mel')}")
    except ModelDirError as err:
        print(f"ERROR: {err}")
        return 1
    print(json.dumps(manifest))
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tts.mel import MelConfig

    p = argparse.ArgumentParser(description="Package trained components into one VoxLM model directory.")
    for name in COMPONENTS:
        p.add_argument(f"--{name}", help=f"saved {name} folder (its save_pretrained output)")
    p.add_argument("--mel-preset", default="16k", help="the shared mel definition (16k or 24k)")
    p.add_argument("--examples", help="held-out data dir: one demo example per speaker "
                   "(alone, without components: add examples to an existing model dir)")
    p.add_argument("--out", help="the model directory to write (or to add --examples to)")
    p.add_argument("--check", metavar="DIR", help="only validate DIR (a model to fine-tune: complete, "
                   "components in their own folders, the mel of --mel-preset)")
    a = p.parse_args(argv)
    if a.check:
        return check_init_model(a.check, a.mel_preset)
    if not a.out:
        p.error("--out is required (or --check DIR)")
    given = [n for n in COMPONENTS if getattr(a, n)]
    if given != list(COMPONENTS) and (given or not a.examples):
        p.error(f"give all of --{' --'.join(COMPONENTS)} (or only --examples)")
    mel = MelConfig.preset(a.mel_preset)
    try:
        if given:
            manifest = package({n: getattr(a, n) for n in COMPONENTS}, a.out, mel.to_dict(), mel.sample_rate)
        else:
            manifest = check_model_dir(a.out)
        if a.examples:
            add_examples(a.out, a.examples)
            manifest["examples"] = len(read_examples(a.out))
    except ModelDirError as err:
        print(f"ERROR: {err}")
        return 1
    print(json.dumps(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
