"""Where frozen base models come from when a checkpoint refers to them instead of copying them.

A reference is a Hub id (`laion/clap-htsat-unfused`), a local folder, or `package:<distribution module>/<path>` for
weights shipped inside an installed Python package (resolved with `importlib.resources`, no network).
"""

from __future__ import annotations

import importlib.resources
import os


PACKAGE_PREFIX = "package:"


def resolve_reference(reference: str) -> str:
    """A Hub id or path usable by `from_pretrained`. `package:` references become the folder inside the package."""
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"A model reference must be a non-empty string, got {reference!r}.")
    if not reference.startswith(PACKAGE_PREFIX):
        return reference
    module, _, subpath = reference[len(PACKAGE_PREFIX):].partition("/")
    try:
        root = importlib.resources.files(module)
    except ModuleNotFoundError as err:
        raise ValueError(f"{reference}: the package {module!r} is not installed (pip install it).") from err
    path = os.fspath(root.joinpath(subpath)) if subpath else os.fspath(root)
    if not os.path.exists(path):
        raise ValueError(f"{reference}: {path} does not exist in the installed package {module!r}.")
    return path
