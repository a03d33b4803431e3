"""What every Trainer script of this project shares: declaring and reading its arguments, and finding where to resume.

    num_blocks: int = config_field(DiffusionLinkConfig, "num_blocks", help="Number of residual blocks.")
    model_args, data_args, training_args = parse_script_args((ModelArguments, DataArguments, TrainingArguments), argv)
    trainer.train(resume_from_checkpoint=resume_checkpoint(training_args, model))

    if __name__ == "__main__":
        run_script(main)

A script argument that sets a config field takes its default from the config class (`config_field`), so a config
default has one home and the scripts follow it.

A script takes one JSON config (as transformers' examples do), command-line flags, or both: the JSON first, then flags
that override its values (`train_bridge.py training/configs/starter_bridge.json --train_file x --seed 1`). Recipes
are JSON files in `training/configs/`, read by this one path. `report_to` defaults to "none" (no tracker switches
itself on), and on a machine without an accelerator `use_cpu` defaults to true, so that `torchrun` processes there
really train data-parallel.

Arguments are checked where they are read: each script's dataclasses check their own fields in `__post_init__`, and
`check_training_arguments` the `TrainingArguments` fields that transformers accepts at any value. A resume goes to
the newest checkpoint whose files are intact (`checkpoint_problems`), and only when its weights fit the model being
trained (`check_checkpoint_fits`). `run_script` turns these user errors into one `error:` line, as the CLI does.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

from diffusion_link.experiments.distributed import accelerator_available
from diffusion_link.pretrained_loading import check_safetensors_file
from diffusion_link.validation import (
    check_finite_float,
    check_fraction_below_one,
    check_non_negative_float,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_seed,
)


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
    parsed = parser.parse_args_into_dataclasses(args=argv)
    for args in parsed:
        if isinstance(args, TrainingArguments):
            check_training_arguments(args)
    return parsed


def check_max_steps(name: str, value) -> int:
    """Return `value`, or raise `ValueError` naming `name` unless it is -1 (train for `num_train_epochs`) or an
    int >= 1. The Trainer reads any value below 1 as -1, so `0` would train whole epochs."""
    if value != -1 and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be -1 (train for `num_train_epochs`) or a positive int, got {value!r}.")
    return value


def optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """`check` for a field whose None means "unset"."""
    return lambda name, value: value if value is None else check(name, value)


# `TrainingArguments` fields that transformers (5.x) accepts at any value, and what they must be. Left unchecked, a
# batch size of 0 or -1 fails deep inside the DataLoader after the data are loaded, and a NaN or negative learning
# rate, weight decay or beta trains weights into NaN or never moves them, and the run still exits 0.
TRAINING_ARGUMENT_CHECKS = {
    "per_device_train_batch_size": check_positive_int,
    "per_device_eval_batch_size": check_positive_int,
    "gradient_accumulation_steps": check_positive_int,
    "learning_rate": check_positive_float,
    "num_train_epochs": check_non_negative_float,
    "max_steps": check_max_steps,
    "weight_decay": check_non_negative_float,
    "adam_beta1": check_fraction_below_one,
    "adam_beta2": check_fraction_below_one,
    "adam_epsilon": check_positive_float,
    "max_grad_norm": optional(check_non_negative_float),  # 0 or None: no clipping
    "label_smoothing_factor": check_fraction_below_one,
    "logging_steps": check_positive_float,  # below 1: a fraction of the run's steps
    "save_steps": check_positive_float,
    "eval_steps": optional(check_positive_float),
    "eval_delay": check_non_negative_float,
    "eval_accumulation_steps": optional(check_positive_int),
    "save_total_limit": optional(check_positive_int),
    "seed": check_seed,
    "data_seed": optional(check_seed),
    "dataloader_num_workers": check_non_negative_int,
    "dataloader_prefetch_factor": optional(check_positive_int),
}


def check_training_arguments(args: TrainingArguments) -> TrainingArguments:
    """Return `args`, or raise `ValueError` naming the first field of `TRAINING_ARGUMENT_CHECKS` whose value is out
    of range (what was expected, what was received), or a run that would train no step at all."""
    for name, check in TRAINING_ARGUMENT_CHECKS.items():
        check(name, getattr(args, name))
    if args.max_steps == -1 and args.num_train_epochs == 0:
        raise ValueError("`num_train_epochs` is 0 and `max_steps` unset: the run would train no step. Give "
                         "`num_train_epochs` > 0 or `max_steps` >= 1.")
    return args


def run_script(main: Callable[[], Any]) -> None:
    """Run a training script's `main()` as a command: a user error (a bad argument, a missing or damaged file) ends
    it with one `error:` line on stderr and exit status 2, as `diffusion-link` does, not with a traceback."""
    try:
        main()
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


# The files a checkpoint's weights may be in; the Trainer refuses to resume from a folder with none of them.
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME, ADAPTER_SAFE_WEIGHTS_NAME,
                ADAPTER_WEIGHTS_NAME)
# `torch.save` archives the Trainer writes: optimizer.pt, scheduler.pt, scaler.pt, rng_state*.pth, training_args.bin.
TORCH_ARCHIVE_SUFFIXES = (".pt", ".pth", ".bin")
# Config keys that say where and by what a config was saved, not what the model is.
CONFIG_METADATA_KEYS = {"architectures", "auto_map", "custom_pipelines", "dtype", "torch_dtype", "transformers_version"}


def file_problem(path: str) -> str | None:
    """Why the checkpoint file `path` cannot be read back, or None. JSON must parse; safetensors files must have a
    readable header whose tensors cover the file exactly; torch archives must be complete zip archives whose CRCs
    match (read through once, never unpickled). Other files (code, README) are not checked."""
    name = os.path.basename(path)
    try:
        if name.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                json.load(f)
        elif name.endswith(".safetensors"):
            try:
                check_safetensors_file(path)  # the header, and that the tensors cover the file
            except OSError as err:
                return f"not a complete safetensors file ({err})"
        elif name.endswith(TORCH_ARCHIVE_SUFFIXES):
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged is not None:
                return f"damaged torch archive (the CRC of {damaged} does not match)"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"not valid JSON ({err})"
    except zipfile.BadZipFile as err:
        return f"not a complete torch archive ({err}; truncated?)"
    except OSError as err:
        return f"unreadable ({err})"
    return None


def checkpoint_problems(checkpoint: str) -> list[str]:
    """What keeps the folder `checkpoint` from being resumed, one line per problem (empty when it is intact): no
    `trainer_state.json` (the Trainer writes it last, so a run killed while saving leaves none), no weights, or a
    file `file_problem` finds damaged."""
    if not os.path.isdir(checkpoint):
        return [f"{checkpoint} is not a folder"]
    problems = []
    if not os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME)):
        problems.append(f"no {TRAINER_STATE_NAME} (the run stopped while saving it)")
    if not any(os.path.isfile(os.path.join(checkpoint, name)) for name in WEIGHT_FILES):
        problems.append(f"no weights (none of {list(WEIGHT_FILES)})")
    for name in sorted(os.listdir(checkpoint)):
        path = os.path.join(checkpoint, name)
        if os.path.isfile(path) and (problem := file_problem(path)):
            problems.append(f"{path}: {problem}")
    return problems


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-<step>` folder of `output_dir` whose files are intact (`checkpoint_problems`), or None
    when it has no checkpoint, or only folders a run was killed while saving (no `trainer_state.json`).

    Each folder passed over is logged with its problems. `get_last_checkpoint` alone picks the newest folder, and the
    resume then fails on its truncated files on every rerun. Raises `ValueError`, listing every file, when the
    folder's checkpoints are all damaged: training from the start would drop them without a word.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(m.group(1)), name) for name in os.listdir(output_dir)
        if (m := re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    damaged = {}
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        problems = checkpoint_problems(path)
        if not problems:
            return path
        logger.warning("skipping %s: %s", path, "; ".join(problems))
        if os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
            damaged[path] = problems
    if damaged:
        listed = "; ".join(f"{path}: {', '.join(problems)}" for path, problems in damaged.items())
        raise ValueError(
            f"{output_dir} holds checkpoints, but none can be resumed: {listed}. Repair or remove them to train from "
            "the start, give --resume_from_checkpoint, or train into another --output_dir."
        )
    return None


def resume_checkpoint(training_args, model=None) -> str | None:
    """Where `trainer.train` resumes: `--resume_from_checkpoint` when given (`ValueError` naming its damaged files
    when it is not intact), else the newest intact checkpoint in `--output_dir` (`last_complete_checkpoint`), so that
    re-running an interrupted command picks up where it stopped. With `model`, the checkpoint must also fit it
    (`check_checkpoint_fits`)."""
    resume = training_args.resume_from_checkpoint
    if resume is not None:
        problems = checkpoint_problems(resume)
        if problems:
            raise ValueError(f"--resume_from_checkpoint {resume} cannot be resumed: {'; '.join(problems)}.")
    elif training_args.output_dir and os.path.isdir(training_args.output_dir):
        resume = last_complete_checkpoint(training_args.output_dir)
        if resume:
            logger.info("resuming from %s", resume)
    if resume and model is not None:
        check_checkpoint_fits(resume, model)
    return resume


def checkpoint_shapes(checkpoint: str) -> dict[str, tuple[int, ...]] | None:
    """{name: shape} of the weights in `checkpoint`'s safetensors files (one file, or the shards of an index), read
    from their headers; None when its weights are not safetensors."""
    from safetensors import safe_open

    index = os.path.join(checkpoint, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(checkpoint, SAFE_WEIGHTS_NAME)):
        files = [SAFE_WEIGHTS_NAME]
    else:
        return None
    shapes = {}
    for name in files:
        with safe_open(os.path.join(checkpoint, name), framework="pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    return shapes


def check_checkpoint_fits(checkpoint: str, model) -> None:
    """Raise `ValueError` unless the weights of `checkpoint` fit `model`: no weight the model lacks, none of another
    shape, and every weight the model saves present (its `trained_state_dict()` when it saves only its trained parts
    over referenced bases; a weight tied to another counts once). The message names the config fields that differ.

    The Trainer loads a checkpoint's weights non-strictly: resuming with another architecture (`--num_blocks 3` over
    a 2-block checkpoint) would leave the new parts at their initial values, and, when no optimizer state stops it,
    exit 0. Config fields that differ while the weights fit (a dropout, an EMA decay) are logged: the run goes on
    with the new values."""
    saved = checkpoint_shapes(checkpoint)
    if saved is None:
        logger.warning("%s has no safetensors weights: cannot check that they fit the model", checkpoint)
        return
    state = model.state_dict()
    current = {key: tuple(value.shape) for key, value in state.items()}
    saves = model.trained_state_dict() if hasattr(model, "trained_state_dict") else state
    tied = {}  # one entry per storage: `save_pretrained` writes a tied weight under one of its names
    for key, value in saves.items():
        tied.setdefault((value.data_ptr(), tuple(value.shape)), []).append(key)
    missing = sorted(keys[0] for keys in tied.values() if not any(key in saved for key in keys))
    unexpected = sorted(set(saved) - set(current))
    reshaped = sorted(f"{key} {saved[key]} -> {current[key]}" for key in set(saved) & set(current)
                      if saved[key] != current[key])
    fields = config_differences(checkpoint, model.config)
    if missing or unexpected or reshaped:
        raise ValueError(
            f"{checkpoint} was saved by another architecture than the one asked for; config fields that differ: "
            f"{'; '.join(fields) or 'none'}. Its weights: {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}, {len(reshaped)} of another shape {reshaped[:5]}. Resume "
            "with the arguments it was trained with, or train into another --output_dir."
        )
    if fields:
        logger.warning("resuming %s with config fields that differ from its own: %s", checkpoint, "; ".join(fields))


def config_differences(checkpoint: str, config) -> list[str]:
    """"field: <checkpoint's value> in the checkpoint, <value> now" for every field in which `checkpoint`'s
    `config.json` and `config` differ (sub-configs field by field), leaving out where and by what it was saved."""
    path = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(path):
        return []
    try:
        saved = type(config).from_json_file(path).to_dict()
    except (ValueError, TypeError, OSError):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    return _differences(saved, config.to_dict())


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(saved) | set(current), key=str):
        if key in CONFIG_METADATA_KEYS or str(key).startswith("_"):
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            lines += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            lines.append(f"{prefix}{key}: {old!r} in the checkpoint, {new!r} now")
    return lines
