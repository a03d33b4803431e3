"""BLEU-1..4 as the COCO caption evaluation computes it (`pycocoevalcap.bleu`), in pure Python.

Corpus-level BLEU (Papineni et al., 2002):

    BLEU-N = BP * (prod_{n=1..N} p_n) ** (1 / N),
    p_n    = (sum_i clipped_matches_n(i) + 1e-15) / (sum_i candidate_ngrams_n(i) + 1e-9),
    BP     = exp(1 - r / c) if c < r else 1,

where the clipped matches of caption i count each candidate n-gram at most as often as it occurs in any single
reference, c is the total candidate length, and r the total "closest" reference length (per caption, the reference
length nearest to the candidate's, the shorter on a tie). The tiny constants are the COCO scorer's; they keep a
corpus without any matching 4-gram at a small positive BLEU-4 instead of 0, as published numbers do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence


# The smoothing constants of pycocoevalcap's BleuScorer.
_TINY = 1e-15
_SMALL = 1e-9


@dataclass
class BleuResult:
    """Corpus BLEU-1..N (`corpus[n - 1]` is BLEU-n) and COCO's per-caption BLEU-1..N (`per_caption[n - 1][i]`)."""

    corpus: list[float]
    per_caption: list[list[float]]


def ngram_counts(tokens: Sequence[str], max_order: int) -> Counter:
    """Counts of the 1- to `max_order`-grams of `tokens`, keyed by tuples."""
    counts: Counter = Counter()
    for n in range(1, max_order + 1):
        for start in range(len(tokens) - n + 1):
            counts[tuple(tokens[start : start + n])] += 1
    return counts


def corpus_bleu(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], max_order: int = 4
) -> BleuResult:
    """Corpus BLEU-1..`max_order` of tokenised candidates against their tokenised references (see the module doc).

    Args:
        candidates: N token lists.
        references: N lists of reference token lists (at least one each).
        max_order: the largest n-gram order N.
    """
    if len(candidates) != len(references):
        raise ValueError(f"Got {len(candidates)} candidates but {len(references)} reference lists.")
    if max_order < 1:
        raise ValueError(f"`max_order` must be at least 1, got {max_order}.")
    total_correct, total_guess = [0] * max_order, [0] * max_order
    total_cand_len, total_ref_len = 0, 0
    per_caption: list[list[float]] = [[] for _ in range(max_order)]
    for candidate, refs in zip(candidates, references):
        if not refs:
            raise ValueError("Every candidate needs at least one reference.")
        max_ref_counts: Counter = Counter()
        for ref in refs:
            max_ref_counts |= ngram_counts(ref, max_order)  # | keeps the larger count: clipping by any one reference
        cand_len = len(candidate)
        ref_len = min((abs(len(ref) - cand_len), len(ref)) for ref in refs)[1]  # "closest"; the shorter on a tie
        correct, guess = [0] * max_order, [max(0, cand_len - k) for k in range(max_order)]
        for ngram, count in ngram_counts(candidate, max_order).items():
            correct[len(ngram) - 1] += min(max_ref_counts[ngram], count)
        for k in range(max_order):
            total_correct[k] += correct[k]
            total_guess[k] += guess[k]
        total_cand_len += cand_len
        total_ref_len += ref_len
        for k, score in enumerate(_bleu_from_counts(correct, guess, cand_len, ref_len)):
            per_caption[k].append(score)
    corpus = _bleu_from_counts(total_correct, total_guess, total_cand_len, total_ref_len)
    return BleuResult(corpus=corpus, per_caption=per_caption)


def _bleu_from_counts(correct: list[int], guess: list[int], cand_len: float, ref_len: float) -> list[float]:
    """BLEU-1..N from match and n-gram counts, with COCO's smoothing and brevity penalty."""
    scores, product = [], 1.0
    for k in range(len(correct)):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (cand_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores
