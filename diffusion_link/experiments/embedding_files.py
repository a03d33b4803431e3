"""The embedding file format shared by `training/extract_embeddings.py`, `training/train_bridge.py` and the CLI.

One safetensors file holds

- `audio_embeds` (N, D) and `text_embeds` (N, D): paired rows (row i of each belongs together);
- optionally `unpaired_text_embeds` (M, D): text embeddings without audio (the bridge's text-only data).

Every row must be one the bridge can L2-normalise in float32, the precision it trains in. `check_embeddings` refuses
rows whose norm overflows or underflows their own dtype (values near 1e19 and beyond in float32, or tiny ones);
training data must also not hold a row of zeros (no direction), a row whose norm is below `F.normalize`'s eps (1e-12:
divided by the eps, not by its norm) or a float64 row beyond float32's range. All are refused where files are read
and written, naming the rows, instead of training a bridge on zeros.

Text metadata (file names, captions) goes in the safetensors header as JSON strings.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from diffusion_link.experiments.atomic_files import atomic_path
from diffusion_link.validation import check_embeddings


PAIRED_KEYS = ("audio_embeds", "text_embeds")
UNPAIRED_KEY = "unpaired_text_embeds"


def save_embeddings(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, list[str] | str] | None = None,
) -> None:
    """Write an embedding file atomically (a temporary file renamed into place, so a kill leaves no half file)."""
    check_embedding_file(tensors, source=str(path))
    header = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    # clone(): rows given twice (the same tensor as audio and text) must still become separate tensors on disk.
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().float().clone().contiguous() for k, v in tensors.items()}, tmp, metadata=header)


def load_embeddings(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Read and validate an embedding file. Returns `(tensors, metadata)`; JSON metadata values are decoded."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Embedding file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            header = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"Could not read {path} as a safetensors embedding file: {err}") from err
    check_embedding_file(tensors, source=path)
    metadata = {}
    for key, value in header.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    return tensors, metadata


def check_embedding_file(tensors: dict[str, torch.Tensor], source: str = "embeddings") -> int:
    """Validate the format above and return D. Raises `ValueError` naming `source` on any violation."""
    known = set(PAIRED_KEYS) | {UNPAIRED_KEY}
    unknown = set(tensors) - known
    if unknown:
        raise ValueError(f"{source}: unknown tensors {sorted(unknown)}; expected some of {sorted(known)}.")
    present = [k for k in (*PAIRED_KEYS, UNPAIRED_KEY) if k in tensors]
    if "text_embeds" not in tensors and UNPAIRED_KEY not in tensors:
        raise ValueError(f"{source}: needs `text_embeds` (paired) or `{UNPAIRED_KEY}`, found {sorted(tensors)}.")
    if ("audio_embeds" in tensors) != ("text_embeds" in tensors):
        raise ValueError(f"{source}: `audio_embeds` and `text_embeds` come together (paired rows), found {present}.")
    dims = set()
    for key in present:
        try:
            dims.add(check_embeddings(key, tensors[key]).shape[1])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err
        check_normalizable_rows(key, tensors[key], source)
    if len(dims) != 1:
        raise ValueError(f"{source}: all embeddings must share one D, got {({k: tuple(tensors[k].shape) for k in present})}.")
    if "audio_embeds" in tensors and tensors["audio_embeds"].shape[0] != tensors["text_embeds"].shape[0]:
        raise ValueError(
            f"{source}: paired `audio_embeds` and `text_embeds` need the same number of rows, got "
            f"{tensors['audio_embeds'].shape[0]} and {tensors['text_embeds'].shape[0]}."
        )
    return dims.pop()


# How far from 1 the norm of a normalised float32 row may be: rounding gives about 1e-7; a row that could not be
# normalised gives 0 (overflow, zeros) or less than 1 (a norm below `F.normalize`'s eps).
UNIT_NORM_TOLERANCE = 1e-3


def check_normalizable_rows(key: str, embeds: torch.Tensor, source: str = "embeddings") -> None:
    """Raise `ValueError` naming `source`, `key` and the first bad rows unless every row of the (N, D) `embeds`
    becomes a unit vector under `F.normalize` in float32 (see the module docstring): the file's rule, stricter than
    `check_embeddings`', which leaves zero rows to the callers that can use them."""
    rows = embeds.detach().float()  # (N, D) what the bridge computes with
    unit_norms = F.normalize(rows, dim=-1).norm(dim=-1)  # (N,)
    # `not <=` rather than `>`: a float64 row beyond float32's range becomes inf, and its normalised norm NaN.
    bad = (~((unit_norms - 1).abs() <= UNIT_NORM_TOLERANCE)).nonzero().flatten()
    if len(bad):
        norms = embeds[bad[:5]].detach().double().norm(dim=-1).tolist()  # in float64: the true size, for the message
        raise ValueError(
            f"{source}: `{key}` has {len(bad)} of {len(rows)} rows that cannot be L2-normalised in float32 (rows "
            f"{bad[:10].tolist()}, norms {[f'{n:.3g}' for n in norms]}): expected every row to have a norm between "
            "1e-12 and about 1.8e19 (not all zeros, and no square that overflows float32)."
        )
