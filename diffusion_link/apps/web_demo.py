"""`diffusion-link serve`: a web page to try a captioner.

    diffusion-link serve [--model FOLDER_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]

Needs the `[app]` extra (Gradio); the core package does not. A person uploads or records audio, or picks a demo
sound, and sees the caption; where the model gives them, the candidates with their scores and the confidence; for
long audio, the caption of each window with its timestamps; and a plot of where the clip lands: its raw and its
bridged embedding among the text embeddings of captions, in the PCA projection of the gap plots
(`metrics.gap_plots`), so the bridge's job is visible. Bad input (no audio, a corrupt file, one too short, too
long or too large, silence) gets a readable message in the page, never a stack trace, and never the server's own
paths (a file is named by its base name). Requests are queued with a concurrency limit. The server binds to 127.0.0.1
unless told otherwise, sends no analytics, makes no share link and loads no fonts or scripts from the network.

Files: Gradio rejects an upload larger than `Limits.max_file_mb` before it is stored, to the byte; uploads older than
`UPLOAD_MAX_AGE_S` are deleted while the page runs. `serve` keeps the uploads and the demo sounds in one temporary
folder (inside `$GRADIO_TEMP_DIR` when that is set), deleted when the server stops (Ctrl-C or SIGTERM).

`WebDemo` holds the logic (and is what the tests call); `build_app` lays it out with Gradio. The Hub Space that runs
the same page is written by `diffusion_link.apps.space` (`diffusion-link space`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffusion_link.audio_io import SILENCE_THRESHOLD_DBFS
from diffusion_link.metrics.gap_plots import pca_projection
from diffusion_link.starter import STARTER_DIR
from diffusion_link.validation import check_positive_float


LONG_AUDIO_WINDOW_S = 10.0  # audio longer than this is captioned window by window, with timestamps
# Uploads are deleted once they are this old (checked as often): a page left open for longer uploads its file again.
UPLOAD_MAX_AGE_S = 3600
CAPTION_GALLERY = os.path.join(STARTER_DIR, "esc50_captions.json")


def import_gradio():
    """The `gradio` module, imported with its usage statistics switched off (Gradio reads the switch at import, so it
    is set here, where a page is about to be built, and not when this module is imported)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio

    return gradio


@dataclass
class Limits:
    """What the page accepts: recordings up to `max_duration_s` seconds and files up to `max_file_mb` MB (MiB, 2**20
    bytes, as Gradio counts them). Both must be finite numbers > 0."""

    max_duration_s: float = 600.0
    max_file_mb: float = 50.0

    def __post_init__(self):
        self.max_duration_s = check_positive_float("max_duration_s", self.max_duration_s)
        self.max_file_mb = check_positive_float("max_file_mb", self.max_file_mb)
        if self.max_file_bytes < 1:
            raise ValueError(f"`max_file_mb` must allow at least one byte, got {self.max_file_mb!r}.")

    @property
    def max_file_bytes(self) -> int:
        """The largest upload in bytes: Gradio's `max_file_size` (an int; its "<n>mb" form takes whole MB only)."""
        return int(self.max_file_mb * 2**20)


