"""What every Trainer script of this project shares: declaring and reading its arguments, and finding where to resume.

    num_blocks: int = config_field(DiffusionLinkConfig, "num_blocks", help="Number of residual blocks.")
    model_args, data_args, training_args = parse_script_args((ModelArguments, DataArguments, TrainingArguments), argv)
    trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))

A script argument that sets a config field takes its default from the config class (`config_field`), so a config
default has one home and the scripts follow it.

A script takes one JSON config (as transformers' examples do), command-line flags, or both: the JSON first, then flags
that override its values (`train_bridge.py training/configs/starter_bridge.json --train_file x --seed 1`). Recipes
are JSON files in `training/configs/`, read by this one path. `report_to` defaults to "none" (no tracker switches
itself on), and on a machine without an accelerator `use_cpu` defaults to true, so that `torchrun` processes there
really train data-parallel.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from transformers import HfArgumentParser
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from diffusion_link.experiments.distributed import accelerator_available


logger = logging.getLogger(__name__)


def config_default(config_class: type, name: str) -> Any:
    """The default of argument `name` of `config_class.__init__`; `ValueError` when it has none."""
    parameter = inspect.signature(config_class.__init__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise ValueError(f"{config_class.__name__}.__init__ has no argument {name!r} with a default.")
    return parameter.default


def config_field(config_class: type, name: str, *, help: str, convert: Callable[[Any], Any] | None = None):
    """A dataclass `field` whose default is the default of `config_class`'s argument `name` (through `convert`, when
    the flag spells the value differently: a tuple of module names as one comma-separated string, say).

    The training scripts' `ModelArguments` declare their config fields this way, so changing a default in the config
    class changes what the script does without flags."""
    default = config_default(config_class, name)
    if convert is not None:
        default = convert(default)
    metadata = {"help": help}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def read_json_config(path: str) -> dict:
    """The JSON object in `path`; `ValueError` naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object of argument names and values, got {type(values).__name__}.")
    return values


def parse_script_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None,
                      defaults: dict | None = None, default_config: str | None = None) -> tuple:
    """Parse `[config.json] [--flag value ...]` (default `sys.argv[1:]`) into one instance of each dataclass.

    `defaults` (a script's own recipe) replace the dataclasses' defaults; the JSON's values replace those, and flags
    replace everything. Without a JSON first, `default_config` (a script's committed recipe file), if given, is read
    in its place. A field required on the command line may come from any of them; a key that no dataclass has
    raises, as `HfArgumentParser.parse_dict` does.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    values = dict(defaults or {})
    config = argv.pop(0) if argv and argv[0].endswith(".json") else default_config
    if config:
        values.update(read_json_config(config))
    parser = HfArgumentParser(dataclass_types)
    known = {action.dest for action in parser._actions}
    if "report_to" in known:  # a Trainer script: no tracker switches itself on
        values.setdefault("report_to", "none")
    if "use_cpu" in known and not accelerator_available():
        # accelerate makes `torchrun` / `accelerate launch` CPU processes one gloo group only when the Trainer is asked
        # for the CPU; otherwise each process silently trains alone on all the data.
        values.setdefault("use_cpu", True)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown arguments in the JSON config: {unknown}.")
    for action in parser._actions:
        if action.dest in values:
            action.required = False  # given by the config
    parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv)


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


def resume_checkpoint(training_args) -> str | None:
    """Where `trainer.train` resumes: `--resume_from_checkpoint` when given, else the newest complete checkpoint in
    `--output_dir`, so that re-running an interrupted command picks up where it stopped."""
    resume = training_args.resume_from_checkpoint
    if resume is None and training_args.output_dir and os.path.isdir(training_args.output_dir):
        resume = last_complete_checkpoint(training_args.output_dir)
        if resume:
            logger.info("resuming from %s", resume)
    return resume
