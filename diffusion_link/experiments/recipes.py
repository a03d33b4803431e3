"""Run a training recipe script (`training/<name>.py`) from a build or an experiment, as its own process.

    run_recipe("train_bridge", [recipe_json, "--train_file", path, "--output_dir", out])
    bridge = DiffusionLinkBridge.from_pretrained(out)

The scripts stay scripts: a caller never imports one, it runs it with the same interpreter and environment and loads
what it saved with `from_pretrained`. A failed run raises `RecipeError` (a `ValueError`) that names the script and
shows the tail of its error output; its standard output (the training log) goes to this process's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINING_DIR = os.path.join(REPO_ROOT, "training")
STDERR_TAIL_LINES = 30


class RecipeError(ValueError):
    """A recipe script exited with an error."""


def recipe_script(name: str) -> str:
    """The path of `training/<name>.py`; `ValueError` when there is none."""
    if not name or os.sep in name or "/" in name or name.endswith(".py"):
        raise ValueError(f"`name` must be a script name without folder or extension (e.g. 'train_bridge'), got {name!r}.")
    path = os.path.join(TRAINING_DIR, f"{name}.py")
    if not os.path.isfile(path):
        raise ValueError(f"No recipe script {path} (the recipes run from a source checkout).")
    return path


def run_recipe(name: str, argv: Sequence[str]) -> None:
    """Run `python training/<name>.py *argv` with this interpreter and environment; `RecipeError` when it fails."""
    script = recipe_script(name)
    command = [sys.executable, script, *map(str, argv)]
    done = subprocess.run(command, stdout=None, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    if done.stderr:
        sys.stderr.write(done.stderr)  # the script's log, which transformers and logging write to stderr
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        raise RecipeError(f"training/{name}.py exited with status {done.returncode}; the end of its error output:\n{tail}")
