"""The multi-GPU accelerate configs in `training/configs/`.

    accelerate launch --config_file training/configs/accelerate_ddp.yaml training/train_captioner.py CONFIG.json
    accelerate launch --config_file training/configs/accelerate_fsdp.yaml training/train_captioner.py CONFIG.json

DDP runs for real here as 2 CPU processes (gloo) with tiny models. The config file is used as written, plus
`--mixed_precision no` (fp32 on the CPU), a free `--main_process_port`, and `"use_cpu": true` in the training
config. Two traps of accelerate 1.15 on a GPU-less machine:
- `accelerate launch --cpu` (or `use_cpu: true` in the YAML) picks the single-process launcher, which needs mpirun
  for more than one CPU process. So the YAML keeps `use_cpu: false`, and torch.distributed.run starts the 2
  processes.
- The processes form a MULTI_CPU (gloo) group only when the Trainer is asked for the CPU (`use_cpu=True`).
  Without it, `PartialState` reports `DistributedType.NO`, and each process trains alone on all the data.
  transformers then warns "process group is initialized, but parallel_mode != DISTRIBUTED". A plain
  `torchrun --nproc_per_node=2` on CPU has the same trap.

FSDP cannot run on CPUs with this accelerate. `AcceleratorState` switches to `DistributedType.FSDP` only inside
its multi-accelerator branch (MULTI_GPU/NPU/XPU/...), never for MULTI_CPU: the FSDP file launched on CPU processes
silently trains with plain DDP. What a CPU can check is the wiring. The environment that `accelerate launch` makes
from the file gives an FSDP2 plugin whose wrap policy finds the 32 LlamaDecoderLayers of the paper captioner (built
on `meta`), and each unit's trainable parameters share one dtype, as FSDP2 requires. A real FSDP run needs GPUs
(2 or more to shard; `--num_processes 1` on one GPU runs the same code path unsharded).
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from .conftest import CAPTIONS, CLAP_CONFIG, LLAMA_CONFIG, REPO_ROOT, paper_captioner_config


CONFIGS = os.path.join(REPO_ROOT, "training", "configs")
SCRIPT = os.path.join(REPO_ROOT, "training", "train_captioner.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config_file: str, tiny_parts, output_dir, num_processes: int = 2, gpu: bool = False,
           **overrides) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file CONFIG train_captioner.py run.json` on tiny parts, zero-shot on a caption file
    (embedded once at start with the tiny CLAP's text side): on CPU processes, or with `gpu` on the GPUs in bf16."""
    captions = tiny_parts["root"] / "accelerate_captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n")
    values = {
        "audio_tower_name_or_path": tiny_parts["clap"], "language_model_name_or_path": tiny_parts["llama"],
        "bridge_name_or_path": tiny_parts["bridge"], "text_tokenizer_name_or_path": tiny_parts["clap"],
        "train_file": str(captions), "output_dir": str(output_dir), "max_steps": 4, "per_device_train_batch_size": 4,
        "learning_rate": 1e-2, "lora_r": 4, "lora_alpha": 8, "prefix_length": 3, "prompt": "",
        "save_strategy": "steps", "save_steps": 4, "logging_steps": 1, "disable_tqdm": True, "seed": 3,
        "log_level": "warning",
        # Without it the Trainer runs NOT distributed on a GPU-less machine: accelerate only makes CPU processes a
        # MULTI_CPU (gloo) group when asked for the CPU, so each process would train alone on all the data.
        "use_cpu": not gpu,
    }
    values.update(overrides)
    run_config = output_dir.parent / f"{output_dir.name}.json"
    run_config.write_text(json.dumps(values))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(CONFIGS, config_file),
        "--num_processes", str(num_processes), "--mixed_precision", "bf16" if gpu else "no",
        "--main_process_port", str(free_port()), SCRIPT, str(run_config),
    ]
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def check_run(proc: subprocess.CompletedProcess, output_dir) -> dict:
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # The final folder is the light pipeline folder of a referenced-bases captioner.
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "diffusion_link_captioner" and config["base_weights"] == "referenced"
    assert (output_dir / "model.safetensors").exists()
    return state


