"""``voxlm demo``: a gradio page for zero-shot voice cloning.

UI wiring only: every step is a call to the public :class:`tts.synthesizer.Synthesizer`
API. A person uploads or records a few seconds of a voice, types a text and hears it
spoken in that voice, with the best-of-N candidates and their verifier scores beside
it. Bad input comes back as a message in the page (:class:`gradio.Error`), never as a
stack trace; requests wait in a queue and are served ``concurrency`` at a time.

    voxlm demo --model egs/synth_en/exp/model [--host 127.0.0.1] [--port 7860] [--share off]
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import closing
from pathlib import Path

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
import gradio as gr  # noqa: E402

from tts.errors import USER_ERRORS  # noqa: E402
from tts.mel import mel_spectrogram  # noqa: E402
from tts.model_dir import read_examples  # noqa: E402
from tts.sampling import SamplingConfig  # noqa: E402
from tts.synthesizer import Synthesizer  # noqa: E402

MAX_TEXT_CHARS = 600  # longer texts belong to `voxlm synth`, not to a shared page
MAX_CANDIDATES = 8  # best-of-N width offered, and the number of candidate players
TABLE_HEADERS = ["#", "sentence", "tokens", "token intelligibility", "phone likelihood", "speaker similarity", "total",
                 "chosen"]
log = logging.getLogger("voxlm.demo")
_PROGRESS = gr.Progress()  # gradio gives each request its own tracker in its place


def can_stream(synth: Synthesizer) -> str | None:
    """None when the streaming toggle can work, else why not (shown under the toggle)."""
    if not callable(getattr(synth, "stream", None)):
        return "needs Synthesizer.stream (not in this build)"
    if shutil.which("ffmpeg") is None:
        return "needs ffmpeg (gradio encodes the audio stream with it)"
    return None


def spectrogram_image(audio: np.ndarray, synth: Synthesizer) -> np.ndarray:
    """The output's log-mel (the model's own mel settings) as an RGB image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: safe in the server's worker threads

    cfg = synth.mel_config
    mel = mel_spectrogram(audio, cfg)
    fig = Figure(figsize=(9, 2.6), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
              extent=(0, mel.shape[1] / cfg.frame_rate, 0, mel.shape[0]))
    ax.set(xlabel="seconds", ylabel="mel bin")
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16, as the page plays it (gradio would convert, with a warning)."""
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def _check_inputs(prompt_audio: str | None, text: str | None) -> str:
    if not prompt_audio:
        raise gr.Error("Upload or record a few seconds of the voice to clone first.", print_exception=False)
    text = (text or "").strip()
    if not text:
        raise gr.Error("Type the text to speak.", print_exception=False)
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(f"The text has {len(text)} characters; this page takes at most {MAX_TEXT_CHARS}. "
                       "Use `voxlm synth` for long texts.", print_exception=False)
    return text


def make_handler(synth: Synthesizer, verifiers: list | None = None):
    """The click handler, a generator: the form -> chosen audio, prompt text used, summary,
    spectrogram, score table, the vocoded candidates (a gr.State that :func:`show_players`
    puts into players) and, with the streaming toggle on, audio chunks as they come.
    ``verifiers``: plug-ins (:func:`tts.verifiers.load_verifier`) that join every search."""
    verifiers = list(verifiers or [])

    def synthesize(prompt_audio, prompt_text, text, n_candidates, seed, temperature, top_k, top_p,
                   flow_steps, guidance, prune_to, speaker_verifier, stream, progress=_PROGRESS):
        text = _check_inputs(prompt_audio, text)
        options = dict(seed=int(seed or 0), flow_steps=int(flow_steps) if flow_steps else None,
                       guidance=None if guidance is None else float(guidance),
                       temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
        try:
            progress(0.05, desc="analysing the prompt")
            prompt = synth.prepare_prompt(prompt_audio, prompt_text=prompt_text or None)
            if stream and can_stream(synth) is None:
                chunks = []
                with closing(synth.stream(text, prompt, **options)) as speech:
                    for chunk in speech:
                        chunks.append(chunk)
                        yield *[gr.skip()] * 6, (synth.sample_rate, _pcm16(chunk))
                audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
                first = speech.first_audio_s or 0.0
                summary = (f"**{len(audio) / synth.sample_rate:.2f} s** of audio streamed, the first after "
                           f"{first:.2f} s; {len(speech.sentences)} sentence(s), one candidate each "
                           "(a stream cannot wait for best-of-N search).")
                rows, players = [], []
            else:
                progress(0.3, desc=f"sampling {int(n_candidates)} candidate(s), flow, vocoder")
                r = synth.synthesize(text, prompt, n_candidates=int(n_candidates), prune_to=int(prune_to),
                                     use_speaker_verifier=bool(speaker_verifier), verifiers=verifiers, **options)
                audio, summary = r.audio, (
                    f"**{r.duration:.2f} s** of audio in {r.timings['total_s']:.2f} s "
                    f"(RTF {r.timings['rtf']:.3f}); {len(r.sentences)} sentence(s), "
                    f"{int(n_candidates)} candidate(s) each.")
                rows, players = _candidates(r, [v.name for v in verifiers])
            progress(0.95, desc="drawing the spectrogram")
            image = spectrogram_image(audio, synth)
        except USER_ERRORS as err:
            raise gr.Error(str(err), print_exception=False) from err
        except Exception as err:  # a bug: the log gets the traceback, the page one line
            log.exception("synthesis failed")
            raise gr.Error(f"internal error ({type(err).__name__}); the server log has the details",
                           print_exception=False) from err
        source = "transcribed by the tokenizer's ASR" if prompt.text_was_transcribed else "as given"
        yield ((synth.sample_rate, _pcm16(audio)), prompt.text, f"{summary} Prompt text {source}.", image,
               rows, players, gr.skip())

    return synthesize


def table_headers(plugins: list[str]) -> list[str]:
    """The score table's columns: the built-in verifiers', then each plug-in's, then total and chosen."""
    return TABLE_HEADERS[:-2] + plugins + TABLE_HEADERS[-2:]


