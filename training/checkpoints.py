"""Finding the checkpoint a Trainer run resumes from."""

from __future__ import annotations

import logging
import os
import re

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


logger = logging.getLogger(__name__)


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-<step>` folder of `output_dir` that was written completely, or None.

    The Trainer writes a checkpoint in place with `trainer_state.json` last, so a run killed while saving leaves a
    folder without it. `get_last_checkpoint` alone picks that folder, and the resume then fails on its truncated files.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(m.group(1)), name) for name in os.listdir(output_dir)
        if (m := re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        if os.path.isfile(os.path.join(output_dir, name, TRAINER_STATE_NAME)):
            return os.path.join(output_dir, name)
        logger.warning("skipping %s: incomplete (no %s; the run stopped while saving it)", name, TRAINER_STATE_NAME)
    return None
