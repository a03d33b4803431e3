"""Local `evaluate` metric scripts for caption scores, shipped inside the package so they load offline:

    import evaluate
    from diffusion_link.metrics import evaluate_module_path

    cider = evaluate.load(evaluate_module_path("cider_d"))
    cider.compute(
        predictions=["a dog barks", "rain falls on a roof"],
        references=[["a dog is barking", "dogs bark loudly"], ["rain is falling", "heavy rain on a tin roof"]],
    )

Each `<name>/<name>.py` subclasses `evaluate.Metric` (through `diffusion_link.metrics.evaluate_metric`) and returns
the same numbers as `diffusion_link.metrics.caption_scores`.
"""

from __future__ import annotations

import os


EVALUATE_MODULES = ("bleu", "rouge_l", "cider_d", "meteor", "semantic_similarity", "caption_scores")


def evaluate_module_path(name: str) -> str:
    """The folder of the local `evaluate` metric `name`, for `evaluate.load(evaluate_module_path(name))`."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"No local evaluate module {name!r}; available: {list(EVALUATE_MODULES)}.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
