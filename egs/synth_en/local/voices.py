"""Base voices (Debian's flite and festival) and the pseudo-speakers built on them.

A pseudo-speaker is a base voice plus a fixed perturbation: the synthesizer's
own mean F0 and duration stretch (flite) and, with sox, a pitch shift in
cents, a resampling speed change (moves formants, so it changes the voice,
not only the tempo) and a mild two-band EQ. Output is 16 kHz mono 16-bit wav,
peak-normalised to -1 dBFS, written atomically (tmp file + rename).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

SAMPLE_RATE = 16000
# name -> (engine, engine voice, sex). ked_diphone is hard for pocketsphinx (train only).
BASE_VOICES: dict[str, tuple[str, str, str]] = {
    "rms": ("flite", "rms", "m"),
    "awb": ("flite", "awb", "m"),
    "kal": ("flite", "kal16", "m"),
    "slt": ("flite", "slt", "f"),
    "fkal": ("festival", "kal_diphone", "m"),
    "fked": ("festival", "ked_diphone", "m"),
    "fslt": ("festival", "cmu_us_slt_arctic_hts", "f"),
    # Voices of other languages reading the English sentences with their own rules:
    # new timbres for the flow only (their speech is not English, so nothing that reads text trains on it).
    "cdita": ("festival", "czech_dita", "f"),
    "ckrb": ("festival", "czech_krb", "m"),
    "cmachac": ("festival", "czech_machac", "m"),
    "cph": ("festival", "czech_ph", "m"),
    "ilp": ("festival", "lp_diphone", "f"),
    "ipc": ("festival", "pc_diphone", "m"),
    "sona": ("festival", "upc_ca_ona_hts", "f"),
    "flj": ("festival", "suo_fi_lj_diphone", "f"),
    "fmv": ("festival", "hy_fi_mv_diphone", "m"),
    "rnsh": ("festival", "msu_ru_nsh_clunits", "m"),
}
INSTALL_HINT = (
    "apt-get install -y flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox"
    " (the timbre voices: festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph"
    " festvox-italp16k festvox-itapc16k festvox-ca-ona-hts festvox-suopuhe-lj festvox-suopuhe-mv festvox-ru)"
)
FESTIVAL_VOICES = Path("/usr/share/festival/voices")


class SynthesisError(RuntimeError):
    """A synthesizer or sox failed, or is not installed."""


@dataclass(frozen=True)
class Speaker:
    """A pseudo-speaker: a base voice and a fixed perturbation."""

    spk: str  # id, e.g. "rms03"
    voice: str  # key of BASE_VOICES
    pitch: int = 0  # sox pitch shift in cents
    speed: float = 1.0  # sox speed (resampling: pitch, formants and tempo together)
    f0: int = 0  # flite int_f0_target_mean in Hz (0: the voice's own)
    stretch: float = 1.0  # synthesizer duration stretch (>1: slower)
    bass: float = 0.0  # sox bass shelf gain in dB at 200 Hz
    treble: float = 0.0  # sox treble shelf gain in dB at 3 kHz

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = [self.voice]
        for name, default in (
            ("pitch", 0),
            ("speed", 1.0),
            ("f0", 0),
            ("stretch", 1.0),
            ("bass", 0.0),
            ("treble", 0.0),
        ):
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value}")
        return " ".join(parts)


def check_tools(voices: list[str] | None = None) -> None:
    """Raise :class:`SynthesisError` naming the missing programs or voices and how to install them."""
    need = {"sox"}
    for v in voices or list(BASE_VOICES):
        need.add("flite" if BASE_VOICES[v][0] == "flite" else "text2wave")
    missing = sorted(t for t in need if shutil.which(t) is None)
    festival = [BASE_VOICES[v][1] for v in voices or list(BASE_VOICES) if BASE_VOICES[v][0] == "festival"]
    missing += [f"festival voice {n}" for n in sorted(festival) if not any(FESTIVAL_VOICES.glob(f"*/{n}"))]
    if missing:
        raise SynthesisError(f"missing {missing}: {INSTALL_HINT}")


def _run(cmd: list[str], **kwargs) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, **kwargs)
    except subprocess.CalledProcessError as err:
        msg = err.stderr.decode(errors="replace")[-400:] if err.stderr else ""
        raise SynthesisError(f"{cmd[0]} failed ({err.returncode}): {msg}") from err
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SynthesisError(f"{cmd[0]} failed: {err}") from err


def _synth_raw(text: str, spk: Speaker, out: Path) -> None:
    engine, name, _ = BASE_VOICES[spk.voice]
    if engine == "flite":
        cmd = ["flite", "-voice", name]
        if spk.f0:
            cmd += ["--setf", f"int_f0_target_mean={spk.f0}"]
        if spk.stretch != 1.0:
            cmd += ["--setf", f"duration_stretch={spk.stretch}"]
        _run(cmd + ["-t", text, "-o", str(out)])
    else:
        setup = f"(voice_{name})"
        if spk.stretch != 1.0:
            setup += f" (Parameter.set 'Duration_Stretch {spk.stretch})"
        _run(
            ["text2wave", "-eval", f"(begin {setup})", "-F", str(SAMPLE_RATE), "-o", str(out)],
            input=text.encode(),
        )


def synthesize(text: str, spk: Speaker, out_path: str | Path) -> float:
    """Speak ``text`` as ``spk`` into ``out_path`` atomically; returns seconds of audio."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="synth_") as tmp:
        raw = Path(tmp) / "raw.wav"
        _synth_raw(text, spk, raw)
        effects: list[str] = []
        if spk.pitch:
            effects += ["pitch", str(spk.pitch)]
        if spk.speed != 1.0:
            effects += ["speed", str(spk.speed)]
        if spk.bass:
            effects += ["bass", str(spk.bass), "200"]
        if spk.treble:
            effects += ["treble", str(spk.treble), "3000"]
        effects += ["rate", "-v", str(SAMPLE_RATE), "norm", "-1"]
        part = out_path.with_name(out_path.name + f".{os.getpid()}.part")
        _run(
            [
                "sox",
                "-q",
                str(raw),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-t",
                "wav",
                str(part),
                *effects,
            ]
        )
        os.replace(part, out_path)
    return wav_seconds(out_path)


def wav_seconds(path: str | Path) -> float:
    """Duration of a wav file, or 0.0 if it is missing or unreadable (an unfinished write)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:
        return 0.0
    return info.frames / info.samplerate if info.frames > 0 else 0.0