def _candidates(r, plugins: list[str] = ()) -> tuple[list[list], list[tuple[str, int, np.ndarray]]]:
    """A SynthesisResult's candidates -> score-table rows (``plugins``: the plug-in verifiers' names,
    a column each), and (label, rate, audio) of the vocoded ones."""
    rows, players = [], []
    for k, c in enumerate(r.candidates, 1):
        chosen = any(c is x for x in r.chosen)
        phone, sim = c.scores.get("phone_likelihood"), c.scores.get("speaker_similarity")
        rows.append([k, c.sentence + 1, len(c.tokens), round(c.scores.get("token_intelligibility", 0.0), 3),
                     "" if phone is None else round(phone, 3), "" if sim is None else round(sim, 3),
                     *["" if c.scores.get(n) is None else round(c.scores[n], 3) for n in plugins],
                     round(c.total, 3), "✓" if chosen else ""])
        if c.audio is not None and len(players) < MAX_CANDIDATES:
            label = f"#{k} · sentence {c.sentence + 1} · total {c.total:.3f}" + (" · chosen" if chosen else "")
            players.append((label, r.sample_rate, _pcm16(c.audio)))
    return rows, players


def show_players(players: list[tuple[str, int, np.ndarray]]) -> list:
    """One player per vocoded candidate (label, rate, audio); the unused players hidden."""
    shown = [gr.Audio(value=(sr, audio), label=label, visible=True) for label, sr, audio in players]
    return shown + [gr.Audio(value=None, visible=False)] * (MAX_CANDIDATES - len(shown))


