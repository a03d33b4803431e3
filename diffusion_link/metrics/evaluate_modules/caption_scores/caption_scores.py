"""Caption scores (BLEU-1..4, ROUGE-L, CIDEr-D, METEOR, semantic similarity, exact match, token F1) in one
`evaluate` metric; `compute(..., metrics=[...])` picks them, by default the pure-Python COCO set (BLEU-1..4,
ROUGE-L, CIDEr-D).

    import evaluate
    from diffusion_link.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path("caption_scores"))
    metric.compute(
        predictions=["a dog barks", "rain falls on a roof"],
        references=[["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"]],
        metrics=["cider_d", "meteor"],
        return_details=True,
    )

Same numbers as `diffusion_link.metrics.caption_scores`. `spice` is reported as unavailable (its CoreNLP models
cannot be had offline), and `meteor` too where Java or pycocoevalcap is missing.
"""

from diffusion_link.metrics import evaluate_metric
from diffusion_link.metrics.caption_scores import COCO_METRICS


_CITATION = """\
@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh
          and Dollár, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""


class CaptionScores(evaluate_metric.CaptionMetric):
    metric_names = COCO_METRICS
    metric_description = __doc__
    metric_citation = _CITATION
    choose_metrics = True