@pytest.mark.parametrize("config_file", ["accelerate_ddp.yaml", "accelerate_fsdp.yaml"])
def test_config_files_are_accepted_by_accelerate(config_file):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(os.path.join(CONFIGS, config_file))  # raises on keys this accelerate rejects
    assert config.num_processes == 2 and config.mixed_precision == "bf16" and not config.use_cpu
    expected = "FSDP" if config_file == "accelerate_fsdp.yaml" else "MULTI_GPU"
    assert config.distributed_type.value == expected


@pytest.mark.integration
def test_ddp_config_two_process_cpu_run(tiny_parts, tmp_path):
    output_dir = tmp_path / "ddp"
    proc = launch("accelerate_ddp.yaml", tiny_parts, output_dir)
    state = check_run(proc, output_dir)
    # Really data-parallel: 8 captions at 4 per process x 2 processes is one epoch per optimizer step.
    assert [e["epoch"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]


def test_fsdp_config_wraps_the_captioners_decoder_layers(monkeypatch):
    """What `accelerate launch` hands the Trainer from the FSDP file (its FSDP_* environment), resolved on the paper
    captioner built on `meta`: every LlamaDecoderLayer is an FSDP unit, and each unit's trainable parameters share one
    dtype (FSDP2 refuses mixed ones): LoRA fp32 in the layers, the projector fp32 in the root unit."""
    import torch
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import AutoModelForCausalLM, ClapConfig, ClapModel, LlamaConfig

    from diffusion_link import DiffusionLinkForAudioCaptioning

    args = launch_command_parser().parse_args(
        ["--config_file", os.path.join(CONFIGS, "accelerate_fsdp.yaml"), SCRIPT, "run.json"])
    args, _, _ = _validate_launch_command(args)
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    assert os.environ["ACCELERATE_USE_FSDP"] == "true" and os.environ["FSDP_VERSION"] == "2"
    plugin = FullyShardedDataParallelPlugin()

    clap, llama = ClapConfig.from_json_file(CLAP_CONFIG), LlamaConfig.from_json_file(LLAMA_CONFIG)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(llama, dtype=torch.bfloat16)
        model = DiffusionLinkForAudioCaptioning(paper_captioner_config(clap, llama), audio_tower=ClapModel(clap),
                                                language_model=lm)
    plugin.set_auto_wrap_policy(model)
    units = [m for m in model.modules() if plugin.auto_wrap_policy(m, recurse=False, nonwrapped_numel=0)]
    assert len(units) == llama.num_hidden_layers
    assert {type(m).__name__ for m in units} == {"LlamaDecoderLayer"}
    for unit in units:
        assert {p.dtype for p in unit.parameters() if p.requires_grad} == {torch.float32}
    in_units = {id(p) for unit in units for p in unit.parameters()}
    root_trainable = {p.dtype for p in model.parameters() if p.requires_grad and id(p) not in in_units}
    assert root_trainable == {torch.float32}


@pytest.mark.integration
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="FSDP runs only on GPUs with this accelerate")
def test_fsdp_config_gpu_run_saves_a_captioner_that_loads(tiny_parts, tmp_path):
    """The FSDP file on the GPUs there are (one is enough: the same FSDP2 code path, unsharded): training runs and the
    folder `train_captioner.py` saves at the end holds whole tensors that load and caption. Run on a GPU machine with
    `pytest tests/test_accelerate_configs.py -k gpu_run`; CI has no GPU and skips it."""
    import torch

    from diffusion_link import DiffusionLinkForAudioCaptioning

    output_dir = tmp_path / "fsdp"
    proc = launch("accelerate_fsdp.yaml", tiny_parts, output_dir, num_processes=torch.cuda.device_count(), gpu=True)
    check_run(proc, output_dir)
    model = DiffusionLinkForAudioCaptioning.from_pretrained(output_dir).eval()
    lora_b = [p for n, p in model.language_model.named_parameters() if "lora_B" in n]
    assert lora_b and any(bool(p.abs().sum() > 0) for p in lora_b)  # trained (LoRA B starts at zero)
    ids = model.generate(text_embeds=torch.nn.functional.normalize(torch.randn(2, model.config.embedding_dim), dim=-1),
                         max_new_tokens=3)
    assert ids.shape[0] == 2

