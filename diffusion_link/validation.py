"""Checks of arguments at the package's public entry points, one home for each rule.

Copied next to saved models (custom code on the Hub). Imports nothing at module level, so that the configs can use
it and stay light; torch is imported by the embedding check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import torch


def check_positive_int(name: str, value) -> int:
    """Return `value`, or raise `ValueError` naming `name` unless it is an int >= 1 (a bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return value


def check_choice(name: str, value, choices: tuple) -> str:
    """Return `value`, or raise `ValueError` naming `name` unless it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value


def check_strength(strength: float) -> float:
    """Return `strength`, or raise `ValueError` unless it (the fraction of the schedule the bridge's `link()` noises
    to) lies in (0, 1]. Here rather than in the bridge's config module: `link()` checks it on every call."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
        raise ValueError(f"`strength` must be a float in (0, 1], got {strength!r}.")
    return strength


def check_embeddings(
    name: str,
    embeds: torch.Tensor,
    embedding_dim: int | None = None,
    *,
    num_rows: int | None = None,
    allow_vector: bool = False,
) -> torch.Tensor:
    """Validate a batch of embeddings and return it as a (B, D) tensor.

    Args:
        name: the argument's name, quoted in every error.
        embeds: a `torch.Tensor` of shape (B, D), or (D,) when `allow_vector` (returned as (1, D)).
        embedding_dim: the required D; any D when None.
        num_rows: the required B (rows paired with another input), when given.

    Raises `TypeError` for a non-tensor or a non-floating-point tensor, and `ValueError` for a wrong shape, an empty
    batch, a wrong number of rows or NaN/Inf values (naming the first bad rows).
    """
    import torch

    shape = f"(batch, {'D' if embedding_dim is None else embedding_dim})"
    if not isinstance(embeds, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape {shape}, got {type(embeds).__name__}.")
    if allow_vector and embeds.ndim == 1:
        embeds = embeds[None]
    if embeds.ndim != 2 or (embedding_dim is not None and embeds.shape[-1] != embedding_dim):
        raise ValueError(f"`{name}` must have shape {shape}, got {tuple(embeds.shape)}.")
    if embeds.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {tuple(embeds.shape)}).")
    if num_rows is not None and embeds.shape[0] != num_rows:
        raise ValueError(f"`{name}` has {embeds.shape[0]} rows; {num_rows} were expected (one per paired row).")
    if not embeds.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got {embeds.dtype}.")
    if not torch.isfinite(embeds).all():
        bad = (~torch.isfinite(embeds)).any(dim=-1).nonzero().flatten().tolist()
        raise ValueError(f"`{name}` contains NaN or Inf values (rows {bad[:10]}).")
    return embeds
