"""`pipeline("audio-captioning")`: audio in, captions out, through a [`DiffusionLinkForAudioCaptioning`].

Copied next to a saved captioner (custom pipeline code), so it imports only torch, transformers and flat siblings at
module level; soundfile / librosa are imported when a file must be decoded or resampled.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from transformers.pipelines.base import ChunkPipeline

from .audio_io import (
    SILENCE_THRESHOLD_DBFS,
    AudioFileStream,
    PreparedAudio,
    check_sampling_rate,
    is_silent,
    open_audio_stream,
    prepare_audio,
    window_bounds,
)
# DEFAULT_MAX_NEW_TOKENS is re-exported for the scripts that still import it from here; its home is the config module.
from .configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS, check_rerank  # noqa: F401
from .reranking import beam_candidates, candidate_generate_kwargs, confidence, rank_candidates, scored_candidates
from .seeding import content_seed, seeded_generators
from .validation import check_choice, check_finite_float, check_positive_int, check_strength


ON_ERROR = ("raise", "report")
# `generate_kwargs` the pipeline sets itself: given by the caller they would pair captions with the wrong inputs
# (several sequences per clip) or break decoding (a dict instead of ids). What to use instead.
PIPELINE_GENERATE_KWARGS = {
    "num_return_sequences": "`num_candidates`",
    "return_dict_in_generate": "`num_candidates` (the candidates come with their scores)",
    "output_scores": "`num_candidates` (the candidates come with their scores)",
    "generator": "nothing: each window's bridge noise is seeded from its samples",
    "input_ids": "nothing: the model's prompt is used",
    "inputs_embeds": "nothing: the prefix comes from the audio",
    "attention_mask": "nothing: the prefix comes from the audio",
    "audio_embeds": "nothing: the audio is embedded by the pipeline",
    "strength": "the call argument `strength`",
    "num_inference_steps": "the call argument `num_inference_steps`",
}
# Sizes among `generate_kwargs` that end in a ZeroDivisionError or an empty result deep in `generate` when < 1.
GENERATE_SIZES = ("max_new_tokens", "num_beams")


class AudioCaptionPipeline(ChunkPipeline):
    """
    Caption audio with a Diffusion-Link captioner.

    ```python
    from transformers import pipeline
    import diffusion_link  # registers the task

    captioner = pipeline("audio-captioning", model="path/to/captioner")
    captioner("dog.wav")
    # {'generated_text': 'a dog barks', 'is_silent': False, 'duration_s': 5.0, 'sampling_rate': 44100, ...}
    captioner(["a.wav", {"array": samples, "sampling_rate": 16000}], batch_size=8, num_beams=4)
    captioner("hour.flac", chunk_length_s=10, stride_s=10)  # per-window captions with timestamps in "chunks"
    ```

    Inputs: a file path (wav/flac/ogg/mp3), encoded bytes, a numpy array or tensor with `sampling_rate=`, a dict
    `{"array", "sampling_rate"}`, or a list of these. Arrays without a sampling rate are refused; any rate is
    resampled; channels are averaged to mono; integer PCM is converted; NaN/Inf and clips shorter than 0.1 s raise.

    Each result has `generated_text`, `is_silent` (silent audio, below `silence_threshold_db` RMS, gets no invented
    caption: `generated_text` is `""`), `duration_s`, `sampling_rate` and `num_channels` of the input, and
    `peak_dbfs`. With `chunk_length_s`, the audio is cut into deterministic windows (every `stride_s` seconds,
    default `chunk_length_s`), each captioned in `chunks` with its `timestamp` (start, end) in seconds;
    `generated_text` then joins the distinct window captions with "; ".

    Candidates: with `num_candidates` = k > 1 (default: the model's `config.num_candidates`), k captions are decoded
    by beam search and each result (or chunk) gets `candidates`, best first: `{text, lm_logprob,
    audio_text_similarity}`; `generated_text` is the first, picked by `rerank` ("lm", "similarity" or "combined",
    default `config.rerank`; see `diffusion_link.reranking`). With a calibrated model (`config.confidence_calibration`)
    it also gets `confidence`, the probability that the caption names what is heard. The similarity is the model's
    `score_captions`, with the model's `audio_text_tokenizer` (`audio_text_tokenizer=` at construction sets it).

    Call arguments: `max_new_tokens` (default: the LM's `generation_config.max_new_tokens`, 30), `num_beams`, any
    other `generate` argument in `generate_kwargs`; the bridge's `strength` and `num_inference_steps`; `batch_size`
    (audible windows per model call, across inputs); `on_error="report"` to get `{"error": ...}` for a failing input
    of a list instead of an exception; `return_embeddings=True` adds the (D,) `audio_embeds` and the
    `bridged_embeds` the decoder read to each audible result (or chunk). `num_workers` > 0 raises: windows are
    decoded as they are captioned, in this process. A generator or dataset of inputs gives an iterator of results.

    Results are deterministic and batch-invariant: the bridge's forward noise for a window is seeded from that
    window's samples, so `pipe([x, y])[0] == pipe(x)`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def __init__(self, *args, audio_text_tokenizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        if audio_text_tokenizer is not None:
            self.model.audio_text_tokenizer = audio_text_tokenizer
        if self.tokenizer is None or self.feature_extractor is None:
            raise ValueError("AudioCaptionPipeline needs the captioner's tokenizer and feature extractor.")
        self._prompt_ids = self.model.prompt_input_ids(self.tokenizer)  # (1, L) or None

    def push_to_hub(self, repo_id: str, *, max_shard_size: int | str | None = "50GB", tags: list[str] | None = None,
                    model_card_kwargs: dict | None = None, **upload_kwargs):
        """transformers' `push_to_hub` of the whole pipeline folder (model, tokenizer, feature extractor, pipeline
        code), with the captioner's model card in place of transformers' generic one (see the model's
        `push_to_hub`). `upload_kwargs`: `token`, `private`, `commit_message`, `commit_description`, `revision`,
        `create_pr`."""
        push_folder = getattr(self.model, "push_folder_to_hub", None)
        if push_folder is None:  # a model class without card support
            return super().push_to_hub(repo_id, max_shard_size=max_shard_size, tags=tags, **upload_kwargs)
        return push_folder(lambda folder: self.save_pretrained(folder, max_shard_size=max_shard_size), repo_id,
                           model_card_kwargs=model_card_kwargs, tags=tags, **upload_kwargs)

    @property
    def audio_text_tokenizer(self):
        """The model's `audio_text_tokenizer` (the audio tower's text tokenizer, which scores candidates)."""
        return self.model.audio_text_tokenizer

    # ------------------------------------------------------------------ parameters
    def _sanitize_parameters(
        self,
        sampling_rate: int | None = None,
        chunk_length_s: float | None = None,
        stride_s: float | None = None,
        silence_threshold_db: float | None = None,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        generate_kwargs: dict | None = None,
        on_error: str | None = None,
        return_embeddings: bool | None = None,
        num_candidates: int | None = None,
        rerank: str | None = None,
        **unknown,
    ):
        """Every call argument is checked here, before any input is read: a bad one raises `ValueError` (or
        `TypeError`) naming it, with what was expected and what was received, whatever `on_error` says (it is not a
        failure of one input). `batch_size` and `num_workers` are transformers' own and are checked in
        `get_iterator`."""
        if unknown:
            raise TypeError(f"Unknown argument(s) for the audio-captioning pipeline: {sorted(unknown)}.")
        preprocess = {}
        if sampling_rate is not None:
            preprocess["sampling_rate"] = check_sampling_rate(sampling_rate)
        if chunk_length_s is not None:
            window_bounds(1, self.feature_extractor.sampling_rate, chunk_length_s, stride_s)  # validates both
            preprocess["chunk_length_s"] = chunk_length_s
            preprocess["stride_s"] = stride_s
        elif stride_s is not None:
            raise ValueError(f"`stride_s` needs `chunk_length_s` (the window length), got stride_s={stride_s!r} alone.")
        if silence_threshold_db is not None:
            preprocess["silence_threshold_db"] = check_finite_float("silence_threshold_db", silence_threshold_db)
        forward = {}
        generate = _generate_kwargs(generate_kwargs, max_new_tokens, num_beams)
        if generate:
            forward["generate_kwargs"] = generate
        if strength is not None:
            forward["strength"] = check_strength(strength)
        if num_inference_steps is not None:
            forward["num_inference_steps"] = check_positive_int("num_inference_steps", num_inference_steps)
        if return_embeddings is not None and not isinstance(return_embeddings, bool):
            raise TypeError(f"`return_embeddings` must be True or False, got {return_embeddings!r}.")
        if return_embeddings:
            forward["return_embeddings"] = True
        if num_candidates is not None:
            forward["num_candidates"] = check_positive_int("num_candidates", num_candidates)
        if rerank is not None:
            forward["rerank"] = check_rerank(rerank)
        postprocess = {}
        if on_error is not None:
            postprocess["on_error"] = check_choice("on_error", on_error, ON_ERROR)
        return preprocess, forward, postprocess

    def __call__(self, inputs, **kwargs):
        """Caption one input (returns a dict), a list of inputs (a list of dicts, in order), or a generator or
        dataset of inputs (an iterator of dicts, streamed). transformers' `Pipeline.__call__` does the work; a tuple
        counts as a list and an empty list gives an empty list (its arguments checked all the same)."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            # transformers' __call__ would read inputs[0] of a list; an empty generator it turns into [] itself.
            inputs = (x for x in ())
        return super().__call__(inputs, **kwargs)

    def get_iterator(self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params,
                     postprocess_params):
        """The results of `inputs`, in order, as an iterator: each input is preprocessed into windows, the windows of
        consecutive inputs are captioned `batch_size` audible ones per `forward` call (`WindowBatcher`), and each
        input's windows are postprocessed into its result as soon as they are all captioned."""
        if num_workers:
            raise ValueError(
                f"`num_workers={num_workers}` is not supported by the audio-captioning pipeline: a file's windows are "
                "decoded as they are captioned (a long file is streamed), in this process. Use num_workers=0."
            )
        # Checked here, not in the generator below: transformers resolves `batch_size` (call, then constructor) and
        # calls this for every kind of input, so a bad size is refused at the call, before any input is read.
        check_positive_int("batch_size", batch_size)
        return self._results(inputs, batch_size, preprocess_params, forward_params, postprocess_params)

    def _results(self, inputs, batch_size: int, preprocess_params, forward_params, postprocess_params):
        postprocess_params = dict(postprocess_params)
        on_error = postprocess_params.pop("on_error", "raise")
        batcher = WindowBatcher(lambda windows: self.forward({"windows": windows}, **forward_params,
                                                             batch_size=batch_size), batch_size)
        for item, records in batcher.run(inputs, lambda x: self.preprocess(x, **preprocess_params), on_error):
            if isinstance(item, Exception):
                yield {"error": f"{type(item).__name__}: {item}"}
                continue
            item = {**item, "windows": records, "captions": [r["caption"] for r in records],
                    "details": [r["details"] for r in records]}
            if forward_params.get("return_embeddings"):
                item["embeddings"] = [r["embeddings"] for r in records]
            yield self.postprocess(item, **postprocess_params)

    # ------------------------------------------------------------------ stages
    def preprocess(
        self,
        inputs,
        sampling_rate: int | None = None,
        chunk_length_s: float | None = None,
        stride_s: float | None = None,
        silence_threshold_db: float = SILENCE_THRESHOLD_DBFS,
    ) -> dict[str, Any]:
        rate = self.feature_extractor.sampling_rate
        path = _file_path(inputs)
        if path is not None and chunk_length_s is not None:
            # A file cut into windows is streamed: decoded, mixed down and resampled a window at a time.
            stream = open_audio_stream(path, rate)
            windows = (_window(samples, start, end, rate, silence_threshold_db)
                       for start, end, samples in stream.windows(chunk_length_s, stride_s))
            return {"audio": stream, "windows": windows, "chunked": True}
        audio: PreparedAudio = prepare_audio(inputs, rate, sampling_rate=sampling_rate)
        if chunk_length_s is None:
            bounds = [(0, len(audio.waveform))]
        else:
            bounds = window_bounds(len(audio.waveform), rate, chunk_length_s, stride_s)
        windows = [_window(audio.waveform[start:end], start, end, rate, silence_threshold_db) for start, end in bounds]
        return {"audio": audio, "windows": windows, "chunked": chunk_length_s is not None}

    def _forward(
        self,
        model_inputs: dict[str, Any],
        batch_size: int = 1,
        generate_kwargs: dict | None = None,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        return_embeddings: bool = False,
        num_candidates: int | None = None,
        rerank: str | None = None,
    ) -> dict[str, list]:
        windows = model_inputs["windows"]
        config = self.model.config
        generate_kwargs = dict(generate_kwargs or {})  # max_new_tokens: the LM's generation_config (30)
        num_candidates = num_candidates or config.num_candidates
        if num_candidates > 1:
            generate_kwargs = candidate_generate_kwargs(num_candidates, generate_kwargs)
        captions = [""] * len(windows)
        details: list[dict | None] = [None] * len(windows)  # candidates and confidence, with num_candidates > 1
        embeddings: list[dict | None] = [None] * len(windows)  # silent windows are never embedded
        audible = [i for i, w in enumerate(windows) if not w["is_silent"]]
        for start in range(0, len(audible), batch_size):
            rows = audible[start : start + batch_size]
            # (b, D); a window longer than the encoder's input (10 s for CLAP) is the mean of its pieces.
            samples = [windows[i]["samples"] for i in rows]
            embeds = self.model.embed_audio(waveforms=samples, feature_extractor=self.feature_extractor,
                                            batch_size=batch_size)
            # The bridge's forward noise of each window is seeded from its samples: batch-invariant results.
            seeds = [content_seed(s) for s in samples]
            ids = self.model.generate(
                audio_embeds=embeds, input_ids=self._prompt_ids, strength=strength,
                num_inference_steps=num_inference_steps, generator=seeded_generators(seeds), **generate_kwargs,
            )
            if num_candidates > 1:
                texts, lm_logprobs = beam_candidates(ids, self.tokenizer, num_candidates)
                candidates = scored_candidates(texts, lm_logprobs, self.model.score_captions(embeds, texts))
                for k, i in enumerate(rows):
                    ranked = rank_candidates(candidates[k], rerank or config.rerank, config.rerank_weight)
                    captions[i] = ranked[0]["text"]
                    details[i] = {"candidates": ranked}
                    if config.confidence_calibration:
                        details[i]["confidence"] = confidence(ranked, config.confidence_calibration)
            else:
                for i, text in zip(rows, self.tokenizer.batch_decode(ids, skip_special_tokens=True)):
                    captions[i] = text.strip()
            if return_embeddings:
                # The bridge again with the same seeds: the embeddings the decoder read (the bridge is a small MLP,
                # so this costs little next to decoding and embedding the audio a second time).
                bridged = self.model.link(embeds, strength=strength, num_inference_steps=num_inference_steps,
                                          generator=seeded_generators(seeds))
                for k, i in enumerate(rows):
                    embeddings[i] = {"audio_embeds": embeds[k].cpu(), "bridged_embeds": bridged[k].float().cpu()}
        out = {"captions": captions, "details": details}
        if return_embeddings:
            out["embeddings"] = embeddings
        return out

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        audio: PreparedAudio | AudioFileStream = model_outputs["audio"]
        windows, captions = model_outputs["windows"], model_outputs["captions"]
        result = {
            "generated_text": "",
            "is_silent": all(w["is_silent"] for w in windows),
            "duration_s": round(audio.duration_s, 3),
            "sampling_rate": audio.sampling_rate,
            "num_channels": audio.num_channels,
            "peak_dbfs": round(float(audio.peak_dbfs), 2),
        }
        if model_outputs["chunked"]:
            details = model_outputs.get("details") or [None] * len(captions)
            result["chunks"] = [
                {"timestamp": w["timestamp"], "generated_text": c, "is_silent": w["is_silent"], **(d or {})}
                for w, c, d in zip(windows, captions, details)
            ]
            for chunk, embeds in zip(result["chunks"], model_outputs.get("embeddings", ())):
                chunk.update(embeds or {})
            distinct = [c for i, c in enumerate(captions) if c and c not in captions[:i]]
            result["generated_text"] = "; ".join(distinct)
        else:
            result["generated_text"] = captions[0]
            result.update((model_outputs.get("details") or [None])[0] or {})
            result.update((model_outputs.get("embeddings") or [None])[0] or {})
        return result


class WindowBatcher:
    """Captions the windows of a stream of inputs in model calls of `batch_size` audible windows each.

    A long file is many windows and a short one is one; the windows of consecutive inputs share model calls, a silent
    window rides along without counting (it is never embedded, so its samples are dropped at once), and only each
    window's caption record is kept: a streamed file never sits in memory whole. `run` yields (prepared input,
    records) in input order as soon as an input's windows are captioned, or (the exception, None) for an input that
    failed with `on_error="report"`. The batches are the same whatever the inputs' grouping into calls, and so are
    the results (each window's noise is seeded by its own samples).
    """

    def __init__(self, caption: Callable[[list[dict]], dict[str, list]], batch_size: int):
        self.caption = caption  # (windows) -> {"captions", "details"[, "embeddings"]}, one entry per window
        self.batch_size = batch_size

    def run(self, inputs: Iterable, preprocess: Callable[[Any], dict], on_error: str = "raise") -> Iterator[tuple]:
        started: deque[list] = deque()  # [prepared input or exception, its records, windows still pending]
        pending: list[tuple[list, dict]] = []
        for x in inputs:
            entry = [None, [], 0]
            started.append(entry)
            try:
                entry[0] = preprocess(x)
                for window in entry[0]["windows"]:  # a generator for a streamed file: may raise part way
                    if window["is_silent"]:
                        window = {**window, "samples": None}
                    pending.append((entry, window))
                    entry[2] += 1
                    if sum(not w["is_silent"] for _, w in pending) == self.batch_size:
                        self._caption(pending)
            except (ValueError, TypeError, OSError) as err:
                if on_error == "raise":
                    raise
                entry[0], entry[2] = err, 0
                pending[:] = [p for p in pending if p[0] is not entry]
            while started and started[0][2] == 0:
                yield self._finished(started.popleft())
        if pending:
            self._caption(pending)
        while started:
            yield self._finished(started.popleft())

    def _caption(self, pending: list[tuple[list, dict]]) -> None:
        outputs = self.caption([w for _, w in pending])
        for k, (entry, window) in enumerate(pending):
            record = {"timestamp": window["timestamp"], "is_silent": window["is_silent"],
                      "caption": outputs["captions"][k], "details": outputs["details"][k]}
            if "embeddings" in outputs:
                record["embeddings"] = outputs["embeddings"][k]
            entry[1].append(record)
            entry[2] -= 1
        pending.clear()

    @staticmethod
    def _finished(entry: list) -> tuple:
        item, records, _ = entry
        return (item, None) if isinstance(item, Exception) else (item, records)


def _generate_kwargs(generate_kwargs: dict | None, max_new_tokens: int | None, num_beams: int | None) -> dict:
    """The `generate` arguments of a call: `generate_kwargs` with `max_new_tokens` and `num_beams` over them, the
    sizes checked and the arguments the pipeline sets itself refused."""
    if generate_kwargs is not None and not isinstance(generate_kwargs, dict):
        raise TypeError(f"`generate_kwargs` must be a dict of `generate` arguments, got {type(generate_kwargs).__name__}.")
    generate = dict(generate_kwargs or {})
    clashes = [key for key in PIPELINE_GENERATE_KWARGS if key in generate]
    if clashes:
        raise ValueError(f"`generate_kwargs` cannot set `{clashes[0]}`: the pipeline sets it; use "
                         f"{PIPELINE_GENERATE_KWARGS[clashes[0]]}.")
    if max_new_tokens is not None:
        generate["max_new_tokens"] = max_new_tokens
    if num_beams is not None:
        generate["num_beams"] = num_beams
    for key in GENERATE_SIZES:
        if key in generate:
            check_positive_int(key, generate[key])
    return generate


def _window(samples: np.ndarray, start: int, end: int, rate: int, silence_threshold_db: float) -> dict[str, Any]:
    return {"samples": samples, "is_silent": bool(is_silent(samples, silence_threshold_db)),
            "timestamp": (round(start / rate, 3), round(end / rate, 3))}


def _file_path(inputs) -> str | None:
    """The path when `inputs` is a file (a path, or a dict with only a `path`, as datasets' `Audio` gives)."""
    if isinstance(inputs, dict) and all(inputs.get(k) is None for k in ("array", "raw", "bytes")):
        inputs = inputs.get("path")
    return os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else None