def build_demo(synth: Synthesizer, examples: list[tuple[str, str, Path, str]] | None = None,
               title: str = "VoxLM zero-shot voice cloning", verifiers: list | None = None) -> gr.Blocks:
    why_not = can_stream(synth)  # None: streaming works
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nGive a few seconds of a voice (upload or record), type a text, and hear "
                    "it spoken in that voice. Several candidates are sampled and ranked by VoxLM's "
                    "own verifiers (intelligibility read from the speech tokens, then from the vocoded "
                    "candidates' phones; speaker similarity on request).")
        with gr.Row():
            with gr.Column():
                prompt_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                        label="Voice prompt (1-20 s)", elem_id="prompt-audio")
                prompt_text = gr.Textbox(label="Prompt text (optional)", elem_id="prompt-text",
                                         placeholder="what the prompt says; leave empty to transcribe it")
                text = gr.Textbox(label="Text to speak", lines=3, elem_id="target-text",
                                  placeholder=f"up to {MAX_TEXT_CHARS} characters")
                with gr.Row():
                    n_candidates = gr.Slider(1, MAX_CANDIDATES, value=2, step=1, label="Candidates (best-of-N)",
                                             elem_id="n-candidates")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                stream = gr.Checkbox(value=False, label="Stream (play while synthesizing; one candidate)",
                                     interactive=why_not is None, elem_id="stream", info=why_not)
                with gr.Accordion("Advanced sampling and flow settings", open=False):
                    temperature = gr.Slider(0.1, 2.0, value=SamplingConfig.temperature, step=0.05, label="Temperature")
                    top_k = gr.Slider(1, 200, value=25, step=1, label="Top-k")
                    top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Top-p")
                    flow_steps = gr.Number(value=None, precision=0, minimum=1, maximum=100,
                                           label="Flow ODE steps (empty: the model's default)")
                    guidance = gr.Number(value=None, minimum=0, maximum=5, step=0.1,
                                         label="Classifier-free guidance (empty: the model's default)")
                    prune_to = gr.Slider(1, MAX_CANDIDATES, value=MAX_CANDIDATES, step=1,
                                         label="Candidates vocoded (the rest are ranked on tokens only)")
                    speaker_verifier = gr.Checkbox(value=False, label="Rank the vocoded candidates by speaker similarity too")
                button = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
            with gr.Column():
                stream_audio = gr.Audio(label="Stream", streaming=True, autoplay=True, interactive=False,
                                        visible=why_not is None, elem_id="stream-audio")
                out_audio = gr.Audio(label="Output (the chosen candidates)", type="numpy",
                                     interactive=False, elem_id="output-audio")
                used_text = gr.Textbox(label="Prompt text used", interactive=False, elem_id="prompt-text-used")
                summary = gr.Markdown(elem_id="summary")
                spectrogram = gr.Image(label="Output log-mel spectrogram", type="numpy",
                                       interactive=False, elem_id="spectrogram")
        table = gr.Dataframe(headers=table_headers([v.name for v in verifiers or []]), label="Candidates and their verifier scores",
                             interactive=False, elem_id="candidates")
        with gr.Row(elem_id="candidate-players"):
            players = [gr.Audio(visible=False, interactive=False, min_width=220, elem_id=f"candidate-{i}")
                       for i in range(MAX_CANDIDATES)]
        if examples:
            gr.Examples([[str(wav), ptext, target] for _, ptext, wav, target in examples],
                        inputs=[prompt_audio, prompt_text, text],
                        label="Held-out speakers (never heard in training)", elem_id="examples")
        candidates = gr.State([])
        button.click(make_handler(synth, verifiers),
                     inputs=[prompt_audio, prompt_text, text, n_candidates, seed, temperature, top_k, top_p,
                             flow_steps, guidance, prune_to, speaker_verifier, stream],
                     outputs=[out_audio, used_text, summary, spectrogram, table, candidates, stream_audio],
                     api_name="synthesize",
                     ).success(show_players, candidates, players, queue=False, api_visibility="private")
    return demo


def launch(model: str | Path, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           concurrency: int = 1, max_queue: int = 64, block: bool = True, verifiers: list | None = None) -> gr.Blocks:
    """Load the model directory, build the page, start serving (``block=False``: return at once);
    ``verifiers``: plug-ins for every search (:func:`tts.verifiers.load_verifier`)."""
    synth = Synthesizer.from_pretrained(model)
    demo = build_demo(synth, read_examples(model), verifiers=verifiers)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=False,
                prevent_thread_lock=not block, footer_links=["api"])
    return demo
