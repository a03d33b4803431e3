"""METEOR 1.5 through the Java jar that pycocoevalcap ships (needs java and pycocoevalcap).

The corpus METEOR of the jar's `-l en -norm` English setting, from aggregated statistics. Without Java or
pycocoevalcap, `compute` warns and returns no `meteor` key (`return_details=True` gives the reason).

    import evaluate
    from diffusion_link.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path("meteor"))
    metric.compute(
        predictions=["a dog barks", "rain falls on a roof"],
        references=[["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"]],
    )

Same numbers as `diffusion_link.metrics.caption_scores(..., metrics=("meteor",))`.
"""

from diffusion_link.metrics import evaluate_metric


_CITATION = """\
@inproceedings{denkowski2014meteor,
  title={Meteor Universal: Language Specific Translation Evaluation for Any Target Language},
  author={Denkowski, Michael and Lavie, Alon},
  booktitle={Proceedings of the Ninth Workshop on Statistical Machine Translation},
  year={2014}
}
"""


class Meteor(evaluate_metric.CaptionMetric):
    metric_names = ("meteor",)
    metric_description = __doc__
    metric_citation = _CITATION