class WebDemo:
    """Captions one uploaded file for the page: a dict with `message` (for the person; "" when all went well),
    `caption`, `candidates` (rows of text, LM score, similarity), `confidence`, `chunks` (rows of start, end,
    caption) and `figure` (a matplotlib figure of where the clip lands, or None)."""

    def __init__(self, pipe, model_name: str, limits: Limits | None = None):
        self.pipe = pipe
        self.model_name = model_name
        self.limits = limits or Limits()
        self._gallery = None

    # ------------------------------------------------------------------ checks
    def check(self, path: str | None) -> tuple[str, float]:
        """(a readable reason the file cannot be captioned, or "", its duration in seconds)."""
        if not path:
            return "Upload or record a sound first.", 0.0
        if not os.path.isfile(path):
            return f"The file {os.path.basename(path)} could not be found on the server; upload it again.", 0.0
        size_mb = os.path.getsize(path) / 2**20
        if size_mb > self.limits.max_file_mb:
            return f"The file is {size_mb:.1f} MB; this page takes files up to {self.limits.max_file_mb:g} MB.", 0.0
        import soundfile as sf

        try:
            duration = sf.info(path).duration
        except Exception:  # soundfile raises its own error types for anything it cannot parse
            return (f"{os.path.basename(path)} is not audio this page can read (WAV, FLAC, OGG or MP3), or the file "
                    "is damaged."), 0.0
        if duration > self.limits.max_duration_s:
            return (f"The recording is {duration:.0f} s long; this page takes up to "
                    f"{self.limits.max_duration_s:g} s."), duration
        return "", duration

    # ------------------------------------------------------------------ captioning
    def caption(self, path: str | None) -> dict:
        out = {"message": "", "caption": "", "candidates": [], "confidence": None, "chunks": [], "figure": None}
        out["message"], duration = self.check(path)
        if out["message"]:
            return out
        long = duration > LONG_AUDIO_WINDOW_S
        call = {"return_embeddings": True}
        if long:
            call["chunk_length_s"] = LONG_AUDIO_WINDOW_S
        try:
            result = self.pipe(path, **call)
        except (ValueError, OSError, TypeError) as err:
            out["message"] = f"This audio cannot be captioned: {without_server_paths(str(err), path)}"
            return out
        if result["is_silent"]:
            out["message"] = ("The recording is silent (quieter than the silence threshold, "
                              f"{SILENCE_THRESHOLD_DBFS} dBFS): there is nothing to caption.")
            return out
        out["caption"] = result["generated_text"]
        out["candidates"] = [[c["text"], round(c["lm_logprob"], 3), round(c["audio_text_similarity"], 3)]
                             for c in result.get("candidates", [])]
        out["confidence"] = result.get("confidence")
        if long:
            out["chunks"] = [[c["timestamp"][0], c["timestamp"][1], c["generated_text"] or "(silence)"]
                             for c in result["chunks"]]
            audible = [c for c in result["chunks"] if "audio_embeds" in c]
            if audible:
                raw = torch.stack([c["audio_embeds"] for c in audible]).mean(0)
                bridged = torch.stack([c["bridged_embeds"] for c in audible]).mean(0)
                out["figure"] = self.landing_plot(raw, bridged)
        else:
            out["figure"] = self.landing_plot(result["audio_embeds"], result["bridged_embeds"])
        return out

    # ------------------------------------------------------------------ the plot
    def caption_gallery(self) -> tuple[list[str], torch.Tensor] | None:
        """The captions the clip is shown among (the starter's ESC-50 class captions) and their text embeddings in
        the model's joint space; None when the model cannot embed text."""
        if self._gallery is None:
            with open(CAPTION_GALLERY, encoding="utf-8") as f:
                texts = [c for caps in json.load(f)["classes"].values() for c in caps]
            try:
                embeds = self.pipe.model.embed_text(texts)
            except (ValueError, OSError, AttributeError, TypeError):
                embeds = None
            self._gallery = (texts, embeds)
        return None if self._gallery[1] is None else self._gallery

    def landing_plot(self, raw: torch.Tensor, bridged: torch.Tensor):
        """Where the clip lands: caption embeddings (grey), the clip's raw (orange) and bridged (green) embedding, an
        arrow between them and the three nearest captions named, in a PCA of the L2-normalised embeddings."""
        gallery = self.caption_gallery()
        if gallery is None:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        texts, text_embeds = gallery
        points = F.normalize(torch.cat([text_embeds, raw[None].float(), bridged[None].float()]), dim=-1)
        xy = pca_projection(points)
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        ax.scatter(xy[:-2, 0], xy[:-2, 1], s=7, color="tab:blue", alpha=0.35, label="captions (text embeddings)")
        ax.scatter(*xy[-2].tolist(), s=90, color="tab:orange", edgecolor="black", label="this clip, raw audio")
        ax.scatter(*xy[-1].tolist(), s=90, color="tab:green", edgecolor="black", label="this clip, bridged")
        ax.annotate("", xy=xy[-1].tolist(), xytext=xy[-2].tolist(),
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2})
        nearest = (points[:-2] @ points[-1]).topk(3).indices.tolist()
        for i in nearest:
            ax.annotate(texts[i], xy[i].tolist(), fontsize=7, alpha=0.85, xytext=(4, 4), textcoords="offset points")
        ax.set_title("Where this clip lands among caption embeddings (PCA)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        return fig


def without_server_paths(message: str, path: str) -> str:
    """`message` with the upload's path on the server (as given, absolute or resolved) shown as its base name, and
    its folder dropped: the page tells a person which file, never where the server keeps it."""
    name = os.path.basename(path)
    for spelling in sorted({path, os.path.abspath(path), os.path.realpath(path)}, key=len, reverse=True):
        message = message.replace(spelling, name)
    for folder in {os.path.dirname(os.path.abspath(path)), os.path.dirname(os.path.realpath(path))}:
        message = message.replace(folder + os.sep, "").replace(folder, "")
    return message


def demo_sounds(folder: str) -> list[str]:
    """The demo's example sounds (those `make demo` captions), written into `folder`."""
    from diffusion_link.apps.demo import synthetic_sounds

    return synthetic_sounds(folder)


def build_app(demo: WebDemo, examples: list[str] | None = None, concurrency_limit: int = 2):
    """The Gradio page around `demo`."""
    gr = import_gradio()

    # System fonts only: the default theme would fetch web fonts.
    theme = gr.themes.Base(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])

    def run(path):
        out = demo.caption(path)
        confidence = "" if out["confidence"] is None else f"{out['confidence']:.0%}"
        return (out["message"], out["caption"], confidence, out["candidates"], out["chunks"], out["figure"])

    with gr.Blocks(title="Diffusion-Link audio captioning", theme=theme, analytics_enabled=False,
                   delete_cache=(UPLOAD_MAX_AGE_S, UPLOAD_MAX_AGE_S)) as app:
        gr.Markdown(f"# Diffusion-Link audio captioning\nModel: `{demo.model_name}`. Upload or record a sound, or "
                    "pick a demo sound; the caption comes from the audio's embedding moved onto the text side of "
                    "the joint space by the Diffusion-Link bridge.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[audio], label="Demo sounds")
            with gr.Column():
                message = gr.Markdown(elem_id="message")
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                confidence = gr.Textbox(label="Confidence (the caption names what is heard)", interactive=False,
                                        elem_id="confidence")
                candidates = gr.Dataframe(headers=["candidate", "LM score", "audio-caption similarity"],
                                          label="Candidates", interactive=False, elem_id="candidates")
                chunks = gr.Dataframe(headers=["start (s)", "end (s)", "caption"], label="Long audio: each window",
                                      interactive=False, elem_id="chunks")
        plot = gr.Plot(label="Where the clip lands", elem_id="plot")
        button.click(run, inputs=[audio], outputs=[message, caption, confidence, candidates, chunks, plot],
                     api_name="caption", concurrency_limit=concurrency_limit)
    app.queue(default_concurrency_limit=concurrency_limit)
    return app


def load_demo(model: str | None, limits: Limits | None = None, trust_remote_code: bool = False) -> WebDemo:
    """A `WebDemo` of `model` (a folder or Hub id; None: the bundled starter captioner)."""
    from diffusion_link.apps.loading import load_captioning_pipeline

    pipe = load_captioning_pipeline(model, trust_remote_code)
    return WebDemo(pipe, model or "the bundled starter captioner", limits)


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 7860, limits: Limits | None = None,
          concurrency_limit: int = 2, trust_remote_code: bool = False) -> None:
    """Build and launch the page (blocks until stopped: Ctrl-C or SIGTERM). Uploads and demo sounds live in one
    temporary folder that is deleted when the server stops."""
    demo = load_demo(model, limits, trust_remote_code)
    with served_files() as folder, _sigterm_as_interrupt():
        examples = demo_sounds(os.path.join(folder, "demo-sounds"))
        app = build_app(demo, examples, concurrency_limit)
        print(f"serving {demo.model_name} on http://{host}:{port}", file=sys.stderr, flush=True)
        app.launch(server_name=host, server_port=port, share=False, show_api=True, quiet=True,
                   max_file_size=demo.limits.max_file_bytes, ssr_mode=False)


@contextlib.contextmanager
def served_files():
    """A temporary folder for everything the server writes, deleted on exit: Gradio's upload cache is pointed at it
    (`GRADIO_TEMP_DIR`, read when the page is built and launched; restored afterwards), so uploads do not outlive
    the server in Gradio's shared temporary folder. Inside the `GRADIO_TEMP_DIR` a user set, if any."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    if previous is not None:
        os.makedirs(previous, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="diffusion-link-serve-", dir=previous) as folder:
        os.environ["GRADIO_TEMP_DIR"] = os.path.join(folder, "uploads")
        try:
            yield folder
        finally:
            if previous is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = previous


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a service manager, `kill`) stops the server as Ctrl-C does: Gradio closes it and the temporary
    files are deleted, where the default handler would end the process on the spot. Main thread only (Python's rule
    for signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
