"""Every bad input the training scripts answer, one table per class: embedding rows that cannot be normalised, damaged
checkpoints, resumes with another architecture, and numeric arguments out of range."""

import logging
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion_link import DiffusionLinkBridge
from diffusion_link.experiments.embedding_files import load_embeddings, save_embeddings
from diffusion_link.experiments.script_arguments import (
    check_checkpoint_fits,
    last_complete_checkpoint,
    parse_script_args,
    resume_checkpoint,
    run_script,
)
from diffusion_link.experiments.synthetic_gap import synthetic_gap_embeddings
from training import extract_embeddings, train_bridge, train_captioner

from .conftest import REPO_ROOT


DIM = 12


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad-training-data") / "train.safetensors"
    data = synthetic_gap_embeddings(48, embedding_dim=DIM, seed=0)
    save_embeddings(path, {k: data[k] for k in ("audio_embeds", "text_embeds")})
    return path


def bridge_argv(train_file, output_dir, **overrides):
    values = {"train_file": str(train_file), "output_dir": str(output_dir), "max_steps": 4, "save_steps": 2,
              "per_device_train_batch_size": 16, "learning_rate": 3e-3, "hidden_size": 24, "num_blocks": 2,
              "validation_split_percentage": 0, "seed": 7, "disable_tqdm": True, "log_level": "warning"}
    values.update(overrides)
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


# ---------------------------------------------------------------- embedding rows that cannot be L2-normalised

def _rows(edit):
    tensors = {k: v.clone() for k, v in synthetic_gap_embeddings(8, embedding_dim=DIM, seed=1).items()
               if k in ("audio_embeds", "text_embeds")}
    edit(tensors)
    return tensors


def _set(key, rows, value):
    def edit(tensors):
        tensors[key][rows] = value
    return edit


def _scale(key, rows, factor, dtype=torch.float32):
    def edit(tensors):
        tensors[key] = tensors[key].to(dtype)
        tensors[key][rows] *= factor
    return edit


@pytest.mark.parametrize(
    "edit, key, rows",
    [
        (_scale("audio_embeds", slice(None), 1e30), "audio_embeds", "[0, 1, 2, 3, 4, 5, 6, 7]"),  # norm overflows
        (_scale("text_embeds", [2, 5], 1e20), "text_embeds", "[2, 5]"),  # just past float32: the square is inf
        (_scale("text_embeds", [1], 1e-30), "text_embeds", "[1]"),  # the square underflows: norm 0
        (_scale("text_embeds", [4], 1e-14), "text_embeds", "[4]"),  # below F.normalize's eps: not a unit vector
        (_set("text_embeds", [3], 0.0), "text_embeds", "[3]"),  # no direction at all
        (_scale("audio_embeds", [6], 1e25, torch.float64), "audio_embeds", "[6]"),  # fine in float64, not in float32
    ],
    ids=["huge", "past-float32", "underflow", "below-eps", "zero-row", "float64-huge"],
)
def test_rows_that_cannot_be_normalised_are_refused_naming_file_tensor_and_rows(tmp_path, edit, key, rows):
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in _rows(edit).items()}, path)  # written around the check, as a user's tool would
    # Overflow and underflow in the tensor's own dtype are `check_embeddings`' rule (its message); zero rows, rows below
    # the eps and float64 rows beyond float32 the file's own (`check_normalizable_rows`).
    with pytest.raises(ValueError, match=rf"bad\.safetensors: `{key}` has .*rows {re.escape(rows)}"):
        load_embeddings(path)
    with pytest.raises(ValueError, match=rf"out\.safetensors: `{key}` has .*rows {re.escape(rows)}"):
        save_embeddings(tmp_path / "out.safetensors", _rows(edit))
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("factor", [1e-10, 1.0, 1e15])
def test_rows_of_any_workable_size_are_kept(tmp_path, factor):
    tensors = _rows(_scale("text_embeds", slice(None), factor))
    save_embeddings(tmp_path / "ok.safetensors", tensors)
    torch.testing.assert_close(load_embeddings(tmp_path / "ok.safetensors")[0]["text_embeds"], tensors["text_embeds"])


