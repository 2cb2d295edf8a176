"""Unit durations for the interleaved LLM layout: CTC Viterbi and spans per text unit."""

from pathlib import Path

import numpy as np

from tts.align import ctc_viterbi, phone_targets, unit_durations, unit_token_stats
from tts.frontend import Frontend, FrontendConfig


def peaked(t_len: int, vocab: int, spikes: dict[int, int]) -> np.ndarray:
    """Log-posteriors: blank everywhere except label ``spikes[t]`` at frame t."""
    p = np.full((t_len, vocab), 0.01)
    p[:, 0] = 1.0
    for t, label in spikes.items():
        p[t] = 0.01
        p[t, label] = 1.0
    return np.log(p / p.sum(1, keepdims=True))


def test_viterbi_follows_the_spikes_and_refuses_too_few_frames():
    logp = peaked(12, 4, {2: 1, 6: 2, 9: 1})
    path = ctc_viterbi(logp, [1, 2, 1])
    assert [int(np.flatnonzero(path == j)[0]) for j in range(3)] == [2, 6, 9]
    assert set(path[[0, 1, 3, 4, 5, 7, 8, 10, 11]].tolist()) == {-1}
    # a repeated label needs a blank between its two copies: 3 frames hold "1 1" at least
    assert ctc_viterbi(peaked(2, 4, {}), [1, 1]) is None
    assert ctc_viterbi(peaked(3, 4, {0: 1, 2: 1}), [1, 1]).tolist() == [0, -1, 1]


def test_unit_durations_give_pauses_to_punctuation_and_sum_to_the_tokens():
    # phones at 50 Hz frames 0, 6, 10 and 40 (long pauses after the third and the last), 30 tokens
    path = np.full(60, -1)
    path[[0, 6, 10, 40]] = [0, 1, 2, 3]
    is_phone = [True, False, True, True, False, True, False]  # P _ P P , P .
    d = unit_durations(path, is_phone, num_tokens=30)
    assert sum(d) == 30 and len(d) == 7
    assert d[1] == 0  # no pause at the word break
    assert d[4] > 0 and d[3] == round((10 + 1 + 4) / 2) - 5  # the comma takes the pause after its tail
    assert d[6] > 0  # the final mark takes the trailing silence
    assert d[0] == 3 and d[2] == 2


def test_unit_token_stats_measure_what_the_unit_leaves_to_guess():
    # unit A always gives token 1; unit B gives 2 or 3 equally often; "_" spans nothing
    units = {"u1": ["A", "_", "B"], "u2": ["B", "A"]}
    tokens = {"u1": [1, 1, 2, 3], "u2": [2, 3, 1, 1]}
    durations = {"u1": [2, 0, 2], "u2": [2, 2]}
    stats = unit_token_stats(units, tokens, durations)
    assert stats["tokens"] == 8
    assert np.isclose(stats["h_token"], 1.5)  # 1 half the time, 2 and 3 a quarter each
    assert np.isclose(stats["h_token_given_unit"], 0.5)  # 0 bits for A, 1 bit for B
    assert np.isclose(stats["unit_majority"], 6 / 8)
    assert unit_token_stats({}, {}, {}) == {"tokens": 0}


def test_phone_targets_map_frontend_units_to_the_tokenizer_phone_ids():
    units = Frontend(FrontendConfig(units="phones")).symbols("hi, qzx.")
    targets, is_phone = phone_targets(units)
    assert units[:3] == ["HH", "AY", ","] and is_phone[:3] == [True, True, False]
    assert len(targets) == sum(is_phone) and min(targets) >= 1
    assert units[-4:] == ["q", "z", "x", "."]  # spelled: letters map to the tokenizer's <q> ...


