"""The `evaluate.Metric` behind the local caption metric scripts in `evaluate_modules/`.

Imported only by those scripts (it imports `evaluate`, which is slow to import); use
`diffusion_link.metrics.evaluate_module_path` to find them.
"""

from __future__ import annotations

import datasets
import evaluate

from .caption_scores import caption_score_details


_INPUTS_DESCRIPTION = """
Args:
    predictions (`list[str]`): N generated captions.
    references (`list[list[str]]`): N lists of reference captions (at least one non-blank each).
    tokenizer (`str`, *optional*, defaults to `"coco"`): `"coco"` (pure-Python PTBTokenizer mimic), `"ptb_java"`
        (pycocoevalcap's Java PTBTokenizer) or `"words"`.
    semantic_reduction (`str`, *optional*, defaults to `"mean"`): `"mean"` or `"max"` over references, for
        `semantic_similarity`.
    return_details (`bool`, *optional*, defaults to `False`): also return `details`, per metric its variant,
        tokenizer, corpus size and (if it could not run) the reason.
Returns:
    `dict`: one float per metric (e.g. `cider_d`), and `num_predictions`.
"""

_REFERENCE_URLS = ["https://github.com/salaniz/pycocoevalcap"]


class CaptionMetric(evaluate.Metric):
    """Caption scores from `diffusion_link.metrics.caption_score_details`. Subclasses set `metric_names` (what
    `compute` returns), `metric_description` and `metric_citation`; with `choose_metrics = True` a caller may pass
    `metrics=[...]` to `compute`."""

    metric_names: tuple[str, ...] = ()
    metric_description: str = ""
    metric_citation: str = ""
    choose_metrics: bool = False

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.metric_description,
            citation=self.metric_citation,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=_REFERENCE_URLS,
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[list[str]],
        metrics: list[str] | None = None,
        tokenizer: str = "coco",
        semantic_reduction: str = "mean",
        return_details: bool = False,
    ) -> dict:
        if metrics is not None and not self.choose_metrics:
            raise ValueError(
                f"This module computes {list(self.metric_names)}; load the 'caption_scores' module to choose metrics."
            )
        details = caption_score_details(
            predictions, references, metrics or self.metric_names, tokenizer=tokenizer,
            semantic_reduction=semantic_reduction,
        )
        out: dict = dict(details.scores)
        if return_details:
            out["details"] = details.to_dict()["results"]
        return out
