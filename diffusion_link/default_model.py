"""The models used when none is given: the committed starter captioner (see `training/build_starter.py`)."""

from __future__ import annotations

import os


STARTER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "starter")
STARTER_CAPTIONER = os.path.join(STARTER_DIR, "captioner")


def default_captioner() -> str | None:
    """The folder of the starter captioner, or None when this checkout has not got one."""
    return STARTER_CAPTIONER if os.path.isfile(os.path.join(STARTER_CAPTIONER, "config.json")) else None
