"""CIDEr-D as the COCO caption evaluation computes it (pycocoevalcap's Cider), in pure Python.

Per caption, the mean over n = 1..4 of the clipped tf-idf cosine with each reference times a Gaussian length
penalty (sigma = 6), averaged over references, times 10; the idf comes from the references of the scored corpus,
so score a whole evaluation set at once. The mean over captions.

    import evaluate
    from diffusion_link.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path("cider_d"))
    metric.compute(
        predictions=["a dog barks", "rain falls on a roof"],
        references=[["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"]],
    )

Same numbers as `diffusion_link.metrics.caption_scores(..., metrics=("cider_d",))`.
"""

from diffusion_link.metrics import evaluate_metric


_CITATION = """\
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={Proceedings of CVPR},
  year={2015}
}
"""


class CiderD(evaluate_metric.CaptionMetric):
    metric_names = ("cider_d",)
    metric_description = __doc__
    metric_citation = _CITATION
