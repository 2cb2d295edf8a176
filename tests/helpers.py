"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

import contextlib
import io
import subprocess
from pathlib import Path

import numpy as np
import torch

from tts.datadir import read_table, write_table


def write_even_durations(d: Path, frontend) -> None:
    """A ``durations`` file (what ``tts.align`` writes) sharing each utterance's tokens out
    evenly over its text units, for LLM training tests of the interleaved layout."""
    texts, tokens = read_table(d / "text"), read_table(d / "tokens")
    out = {}
    for utt, text in texts.items():
        n_units = len(frontend.encode_normalized(frontend.transcript(text)))
        edges = np.linspace(0, len(tokens[utt].split()), n_units + 1).round().astype(int)
        out[utt] = " ".join(map(str, np.diff(edges)))
    write_table(d / "durations", out)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``voxlm ARGS``, in this process: the entry point's own ``tts.cli.main``, its exit code
    and what it printed (a subprocess would spend most of a test importing torch again).
    Torch's thread count (``bench --threads``) is put back afterwards."""
    from tts.cli import main

    out, err, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["voxlm", *args], code, out.getvalue(), err.getvalue())


def export_snapshot(load, model_dir: Path, step: int) -> tuple[dict, "object"]:
    """(snapshot, callback): the callback fills ``snapshot`` with ``load(model_dir).state_dict()``
    as the step after ``step`` starts, i.e. the model dir a trainer exported with step's checkpoint."""
    import lightning as L

    snapshot: dict = {}

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            if trainer.global_step == step and not snapshot:
                snapshot.update(load(model_dir).state_dict())

    return snapshot, Snapshot()