def test_align_dir_writes_durations_that_sum_to_the_tokens(tmp_path, tone, tiny_model_dir):
    import soundfile as sf

    from tokenizer.api import SpeechTokenizer
    from tokenizer.frontend import PHONES
    from tts.align import align_dir
    from tts.datadir import read_table, write_table

    tok = SpeechTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    texts = {"s-1": "Hello, world.", "s-2": "Zzyzx is a place!", "s-3": "?!"}  # s-3: nothing to align
    wavs = {}
    for i, utt in enumerate(texts):
        wavs[utt] = str(tmp_path / f"{utt}.wav")
        sf.write(wavs[utt], tone(1.5 + i, sr=22050, freq=200.0 + 50 * i), 22050)  # not 16 kHz: resampled
    write_table(tmp_path / "text", texts)
    write_table(tmp_path / "wav.scp", wavs)
    tokens = {u: " ".join(map(str, tok.encode(*sf.read(w, dtype="float32")))) for u, w in wavs.items()}
    write_table(tmp_path / "tokens", tokens)
    logp = tok.phone_log_probs_batch([sf.read(wavs["s-1"], dtype="float32")[0]], 22050)[0]
    assert logp.shape == (2 * len(tokens["s-1"].split()), len(PHONES) + 1)
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-4)

    fe = Frontend(FrontendConfig(units="phones"))
    assert align_dir(tmp_path, fe, tok) == (2, 1)
    durs = read_table(tmp_path / "durations")
    for utt in ("s-1", "s-2"):
        d = [int(x) for x in durs[utt].split()]
        assert len(d) == len(fe.symbols(fe.transcript(texts[utt])))
        assert sum(d) == len(tokens[utt].split()) and min(d) >= 0


def test_align_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, capsys):
    from tts.align import main
    from tts.datadir import write_table

    conf = str(Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf" / "llm_tiny.yaml")
    tok = str(tiny_model_dir / "tokenizer")
    assert main(["--tokenizer", tok, "--config", conf, "--data", str(tmp_path / "missing")]) == 2
    assert "missing file" in capsys.readouterr().err
    write_table(tmp_path / "text", {"a-1": "Hello there."})
    write_table(tmp_path / "tokens", {"a-1": "1 2 3"})
    write_table(tmp_path / "wav.scp", {"a-1": str(tmp_path / "a-1.wav")})
    (tmp_path / "a-1.wav").write_bytes(b"not a wav")
    assert main(["--tokenizer", tok, "--config", conf, "--data", str(tmp_path)]) == 2
    assert "cannot read audio" in capsys.readouterr().err and not (tmp_path / "durations").exists()
    assert main(["--tokenizer", str(tmp_path / "nope"), "--config", conf, "--data", str(tmp_path)]) == 2


def test_token_context_finds_the_context_tokens_depend_on(tmp_path, capsys):
    """Tokens made from each unit's next unit: the held-out bits fall once the next unit is known."""
    import importlib.util
    import json

    from tts.datadir import write_table

    spec = importlib.util.spec_from_file_location(
        "token_context", Path(__file__).resolve().parents[1] / "tools" / "token_context.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    conf = str(Path(__file__).resolve().parents[1] / "egs" / "synth_en" / "conf" / "llm.yaml")
    fe = Frontend(FrontendConfig(units="phones"))
    words = "the cat sat on a mat we saw seven green boats please call me back soon".split()
    rng = np.random.default_rng(0)
    code = {}
    for split, n in (("train", 300), ("dev", 40)):
        texts, tokens, durs = {}, {}, {}
        for i in range(n):
            text = " ".join(rng.choice(words, 5)) + "."
            units = fe.symbols(fe.transcript(text))
            toks = [code.setdefault(u, len(code) % 240) for u in units[1:] + ["</s>"] for _ in range(2)]
            texts[f"s-{i:03d}"], tokens[f"s-{i:03d}"] = text, " ".join(map(str, toks))
            durs[f"s-{i:03d}"] = " ".join(["2"] * len(units))
        (tmp_path / split).mkdir()
        write_table(tmp_path / split / "text", texts)
        write_table(tmp_path / split / "tokens", tokens)
        write_table(tmp_path / split / "durations", durs)
    assert tool.main(["--config", conf, "--train", str(tmp_path / "train"), "--dev", str(tmp_path / "dev")]) == 0
    bits = json.loads(capsys.readouterr().out)["bits_per_token"]
    assert bits["+ next unit"] < 0.2 < 1.0 < bits["unit, place"] < bits["unit"] + 1e-9
    assert bits["+ previous unit"] > bits["+ next unit"] + 0.8
    # bad input: a missing dir, durations of another text: one line, exit 2
    assert tool.main(["--config", conf, "--train", str(tmp_path / "nope"), "--dev", str(tmp_path / "dev")]) == 2
    assert "missing file" in capsys.readouterr().err
    write_table(tmp_path / "dev" / "durations", {u: "2 2" for u in texts})
    assert tool.main(["--config", conf, "--train", str(tmp_path / "train"), "--dev", str(tmp_path / "dev")]) == 2
    assert "error" in capsys.readouterr().err
