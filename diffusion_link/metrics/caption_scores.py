"""Scores of generated captions against reference captions."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from typing import Sequence


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def simple_tokenize(text: str) -> list[str]:
    """Lower-cased words without punctuation (the normalisation caption metrics score on)."""
    return _WORD.findall(text.lower())


def caption_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("exact_match", "token_f1"),
) -> dict[str, float]:
    """Corpus-level caption scores, each the mean over predictions.

    Args:
        predictions: N generated captions.
        references: N lists of reference captions (at least one non-empty reference each).
        metrics: which scores to compute:
            - `exact_match`: the normalised prediction equals a normalised reference;
            - `token_f1`: best word-overlap F1 against the references (SQuAD-style).

    Empty predictions score 0 (with a warning counting them); empty reference lists and length mismatches raise
    `ValueError`.
    """
    check_caption_inputs(predictions, references)
    known = {"exact_match": _exact_match, "token_f1": _token_f1}
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"Unknown caption metrics {unknown}; available: {sorted(known)}.")
    empty = sum(1 for p in predictions if not simple_tokenize(p))
    if empty:
        warnings.warn(f"{empty} of {len(predictions)} predictions are empty; they score 0.", stacklevel=2)
    out = {}
    for name in metrics:
        scores = [known[name](simple_tokenize(p), [simple_tokenize(r) for r in refs]) for p, refs in zip(predictions, references)]
        out[name] = sum(scores) / len(scores)
    out["num_predictions"] = float(len(predictions))
    return out


def check_caption_inputs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Raise `ValueError` for mismatched lengths, no predictions, or a prediction without references."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("`predictions` must be a list of strings and `references` a list of lists of strings.")
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} reference lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
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
