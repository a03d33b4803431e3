"""Several candidate captions per clip, scored by the captioner's own joint space, and a calibrated confidence.

With `num_candidates` = k > 1 the captioner decodes k captions per clip by beam search. Each candidate gets
- `lm_logprob`: its beam score, the language model's log-probability of the caption per generated token;
- `audio_text_similarity`: the cosine, in the audio tower's joint space, between the clip's audio embedding (before
  the bridge) and the candidate's text embedding (`DiffusionLinkForAudioCaptioning.score_captions`, through the
  tower's `get_text_features`), so it works for CLAP and for the starter alike. This module only combines scores;
  it never calls a model.

`rank_candidates` orders them by `rerank`: `"lm"` (the top beam), `"similarity"`, or `"combined"`:
`lm_logprob + weight * audio_text_similarity`, the weight a config field (`rerank_weight`) picked on held-out clips
of the training data. The first is the caption.

`confidence` is the probability that the caption names what is heard: a logistic model over
`CONFIDENCE_FEATURES` of the ranked candidates, fit on held-out clips (`metrics.calibration`) and stored in the
captioner's config as `confidence_calibration`; without one there is no confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .configuration_diffusion_link_captioner import RERANK_MODES
from .validation import check_choice


CONFIDENCE_FEATURES = ("audio_text_similarity", "lm_logprob", "similarity_margin", "agreement")


def beam_candidates(generated, tokenizer, num_candidates: int) -> tuple[list[list[str]], list[list[float]]]:
    """The texts and LM scores of a beam search that returned `num_candidates` sequences per clip
    (`return_dict_in_generate`, `output_scores`): per clip, in beam order, the stripped captions and their
    `sequences_scores` (log-probability per generated token)."""
    texts = [t.strip() for t in tokenizer.batch_decode(generated.sequences, skip_special_tokens=True)]
    scores = generated.sequences_scores.float().cpu().tolist()
    clips = range(len(texts) // num_candidates)
    return ([texts[b * num_candidates : (b + 1) * num_candidates] for b in clips],
            [scores[b * num_candidates : (b + 1) * num_candidates] for b in clips])


def scored_candidates(texts: Sequence[Sequence[str]], lm_logprobs: Sequence[Sequence[float]],
                      similarities: Sequence[Sequence[float]]) -> list[list[dict]]:
    """Per clip, `{text, lm_logprob, audio_text_similarity}` of each candidate, in the given (beam) order.

    The similarities come from the captioner's joint space (`DiffusionLinkForAudioCaptioning.score_captions`), so
    this module never touches a tower."""
    if not len(texts) == len(lm_logprobs) == len(similarities):
        raise ValueError(f"Got candidates of {len(texts)} clips, LM scores of {len(lm_logprobs)} and similarities "
                         f"of {len(similarities)}.")
    return [[{"text": t, "lm_logprob": float(lp), "audio_text_similarity": float(sim)}
             for t, lp, sim in zip(clip_texts, clip_lps, clip_sims)]
            for clip_texts, clip_lps, clip_sims in zip(texts, lm_logprobs, similarities)]


def candidate_generate_kwargs(num_candidates: int, generate_kwargs: dict | None = None) -> dict:
    """`generate` arguments that return `num_candidates` beams per clip with their scores."""
    generate_kwargs = dict(generate_kwargs or {})
    generate_kwargs.update(num_beams=max(generate_kwargs.get("num_beams") or 1, num_candidates),
                           num_return_sequences=num_candidates, output_scores=True, return_dict_in_generate=True)
    return generate_kwargs


def rank_candidates(candidates: list[dict], rerank: str = "combined", weight: float = 1.0) -> list[dict]:
    """The candidates (dicts with `text`, `lm_logprob`, `audio_text_similarity`) best first by `rerank`; repeated
    texts are kept once (the best-scored copy) and empty ones go last."""
    check_choice("rerank", rerank, RERANK_MODES)  # config.check_rerank's rule, without a detour through the config

    def score(c: dict) -> float:
        if rerank == "lm":
            return c["lm_logprob"]
        if rerank == "similarity":
            return c["audio_text_similarity"]
        return c["lm_logprob"] + weight * c["audio_text_similarity"]

    seen, ranked = set(), []
    for c in sorted(candidates, key=lambda c: (bool(c["text"].strip()), score(c)), reverse=True):
        if c["text"] not in seen:
            seen.add(c["text"])
            ranked.append(c)
    return ranked


def confidence_features(ranked: list[dict]) -> list[float]:
    """`CONFIDENCE_FEATURES` of ranked candidates: the pick's similarity and LM score, its similarity margin over the
    best other candidate, and how many candidates share the pick's first three words (agreement of the beams)."""
    best = ranked[0]
    others = [c["audio_text_similarity"] for c in ranked[1:]]
    margin = best["audio_text_similarity"] - max(others) if others else 0.0
    head = best["text"].lower().split()[:3]
    agreement = sum(c["text"].lower().split()[:3] == head for c in ranked) / len(ranked)
    return [best["audio_text_similarity"], best["lm_logprob"], margin, agreement]


def confidence(ranked: list[dict], calibration: dict | None) -> float | None:
    """The calibrated probability that the top candidate names what is heard; None without a calibration."""
    if not calibration:
        return None
    if not ranked or not ranked[0]["text"].strip():
        return 0.0  # an empty caption names nothing it could be right about
    if list(calibration["features"]) != list(CONFIDENCE_FEATURES):
        raise ValueError(f"confidence_calibration uses features {calibration['features']}, this version computes "
                         f"{list(CONFIDENCE_FEATURES)}.")
    x = confidence_features(ranked)
    z = calibration["intercept"] + sum(
        w * (v - m) / s for w, v, m, s in zip(calibration["coef"], x, calibration["mean"], calibration["scale"]))
    return 1.0 / (1.0 + math.exp(-z))
