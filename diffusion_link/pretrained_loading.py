"""Safe loading of this package's checkpoints: refuse a folder of another model type, and weights that do not match.

transformers builds a default config for a folder without config.json, only warns about a foreign `model_type`,
randomly initialises missing weights and ignores unexpected ones with a log report, and lets safetensors' own error
for a truncated file through without its name. The models of this package call these checks from their
`from_pretrained`, so each of those cases raises a `ValueError` naming the folder or an `OSError` naming the file.
Referenced bases (`load_referenced_base`) are held to the same rules: safetensors only, strictly.

Copied next to saved models (custom code on the Hub): imports only torch and transformers at module level
(safetensors, a dependency of transformers, where it is used).
"""

from __future__ import annotations

import glob
import os
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
    if not isinstance(config_dict, dict):
        raise ValueError(f"{path}'s config.json holds a JSON {type(config_dict).__name__}; expected a JSON object of "
                         f"a {config_class.model_type!r} config.")
    found = config_dict.get("model_type")
    if found != config_class.model_type:
        what = "no config.json (or one without a `model_type`)" if not found else f"a config.json of model_type {found!r}"
        raise ValueError(f"{path} has {what}; expected a {config_class.model_type!r} checkpoint.")


def checked_from_pretrained(load, path, *args, **kwargs):
    """Call transformers' `from_pretrained` (`load`), refusing weights that do not match the model.

    transformers 5 randomly initialises missing weights and ignores unexpected ones with only a log report, and
    raises a bare `RuntimeError` for shape mismatches; here each of these raises a `ValueError` naming the weights
    file and the keys (`ignore_mismatched_sizes=True` still allows re-initialising mismatched shapes), and a truncated
    or corrupt safetensors file an `OSError` naming it. Weights are read from safetensors only unless
    `use_safetensors=False` is passed (a pickle `pytorch_model.bin` is never the default, and transformers reads it
    with `torch.load(weights_only=True)` even then).
    """
    return_info = kwargs.pop("output_loading_info", False)
    allow_mismatch = kwargs.get("ignore_mismatched_sizes", False)
    kwargs["ignore_mismatched_sizes"] = True  # collect the mismatched keys instead of a RuntimeError without them
    kwargs.setdefault("use_safetensors", True)
    from safetensors import SafetensorError  # function level: a Hub copy of this file imports torch and transformers

    try:
        model, info = load(path, *args, output_loading_info=True, **kwargs)
    except SafetensorError as err:
        raise _unreadable_weights(path, kwargs, err) from None
    problems = {name: sorted(str(key) for key in info.get(name) or ()) for name in _LOADING_PROBLEMS}
    if allow_mismatch:
        problems["mismatched_keys"] = []
    problems = {name: keys for name, keys in problems.items() if keys}
    if problems:
        details = "; ".join(f"{name.replace('_', ' ')} ({len(keys)}): {keys[:5]}" for name, keys in problems.items())
        raise ValueError(f"The weights in {_weights_file(path, kwargs)} do not match "
                         f"{type(model).__name__}({model.config.model_type}): {details}.")
    return (model, info) if return_info else model


def load_referenced_base(auto_class: type, reference: str, **kwargs) -> torch.nn.Module:
    """A frozen base model (the captioner's audio tower or language model) from its reference
    (`resolve_base_reference`), by `auto_class` (`AutoModel`, `AutoModelForCausalLM`); `kwargs` (`dtype`) go to its
    `from_pretrained`.

    Held to this package's own loading rules, since a base's weights are as much the captioner's as its trained
    parts: read from safetensors only (a folder holding only a pickle `pytorch_model.bin` is refused with an
    `OSError` naming it, and never unpickled) and strictly (missing, unexpected or mismatched keys raise a
    `ValueError` naming the file and the first keys, see `checked_from_pretrained`). A base that is itself a model
    with referenced bases (the starter's encoder) loads by its own `from_pretrained`, which is strict already.
    """
    from transformers import AutoConfig

    path = resolve_base_reference(reference)
    config = AutoConfig.from_pretrained(path)
    try:
        model_class = auto_class._model_mapping[type(config)]
    except KeyError:
        raise ValueError(f"{reference} holds a {config.model_type!r} model, which is not a {auto_class.__name__} "
                         "(expected an audio tower for `audio_tower_name_or_path`, a causal language model for "
                         "`language_model_name_or_path`).") from None
    if issubclass(model_class, ReferencedBasesMixin):
        return model_class.from_pretrained(path, config=config, **kwargs)
    _refuse_pickle_only(path)
    kwargs["use_safetensors"] = True
    return checked_from_pretrained(model_class.from_pretrained, path, config=config, **kwargs)


