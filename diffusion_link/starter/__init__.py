"""The starter: the offline default captioner built from real pretrained parts (aiSFX audio, MiniLM text, SmolLM2).

This package holds the starter's own code, which never ships to the Hub (it runs only where `diffusion_link` is
installed), and its committed files: `encoder/` and `captioner/` (trained parts only, safetensors; the bases are
referenced), `split.json`, `esc50_captions.json` and `build_report.json`. `training/build_starter.py` rebuilds them.

- `configuration_starter_encoder`, `modeling_starter_encoder`, `feature_extraction_starter_encoder`: the CLAP-style
  joint space (frozen aiSFX + MiniLM with trained projection heads) and its audio front end.
"""

from __future__ import annotations

import os


STARTER_DIR = os.path.dirname(os.path.abspath(__file__))
STARTER_CAPTIONER = os.path.join(STARTER_DIR, "captioner")


def default_captioner() -> str | None:
    """The folder of the starter captioner, or None when this checkout has not got one."""
    return STARTER_CAPTIONER if os.path.isfile(os.path.join(STARTER_CAPTIONER, "config.json")) else None
