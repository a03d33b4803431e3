"""ROUGE-L as the COCO caption evaluation computes it (pycocoevalcap's Rouge), in pure Python.

Per caption, the F-measure (beta = 1.2) of the best LCS precision and the best LCS recall over its references;
the mean over captions.

    import evaluate
    from diffusion_link.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path("rouge_l"))
    metric.compute(
        predictions=["a dog barks", "rain falls on a roof"],
        references=[["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"]],
    )

Same numbers as `diffusion_link.metrics.caption_scores(..., metrics=("rouge_l",))`.
"""

from diffusion_link.metrics import evaluate_metric


_CITATION = """\
@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  year={2004}
}
"""


class RougeL(evaluate_metric.CaptionMetric):
    metric_names = ("rouge_l",)
    metric_description = __doc__
    metric_citation = _CITATION
