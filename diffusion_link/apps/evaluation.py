"""One-command, reproducible evaluation of a captioner on audio with reference captions.

```python
from diffusion_link.apps.evaluation import evaluate_captioner
from diffusion_link.apps.reference_captions import read_references_csv

files, references = read_references_csv("clotho_captions_evaluation.csv", audio_dir="clotho/evaluation")
report = evaluate_captioner("path/to/captioner", files, references, "eval_out")   # or an AudioCaptionPipeline
report["scores"]["cider_d"]
```

`evaluate_captioner` captions every file with the `audio-captioning` pipeline (`on_error="report"`: a file that
cannot be read becomes an error row and the others are still captioned) and writes into `output_dir`:

- `predictions.csv`: one row per file: `file`, `generated_text`, `references` (a JSON list), `is_silent`,
  `duration_s`, `sampling_rate`, `num_channels`, `peak_dbfs`, `error`;
- `scores.json`: the returned report: the caption scores and each metric's variant / tokenizer / corpus size, the
  counts of files, failures and silent clips, the gap figures (or why they were skipped), the model, the generation
  settings, the versions of python / torch / transformers / diffusers, the platform, a timestamp and the command line;
- `gap.json`: `modality_gap` of the raw audio embeddings and of the bridged embeddings against the text embeddings
  of each clip's first reference;
- `gap.png`: `plot_modality_gap`: a 2-D PCA of audio / text / bridged embeddings and histograms of paired cosines.

Scores cover the files that were captioned; failed files are counted and listed, not scored. A silent clip gets no
caption (`is_silent`) and scores 0 against its references. The gap figures use the captioned, non-silent clips and
need at least `MIN_GAP_PAIRS` of them (the separability probe is cross-validated); with fewer, `gap.json` and
`gap.png` are not written and the report says why. They use the embeddings the pipeline returns with
`return_embeddings=True`: each clip's audio embedding and the bridged embedding the decoder read (nothing is embedded
twice).

Reference captions are read by `diffusion_link.apps.reference_captions` (CSV files of AudioCaps / Clotho, or sidecar text
files).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

import torch
from transformers.utils.logging import tqdm

from diffusion_link.experiments.atomic_files import atomic_open, atomic_path
from diffusion_link.metrics.caption_scores import CAPTION_METRICS, COCO_METRICS
from diffusion_link.configuration_diffusion_link_captioner import DEFAULT_MAX_NEW_TOKENS
from diffusion_link.validation import check_positive_int, check_strength


if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from diffusion_link.modeling_diffusion_link_captioner import DiffusionLinkForAudioCaptioning
    from diffusion_link.pipeline_audio_captioning import AudioCaptionPipeline


logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
SCORES_FILE = "scores.json"
GAP_FILE = "gap.json"
GAP_PLOT_FILE = "gap.png"
PREDICTION_FIELDS = (
    "file", "generated_text", "references", "is_silent", "duration_s", "sampling_rate", "num_channels", "peak_dbfs",
    "error",
)
# Java-free and model-free: cheap on any machine. `meteor` (Java) and `semantic_similarity` (MiniLM) are opt-in.
DEFAULT_EVALUATION_METRICS = ("exact_match", "token_f1", *COCO_METRICS)
# `--metrics default meteor` means the defaults plus METEOR.
METRIC_GROUPS = {"default": DEFAULT_EVALUATION_METRICS, "coco": COCO_METRICS}
GAP_MODES = ("on", "off")
# modality_gap's probe needs 2 * folds pairs; below 5 pairs (2 folds) the figures say little.
MIN_GAP_PAIRS = 5
MAX_PROBE_FOLDS = 5
def resolve_metrics(names: Sequence[str] | None) -> tuple[str, ...]:
    """Metric names (see `CAPTION_METRICS`) with the groups `default` and `coco` expanded, de-duplicated."""
    if names is None:
        return DEFAULT_EVALUATION_METRICS
    if isinstance(names, str):
        raise TypeError(f"`metrics` must be a list of metric names, got the string {names!r}.")
    resolved = []
    for name in names:
        resolved += METRIC_GROUPS.get(name, (name,))
    unknown = [m for m in resolved if m not in CAPTION_METRICS]
    if unknown or not resolved:
        raise ValueError(
            f"Unknown caption metrics {unknown or names}; available: {list(CAPTION_METRICS)} or the groups "
            f"{list(METRIC_GROUPS)}."
        )
    return tuple(dict.fromkeys(resolved))


# ---------------------------------------------------------------------------------------------------- text side
def _use_text_tokenizer(model: DiffusionLinkForAudioCaptioning,
                        text_tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None) -> None:
    """Make sure the captioner can embed the references (its `audio_text_tokenizer`, found by the model's own rule),
    or raise `ValueError` saying how to give one. `text_tokenizer` (a tokenizer, or a folder / Hub id / `package:`
    reference to load one from) replaces the model's."""
    if isinstance(text_tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        from diffusion_link.hub.references import resolve_reference

        try:
            text_tokenizer = AutoTokenizer.from_pretrained(resolve_reference(os.fspath(text_tokenizer)))
        except Exception as err:  # a malformed tokenizer.json ends in a KeyError, or tokenizers' bare Exception
            raise ValueError(f"Cannot load the text tokenizer {os.fspath(text_tokenizer)!r} ({type(err).__name__}: "
                             f"{err}).") from err
    if text_tokenizer is not None:
        model.audio_text_tokenizer = text_tokenizer
        return
    try:
        model.audio_text_tokenizer
    except Exception as err:  # as above: whatever the loader raises, the gap cannot be measured with it
        find = getattr(model, "_audio_text_tokenizer_source", None)  # (reference, subfolder) by the model's rule
        source = find() if find is not None else None
        where = f" from {os.path.join(*filter(None, source))}" if source else ""
        raise ValueError(
            f"Cannot load the text tokenizer of the audio tower ({type(model.audio_tower).__name__}){where} "
            f"({type(err).__name__}: {err}). Pass "
            "`text_tokenizer` (CLI: --text-tokenizer), the folder or Hub id of the tower's processor/tokenizer, or turn "
            "the gap figures off (gap='off', CLI: --gap off)."
        ) from err


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_captioner(
    pipe_or_model: AudioCaptionPipeline | str | os.PathLike,
    files: Sequence[str],
    references: Sequence[Sequence[str]],
    output_dir: str | os.PathLike,
    *,
    metrics: Sequence[str] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    num_beams: int = 1,
    strength: float | None = None,
    num_inference_steps: int | None = None,
    gap: str = "on",
    text_tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    command_line: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Caption `files`, score the captions against `references`, measure the modality gap, and write the outputs
    (see the module doc) into `output_dir`.

    Args:
        pipe_or_model: an `AudioCaptionPipeline`, or a captioner folder / Hub id to load one from.
        files: N audio paths.
        references: N lists of reference captions (at least one non-blank each; blank ones are dropped).
        output_dir: created if needed; the outputs of an earlier run in it are replaced (its gap files removed
            when this run writes none).
        metrics: caption metric names or groups (`resolve_metrics`); default `DEFAULT_EVALUATION_METRICS`
            (exact_match, token_f1, BLEU-1..4, ROUGE-L, CIDEr-D). `meteor` (Java) and `semantic_similarity` are
            opt-in.
        batch_size: files per pipeline call.
        max_new_tokens, num_beams: generation settings.
        strength, num_inference_steps: the bridge's `link()` settings (default: the bridge's own).
        gap: `"on"` (gap figures and plot) or `"off"`.
        text_tokenizer: the tokenizer of the tower's text side, or where to load it from; by default the model's
            own `audio_text_tokenizer` (its folder's `audio_text_tokenizer/`, else the config's reference).
        trust_remote_code: passed to `pipeline()` when `pipe_or_model` is a name.
        command_line: the command to record (default: `sys.argv`).

    Returns:
        The report written to `scores.json`: `scores` (the flat dict of `caption_scores` on the captioned files),
        `metrics` (variant, tokenizer, corpus size of each), `counts`, `failures`, `modality_gap`, `generation`,
        `model`, `environment`, `timestamp`, `command_line`, `outputs`.

    Raises `ValueError` / `TypeError` for bad arguments (mismatched lengths, empty references naming the files,
    unknown metrics, a size < 1, a `strength` outside (0, 1], more steps than the bridge's schedule holds, no text
    tokenizer with `gap="on"`) before anything is captioned.
    """
    started = time.time()
    files, references = _checked_references(files, references)
    metrics = resolve_metrics(metrics)
    for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
        check_positive_int(name, value)
    if strength is not None:
        check_strength(strength)
    if num_inference_steps is not None:
        check_positive_int("num_inference_steps", num_inference_steps)
    if gap not in GAP_MODES:
        raise ValueError(f"`gap` must be one of {GAP_MODES}, got {gap!r}.")
    if not isinstance(trust_remote_code, bool):
        raise TypeError(f"`trust_remote_code` must be True or False, got {trust_remote_code!r}.")
    if not (text_tokenizer is None or isinstance(text_tokenizer, (str, os.PathLike)) or callable(text_tokenizer)):
        raise TypeError("`text_tokenizer` must be a tokenizer, or the folder / Hub id of one, got "
                        f"{type(text_tokenizer).__name__}.")
    if isinstance(command_line, str):
        raise TypeError(f"`command_line` must be a list of arguments (as `sys.argv`), got the string {command_line!r}.")

    pipe = _load_pipeline(pipe_or_model, trust_remote_code)
    model = pipe.model
    link_timesteps = getattr(model.bridge, "link_timesteps", None)
    if link_timesteps is not None:  # steps beyond the bridge's schedule would fail at the first batch, not here
        link_timesteps(strength, num_inference_steps)
    # Fewer files than the gap figures need: no tokenizer lookup and no embeddings kept.
    measure_gap = gap == "on" and len(files) >= MIN_GAP_PAIRS
    if measure_gap:
        _use_text_tokenizer(model, text_tokenizer)
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    for stale in (GAP_FILE, GAP_PLOT_FILE):  # an earlier run's figures must not pass for this run's
        if os.path.isfile(os.path.join(output_dir, stale)):
            os.remove(os.path.join(output_dir, stale))

    call = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "return_embeddings": measure_gap}
    if strength is not None:
        call["strength"] = strength
    if num_inference_steps is not None:
        call["num_inference_steps"] = num_inference_steps
    rows: list[dict[str, Any]] = []
    audio_embeds, bridged_embeds, gap_texts = [], [], []
    # Each output is written to a temporary file and renamed into place when complete (`atomic_files`): a killed run
    # leaves the previous predictions.csv / scores.json / gap files intact, never a half-written one.
    with atomic_open(os.path.join(output_dir, PREDICTIONS_FILE), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for start in tqdm(range(0, len(files), batch_size), desc="evaluating", unit="batch"):
            batch = files[start : start + batch_size]
            results = pipe(batch, batch_size=batch_size, on_error="report", **call)
            for path, refs, result in zip(batch, references[start : start + batch_size], results):
                raw, bridged = result.pop("audio_embeds", None), result.pop("bridged_embeds", None)
                if raw is not None:  # captioned and audible: the embeddings the pipeline made and the decoder read
                    audio_embeds.append(raw)
                    bridged_embeds.append(bridged)
                    gap_texts.append(next(r for r in refs if r.strip()))
                row = {"file": path, "references": refs, **result}
                rows.append(row)
                writer.writerow({**row, "references": json.dumps(refs, ensure_ascii=False)})
            handle.flush()  # each finished batch is in the temporary file before the next starts

    captioned = [r for r in rows if "error" not in r]
    failures = [{"file": r["file"], "error": r["error"]} for r in rows if "error" in r]
    if failures:
        logger.warning("%d of %d files failed (the first: %s: %s); they are listed under `failures` in %s.",
                       len(failures), len(rows), failures[0]["file"], failures[0]["error"], SCORES_FILE)
    report: dict[str, Any] = {"scores": {}, "metrics": {}}
    if captioned:
        from diffusion_link.metrics.caption_scores import caption_score_details

        details = caption_score_details([r["generated_text"] for r in captioned],
                                        [r["references"] for r in captioned], metrics).to_dict()
        report["scores"], report["metrics"] = details["scores"], details["results"]
    else:
        report["scores_note"] = "No file was captioned, so nothing was scored."
    report["counts"] = {
        "files": len(rows),
        "captioned": len(captioned),
        "failed": len(failures),
        "silent": sum(1 for r in captioned if r["is_silent"]),
        "references": sum(len(r["references"]) for r in rows),
    }
    report["failures"] = failures
    report["modality_gap"] = _gap_section(model, measure_gap, audio_embeds, bridged_embeds, gap_texts, len(rows),
                                          output_dir, strength, num_inference_steps, gap)
    report["generation"] = {
        "batch_size": batch_size, "max_new_tokens": max_new_tokens, "num_beams": num_beams,
        "strength": strength if strength is not None else _bridge_default(model, "strength"),
        "num_inference_steps": (num_inference_steps if num_inference_steps is not None
                                else _bridge_default(model, "num_inference_steps")),
    }
    report["model"] = _model_info(pipe_or_model, model)
    report["environment"] = environment_info(model)
    report["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["runtime_s"] = round(time.time() - started, 2)
    argv = list(command_line) if command_line is not None else list(sys.argv)
    report["command_line"] = shlex.join(argv)
    report["outputs"] = {"predictions": PREDICTIONS_FILE, "scores": SCORES_FILE}
    if report["modality_gap"]["status"] == "computed":
        report["outputs"].update(gap=GAP_FILE, gap_plot=GAP_PLOT_FILE)
    with atomic_open(os.path.join(output_dir, SCORES_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    return report


def _checked_references(files: Sequence[str | os.PathLike],
                        references: Sequence[Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """`files` as paths and `references` as lists of non-blank captions, one list per file, or `TypeError` /
    `ValueError` saying which file or argument is wrong. Blank captions are dropped (as `read_references_csv` drops
    blank cells) with a warning that counts them; a file left without any is an error, not a silent 0 score."""
    for name, value in (("files", files), ("references", references)):
        if isinstance(value, (str, bytes, os.PathLike)):
            raise TypeError(f"`{name}` must be a list (one item per file), got the single {type(value).__name__} "
                            f"{os.fspath(value)!r}.")
    bad_files = [(i, f) for i, f in enumerate(files) if not isinstance(f, (str, os.PathLike))]
    if bad_files:
        raise TypeError(f"`files` must be audio paths; items {[i for i, _ in bad_files[:10]]} are "
                        f"{sorted({type(f).__name__ for _, f in bad_files})}.")
    files = [os.fspath(f) for f in files]
    if len(files) != len(references):
        raise ValueError(f"Got {len(files)} files but {len(references)} reference lists.")
    if not files:
        raise ValueError("No files to evaluate.")
    kept, blanks = [], 0
    for path, refs in zip(files, references):
        if isinstance(refs, str) or not isinstance(refs, Sequence) or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"The references of {path} must be a list of caption strings, got {refs!r}.")
        kept.append([r for r in refs if r.strip()])
        blanks += len(refs) - len(kept[-1])
    unreferenced = [f for f, refs in zip(files, kept) if not refs]
    if unreferenced:
        raise ValueError(f"{len(unreferenced)} files have no non-empty reference caption: {unreferenced[:10]}.")
    if blanks:
        logger.warning("Dropped %d blank reference captions; every file still has at least one.", blanks)
    return files, kept


def environment_info(model: torch.nn.Module | None = None) -> dict[str, str]:
    """Versions of python, torch, transformers, diffusers and this package, the platform and the model's device."""
    import diffusers
    import transformers

    from diffusion_link import __version__

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "diffusion_link": __version__,
    }
    if model is not None:
        info["device"] = str(next(model.parameters()).device)
    return info


def _load_pipeline(pipe_or_model, trust_remote_code: bool):
    from diffusion_link.pipeline_audio_captioning import AudioCaptionPipeline

    if isinstance(pipe_or_model, AudioCaptionPipeline):
        return pipe_or_model
    if isinstance(pipe_or_model, (str, os.PathLike)):
        from diffusion_link.apps.loading import load_captioning_pipeline

        return load_captioning_pipeline(pipe_or_model, trust_remote_code)
    raise TypeError(
        "`pipe_or_model` must be an AudioCaptionPipeline or a captioner folder / Hub id, got "
        f"{type(pipe_or_model).__name__} (wrap a bare model: AudioCaptionPipeline(model=..., tokenizer=..., "
        "feature_extractor=...))."
    )


@torch.no_grad()
def _gap_section(model, measured, audio_embeds, bridged_embeds, texts, num_files, output_dir, strength,
                 num_inference_steps, gap) -> dict[str, Any]:
    from diffusion_link.metrics import modality_gap, plot_modality_gap

    if gap == "off":
        return {"status": "off"}
    if len(texts) < MIN_GAP_PAIRS:
        found = (f"only {num_files} files" if not measured
                 else f"{len(texts)} of {num_files} files captioned and not silent")
        return {
            "status": "skipped",
            "reason": f"{found}; the gap figures need at least {MIN_GAP_PAIRS} captioned, non-silent clips (the "
            "separability probe is cross-validated).",
        }
    audio, bridged = torch.stack(audio_embeds), torch.stack(bridged_embeds)  # (n, D) each
    text = model.embed_text(texts)  # (n, D), the tower's text side
    folds = min(MAX_PROBE_FOLDS, len(texts) // 2)
    section = {
        "status": "computed",
        "num_pairs": len(texts),
        "text": "the first reference of each clip, embedded by the audio tower's text side",
        "probe_folds": folds,
        "bridge_type": getattr(model.config, "bridge_type", None),
        "strength": strength if strength is not None else _bridge_default(model, "strength"),
        "num_inference_steps": (num_inference_steps if num_inference_steps is not None
                                else _bridge_default(model, "num_inference_steps")),
        "raw": modality_gap(audio, text, probe_folds=folds),
        "bridged": modality_gap(bridged, text, probe_folds=folds),
    }
    with atomic_open(os.path.join(output_dir, GAP_FILE), "w", encoding="utf-8") as f:
        json.dump(section, f, indent=2)
    with atomic_path(os.path.join(output_dir, GAP_PLOT_FILE)) as tmp:
        plot_modality_gap(audio, text, tmp, bridged_embeds=bridged,
                          title=f"Modality gap of {len(texts)} evaluated clips, before and after the bridge")
    return section


def _bridge_default(model, name: str):
    return getattr(getattr(model.bridge, "config", None), name, None)


def _model_info(pipe_or_model, model) -> dict[str, Any]:
    name = os.fspath(pipe_or_model) if isinstance(pipe_or_model, (str, os.PathLike)) else model.name_or_path
    config = model.config
    return {
        "name_or_path": name or None,
        "class": type(model).__name__,
        "audio_tower": type(model.audio_tower).__name__,
        "audio_tower_name_or_path": getattr(config, "audio_tower_name_or_path", None),
        "language_model_name_or_path": getattr(config, "language_model_name_or_path", None),
        "bridge_type": getattr(config, "bridge_type", None),
        "prompt": getattr(config, "prompt", None),
    }


__all__ = [
    "DEFAULT_EVALUATION_METRICS", "MIN_GAP_PAIRS", "environment_info", "evaluate_captioner", "resolve_metrics",
]
