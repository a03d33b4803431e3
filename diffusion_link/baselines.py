"""Peer bridges with the same `link()` interface as [`DiffusionLinkBridge`].

| peer | what `link()` does |
|---|---|
| [`IdentityBridge`] | nothing: the baseline the paper improves on |
| [`MeanShiftBridge`] | adds (text centroid - audio centroid), then re-normalises ("Mind the Gap", Liang et al. 2022) |
| text-only diffusion | a [`DiffusionLinkBridge`] built from [`text_only_diffusion_config`] and trained on text alone; `link()` takes the audio embedding as the state at t = 599 without adding noise and runs 5 DDIM steps ("Diffusion Bridge", CVPR 2025) |

Noise injection (CapDec) is a decoder-training option, not a bridge. This file is copied next to saved captioners, so
it imports only torch and the flat sibling modules.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_diffusion_link import DiffusionLinkConfig


class IdentityBridge(nn.Module):
    """No bridge: `link(x)` returns `x` (the "without Diffusion-Link" row of the paper)."""

    def link(
        self,
        audio_embeds: torch.Tensor,
        *,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """(B, D) -> (B, D), unchanged. The diffusion knobs are accepted and ignored, so peers are interchangeable."""
        if not isinstance(audio_embeds, torch.Tensor):
            raise TypeError(f"`audio_embeds` must be a torch.Tensor, got {type(audio_embeds).__name__}.")
        return audio_embeds


class MeanShiftBridge(nn.Module):
    """Shift audio embeddings by the difference of the modality centroids ("Mind the Gap").

    Args:
        embedding_dim (`int`): size D of the embeddings.
        output_normalization (`str`, defaults to `"l2"`): `"l2"` re-normalises the shifted embeddings to unit length
            (CLAP space); `"none"` returns them as shifted.
    """

    def __init__(self, embedding_dim: int, output_normalization: str = "l2"):
        super().__init__()
        if output_normalization not in ("l2", "none"):
            raise ValueError(f"`output_normalization` must be 'l2' or 'none', got {output_normalization!r}.")
        self.embedding_dim = embedding_dim
        self.output_normalization = output_normalization
        self.register_buffer("shift", torch.zeros(embedding_dim))

    @torch.no_grad()
    def fit(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> "MeanShiftBridge":
        """Set `shift` = mean(text) - mean(audio) over (N, D) and (M, D) embeddings (not necessarily paired)."""
        audio_embeds = self._check("audio_embeds", audio_embeds)
        text_embeds = self._check("text_embeds", text_embeds)
        if self.output_normalization == "l2":
            audio_embeds, text_embeds = F.normalize(audio_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
        self.shift.copy_(text_embeds.mean(0) - audio_embeds.mean(0))
        return self

    @torch.no_grad()
    def link(
        self,
        audio_embeds: torch.Tensor,
        *,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """(B, D) -> (B, D) shifted embeddings. The diffusion knobs are accepted and ignored."""
        audio_embeds = self._check("audio_embeds", audio_embeds)
        if self.output_normalization == "l2":
            return F.normalize(F.normalize(audio_embeds, dim=-1) + self.shift.to(audio_embeds), dim=-1)
        return audio_embeds + self.shift.to(audio_embeds)

    def _check(self, name: str, embeds: torch.Tensor) -> torch.Tensor:
        if not isinstance(embeds, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(embeds).__name__}.")
        if embeds.ndim != 2 or embeds.shape[-1] != self.embedding_dim or embeds.shape[0] == 0:
            raise ValueError(f"`{name}` must have shape (batch, {self.embedding_dim}), got {tuple(embeds.shape)}.")
        if not torch.isfinite(embeds).all():
            raise ValueError(f"`{name}` contains NaN or Inf values.")
        return embeds


def text_only_diffusion_config(**overrides) -> DiffusionLinkConfig:
    """Config of the text-only "Diffusion Bridge" peer (CVPR 2025) for a [`DiffusionLinkBridge`].

    Cosine noise schedule; `link()` inserts the audio embedding as the state at t = 599 of 1000 (`strength=0.6`,
    `link_start="inserted"`) and runs 5 DDIM steps. Train it with `forward(text_embeds=...)` only (or
    `training/train_bridge.py --bridge_type text_only_diffusion`). Any field can be overridden.
    """
    fields = dict(
        beta_schedule="squaredcos_cap_v2",
        strength=0.6,
        num_inference_steps=5,
        link_start="inserted",
        topology_loss_weight=0.0,
    )
    fields.update(overrides)
    return DiffusionLinkConfig(**fields)
