"""Peer bridges with the same `link()` interface as [`DiffusionLinkBridge`].

| peer | what `link()` does |
|---|---|
| [`IdentityBridge`] | nothing: the baseline the paper improves on |
| [`MeanShiftBridge`] | adds (text centroid - audio centroid), then re-normalises ("Mind the Gap", Liang et al. 2022) |
| [`LinearMapBridge`] | a ridge least-squares affine map from audio to text, fit on paired rows (its penalty picked by leave-one-out) |
| [`CaptionMemoryBridge`] | replaces the audio embedding by a softmax-weighted mix of the caption embeddings of a memory (DeCap's projection decoding; DRCap's with `top_k`) |
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
from .validation import check_embeddings, check_positive_int


class PeerBridge(nn.Module):
    """The `link()` interface of [`DiffusionLinkBridge`] for the bridges that do not diffuse: `link()` validates the
    (B, D) input and calls `move`. The diffusion knobs (`strength`, `num_inference_steps`, `generator`) are accepted
    and ignored, so every bridge is interchangeable."""

    embedding_dim: int | None = None  # the required D; None accepts any

    @torch.no_grad()
    def link(
        self,
        audio_embeds: torch.Tensor,
        *,
        strength: float | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """(B, D) audio embeddings -> (B, D) moved embeddings."""
        return self.move(check_embeddings("audio_embeds", audio_embeds, self.embedding_dim))

    def move(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """The peer's own map of validated (B, D) embeddings."""
        raise NotImplementedError


