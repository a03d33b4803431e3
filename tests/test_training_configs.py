import glob
import json
import os

import pytest
import torch

from training import train_bridge, train_captioner

from .conftest import REPO_ROOT


CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "training", "configs", "*.json")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_documented_paper_configs_parse(path, tmp_path):
    values = json.loads(open(path, encoding="utf-8").read())
    if values.get("bf16") and not torch.cuda.is_available():
        values["use_cpu"] = True  # bf16 on a CPU-only machine needs this; on the GPU the config is used as is
    local = tmp_path / os.path.basename(path)
    local.write_text(json.dumps(values))
    script = train_bridge if "bridge" in os.path.basename(path) else train_captioner
    model_args, data_args, training_args = script.parse_args([str(local)])
    assert training_args.report_to in ([], ["none"], "none")
    if script is train_captioner:
        assert data_args.mode in ("zero_shot", "supervised") and training_args.bf16
        if "language_model_name_or_path" in values:
            assert model_args.language_model_name_or_path == "meta-llama/Llama-2-7b-hf"
            assert model_args.audio_tower_name_or_path == "laion/clap-htsat-unfused"
            assert (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) == (8, 32, 0.05)
