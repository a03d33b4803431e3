"""Scores of generated captions against reference captions.

`caption_scores(predictions, references, metrics=...)` returns a flat `dict[str, float]` (what `Trainer`
`compute_metrics` and experiment trackers expect); `caption_score_details(...)` returns the same scores together
with, per metric, its variant, tokenizer, corpus size, per-caption scores, or why it could not run.

Metrics (names are the keys of the returned dict):

| name | what | module |
| --- | --- | --- |
| `exact_match` | the tokenised prediction equals a tokenised reference; mean over captions | here |
| `token_f1` | best token-overlap F1 against the references (SQuAD-style); mean over captions | here |
| `bleu_1` .. `bleu_4` | corpus BLEU, closest reference length (COCO) | `bleu.py` |
| `rouge_l` | ROUGE-L F, beta = 1.2 (COCO); mean over captions | `rouge.py` |
| `cider_d` | CIDEr-D, sigma = 6, idf from this corpus's references, x10 (COCO); mean over captions | `cider.py` |
| `meteor` | METEOR 1.5 via pycocoevalcap's jar; corpus score. Needs Java, else skipped with a warning | `meteor.py` |
| `semantic_similarity` | MiniLM cosine, mean over references (FENSE-like); mean over captions | `semantic_similarity.py` |
| `spice` | unavailable offline (its CoreNLP models cannot be had); skipped with a warning | - |

BLEU, ROUGE-L and CIDEr-D are pure Python and equal pycocoevalcap's on the same tokens. All n-gram metrics read the
captions through one tokenizer, `"coco"` by default (see `caption_tokenizer.py`); `semantic_similarity` reads the
raw captions.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

from .caption_tokenizer import TOKENIZER_DESCRIPTIONS, TOKENIZERS, simple_tokenize, tokenize_captions


BLEU_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")
# The pure-Python COCO metrics: cheap, no Java, no model.
COCO_METRICS = (*BLEU_METRICS, "rouge_l", "cider_d")
CAPTION_METRICS = ("exact_match", "token_f1", *COCO_METRICS, "meteor", "semantic_similarity", "spice")
DEFAULT_METRICS = ("exact_match", "token_f1")

SPICE_UNAVAILABLE = (
    "SPICE is unavailable: it needs the Stanford CoreNLP models that pycocoevalcap downloads on first use, which "
    "cannot be had offline. Use `semantic_similarity` for a Java-free semantic score."
)

METRIC_VARIANTS = {
    "exact_match": "exact match of the token sequence with any reference; mean over captions",
    "token_f1": "best token-overlap F1 over the references (SQuAD-style); mean over captions",
    **{
        f"bleu_{n}": f"corpus BLEU-{n}: clipped 1..{n}-gram precisions, brevity penalty from the closest reference "
        "length, COCO smoothing (pycocoevalcap Bleu, option='closest'); per-caption scores are COCO's sentence BLEU"
        for n in range(1, 5)
    },
    "rouge_l": "ROUGE-L F-measure, beta=1.2, max LCS precision and recall over references (pycocoevalcap Rouge); "
    "mean over captions",
    "cider_d": "CIDEr-D: 1..4-grams, clipped tf-idf cosine, idf from this corpus's references, Gaussian length "
    "penalty sigma=6, x10 (pycocoevalcap Cider); mean over captions",
    "meteor": "METEOR 1.5 (-l en -norm) through pycocoevalcap's jar; corpus score from aggregated statistics",
    "semantic_similarity": "cosine of L2-normalised mean-pooled all-MiniLM-L6-v2 embeddings, {reduction} over "
    "references; mean over captions",
    "spice": "SPICE 1.0 (pycocoevalcap)",
}
SEMANTIC_TOKENIZER = "all-MiniLM-L6-v2 WordPiece on the raw captions"
SEMANTIC_REDUCTIONS = ("mean", "max")


@dataclass
class CaptionMetricResult:
    """One metric's score and what it was computed with.

    Attributes:
        name: the metric's key, e.g. `"cider_d"`.
        score: the corpus score, or None when the metric could not run (`unavailable_reason` says why).
        variant: the definition used (formula variant, constants, aggregation).
        tokenizer: the tokenizer the captions went through.
        num_predictions: N, the number of scored captions (the corpus size).
        num_references: the number of (non-blank) reference captions.
        per_caption: the N per-caption scores, where the metric has them.
        unavailable_reason: why the metric did not run, or None.
    """

    name: str
    score: float | None
    variant: str
    tokenizer: str | None
    num_predictions: int
    num_references: int
    per_caption: list[float] | None = None
    unavailable_reason: str | None = None

    @property
    def available(self) -> bool:
        return self.score is not None


@dataclass
class CaptionScoreDetails:
    """`scores`: the flat dict `caption_scores` returns; `results`: a `CaptionMetricResult` per requested metric
    (unavailable ones included, with their reason)."""

    scores: dict[str, float]
    results: dict[str, CaptionMetricResult]

    def to_dict(self, per_caption: bool = False) -> dict:
        """A JSON-serialisable view; per-caption scores only when asked for."""
        results = {}
        for name, result in self.results.items():
            results[name] = asdict(result)
            if not per_caption:
                results[name].pop("per_caption")
        return {"scores": dict(self.scores), "results": results}


def caption_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    tokenizer: str = "coco",
    semantic_reduction: str = "mean",
) -> dict[str, float]:
    """Corpus-level caption scores, one float per metric, plus `num_predictions`.

    Args:
        predictions: N generated captions.
        references: N lists of reference captions (at least one non-blank reference each; blank ones are skipped).
        metrics: names from `CAPTION_METRICS` (see the module doc); the default, `("exact_match", "token_f1")`, is
            cheap. `COCO_METRICS` adds BLEU-1..4, ROUGE-L and CIDEr-D (pure Python).
        tokenizer: `"coco"` (pure-Python PTB mimic, default), `"ptb_java"` (the COCO reference, needs Java) or
            `"words"` (see `caption_tokenizer.py`).
        semantic_reduction: `"mean"` or `"max"` over references for `semantic_similarity`.

    Empty predictions score 0 (with a warning counting them); empty reference lists and length mismatches raise
    `ValueError`. Metrics that cannot run here (`meteor` without Java, `spice`) are left out with a warning; use
    `caption_score_details` for the variant, tokenizer and corpus size of each score, and the reasons.
    """
    return _score_captions(predictions, references, metrics, tokenizer, semantic_reduction).scores


def caption_score_details(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    tokenizer: str = "coco",
    semantic_reduction: str = "mean",
) -> CaptionScoreDetails:
    """`caption_scores` with a `CaptionMetricResult` for each metric (variant, tokenizer, corpus size, per-caption
    scores, or why it could not run). Same arguments and errors as `caption_scores`."""
    return _score_captions(predictions, references, metrics, tokenizer, semantic_reduction)


def _score_captions(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str],
    tokenizer: str,
    semantic_reduction: str,
) -> CaptionScoreDetails:
    # Warnings use stacklevel=3: the caller of the public function.
    check_caption_inputs(predictions, references)
    if isinstance(metrics, str):
        raise TypeError(f"`metrics` must be a list of metric names, got the string {metrics!r}.")
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"Unknown caption metrics {unknown}; available: {list(CAPTION_METRICS)}.")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"`tokenizer` must be one of {TOKENIZERS}, got {tokenizer!r}.")
    if semantic_reduction not in SEMANTIC_REDUCTIONS:
        raise ValueError(f"`semantic_reduction` must be one of {SEMANTIC_REDUCTIONS}, got {semantic_reduction!r}.")

    refs = [[r for r in rs if r and r.strip()] for rs in references]
    flat_refs = [r for rs in refs for r in rs]
    tokens = tokenize_captions([*predictions, *flat_refs], tokenizer)
    pred_tokens, ref_tokens, start = tokens[: len(predictions)], [], len(predictions)
    for rs in refs:
        ref_tokens.append(tokens[start : start + len(rs)])
        start += len(rs)
    empty = sum(1 for t in pred_tokens if not t)
    if empty:
        warnings.warn(f"{empty} of {len(predictions)} predictions are empty; they score 0.", stacklevel=3)

    def result(
        name: str, score: float | None, per_caption: list[float] | None = None, reason: str | None = None,
        tokenizer_used: str | None = TOKENIZER_DESCRIPTIONS[tokenizer],
    ) -> CaptionMetricResult:
        return CaptionMetricResult(
            name=name, score=score, variant=METRIC_VARIANTS[name].format(reduction=semantic_reduction),
            tokenizer=tokenizer_used, num_predictions=len(predictions), num_references=len(flat_refs),
            per_caption=per_caption, unavailable_reason=reason,
        )

    results: dict[str, CaptionMetricResult] = {}
    for name in ("exact_match", "token_f1"):
        if name in metrics:
            score_one = _exact_match if name == "exact_match" else _token_f1
            per_caption = [score_one(p, rs) for p, rs in zip(pred_tokens, ref_tokens)]
            results[name] = result(name, sum(per_caption) / len(per_caption), per_caption)
    if any(m in metrics for m in BLEU_METRICS):
        from .bleu import corpus_bleu

        bleu = corpus_bleu(pred_tokens, ref_tokens, max_order=4)
        for n, name in enumerate(BLEU_METRICS):
            results[name] = result(name, bleu.corpus[n], bleu.per_caption[n])
    if "rouge_l" in metrics:
        from .rouge import corpus_rouge_l

        results["rouge_l"] = result("rouge_l", *corpus_rouge_l(pred_tokens, ref_tokens))
    if "cider_d" in metrics:
        from .cider import corpus_cider_d

        if len(predictions) < 2:
            warnings.warn("CIDEr-D takes its idf from the corpus; with a single caption it is always 0.", stacklevel=3)
        results["cider_d"] = result("cider_d", *corpus_cider_d(pred_tokens, ref_tokens))
    if "meteor" in metrics:
        from .meteor import corpus_meteor, meteor_unavailable_reason

        reason = meteor_unavailable_reason()
        if reason:
            warnings.warn(f"Skipping METEOR: {reason}", stacklevel=3)
            results["meteor"] = result("meteor", None, reason=reason)
        else:
            # The jar reads space-joined tokens, as pycocoevalcap feeds it.
            joined_refs = [[" ".join(t) for t in rs] for rs in ref_tokens]
            results["meteor"] = result("meteor", *corpus_meteor([" ".join(t) for t in pred_tokens], joined_refs))
    if "semantic_similarity" in metrics:
        from .semantic_similarity import semantic_similarity

        # Predictions that tokenise to nothing score 0 here too.
        texts = [p if t else "" for p, t in zip(predictions, pred_tokens)]
        score, per_caption = semantic_similarity(texts, refs, reduction=semantic_reduction)
        results["semantic_similarity"] = result(
            "semantic_similarity", score, per_caption, tokenizer_used=SEMANTIC_TOKENIZER
        )
    if "spice" in metrics:
        warnings.warn(SPICE_UNAVAILABLE, stacklevel=3)
        results["spice"] = result("spice", None, reason=SPICE_UNAVAILABLE, tokenizer_used=None)

    ordered = {name: results[name] for name in dict.fromkeys(metrics)}
    scores = {name: float(r.score) for name, r in ordered.items() if r.available}
    scores["num_predictions"] = float(len(predictions))
    return CaptionScoreDetails(scores=scores, results=ordered)


def check_caption_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Raise `ValueError` for mismatched lengths, no predictions, or a prediction without references."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("`predictions` must be a list of strings and `references` a list of lists of strings.")
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} reference lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
    bad_types = [i for i, p in enumerate(predictions) if not isinstance(p, str)]
    if bad_types:
        raise TypeError(f"Predictions must be strings; rows {bad_types[:10]} are not.")
    bad = [i for i, refs in enumerate(references) if isinstance(refs, str) or not [r for r in refs if r and r.strip()]]
    if bad:
        raise ValueError(f"{len(bad)} predictions have no non-empty reference caption (rows {bad[:10]}).")


def _exact_match(pred: list[str], refs: list[list[str]]) -> float:
    return float(bool(pred) and any(pred == r for r in refs))


def _token_f1(pred: list[str], refs: list[list[str]]) -> float:
    best = 0.0
    for ref in refs:
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


__all__ = [
    "CAPTION_METRICS", "COCO_METRICS", "CaptionMetricResult", "CaptionScoreDetails", "caption_score_details",
    "caption_scores", "check_caption_inputs", "simple_tokenize",
]
