"""Safe loading of this package's checkpoints: refuse a folder of another model type, and weights that do not match.

transformers builds a default config for a folder without config.json, only warns about a foreign `model_type`,
randomly initialises missing weights and ignores unexpected ones with a log report. The models of this package call
these checks from their `from_pretrained`, so each of those cases raises a `ValueError` naming the folder.

Copied next to saved models (custom code on the Hub): imports only torch and transformers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


# `from_pretrained` arguments that say where and how to fetch files (passed on to config and file look-ups).
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
_LOADING_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def hub_kwargs(kwargs: dict) -> dict:
    """The file-fetching arguments (`HUB_KWARGS`) among `from_pretrained`'s `kwargs`."""
    return {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}



def check_pretrained_config(config_class: type, path, kwargs: dict) -> None:
    """Raise `ValueError` naming `path` when its config.json is missing or of another `model_type`.

    transformers builds a default config for a folder without config.json and only warns about a foreign
    `model_type`; either way the weights then load into the wrong architecture. Skipped when `config=` is given.
    """
    if kwargs.get("config") is not None:
        return
    config_dict, _ = config_class.get_config_dict(path, **hub_kwargs(kwargs))
    found = config_dict.get("model_type")
    if found != config_class.model_type:
        what = "no config.json (or one without a `model_type`)" if not found else f"a config.json of model_type {found!r}"
        raise ValueError(f"{path} has {what}; expected a {config_class.model_type!r} checkpoint.")


def checked_from_pretrained(load, path, *args, **kwargs):
    """Call transformers' `from_pretrained` (`load`), refusing weights that do not match the model.

    transformers 5 randomly initialises missing weights and ignores unexpected ones with only a log report, and
    raises a bare `RuntimeError` for shape mismatches; here each of these raises a `ValueError` naming `path` and the
    keys (`ignore_mismatched_sizes=True` still allows re-initialising mismatched shapes). Weights are read from
    safetensors only unless `use_safetensors=False` is passed (a pickle `pytorch_model.bin` is never the default, and
    transformers reads it with `torch.load(weights_only=True)` even then).
    """
    return_info = kwargs.pop("output_loading_info", False)
    allow_mismatch = kwargs.get("ignore_mismatched_sizes", False)
    kwargs["ignore_mismatched_sizes"] = True  # collect the mismatched keys instead of a RuntimeError without them
    kwargs.setdefault("use_safetensors", True)
    model, info = load(path, *args, output_loading_info=True, **kwargs)
    problems = {name: sorted(str(key) for key in info.get(name) or ()) for name in _LOADING_PROBLEMS}
    if allow_mismatch:
        problems["mismatched_keys"] = []
    problems = {name: keys for name, keys in problems.items() if keys}
    if problems:
        details = "; ".join(f"{name.replace('_', ' ')} ({len(keys)}): {keys[:5]}" for name, keys in problems.items())
        raise ValueError(f"The weights in {path} do not match {type(model).__name__}({model.config.model_type}): {details}.")
    return (model, info) if return_info else model




@torch.no_grad()
def own_aligned_memory(tensors: Iterable[torch.Tensor]) -> None:
    """Give each tensor a fresh copy of its data, in place.

    Weights memory-mapped from safetensors can sit at unaligned addresses, where CPU kernels take other code paths
    and results differ in the last bit. Fresh (aligned) copies make a loaded model reproduce the saved one exactly;
    used on the small trained parts (bridge, projector), so it costs nothing.
    """
    for tensor in tensors:
        tensor.data = tensor.data.clone()


# References to weights inside installed Python packages or this package's cache (see
# `diffusion_link.hub.references`); only meaningful where diffusion_link is installed.
PACKAGE_REFERENCE_PREFIXES = ("package:", "cache:")


def resolve_base_reference(reference: str) -> str:
    """Where `from_pretrained` finds a referenced base model: a Hub id or a folder as it is; a `package:` or `cache:`
    reference through `diffusion_link.hub.references` (the package must be installed: a Hub copy of this file
    does not carry that code)."""
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"A model reference must be a non-empty string, got {reference!r}.")
    if not reference.startswith(PACKAGE_REFERENCE_PREFIXES):
        return reference
    try:
        from diffusion_link.hub.references import resolve_reference
    except ImportError as err:
        raise ImportError(
            f"{reference!r} refers to weights inside an installed package; loading it needs diffusion_link "
            "(pip install diffusion_link)."
        ) from err
    return resolve_reference(reference)
