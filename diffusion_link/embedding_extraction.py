"""Calling a joint audio-text encoder (transformers' `ClapModel`, or any model with `get_audio_features` /
`get_text_features`) the same way everywhere: batched, deterministic, nothing silently truncated."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def pooled_embeddings(output) -> torch.Tensor:
    """The (B, D) embedding of a `get_*_features` call.

    transformers 5 returns an output object whose `.pooler_output` is the projected embedding; older versions and
    simple encoders return the tensor itself.
    """
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "audio_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"Cannot find an embedding tensor in an encoder output of type {type(output).__name__}.")


def audio_windows(waveform: np.ndarray, window: int) -> list[np.ndarray]:
    """Split a 1-D waveform into consecutive windows of `window` samples (the last one shorter), at least one."""
    if len(waveform) <= window:
        return [waveform]
    return [waveform[start : start + window] for start in range(0, len(waveform), window)]


@torch.no_grad()
def audio_embeddings(model, **features) -> torch.Tensor:
    """Features of one window each (`input_features`, plus `is_longer` or `attention_mask`) -> (B, D) L2-normalised
    float32 audio embeddings of `model.get_audio_features`."""
    return F.normalize(pooled_embeddings(model.get_audio_features(**features)).float(), dim=-1)


@torch.no_grad()
def embed_audio(
    model,
    feature_extractor,
    waveforms: Sequence[np.ndarray],
    *,
    batch_size: int = 16,
) -> torch.Tensor:
    """(N,) mono float32 waveforms at `feature_extractor.sampling_rate` -> (N, D) L2-normalised audio embeddings.

    A waveform longer than the encoder's window (`feature_extractor.nb_max_samples`, 10 s for CLAP) is split into
    consecutive windows whose embeddings are averaged, instead of the random crop of CLAP's `rand_trunc`: the result
    is deterministic and covers the whole clip.
    """
    window = int(getattr(feature_extractor, "nb_max_samples", 0) or len(max(waveforms, key=len)))
    pieces, owner = [], []
    for i, waveform in enumerate(waveforms):
        for piece in audio_windows(np.asarray(waveform, dtype=np.float32), window):
            pieces.append(piece)
            owner.append(i)
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(pieces), batch_size):
        inputs = feature_extractor(
            pieces[start : start + batch_size], sampling_rate=feature_extractor.sampling_rate, return_tensors="pt"
        )
        # CLAP's extractor adds `is_longer`; the starter's a frame `attention_mask`; both go to the tower.
        inputs = {k: v.to(device) for k, v in inputs.items() if k in ("input_features", "is_longer", "attention_mask")}
        chunks.append(audio_embeddings(model, **inputs))
    per_window = torch.cat(chunks)  # (num_windows, D)
    owner = torch.tensor(owner, device=per_window.device)
    summed = torch.zeros(len(waveforms), per_window.shape[1], device=per_window.device).index_add_(0, owner, per_window)
    return F.normalize(summed, dim=-1).cpu()


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) token states and their (B, L) mask -> (B, H) L2-normalised mean over the unmasked tokens
    (sentence-transformers' recipe for all-MiniLM-L6-v2: the starter's text tower and the semantic-similarity
    metric)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)


@torch.no_grad()
def embed_text(
    model, tokenizer, texts: Sequence[str], *, batch_size: int = 64, max_length: int | None = None
) -> torch.Tensor:
    """(N,) captions -> (N, D) L2-normalised float32 text embeddings of `model.get_text_features`, on the CPU.

    Empty captions raise `ValueError` with their rows. Longer captions are truncated to `max_length` tokens (default:
    the tokenizer's `model_max_length`). A tokenizer without a pad token (a fast tokenizer saved as `tokenizer.json`
    alone) embeds one caption at a time, which needs no padding.
    """
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise ValueError(f"{len(empty)} empty or non-string captions (rows {empty[:10]}); remove or fill them.")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token is not None
    batch_size = batch_size if pad else 1
    chunks = []
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer(list(texts[start : start + batch_size]), padding=pad, truncation=True,
                           max_length=max_length, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        chunks.append(F.normalize(pooled_embeddings(model.get_text_features(**inputs)).float(), dim=-1).cpu())
    return torch.cat(chunks)
