"""ROUGE-L as the COCO caption evaluation computes it (`pycocoevalcap.rouge`), in pure Python.

For a candidate c and references r_1..r_M (Lin, 2004; COCO's variant):

    P = max_j LCS(c, r_j) / |c|,    R = max_j LCS(c, r_j) / |r_j|,
    ROUGE-L = (1 + beta^2) P R / (R + beta^2 P),    beta = 1.2,

with the maxima taken separately over the references, and 0 when P or R is 0. The corpus score is the mean over
candidates.
"""

from __future__ import annotations

from typing import Sequence


ROUGE_BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, O(|a| |b|))."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def sentence_rouge_l(candidate: Sequence[str], references: Sequence[Sequence[str]], beta: float = ROUGE_BETA) -> float:
    """ROUGE-L F-score of one tokenised candidate against its tokenised references (see the module doc)."""
    if not references:
        raise ValueError("ROUGE-L needs at least one reference.")
    if not candidate:
        return 0.0
    lcs = [lcs_length(candidate, ref) for ref in references]
    precision = max(l / len(candidate) for l in lcs)
    recall = max((l / len(ref) if ref else 0.0) for l, ref in zip(lcs, references))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def corpus_rouge_l(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], beta: float = ROUGE_BETA
) -> tuple[float, list[float]]:
    """(mean ROUGE-L over the N candidates, the N per-caption scores)."""
    if len(candidates) != len(references):
        raise ValueError(f"Got {len(candidates)} candidates but {len(references)} reference lists.")
    if not candidates:
        raise ValueError("No candidates to score.")
    scores = [sentence_rouge_l(c, refs, beta) for c, refs in zip(candidates, references)]
    return sum(scores) / len(scores), scores
