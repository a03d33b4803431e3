"""CIDEr-D as the COCO caption evaluation computes it (`pycocoevalcap.cider`, Vedantam et al., 2015), pure Python.

Each caption becomes, for n = 1..4, a tf-idf vector g_n over its n-grams:

    g_n(w) = tf(w) * (log N - log max(1, df(w))),

where N is the number of candidates in the corpus and df(w) the number of candidates whose references contain w
(the idf comes from the references of the corpus being scored). For a candidate c with references s_1..s_M:

    CIDEr-D_n(c, S) = 1/M sum_j exp(-(l(c) - l(s_j))^2 / (2 sigma^2))
                      * sum_w min(g_n^c(w), g_n^{s_j}(w)) g_n^{s_j}(w) / (|g_n^c| |g_n^{s_j}|),
    CIDEr-D(c, S)   = 10 * mean_n CIDEr-D_n(c, S),    sigma = 6,

i.e. a cosine with the candidate's weights clipped at the reference's, a Gaussian length penalty, and the x10 of
the reference code. As in that code, the length l(.) is the caption's number of bigrams (its length minus one for
a non-empty caption). The corpus score is the mean over candidates. With a single candidate every idf is 0 and so
is the score: CIDEr-D needs a corpus.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Sequence

from .bleu import ngram_counts


CIDER_SIGMA = 6.0
CIDER_SCALE = 10.0


def corpus_cider_d(
    candidates: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    max_order: int = 4,
    sigma: float = CIDER_SIGMA,
) -> tuple[float, list[float]]:
    """(mean CIDEr-D over the N candidates, the N per-caption scores); see the module doc for the formula.

    Args:
        candidates: N token lists.
        references: N lists of reference token lists (at least one each); their n-grams give the document
            frequencies.
        max_order: the largest n-gram order (4 in CIDEr-D).
        sigma: width of the Gaussian length penalty (6 in CIDEr-D).
    """
    if len(candidates) != len(references):
        raise ValueError(f"Got {len(candidates)} candidates but {len(references)} reference lists.")
    if not candidates:
        raise ValueError("No candidates to score.")
    if any(not refs for refs in references):
        raise ValueError("Every candidate needs at least one reference.")
    ref_counts = [[ngram_counts(ref, max_order) for ref in refs] for refs in references]
    document_frequency: Counter = Counter()
    for counts in ref_counts:
        document_frequency.update(set().union(*counts))
    log_n = math.log(float(len(candidates)))

    def tfidf(counts: Counter) -> tuple[list[dict], list[float], int]:
        vectors: list[dict] = [defaultdict(float) for _ in range(max_order)]
        squares, bigrams = [0.0] * max_order, 0
        for ngram, tf in counts.items():
            n = len(ngram) - 1
            vectors[n][ngram] = weight = tf * (log_n - math.log(max(1.0, document_frequency[ngram])))
            squares[n] += weight**2
            if n == 1:
                bigrams += tf  # the reference code's caption "length"
        return vectors, [math.sqrt(s) for s in squares], bigrams

    scores = []
    for candidate, refs in zip(candidates, ref_counts):
        vec, norm, length = tfidf(ngram_counts(candidate, max_order))
        per_order = [0.0] * max_order
        for ref in refs:
            vec_ref, norm_ref, length_ref = tfidf(ref)
            penalty = math.exp(-((length - length_ref) ** 2) / (2 * sigma**2))
            for n in range(max_order):
                overlap = sum(min(w, vec_ref[n][g]) * vec_ref[n][g] for g, w in vec[n].items())
                if norm[n] != 0 and norm_ref[n] != 0:
                    overlap /= norm[n] * norm_ref[n]
                per_order[n] += overlap * penalty
        scores.append(CIDER_SCALE * (sum(per_order) / max_order) / len(refs))
    return sum(scores) / len(scores), scores