def test_training_on_huge_embeddings_stops_before_it_starts(tmp_path):
    path = tmp_path / "huge.safetensors"
    save_file({k: v.contiguous() for k, v in _rows(_scale("audio_embeds", slice(None), 1e30)).items()}, path)
    with pytest.raises(ValueError, match=r"huge\.safetensors: `audio_embeds`"):
        train_bridge.main(bridge_argv(path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- damaged checkpoints

@pytest.fixture(scope="module")
def finished_run(train_file, tmp_path_factory):
    """A 4-step bridge run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("bridge-run") / "run"
    train_bridge.main(bridge_argv(train_file, out))
    return out


def _truncate(name):
    def damage(folder):
        path = folder / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return damage


def _write(name, content):
    def damage(folder):
        (folder / name).write_bytes(content)
    return damage


def _flip_last_data_byte(name):
    """A flipped byte inside the archive's data (not its directory): only the CRC check sees it."""
    def damage(folder):
        import zipfile

        path = folder / name
        with zipfile.ZipFile(path) as archive:
            info = max(archive.infolist(), key=lambda i: i.file_size)
        data = bytearray(path.read_bytes())
        name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
            int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
        data[info.header_offset + 30 + name_len + extra_len + 1] ^= 0xFF
        path.write_bytes(bytes(data))
    return damage


def _remove(name):
    def damage(folder):
        (folder / name).unlink()
    return damage


DAMAGES = [
    ("model.safetensors", _truncate("model.safetensors"), "not a complete safetensors file"),
    ("model.safetensors", _write("model.safetensors", b""), "not a complete safetensors file"),
    ("model.safetensors", _remove("model.safetensors"), "no weights"),
    ("trainer_state.json", _write("trainer_state.json", b'{"global_st'), "not valid JSON"),
    ("config.json", _write("config.json", b"\xff\xfe"), "not valid JSON"),
    ("optimizer.pt", _truncate("optimizer.pt"), "not a complete torch archive"),
    ("optimizer.pt", _flip_last_data_byte("optimizer.pt"), "CRC"),
    ("scheduler.pt", _truncate("scheduler.pt"), "not a complete torch archive"),
    ("rng_state.pth", _truncate("rng_state.pth"), "not a complete torch archive"),
]
DAMAGE_IDS = ["truncated-weights", "empty-weights", "no-weights", "bad-trainer-state", "bad-config",
              "truncated-optimizer", "flipped-optimizer-byte", "truncated-scheduler", "truncated-rng"]


@pytest.mark.parametrize("name, damage, problem", DAMAGES, ids=DAMAGE_IDS)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_intact_one(finished_run, tmp_path, caplog, name,
                                                                             damage, problem):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(run / "checkpoint-4")
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(str(run)) == str(run / "checkpoint-2")
    assert "skipping" in caplog.text and "checkpoint-4" in caplog.text and problem in caplog.text
    if name != "model.safetensors" or problem != "no weights":
        assert str(run / "checkpoint-4" / name) in caplog.text  # the file, by its path


@pytest.mark.parametrize("name, damage, problem", DAMAGES, ids=DAMAGE_IDS)
def test_resuming_a_damaged_checkpoint_by_name_is_refused_naming_the_file(finished_run, tmp_path, name, damage,
                                                                          problem):
    from transformers import TrainingArguments

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(run / "checkpoint-4")
    args = TrainingArguments(output_dir=str(run), resume_from_checkpoint=str(run / "checkpoint-4"))
    with pytest.raises(ValueError, match=f"--resume_from_checkpoint .*checkpoint-4 cannot be resumed: .*{problem}"):
        resume_checkpoint(args)


def test_the_rerun_resumes_from_the_intact_checkpoint_and_ends_as_an_uninterrupted_run(finished_run, train_file,
                                                                                       tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _truncate("optimizer.pt")(run / "checkpoint-4")  # before: every rerun failed with "OSError: Invalid argument"
    model = train_bridge.main(bridge_argv(train_file, run))
    assert int(model.ema_num_updates) == 4
    a, b = load_file(finished_run / "model.safetensors"), load_file(run / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0  # steps 3-4 retrained from checkpoint-2
    assert last_complete_checkpoint(str(run)) == str(run / "checkpoint-4")  # rewritten intact


def test_a_folder_whose_checkpoints_are_all_damaged_is_refused_listing_them(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _truncate("model.safetensors")(run / "checkpoint-4")
    _write("trainer_state.json", b"")(run / "checkpoint-2")
    with pytest.raises(ValueError, match="none can be resumed") as err:
        last_complete_checkpoint(str(run))
    assert str(run / "checkpoint-4" / "model.safetensors") in str(err.value)
    assert str(run / "checkpoint-2" / "trainer_state.json") in str(err.value)


# ---------------------------------------------------------------- resuming with another architecture

@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_blocks": 3}, r"num_blocks: 2 in the checkpoint, 3 now.* 16 missing \['denoiser\.blocks\.2\."),
        ({"num_blocks": 1}, r"num_blocks: 2 in the checkpoint, 1 now.* 16 unexpected \['denoiser\.blocks\.1\."),
        ({"hidden_size": 32}, r"hidden_size: 24 in the checkpoint, 32 now.* of another shape"),
        ({"audio_adapter": "linear"}, r"audio_adapter: 'none' in the checkpoint, 'linear' now.* 2 missing"),
    ],
    ids=["more-blocks", "fewer-blocks", "wider", "adapter"],
)
def test_resuming_with_another_architecture_is_refused_naming_the_fields(finished_run, train_file, tmp_path,
                                                                         overrides, message):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for optimizer in run.glob("checkpoint-*/optimizer.pt"):
        optimizer.unlink()  # before: without optimizer state nothing stopped it, and the new blocks stayed random
    with pytest.raises(ValueError, match=rf"checkpoint-4 was saved by another architecture.*{message}"):
        train_bridge.main(bridge_argv(train_file, run, max_steps=6, **overrides))


def test_a_config_change_that_keeps_the_weights_is_logged_and_resumed(finished_run, caplog):
    bridge = DiffusionLinkBridge.from_pretrained(finished_run / "checkpoint-4")
    bridge.config.dropout = 0.1
    with caplog.at_level(logging.WARNING):
        check_checkpoint_fits(str(finished_run / "checkpoint-4"), bridge)
    assert "dropout: 0.0 in the checkpoint, 0.1 now" in caplog.text


def test_the_captioner_refuses_a_resume_with_another_prefix_length(tiny_parts, tmp_path):
    embeds = torch.nn.functional.normalize(torch.randn(4, 24, generator=torch.Generator().manual_seed(0)), dim=-1)
    data = tmp_path / "captions.safetensors"
    save_embeddings(data, {"audio_embeds": embeds, "text_embeds": embeds}, {"captions": ["a", "b c", "d", "e f"]})

    def argv(**overrides):
        values = {"audio_tower_name_or_path": tiny_parts["clap"], "language_model_name_or_path": tiny_parts["llama"],
                  "train_file": str(data), "output_dir": str(tmp_path / "run"), "max_steps": 1, "save_steps": 1,
                  "per_device_train_batch_size": 4, "lora_r": 2, "prefix_length": 2, "prompt": "",
                  "disable_tqdm": True, "log_level": "warning", **overrides}
        return [item for key, value in values.items() for item in (f"--{key}", str(value))]

    train_captioner.main(argv())
    with pytest.raises(ValueError, match="prefix_length: 2 in the checkpoint, 3 now.*of another shape"):
        train_captioner.main(argv(prefix_length=3, max_steps=2))


# ---------------------------------------------------------------- numeric arguments

def _bridge(*flags):
    return lambda: train_bridge.parse_args(["--train_file", "x", "--output_dir", "o", *flags])


def _captioner(*flags):
    return lambda: train_captioner.parse_args(["--train_file", "x", "--output_dir", "o", *flags])


def _extract(*flags):
    return lambda: parse_script_args((extract_embeddings.ExtractionArguments,),
                                     ["--model_name_or_path", "m", "--output_file", "o", "--captions_file", "c", *flags])


# (parse call, the argument, the message). Each says what was expected and what was received.
NUMERIC_CASES = [
    # TrainingArguments fields transformers takes at any value
    (_bridge("--per_device_train_batch_size", "0"), "`per_device_train_batch_size` must be a positive int, got 0"),
    (_bridge("--per_device_train_batch_size", "-1"), "`per_device_train_batch_size` must be a positive int, got -1"),
    (_bridge("--per_device_eval_batch_size", "0"), "`per_device_eval_batch_size` must be a positive int, got 0"),
    (_bridge("--gradient_accumulation_steps", "0"), "`gradient_accumulation_steps` must be a positive int, got 0"),
    (_bridge("--learning_rate", "0"), r"`learning_rate` must be a finite number > 0, got 0\.0"),
    (_bridge("--learning_rate", "-0.001"), r"`learning_rate` must be a finite number > 0, got -0\.001"),
    (_bridge("--learning_rate", "nan"), "`learning_rate` must be a finite number > 0, got nan"),
    (_bridge("--learning_rate", "inf"), "`learning_rate` must be a finite number > 0, got inf"),
    (_bridge("--num_train_epochs", "-1", "--max_steps", "-1"), r"`num_train_epochs` must be a finite number >= 0, got -1\.0"),
    (_bridge("--num_train_epochs", "nan"), "`num_train_epochs` must be a finite number, got nan"),
    (_bridge("--num_train_epochs", "0", "--max_steps", "-1"), "would train no step"),
    (_bridge("--max_steps", "0"), r"`max_steps` must be -1 \(train for `num_train_epochs`\) or a positive int, got 0"),
    (_bridge("--max_steps", "-5"), "`max_steps` must be -1 .* got -5"),
    (_bridge("--weight_decay", "nan"), "`weight_decay` must be a finite number, got nan"),
    (_bridge("--weight_decay", "-0.1"), r"`weight_decay` must be a finite number >= 0, got -0\.1"),
    (_bridge("--adam_beta1", "1"), r"`adam_beta1` must be a number in \[0, 1\), got 1\.0"),
    (_bridge("--adam_beta2", "-0.5"), r"`adam_beta2` must be a number in \[0, 1\], got -0\.5"),
    (_bridge("--adam_epsilon", "0"), r"`adam_epsilon` must be a finite number > 0, got 0\.0"),
    (_bridge("--max_grad_norm", "nan"), "`max_grad_norm` must be a finite number, got nan"),
    (_bridge("--save_steps", "0"), "`save_steps` must be a finite number > 0, got 0"),
    (_bridge("--save_total_limit", "0"), "`save_total_limit` must be a positive int, got 0"),
    (_bridge("--seed", "-1"), "`seed` must be an int >= 0, got -1"),
    (_bridge("--seed", str(2**32)), rf"`seed` must be an int in \[0, 2\*\*32\), got {2**32}"),
    (_bridge("--dataloader_num_workers", "-1"), "`dataloader_num_workers` must be an int >= 0, got -1"),
    (_bridge("--label_smoothing_factor", "1.5"), r"`label_smoothing_factor` must be a number in \[0, 1\], got 1\.5"),
    # what transformers refuses itself
    (_bridge("--logging_steps", "0"), "logging_steps"),
    (_bridge("--warmup_steps", "-1"), r"warmup_steps = -1\.0, Expected value warmup_steps >= 0"),
    # the bridge's recipe: checked by its config before any data is read
    (_bridge("--num_blocks", "0"), "`num_blocks` must be a positive int, got 0"),
    (_bridge("--hidden_size", "0"), "`hidden_size` must be a positive int, got 0"),  # before: silently 2D
    (_bridge("--hidden_size", "-4"), "`hidden_size` must be a positive int, got -4"),
    (_bridge("--dropout", "1.5"), r"`dropout` must lie in \[0, 1\), got 1\.5"),
    (_bridge("--dropout", "nan"), "`dropout` must be a finite number, got nan"),
    (_bridge("--ema_decay", "1"), r"`ema_decay` must lie in \[0, 1\), got 1\.0"),
    (_bridge("--strength", "0"), r"`strength` must be a float in \(0, 1\], got 0\.0"),
    (_bridge("--num_inference_steps", "0"), "`num_inference_steps` must be a positive int, got 0"),
    (_bridge("--max_train_timestep", "0"), "`max_train_timestep` must be an int in .* got 0"),
    (_bridge("--topology_loss_weight", "nan"), "`topology_loss_weight` must be a finite number, got nan"),
    (_bridge("--topology_loss_weight", "-1"), r"`topology_loss_weight` must be >= 0, got -1\.0"),
    (_bridge("--validation_split_percentage", "100"), r"`validation_split_percentage` must lie in \[0, 100\), got 100"),
    (_bridge("--validation_split_percentage", "-1"), "`validation_split_percentage` must be an int >= 0, got -1"),
    (_bridge("--early_stopping_patience", "-1"), "`early_stopping_patience` must be an int >= 0, got -1"),
    (_bridge("--paired_fraction", "nan"), r"`paired_fraction` must lie in \(0, 1\), got nan"),
    (_bridge("--depth_grid", "0", "0.5"), r"`depth_grid` must hold depths in \(0, 1\]"),
    # the captioner's recipe and data
    (_captioner("--prefix_length", "0"), "`prefix_length` must be a positive int, got 0"),
    (_captioner("--lora_r", "-1"), "`lora_r` must be an int >= 0, got -1"),
    (_captioner("--lora_alpha", "0"), "`lora_alpha` must be a finite number > 0, got 0"),
    (_captioner("--lora_dropout", "1"), r"`lora_dropout` must be a number in \[0, 1\), got 1\.0"),
    (_captioner("--noise_injection_std", "nan"), "`noise_injection_std` must be a finite number, got nan"),
    (_captioner("--noise_injection_std", "-0.1"), r"`noise_injection_std` must be a finite number >= 0, got -0\.1"),
    (_captioner("--projector_learning_rate", "0"), r"`projector_learning_rate` must be a finite number > 0, got 0\.0"),
    (_captioner("--max_train_samples", "0"), "`max_train_samples` must be a positive int, got 0"),
    (_captioner("--max_caption_tokens", "0"), "`max_caption_tokens` must be a positive int, got 0"),
    (_captioner("--max_eval_generations", "-1"), "`max_eval_generations` must be a positive int, got -1"),
    (_captioner("--generation_max_new_tokens", "0"), "`generation_max_new_tokens` must be a positive int, got 0"),
    (_captioner("--per_device_train_batch_size", "0"), "`per_device_train_batch_size` must be a positive int, got 0"),
    (_captioner("--learning_rate", "nan"), "`learning_rate` must be a finite number > 0, got nan"),
    # the extraction
    (_extract("--batch_size", "0"), "`batch_size` must be a positive int, got 0"),
    (_extract("--batch_size", "-1"), "`batch_size` must be a positive int, got -1"),
]


@pytest.mark.parametrize("parse, message", NUMERIC_CASES, ids=[m.split("`")[1] if "`" in m else m[:20]
                                                                for _, m in NUMERIC_CASES])
def test_numeric_arguments_out_of_range_are_refused_when_parsed(parse, message):
    with pytest.raises(ValueError, match=message):
        parse()


def test_the_values_the_checks_allow_still_parse():
    _, _, training_args = _bridge("--learning_rate", "1e-30", "--max_steps", "-1", "--num_train_epochs", "0.5",
                                  "--max_grad_norm", "0", "--save_steps", "0.25", "--seed", "0")()
    assert (training_args.num_train_epochs, training_args.max_grad_norm, training_args.seed) == (0.5, 0.0, 0)
    model_args, data_args, _ = _bridge("--validation_split_percentage", "0", "--early_stopping_patience", "0")()
    assert model_args.build_config(4).hidden_size == 8 and data_args.validation_split_percentage == 0
    assert _captioner("--lora_r", "0", "--noise_injection_std", "0")()[0].lora_r == 0


def test_a_user_error_ends_the_script_with_one_error_line(capsys):
    def main():
        raise ValueError("`num_blocks` must be a positive int, got 0.")

    with pytest.raises(SystemExit) as exited:
        run_script(main)
    assert exited.value.code == 2
    assert capsys.readouterr().err == "error: `num_blocks` must be a positive int, got 0.\n"


@pytest.mark.integration
@pytest.mark.parametrize("script, flags", [
    ("train_bridge.py", ["--train_file", "x", "--output_dir", "o", "--num_blocks", "0"]),
    ("train_bridge.py", ["--train_file", "missing.safetensors", "--output_dir", "o"]),
    ("train_captioner.py", ["--train_file", "x", "--output_dir", "o", "--learning_rate", "nan"]),
    ("extract_embeddings.py", ["--model_name_or_path", "m", "--output_file", "o", "--captions_file", "c",
                               "--batch_size", "-1"]),
])
def test_scripts_answer_user_errors_without_a_traceback(tmp_path, script, flags):
    proc = subprocess.run([sys.executable, f"{REPO_ROOT}/training/{script}", *flags], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: ")
