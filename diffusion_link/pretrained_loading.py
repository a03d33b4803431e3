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


class ReferencedBasesMixin:
    """"Trained parts over referenced bases": a model whose frozen bases are loaded from where they are published
    (a Hub id, a folder, a `package:` / `cache:` reference) and whose `model.safetensors` holds only what was trained.
    The captioner (with `base_weights="referenced"`) and the starter encoder both load this way.

    A subclass names its bases' state-dict prefixes in `_base_prefixes`, and in `_trained_in_bases` the key
    fragments of trained weights that live inside a base (the LoRA adapters of the captioner's LM).
    """

    _base_prefixes: tuple[str, ...] = ()
    _trained_in_bases: tuple[str, ...] = ()

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that are not part of the frozen bases: what `save_pretrained` writes."""
        return {k: v for k, v in self.state_dict().items()
                if not k.startswith(self._base_prefixes) or any(part in k for part in self._trained_in_bases)}

    def load_trained_parts(self, path, **kwargs) -> None:
        """Load `path`'s `model.safetensors` (a folder or Hub repo; `kwargs` may hold `HUB_KWARGS`) into the trained
        parts, the bases being loaded already. Strict: a file whose keys are not exactly `trained_state_dict()`'s
        raises `ValueError` naming the file and the keys."""
        from safetensors.torch import load_file
        from transformers.utils import cached_file

        weights = cached_file(path, "model.safetensors", **hub_kwargs(kwargs))
        state = load_file(weights)
        expected = set(self.trained_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not hold the trained parts of this {type(self).__name__} "
                f"({self.config.model_type}): missing ({len(missing)}) {missing[:5]}, unexpected "
                f"({len(unexpected)}) {unexpected[:5]}."
            )
        self.load_state_dict(state, strict=False)


@torch.no_grad()
def own_aligned_memory(tensors: Iterable[torch.Tensor]) -> None:
    """Give each tensor a fresh copy of its data, in place.

    Weights memory-mapped from safetensors can sit at unaligned addresses, where CPU kernels take other code paths
    and results differ in the last bit. Fresh (aligned) copies make a loaded model reproduce the saved one exactly;
    used on the small trained parts (bridge, projector), so it costs nothing.
    """
    for tensor in tensors:
        tensor.data = tensor.data.clone()


def resolve_base_reference(reference: str) -> str:
    """Where `from_pretrained` finds a referenced base model: `diffusion_link.hub.references.resolve_reference`, the
    one home of the reference forms (a Hub id or folder as it is; `package:` / `cache:` weights of installed
    packages). A Hub copy of this file runs without the package too, and then takes Hub ids and folders only."""
    try:
        from diffusion_link.hub.references import resolve_reference
    except ImportError as err:
        if isinstance(reference, str) and reference.partition(":")[0] in ("package", "cache"):
            raise ImportError(
                f"{reference!r} refers to weights inside an installed package; loading it needs diffusion_link "
                "(pip install diffusion_link)."
            ) from err
        return reference
    return resolve_reference(reference)
