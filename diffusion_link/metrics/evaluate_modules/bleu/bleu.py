"""BLEU-1..4 as the COCO caption evaluation computes them (pycocoevalcap's Bleu), in pure Python.

Corpus-level BLEU-n: the geometric mean of clipped 1..n-gram precisions over the whole corpus, times a
brevity penalty from the closest reference length of each caption, with COCO's smoothing constants.

    import evaluate
    from diffusion_link.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path("bleu"))
    metric.compute(
        predictions=["a dog barks", "rain falls on a roof"],
        references=[["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"]],
    )

Same numbers as `diffusion_link.metrics.caption_scores(..., metrics=("bleu_1", "bleu_2", "bleu_3", "bleu_4"))`.
"""

from diffusion_link.metrics import evaluate_metric


_CITATION = """\
@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of ACL},
  year={2002}
}
"""


class Bleu(evaluate_metric.CaptionMetric):
    metric_names = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
    metric_description = __doc__
    metric_citation = _CITATION