class IdentityBridge(PeerBridge):
    """No bridge: `link(x)` returns `x` (the "without Diffusion-Link" row of the paper)."""

    def move(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        return audio_embeds


class MeanShiftBridge(PeerBridge):
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
        audio_embeds = check_embeddings("audio_embeds", audio_embeds, self.embedding_dim)
        text_embeds = check_embeddings("text_embeds", text_embeds, self.embedding_dim)
        if self.output_normalization == "l2":
            audio_embeds, text_embeds = F.normalize(audio_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
        self.shift.copy_(text_embeds.mean(0) - audio_embeds.mean(0))
        return self

    def move(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D) shifted embeddings."""
        if self.output_normalization == "l2":
            return F.normalize(F.normalize(audio_embeds, dim=-1) + self.shift.to(audio_embeds), dim=-1)
        return audio_embeds + self.shift.to(audio_embeds)


class CaptionMemoryBridge(PeerBridge):
    """Project audio embeddings onto a memory of caption embeddings (DeCap, ICLR 2023; DRCap, ICASSP 2025).

    `link(a) = normalize(softmax(sim(a, M) / temperature) @ M)`, where M holds the L2-normalised caption embeddings
    given to [`~CaptionMemoryBridge.fit`] and `sim` is the cosine. With `top_k`, only the k most similar captions
    take part (DRCap's retrieval); without it every caption does (DeCap). Nothing is trained.

    Args:
        embedding_dim (`int`): size D of the embeddings.
        temperature (`float`, defaults to 0.01): softmax temperature (DeCap multiplies the cosines by 100).
        top_k (`int`, *optional*): mix only the k nearest captions.

    The memory is a buffer of shape (M, D) set by `fit`; the bridge is meant for experiments and is not one of the
    captioner's saved `bridge_type`s.
    """

    def __init__(self, embedding_dim: int, temperature: float = 0.01, top_k: int | None = None):
        super().__init__()
        check_positive_int("embedding_dim", embedding_dim)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")
        if top_k is not None:
            check_positive_int("top_k", top_k)
        self.embedding_dim = embedding_dim
        self.temperature = temperature
        self.top_k = top_k
        self.register_buffer("memory", torch.zeros(0, embedding_dim))

    @torch.no_grad()
    def fit(self, text_embeds: torch.Tensor) -> "CaptionMemoryBridge":
        """Store (M, D) caption embeddings (L2-normalised) as the memory."""
        text_embeds = check_embeddings("text_embeds", text_embeds, self.embedding_dim)
        self.memory = F.normalize(text_embeds.float(), dim=-1).clone()
        return self

    def move(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D) unit-norm mixes of memory captions."""
        if len(self.memory) == 0:
            raise ValueError("CaptionMemoryBridge has an empty memory: call `fit(text_embeds)` first.")
        memory = self.memory.to(audio_embeds.device)
        sims = F.normalize(audio_embeds.float(), dim=-1) @ memory.T  # (B, M)
        if self.top_k is not None and self.top_k < sims.shape[1]:
            kept, index = sims.topk(self.top_k, dim=-1)  # (B, k)
            weights = (kept / self.temperature).softmax(dim=-1)
            mixed = torch.einsum("bk,bkd->bd", weights, memory[index])
        else:
            mixed = (sims / self.temperature).softmax(dim=-1) @ memory
        return F.normalize(mixed, dim=-1).to(audio_embeds.dtype)


class LinearMapBridge(PeerBridge):
    """A least-squares (ridge) affine map from audio to text embeddings, fit on paired rows: on paired data the
    simplest strong baseline ("Mind the Gap" shifts; this also rotates and stretches).

    `link(a) = normalize(a W + b)` on L2-normalised inputs, with `W, b = argmin sum_i ||a_i W + b - t_i||^2 +
    ridge ||W||^2` in closed form. Without `ridge`, [`~LinearMapBridge.fit`] picks it from `RIDGE_GRID` by exact
    leave-one-out error on the training pairs (ridge regression's hat-matrix identity), so no held-out data and no
    hand tuning are needed.

    Args:
        embedding_dim (`int`): size D of the embeddings.
        ridge (`float`, *optional*): the L2 penalty; picked by leave-one-out when None.
    """

    RIDGE_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)

    def __init__(self, embedding_dim: int, ridge: float | None = None):
        super().__init__()
        check_positive_int("embedding_dim", embedding_dim)
        if ridge is not None and not ridge > 0:
            raise ValueError(f"`ridge` must be > 0 or None (picked by leave-one-out), got {ridge!r}.")
        self.embedding_dim = embedding_dim
        self.ridge = ridge
        self.register_buffer("weight", torch.eye(embedding_dim))  # (D, D): audio -> text
        self.register_buffer("bias", torch.zeros(embedding_dim))
        self.leave_one_out_errors: dict[float, float] = {}  # by candidate ridge, after `fit`
        self.fitted_ridge: float | None = None

    @torch.no_grad()
    def fit(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> "LinearMapBridge":
        """Fit W, b on (N, D) paired rows (row i of each belongs together); picks `ridge` by leave-one-out first."""
        audio = F.normalize(check_embeddings("audio_embeds", audio_embeds, self.embedding_dim).double(), dim=-1)
        text = F.normalize(
            check_embeddings("text_embeds", text_embeds, self.embedding_dim, num_rows=len(audio)).double(), dim=-1)
        # One row per clip: the rows of a clip with several captions become one, its target their mean (the same
        # least-squares fit up to weights), so that leave-one-out leaves a whole clip out, not one of its captions.
        audio, clip_of_row = torch.unique(audio, dim=0, return_inverse=True)
        text = torch.zeros(len(audio), text.shape[1], dtype=text.dtype).index_add_(0, clip_of_row, text)
        text = text / torch.bincount(clip_of_row, minlength=len(audio)).unsqueeze(-1).to(text.dtype)
        if len(audio) < 2:
            raise ValueError(f"LinearMapBridge.fit needs at least 2 distinct audio rows, got {len(audio)}.")
        audio_mean, text_mean = audio.mean(0), text.mean(0)
        a, t = audio - audio_mean, text - text_mean  # (N, D) centred: the bias is not penalised
        u, sv, vt = torch.linalg.svd(a, full_matrices=False)  # a = U diag(sv) V^T
        ut_t = u.T @ t  # (r, D)
        if self.ridge is None:
            self.leave_one_out_errors = {lam: self._leave_one_out_error(u, sv, ut_t, t, lam) for lam in self.RIDGE_GRID}
            ridge = min(self.RIDGE_GRID, key=lambda lam: (self.leave_one_out_errors[lam], -lam))
        else:
            ridge = self.ridge
        weight = vt.T @ ((sv / (sv**2 + ridge))[:, None] * ut_t)  # (D, D) = (a^T a + ridge I)^-1 a^T t
        self.weight.copy_(weight.float())
        self.bias.copy_((text_mean - audio_mean @ weight).float())
        self.fitted_ridge = ridge
        return self

    @staticmethod
    def _leave_one_out_error(u, sv, ut_t, t, ridge: float) -> float:
        """Mean squared leave-one-out residual: e_i / (1 - h_ii), with H = U diag(s^2 / (s^2 + ridge)) U^T (+ 1/N for
        the mean that centring removes)."""
        shrink = sv**2 / (sv**2 + ridge)  # (r,)
        fitted = u @ (shrink[:, None] * ut_t)  # (N, D)
        leverage = (u**2 * shrink).sum(1) + 1.0 / len(u)  # (N,)
        residual = (t - fitted) / (1 - leverage).clamp_min(1e-6)[:, None]
        return float(residual.pow(2).sum(1).mean())

    def move(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D) unit-norm mapped embeddings."""
        mapped = F.normalize(audio_embeds.float(), dim=-1) @ self.weight + self.bias
        return F.normalize(mapped, dim=-1).to(audio_embeds.dtype)


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
