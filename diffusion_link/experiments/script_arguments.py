"""What every Trainer script of this project shares: reading its arguments and finding where to resume.

    model_args, data_args, training_args = parse_script_args((ModelArguments, DataArguments, TrainingArguments), argv)
    trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))

A script takes one JSON config (as transformers' examples do), command-line flags, or both: the JSON first, then flags
that override its values (`train_bridge.py training/configs/starter_bridge.json --train_file x --seed 1`). Recipes
are JSON files in `training/configs/`, read by this one path. `report_to` defaults to "none" (no tracker switches
itself on), and on a machine without an accelerator `use_cpu` defaults to true, so that `torchrun` processes there
really train data-parallel.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Sequence

from transformers import HfArgumentParser
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


logger = logging.getLogger(__name__)


def accelerator_available() -> bool:
    """Whether torch sees a CUDA, XPU or MPS device."""
    import torch

    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool(torch.cuda.is_available() or (xpu is not None and xpu.is_available())
                or (mps is not None and mps.is_available()))


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
                      defaults: dict | None = None) -> tuple:
    """Parse `[config.json] [--flag value ...]` (default `sys.argv[1:]`) into one instance of each dataclass.

    `defaults` (a script's own recipe) replace the dataclasses' defaults; the JSON's values replace those, and flags
    replace everything. A field required on the command line may come from any of them; a key that no dataclass has
    raises, as `HfArgumentParser.parse_dict` does.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    values = dict(defaults or {})
    if argv and argv[0].endswith(".json"):
        values.update(read_json_config(argv.pop(0)))
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


def finish_distributed(teardown_timeout: float = 120.0) -> None:
    """End a `torchrun` / `accelerate launch` run cleanly: wait for every process, then tear the process group down.

    A process that exits with its gloo group still alive can abort at interpreter shutdown ("terminate called without
    an active exception") after all its work is done, failing the whole launch. And `destroy_process_group` itself
    now and then never returns after its peers have left (pytorch/pytorch#75097; seen once here, a two-process CPU
    run stuck for minutes after writing its checkpoint). So the teardown runs in a daemon thread: past the barrier
    every process has done its work, and one whose teardown outlasts `teardown_timeout` seconds says so and exits 0.
    A no-op outside distributed runs."""
    import threading

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    torn_down = threading.Event()

    def teardown():
        dist.destroy_process_group()
        torn_down.set()

    threading.Thread(target=teardown, daemon=True, name="destroy_process_group").start()
    if not torn_down.wait(teardown_timeout):
        logger.warning("destroy_process_group did not return within %.0f s after every process finished its work "
                       "(pytorch/pytorch#75097); exiting without it.", teardown_timeout)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
