"""Loading an original LAION-CLAP `.pt` checkpoint into transformers' `ClapModel`, without `laion_clap`.

The `laion_clap` package is never imported (it downgrades numpy and downloads from the Hub at import): the
checkpoint is read with `torch.load(weights_only=True)` and its keys are renamed to `ClapModel`'s names. The renaming
reproduces transformers' own conversion script, `models/clap/convert_clap_original_pytorch_to_hf.py`
(`rename_state_dict`):

- `text_branch.` -> `text_model.` (a RoBERTa, whose inner names are already transformers names);
- `audio_branch.` -> `audio_model.audio_encoder.` (HTSAT), with `attn` -> `attention.self`, `attn.proj` ->
  `attention.output.dense`, `mlp.fc1`/`mlp.fc2` -> `intermediate.dense`/`output.dense`, `norm1`/`norm2` ->
  `layernorm_before`/`layernorm_after`, `bn0` -> `batch_norm`, and each fused `qkv` weight and bias split in three
  equal row blocks into `query`, `key`, `value`;
- `text_projection.0/2.` and `audio_projection.0/2.` (an `nn.Sequential(Linear, ReLU, Linear)`) ->
  `text_projection.linear1/linear2.` and `audio_projection.linear1/linear2.`;
- `logit_scale_a`, `logit_scale_t` unchanged.

The script loads with `strict=False` and so drops silently whatever `ClapModel` has no place for. Here the drops are
listed (`LAION_KEYS_WITHOUT_COUNTERPART`) and anything else that does not fit raises a `ValueError`:

- the STFT and mel filter bank of the audio branch (`spectrogram_extractor`, `logmel_extractor`): transformers
  computes the mel spectrogram in `ClapFeatureExtractor`;
- HTSAT's classification outputs (`head`, `tscam_conv`), which the embedding does not use;
- the training-only MLPs of the contrastive loss (`text_transform`, `audio_transform`, the script's `sequential`
  pattern);
- the Swin `attn_mask` buffers, which transformers recomputes in the forward pass;
- deterministic index buffers (`position_ids`, `token_type_ids`, `relative_position_index`): the model keeps its own,
  so a checkpoint may or may not carry them (and RoBERTa's 514 `position_ids` need not match the config's length).

What cannot be checked here: no real LAION `.pt` can be downloaded offline. The mapping is checked in
`tests/test_laion_clap.py` against a state dict built in the LAION layout from the reference script's mapping (the
inverse of it applied to a tiny random `ClapModel`), not against real LAION weights or the reference outputs of
`laion_clap`. Whether real checkpoints carry other keys than those listed above is therefore not verified; such keys
raise a `ValueError` naming them rather than being dropped silently.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Union

import torch


logger = logging.getLogger(__name__)

# Ordered as in the reference script: each rule is applied, in turn, as a substring replacement. The pair
# `attention.self_mask` -> `attn_mask` undoes what `attn` -> `attention.self` does to the `attn_mask` buffers.
KEYS_TO_MODIFY_MAPPING = {
    "text_branch": "text_model",
    "audio_branch": "audio_model.audio_encoder",
    "attn": "attention.self",
    "self.proj": "output.dense",
    "attention.self_mask": "attn_mask",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "bn0": "batch_norm",
}

# LAION keys (original names, after any `module.` prefix is stripped) that `ClapModel` has no counterpart for.
LAION_KEYS_WITHOUT_COUNTERPART = (
    r"^audio_branch\.spectrogram_extractor\.",
    r"^audio_branch\.logmel_extractor\.",
    r"^audio_branch\.head\.",
    r"^audio_branch\.tscam_conv\.",
    r"^text_transform\.",
    r"^audio_transform\.",
    r"\.attn_mask$",
)

# `ClapModel` buffers that are a function of the config alone: taken from the model, never from the checkpoint.
DETERMINISTIC_BUFFERS = (
    r"^text_model\.embeddings\.position_ids$",
    r"^text_model\.embeddings\.token_type_ids$",
    r"\.relative_position_index$",
)

_SEQUENTIAL_LAYERS_PATTERN = re.compile(r".*sequential\.(\d+)\..*")
_PROJECTION_PATTERN = re.compile(r".*_projection\.(\d+)\..*")


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(re.search(pattern, key) for pattern in patterns)


def _first(keys: list[str], n: int = 10) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown} (and {len(keys) - n} more)" if len(keys) > n else shown


def load_laion_clap_state_dict(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """The state dict of an original LAION-CLAP checkpoint, in LAION's own key names.

    Accepts a bare state dict or a training checkpoint `{"state_dict": ..., "epoch": ..., ...}`, and strips the
    `module.` prefix that DistributedDataParallel adds. Reads with `weights_only=True` (no arbitrary pickle).

    Raises:
        ValueError: naming the file, when it cannot be read or is not a LAION-CLAP state dict (no tensor under
            `audio_branch.` and `text_branch.`).
    """
    path = os.fspath(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types (RuntimeError, UnpicklingError, OSError, ...)
        raise ValueError(f"{path}: cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error}).") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a LAION-CLAP state dict, got a {type(checkpoint).__name__}.")
    state_dict = {}
    for key, value in checkpoint.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: expected a LAION-CLAP state dict of tensors, found {key!r} of type {type(value).__name__}."
            )
        state_dict[key[len("module."):] if key.startswith("module.") else key] = value
    for branch in ("audio_branch.", "text_branch."):
        if not any(key.startswith(branch) for key in state_dict):
            raise ValueError(
                f"{path}: not a LAION-CLAP state dict (no key starts with {branch!r}); "
                f"its keys begin {_first(sorted(state_dict), 5) or '(none)'}."
            )
    return state_dict


def rename_laion_clap_key(key: str) -> str:
    """The `ClapModel` name of one LAION key (a fused `...qkv...` key still says `qkv`; see the module docstring)."""
    for key_to_modify, new_key in KEYS_TO_MODIFY_MAPPING.items():
        if key_to_modify in key:
            key = key.replace(key_to_modify, new_key)
    sequential = _SEQUENTIAL_LAYERS_PATTERN.match(key)
    projection = _PROJECTION_PATTERN.match(key)
    if sequential:
        layer = sequential.group(1)
        key = key.replace(f"sequential.{layer}.", f"layers.{int(layer) // 3}.linear.")
    elif projection:
        layer = int(projection.group(1))
        # LAION's projections are nn.Sequential(Linear, ReLU, Linear): index 0 is linear1, index 2 is linear2.
        key = key.replace(f"_projection.{layer}.", f"_projection.linear{1 if layer == 0 else 2}.")
    return key


def convert_laion_clap_state_dict(state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """A LAION-CLAP state dict renamed to `ClapModel(config)`'s keys (see the module docstring for the mapping).

    Args:
        state_dict: LAION key -> tensor, as returned by `load_laion_clap_state_dict`.
        config: the `ClapConfig` of the target model; it decides which keys and shapes are expected.

    Returns:
        `ClapModel` key -> tensor for every parameter and buffer of the model except the deterministic index
        buffers (`DETERMINISTIC_BUFFERS`), which the model computes from its config.

    Raises:
        ValueError: listing (the first 10) LAION keys that have no place in the model, model keys the checkpoint does
            not fill, or tensors whose shape differs from the model's (usually a config that does not match).
    """
    from transformers import ClapConfig, ClapModel

    if not isinstance(config, ClapConfig):
        raise TypeError(f"config must be a ClapConfig, got {type(config).__name__}.")
    with torch.device("meta"):  # only names and shapes are needed: no memory, no initialisation
        expected = {key: tuple(value.shape) for key, value in ClapModel(config).state_dict().items()}

    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for laion_key, value in state_dict.items():
        if _matches(laion_key, LAION_KEYS_WITHOUT_COUNTERPART):
            continue
        key = rename_laion_clap_key(laion_key)
        if "qkv" in key:
            # Swin attention fuses query, key and value into one Linear: rows [q; k; v] of equal size.
            if value.shape[0] % 3:
                raise ValueError(f"{laion_key}: a fused qkv tensor needs a first dimension divisible by 3, got "
                                 f"shape {tuple(value.shape)}.")
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                converted[key.replace("qkv", name)] = part
            continue
        if _matches(key, DETERMINISTIC_BUFFERS):
            continue
        if key not in expected:
            unexpected.append(laion_key)
            continue
        converted[key] = value

    unexpected += [key for key in converted if key not in expected and key not in unexpected]
    if unexpected:
        raise ValueError(f"LAION-CLAP keys with no counterpart in ClapModel: {_first(unexpected)}.")
    missing = [key for key in expected if key not in converted and not _matches(key, DETERMINISTIC_BUFFERS)]
    if missing:
        raise ValueError(f"ClapModel keys not filled by the LAION-CLAP checkpoint: {_first(missing)}.")
    mismatched = [
        f"{key} {tuple(value.shape)} vs {expected[key]}" for key, value in converted.items()
        if tuple(value.shape) != expected[key]
    ]
    if mismatched:
        raise ValueError(
            "LAION-CLAP tensors whose shape differs from ClapModel's (checkpoint vs model; is the config the "
            f"checkpoint's?): {_first(mismatched)}."
        )
    return converted


def clap_from_laion_checkpoint(path: Union[str, os.PathLike], config) -> "ClapModel":  # noqa: F821
    """A transformers `ClapModel` holding the weights of an original LAION-CLAP `.pt` checkpoint, in eval mode.

    Args:
        path: the LAION-CLAP checkpoint (e.g. `630k-audioset-best.pt`).
        config: a `ClapConfig`, or a Hub id / local folder to read one from (e.g. `"laion/clap-htsat-unfused"` for an
            unfused HTSAT-tiny + RoBERTa checkpoint). It must describe the checkpoint's architecture.

    Every parameter and buffer is loaded from the checkpoint except the deterministic index buffers, which keep the
    values the model computes from its config; anything else that does not fit raises a `ValueError`.
    """
    from transformers import ClapConfig, ClapModel

    if isinstance(config, (str, os.PathLike)):
        config = ClapConfig.from_pretrained(os.fspath(config))
    elif not isinstance(config, ClapConfig):
        raise TypeError(f"config must be a ClapConfig, a Hub id or a folder, got {type(config).__name__}.")
    try:
        converted = convert_laion_clap_state_dict(load_laion_clap_state_dict(path), config)
    except ValueError as error:
        message = str(error)
        path_str = os.fspath(path)
        raise ValueError(message if message.startswith(path_str) else f"{path_str}: {message}") from error
    model = ClapModel(config)
    result = model.load_state_dict(converted, strict=False)
    missing = [key for key in result.missing_keys if not _matches(key, DETERMINISTIC_BUFFERS)]
    if missing or result.unexpected_keys:  # cannot happen after the checks above; strict semantics all the same
        raise ValueError(f"{os.fspath(path)}: missing {_first(missing)}; unexpected {_first(result.unexpected_keys)}.")
    logger.info("Loaded LAION-CLAP checkpoint %s into ClapModel (%d tensors)", os.fspath(path), len(converted))
    return model.eval()