def _refuse_pickle_only(path) -> None:
    """Raise `OSError` naming a local folder that holds pickle weights and no safetensors (transformers' own error
    does not say that the pickle was found and refused)."""
    pickles = [name for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")
               if os.path.isfile(os.path.join(path, name))]
    if pickles and not _safetensors_files(path, {}):
        raise OSError(f"{os.path.join(path, pickles[0])} is a pickle, and referenced bases are read from safetensors "
                      f"only: convert it (save_pretrained writes model.safetensors) or refer to a folder that has one.")


def check_safetensors_file(file) -> None:
    """Raise `OSError` naming `file` unless its safetensors header is readable and covers the file exactly (what a
    truncated or empty file fails). Reads the header only; the tensors are memory-mapped, not loaded."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(file), framework="pt"):
            pass
    except SafetensorError as err:
        raise _not_safetensors(file, err) from None


def load_safetensors(file) -> dict[str, torch.Tensor]:
    """safetensors' `load_file`, with an `OSError` naming `file` when it is truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(file)
    except SafetensorError as err:
        raise _not_safetensors(file, err) from None


def _not_safetensors(file, err: Exception) -> OSError:
    return OSError(f"{os.fspath(file)} is not a readable safetensors file ({err}): it is truncated or corrupt; save "
                   "or download it again.")


def _unreadable_weights(path, kwargs: dict, err: Exception) -> OSError:
    """The `OSError` for a `SafetensorError` raised while loading `path`, naming the file it is about: the first
    unreadable safetensors file of the folder (or of its Hub cache), else the folder."""
    for file in _safetensors_files(path, kwargs):
        try:
            check_safetensors_file(file)
        except OSError as named:
            return named
    return _not_safetensors(f"a weights file of {os.fspath(path)}", err)


def _safetensors_files(path, kwargs: dict) -> list[str]:
    folder = os.path.join(os.fspath(path), kwargs.get("subfolder") or "")
    if os.path.isdir(folder):
        return sorted(glob.glob(os.path.join(glob.escape(folder), "*.safetensors")))
    from transformers.utils import cached_file

    cached = cached_file(path, "model.safetensors", **hub_kwargs(kwargs), _raise_exceptions_for_missing_entries=False,
                         _raise_exceptions_for_connection_errors=False)
    return [cached] if cached else []


def _weights_file(path, kwargs: dict) -> str:
    """The weights file of a local folder `path` (for error messages), else `path` itself."""
    folder = os.path.join(os.fspath(path), kwargs.get("subfolder") or "")
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return os.fspath(path)


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
        raises `ValueError` naming the file and the keys, a truncated or corrupt one `OSError` naming it."""
        self.load_trained_state(*self.read_trained_parts(path, **kwargs))

    @staticmethod
    def read_trained_parts(path, **kwargs) -> tuple[str, dict[str, torch.Tensor]]:
        """(the file, its tensors): `path`'s `model.safetensors`, as `load_trained_parts` reads it."""
        from transformers.utils import cached_file

        weights = cached_file(path, "model.safetensors", **hub_kwargs(kwargs))
        return weights, load_safetensors(weights)

    def load_trained_state(self, weights: str, state: dict[str, torch.Tensor]) -> None:
        """`state` (read from the file `weights`) into the trained parts, strictly (see `load_trained_parts`)."""
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
