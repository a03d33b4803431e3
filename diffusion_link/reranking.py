"""Several candidate captions per clip, scored by the captioner's own joint space, and a calibrated confidence.

With `num_candidates` = k > 1 the captioner decodes k captions per clip by beam search. Each candidate gets
- `lm_logprob`: its beam score, the language model's log-probability of the caption per generated token;
- `audio_text_similarity`: the cosine, in the audio tower's joint space, between the clip's audio embedding (before
  the bridge) and the candidate's text embedding (`get_text_features` of the tower), so it works for CLAP and for the
  starter alike.

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

import torch
import torch.nn.functional as F

from .configuration_diffusion_link_captioner import RERANK_MODES
from .embedding_extraction import pooled_embeddings


CONFIDENCE_FEATURES = ("audio_text_similarity", "lm_logprob", "similarity_margin", "agreement")


def check_rerank(rerank: str) -> str:
    if rerank not in RERANK_MODES:
        raise ValueError(f"`rerank` must be one of {RERANK_MODES}, got {rerank!r}.")
    return rerank


@torch.no_grad()
def audio_text_similarities(audio_tower, text_tokenizer, audio_embeds: torch.Tensor,
                            texts: Sequence[Sequence[str]]) -> list[list[float]]:
    """Cosine of each clip's (B, D) audio embedding with the tower's text embedding of each of its candidates."""
    flat = [t for clip in texts for t in clip]
    device = next(audio_tower.parameters()).device
    # Captions are short, but a tokenizer may not know its text model's position limit (RoBERTa-style ids start at 2).
    positions = getattr(getattr(audio_tower.config, "text_config", None), "max_position_embeddings", None)
    max_length = min(text_tokenizer.model_max_length, positions - 2) if positions else None
    tokens = text_tokenizer([t if t.strip() else "." for t in flat], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
    tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
    text = F.normalize(pooled_embeddings(audio_tower.get_text_features(**tokens)).float(), dim=-1).cpu()
    audio = F.normalize(audio_embeds.float().cpu(), dim=-1)
    out, row = [], 0
    for b, clip in enumerate(texts):
        out.append([0.0 if not t.strip() else float(audio[b] @ text[row + k]) for k, t in enumerate(clip)])
        row += len(clip)
    return out


def scored_candidates(generated, tokenizer, num_candidates: int, audio_tower, audio_text_tokenizer,
                      audio_embeds: torch.Tensor) -> list[list[dict]]:
    """The candidates of a beam search that returned `num_candidates` sequences per clip (`return_dict_in_generate`,
    `output_scores`): per clip of the (B, D) `audio_embeds`, `{text, lm_logprob, audio_text_similarity}` in beam
    order."""
    texts = [t.strip() for t in tokenizer.batch_decode(generated.sequences, skip_special_tokens=True)]
    groups = [texts[b * num_candidates : (b + 1) * num_candidates] for b in range(len(audio_embeds))]
    similarity = audio_text_similarities(audio_tower, audio_text_tokenizer, audio_embeds, groups)
    scores = generated.sequences_scores.float().cpu().tolist()
    return [[{"text": t, "lm_logprob": scores[b * num_candidates + j], "audio_text_similarity": sim}
             for j, (t, sim) in enumerate(zip(groups[b], similarity[b]))] for b in range(len(groups))]


def candidate_generate_kwargs(num_candidates: int, generate_kwargs: dict | None = None) -> dict:
    """`generate` arguments that return `num_candidates` beams per clip with their scores."""
    generate_kwargs = dict(generate_kwargs or {})
    generate_kwargs.update(num_beams=max(generate_kwargs.get("num_beams") or 1, num_candidates),
                           num_return_sequences=num_candidates, output_scores=True, return_dict_in_generate=True)
    return generate_kwargs


def rank_candidates(candidates: list[dict], rerank: str = "combined", weight: float = 1.0) -> list[dict]:
    """The candidates (dicts with `text`, `lm_logprob`, `audio_text_similarity`) best first by `rerank`; repeated
    texts are kept once (the best-scored copy) and empty ones go last."""
    check_rerank(rerank)

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
    if not calibration or not ranked or not ranked[0]["text"].strip():
        return None if not calibration else 0.0
    if list(calibration["features"]) != list(CONFIDENCE_FEATURES):
        raise ValueError(f"confidence_calibration uses features {calibration['features']}, this version computes "
                         f"{list(CONFIDENCE_FEATURES)}.")
    x = confidence_features(ranked)
    z = calibration["intercept"] + sum(
        w * (v - m) / s for w, v, m, s in zip(calibration["coef"], x, calibration["mean"], calibration["scale"]))
    return 1.0 / (1.0 + math.exp(-z))
