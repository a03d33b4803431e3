"""The embedding file format shared by `training/extract_embeddings.py`, `training/train_bridge.py` and the CLI.

One safetensors file holds

- `audio_embeds` (N, D) and `text_embeds` (N, D): paired rows (row i of each belongs together);
- optionally `unpaired_text_embeds` (M, D): text embeddings without audio (the bridge's text-only data).

Text metadata (file names, captions) goes in the safetensors header as JSON strings.
"""

from __future__ import annotations

import json
import os

import torch
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
    if len(dims) != 1:
        raise ValueError(f"{source}: all embeddings must share one D, got {({k: tuple(tensors[k].shape) for k in present})}.")
    if "audio_embeds" in tensors and tensors["audio_embeds"].shape[0] != tensors["text_embeds"].shape[0]:
        raise ValueError(
            f"{source}: paired `audio_embeds` and `text_embeds` need the same number of rows, got "
            f"{tensors['audio_embeds'].shape[0]} and {tensors['text_embeds'].shape[0]}."
        )
    return dims.pop()
