"""Checks of arguments at the package's public entry points, one home for each rule.

Copied next to saved models (custom code on the Hub). Imports nothing beyond the standard library at module level, so
that the configs can use it and stay light; torch is imported by the embedding check.

The number checks share one rule: a bool is not a number (`True` would pass as 1), and NaN or an infinity is never a
valid size, rate, length or level. The CLI's argparse types and the training scripts' arguments call the same checks,
so every entry point says the same thing about the same bad value.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import torch


def _is_int(value) -> bool:
    # Python ints only: a numpy int would pass here and then break the JSON of a config that stores it.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_positive_int(name: str, value) -> int:
    """Return `value`, or raise `ValueError` naming `name` unless it is an int >= 1 (a bool is not an int here)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return value


def check_non_negative_int(name: str, value) -> int:
    """Return `value`, or raise `ValueError` naming `name` unless it is an int >= 0 (a bool is not an int here)."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    return value


def check_positive_float(name: str, value) -> float:
    """Return `value` as a float, or raise `ValueError` naming `name` unless it is a finite number > 0 (an int is
    fine; a bool, NaN and inf are not)."""
    if not _is_finite_real(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


def check_finite_float(name: str, value) -> float:
    """Return `value` as a float, or raise `ValueError` naming `name` unless it is a finite number (a level in dB,
    a weight: any sign; a bool, NaN and inf are not)."""
    if not _is_finite_real(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    return float(value)


def check_probability(name: str, value) -> float:
    """Return `value` as a float, or raise `ValueError` naming `name` unless it is a number in [0, 1] (a bool and
    NaN are not)."""
    if not _is_finite_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
    return float(value)


def check_non_negative_float(name: str, value) -> float:
    """Return `value` as a float, or raise `ValueError` naming `name` unless it is a finite number >= 0."""
    if check_finite_float(name, value) < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_fraction_below_one(name: str, value) -> float:
    """Return `value` as a float, or raise `ValueError` naming `name` unless it lies in [0, 1) (a decay, a dropout
    rate: 1 would stop the value from ever changing, or drop everything)."""
    if check_probability(name, value) == 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")
    return float(value)


def check_seed(name: str, value) -> int:
    """Return `value`, or raise `ValueError` naming `name` unless it is an int in [0, 2**32) (what numpy seeds take)."""
    if check_non_negative_int(name, value) >= 2**32:
        raise ValueError(f"`{name}` must be an int in [0, 2**32), got {value!r}.")
    return value


def check_choice(name: str, value, choices: tuple) -> str:
    """Return `value`, or raise `ValueError` naming `name` unless it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value


def check_strength(strength: float) -> float:
    """Return `strength`, or raise `ValueError` unless it (the fraction of the schedule the bridge's `link()` noises
    to) lies in (0, 1]. Here rather than in the bridge's config module: `link()` checks it on every call."""
    if not _is_finite_real(strength) or not 0.0 < strength <= 1.0:
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
    batch, a wrong number of rows, NaN/Inf values, or rows whose L2 norm is not representable in their dtype (naming
    the first bad rows). The last are finite but huge (about 1e19 and up in float32, where the squares overflow) or
    tiny (their squares underflow): L2 normalisation, which the bridge and the gap metrics apply, turns them into
    zero rows, and a bridge trained on those learns nothing while reporting success.
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
    norms = torch.linalg.vector_norm(embeds, dim=-1)  # (B,), in the dtype that normalisation computes it in
    unnormalisable = ~torch.isfinite(norms) | ((norms == 0) & (embeds != 0).any(dim=-1))
    if unnormalisable.any():
        bad = unnormalisable.nonzero().flatten().tolist()
        largest = float(embeds[bad].abs().amax())
        raise ValueError(
            f"`{name}` has rows whose L2 norm overflows or underflows {embeds.dtype} (rows {bad[:10]}; largest "
            f"|value| {largest:.3g}): normalising them would give zero rows. Embeddings are expected at a scale near "
            "unit norm; rescale them."
        )
    return embeds
