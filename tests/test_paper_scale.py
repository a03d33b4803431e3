"""The paper's captioner at its real size, checked without weights or downloads.

The architectures of laion/clap-htsat-unfused and meta-llama/Llama-2-7b-hf are committed as plain config files in
`training/configs/architectures/` (the Hub is not reachable here). Each loads with
`ClapConfig.from_json_file(path)` / `LlamaConfig.from_json_file(path)` (or `from_dict(json.load(...))`).

The captioner is built from them on the `meta` device: every parameter has its real shape and dtype but no storage,
so a 7B model builds in about a second. On it we check the trainable parameter count, what is frozen, the dtype
plan, and the light (`base_weights="referenced"`) checkpoint that `save_pretrained` would write.
"""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from transformers import AutoModelForCausalLM, ClapConfig, ClapModel, LlamaConfig

from diffusion_link import (
    DiffusionLinkCaptionerConfig,
    DiffusionLinkConfig,
    DiffusionLinkForAudioCaptioning,
)

from .conftest import CLAP_CONFIG, LLAMA_CONFIG, REPO_ROOT, paper_captioner_config


CAPTIONER_RECIPE = os.path.join(REPO_ROOT, "training", "configs", "paper_captioner_llama2_zero_shot.json")
BRIDGE_RECIPE = os.path.join(REPO_ROOT, "training", "configs", "paper_bridge_clap.json")

NUM_LAYERS, HIDDEN, D, PREFIX = 32, 4096, 512, 10
# LoRA r=8 on q_proj and v_proj (both 4096 -> 4096) of the 32 decoder layers:
#   per module lora_A (8 x 4096) + lora_B (4096 x 8) = 8 * (4096 + 4096) = 65,536
#   x 2 modules x 32 layers                                               = 4,194,304
LORA_PARAMETERS = 8 * (HIDDEN + HIDDEN) * 2 * NUM_LAYERS
# Projector D=512 -> projector_hidden_size (default 3 * D = 1536) -> tanh -> prefix_length x H = 10 * 4096 = 40,960:
#   linear_1: 512 * 1536 + 1536          =    787,968
#   linear_2: 1536 * 40960 + 40960       = 62,955,520
#                                        = 63,743,488
PROJECTOR_PARAMETERS = 512 * 1536 + 1536 + 1536 * (10 * 4096) + 10 * 4096
# = 67,937,792 trainable parameters; the projector is 94% of them.
TRAINABLE_PARAMETERS = 67_937_792
# Frozen bases: Llama-2-7b = 6,738,415,616 (its published size); the whole ClapModel (RoBERTa text side included,
# since the tower also embeds captions for zero-shot training) = 153,492,890.
LLAMA_2_7B_PARAMETERS = 6_738_415_616
CLAP_HTSAT_UNFUSED_PARAMETERS = 153_492_890
# Bridge (D=512, hidden 1024, 3 blocks, timestep embedding 128), one denoiser:
#   time MLP 128*1024+1024 + 1024*1024+1024 = 1,181,696; in_proj 512*1024+1024 = 525,312;
#   3 blocks x (LayerNorm 2*1024 + fc1, time_proj, fc2 3*(1024*1024+1024)) = 9,452,544;
#   out LayerNorm 2048 + out_proj 1024*512+512 = 526,848               -> 11,686,400
#   x 2 (raw + EMA denoiser)                                             = 23,372,800
BRIDGE_PARAMETERS = 2 * (128 * 1024 + 1024 + 1024 * 1024 + 1024 + 512 * 1024 + 1024
                         + 3 * (2 * 1024 + 3 * (1024 * 1024 + 1024)) + 2 * 1024 + 1024 * 512 + 512)
# Light checkpoint tensors, all float32 except the int64 EMA step counter:
#   LoRA 4,194,304 * 4 = 16,777,216; projector 63,743,488 * 4 = 254,973,952;
#   bridge 23,372,800 * 4 + embed_mean/embed_std 2 * 512 * 4 + ema_num_updates 8 = 93,495,304
LIGHT_CHECKPOINT_TENSOR_BYTES = 365_246_472
# model.safetensors = 8-byte header length + JSON header (203 entries, padded to 8 bytes) + the tensors above.
LIGHT_CHECKPOINT_FILE_BYTES = 365_272_592


@pytest.fixture(scope="module")
def paper_model():
    """The paper's captioner on `meta`, LM in bf16: what `from_pretrained_parts(..., dtype=torch.bfloat16)` builds
    (the LM loaded with `dtype=bf16`, the tower with its own float32, bridge and projector in the default float32)."""
    clap, llama = ClapConfig.from_json_file(CLAP_CONFIG), LlamaConfig.from_json_file(LLAMA_CONFIG)
    with torch.device("meta"):
        tower = ClapModel(clap)
        lm = AutoModelForCausalLM.from_config(llama, dtype=torch.bfloat16)
        config = paper_captioner_config(clap, llama)
        model = DiffusionLinkForAudioCaptioning(config, audio_tower=tower, language_model=lm)
    return model


def light_checkpoint_bytes(state_dict: dict[str, torch.Tensor]) -> int:
    """Size of the `model.safetensors` that `save_pretrained` writes for `state_dict`, from shapes and dtypes alone:
    the same tensors, uninitialised on the CPU, serialised in memory with the metadata transformers adds."""
    stand_ins = {k: torch.empty(v.shape, dtype=v.dtype, device="cpu") for k, v in state_dict.items()}
    return len(safetensors_bytes(stand_ins, metadata={"format": "pt"}))


def test_architecture_configs_are_the_hub_models():
    clap, llama = ClapConfig.from_json_file(CLAP_CONFIG), LlamaConfig.from_json_file(LLAMA_CONFIG)
    audio = clap.audio_config
    assert (audio.spec_size, audio.num_mel_bins, audio.patch_embeds_hidden_size, audio.window_size) == (256, 64, 96, 8)
    assert (audio.depths, audio.num_attention_heads, audio.enable_fusion) == ([2, 2, 6, 2], [4, 8, 16, 32], False)
    assert (clap.projection_dim, clap.text_config.num_hidden_layers, clap.text_config.hidden_size) == (512, 12, 768)
    # transformers' ClapConfig defaults are laion/clap-htsat-unfused; the file states them explicitly.
    ours, defaults = clap.to_dict(), ClapConfig().to_dict()
    for key in ("architectures", "dtype", "transformers_version"):
        ours.pop(key), defaults.pop(key)
    assert ours == defaults
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads, llama.num_key_value_heads) == (
        4096, 32, 32, 32)
    assert (llama.intermediate_size, llama.vocab_size, llama.max_position_embeddings) == (11008, 32000, 4096)
    assert (llama.rms_norm_eps, llama.bos_token_id, llama.eos_token_id, llama.tie_word_embeddings) == (
        1e-5, 1, 2, False)
    assert llama.dtype == torch.float16  # the checkpoint's own `torch_dtype`


def test_trainable_parameters_at_paper_scale(paper_model):
    assert LORA_PARAMETERS == 4_194_304 and PROJECTOR_PARAMETERS == 63_743_488
    assert LORA_PARAMETERS + PROJECTOR_PARAMETERS == TRAINABLE_PARAMETERS
    assert paper_model.num_trainable_parameters() == TRAINABLE_PARAMETERS
    trainable = {n: p for n, p in paper_model.named_parameters() if p.requires_grad}
    lora = {n: p for n, p in trainable.items() if "lora_" in n}
    assert sum(p.numel() for p in lora.values()) == LORA_PARAMETERS
    assert len(lora) == 2 * 2 * NUM_LAYERS  # lora_A and lora_B, on q_proj and v_proj, in every layer
    assert {n.split(".")[-4] for n in lora} == {"q_proj", "v_proj"}
    assert {int(n.split(".layers.")[1].split(".")[0]) for n in lora} == set(range(NUM_LAYERS))
    projector = paper_model.multi_modal_projector
    assert set(trainable) - set(lora) == {f"multi_modal_projector.{n}" for n, _ in projector.named_parameters()}
    assert tuple(projector.linear_1.weight.shape) == (3 * D, D)
    assert tuple(projector.linear_2.weight.shape) == (PREFIX * HIDDEN, 3 * D)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(paper_model.language_model) - LORA_PARAMETERS == LLAMA_2_7B_PARAMETERS
    assert count(paper_model.audio_tower) == CLAP_HTSAT_UNFUSED_PARAMETERS
    assert count(paper_model.bridge) == BRIDGE_PARAMETERS == 23_372_800


def test_every_base_weight_is_frozen(paper_model):
    for name, param in paper_model.named_parameters():
        lm_base = name.startswith("language_model.") and "lora_" not in name
        base = name.startswith(("audio_tower.", "bridge.")) or lm_base
        assert param.requires_grad is not base, name
    # Frozen parts stay in eval mode (no dropout) while the captioner trains.
    paper_model.train()
    assert not paper_model.audio_tower.training and not paper_model.bridge.training
    assert paper_model.language_model.training and paper_model.multi_modal_projector.training
    paper_model.eval()


def test_dtype_plan_bf16_language_model_fp32_bridge(paper_model):
    def dtypes(tensors):
        return {t.dtype for t in tensors}

    lm = paper_model.language_model
    assert dtypes(p for n, p in lm.named_parameters() if "lora_" not in n) == {torch.bfloat16}
    # peft keeps the adapters in float32 over a bf16 base (autocast_adapter_dtype): they are trained in fp32.
    assert dtypes(p for n, p in lm.named_parameters() if "lora_" in n) == {torch.float32}
    assert dtypes(paper_model.multi_modal_projector.parameters()) == {torch.float32}
    assert dtypes(paper_model.bridge.parameters()) == {torch.float32}
    assert dtypes(b for b in paper_model.bridge.buffers() if b.is_floating_point()) == {torch.float32}
    assert dtypes(paper_model.audio_tower.parameters()) == {torch.float32}
    assert torch.get_default_dtype() == torch.float32  # building a bf16 LM left the global default alone


def test_without_a_dtype_the_language_model_follows_the_checkpoint_float16():
    """What a build that passes no dtype gets: transformers 5 loads with `dtype="auto"`, so Llama-2-7b-hf (whose
    config says `torch_dtype: float16`) comes up in float16, not bf16 -- TrainingArguments' `bf16=True` only adds
    autocast. Hence the paper recipes' `"dtype": "bfloat16"` (next test)."""
    clap, llama = ClapConfig.from_json_file(CLAP_CONFIG), LlamaConfig.from_json_file(LLAMA_CONFIG)
    with torch.device("meta"):
        model = DiffusionLinkForAudioCaptioning(paper_captioner_config(clap, llama))
    lm = model.language_model
    assert {p.dtype for n, p in lm.named_parameters() if "lora_" not in n} == {torch.float16}
    assert {p.dtype for p in model.bridge.parameters()} == {torch.float32}


@pytest.mark.parametrize("recipe", ["paper_captioner_llama2_zero_shot.json", "paper_captioner_llama2_supervised.json"])
def test_the_paper_recipes_load_the_language_model_in_bf16(recipe):
    from training import train_captioner

    values = json.loads(open(os.path.join(REPO_ROOT, "training", "configs", recipe), encoding="utf-8").read())
    assert values["dtype"] == "bfloat16" and values["bf16"] is True
    assert train_captioner.LM_DTYPES[values["dtype"]] is torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        train_captioner.ModelArguments(dtype="bf16")


def test_light_checkpoint_keys_and_size_at_paper_scale(paper_model):
    state = paper_model.trained_state_dict()
    groups = {}
    for key, tensor in state.items():
        group = "lora" if "lora_" in key else key.split(".")[0]
        groups.setdefault(group, []).append(tensor)
    assert sorted(groups) == ["bridge", "lora", "multi_modal_projector"]
    assert {g: len(t) for g, t in groups.items()} == {"lora": 128, "multi_modal_projector": 4, "bridge": 71}
    assert sorted(k for k in state if k.startswith("bridge.") and "denoiser." not in k) == [
        "bridge.ema_num_updates", "bridge.embed_mean", "bridge.embed_std"]
    assert not any(k.startswith("audio_tower.") for k in state)
    assert all("lora_" in k for k in state if k.startswith("language_model."))
    assert sum(t.numel() for t in groups["lora"]) == LORA_PARAMETERS
    assert sum(t.numel() for t in groups["multi_modal_projector"]) == PROJECTOR_PARAMETERS

    tensor_bytes = sum(t.numel() * t.element_size() for t in state.values())
    assert tensor_bytes == LIGHT_CHECKPOINT_TENSOR_BYTES  # 348.3 MiB
    assert light_checkpoint_bytes(state) == LIGHT_CHECKPOINT_FILE_BYTES
    # Against the embedded checkpoint of the same model (LM bf16, the rest fp32): about 2.5% of it.
    full_bytes = sum(t.numel() * t.element_size() for t in paper_model.state_dict().values())
    assert full_bytes > 13.9e9 and tensor_bytes / full_bytes < 0.03


def test_light_checkpoint_file_list_matches_a_real_save(tmp_path):
    """`save_pretrained` of a tiny captioner with the same structure (referenced bases, LoRA on q,v, a diffusion
    bridge): its files, and the size `light_checkpoint_bytes` predicts for its weights, byte for byte."""
    from benchmarks.bench_paper_scale import architectures

    clap, llama = architectures(tiny=True)  # the benchmark's tiny stand-ins of the same classes
    config = DiffusionLinkCaptionerConfig(
        audio_config=clap, text_config=llama, bridge_config=DiffusionLinkConfig(embedding_dim=24, hidden_size=48),
        prefix_length=10, lora_r=8, lora_alpha=32, lora_target_modules=["q_proj", "v_proj"],
        base_weights="referenced", audio_tower_name_or_path="laion/clap-htsat-unfused",
        language_model_name_or_path="meta-llama/Llama-2-7b-hf",
    )
    model = DiffusionLinkForAudioCaptioning(config)
    model.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    # The weights are one file; the rest is the config, the model card and the code copied for trust_remote_code.
    assert [f for f in files if not f.endswith(".py")] == ["README.md", "config.json", "model.safetensors"]
    assert any(f.startswith("modeling_") for f in files) and any(f.startswith("configuration_") for f in files)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["base_weights"], saved["language_model_name_or_path"]) == ("referenced", "meta-llama/Llama-2-7b-hf")

    state = model.trained_state_dict()
    assert os.path.getsize(tmp_path / "model.safetensors") == light_checkpoint_bytes(state)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert set(f.keys()) == set(state)


def test_bench_paper_scale_plan_and_tiny_run_on_cpu(tmp_path):
    """`benchmarks/bench_paper_scale.py`: the full-size plan (on `meta`), and its run path end to end on tiny
    configs on the CPU (Trainer steps with and without gradient checkpointing, bare-LM baseline, generation)."""
    from benchmarks import bench_paper_scale

    out = tmp_path / "bench.json"
    result = bench_paper_scale.main([
        "--device", "cpu", "--tiny", "--inputs", "audio_embeds", "--batch_size", "4", "--warmup_steps", "1",
        "--steps", "1", "--generate_batch", "2", "--new_tokens", "3", "--generate_repeats", "1",
        "--output_json", str(out),
    ])
    assert json.loads(out.read_text())["run"]["generate"]["new_tokens"] == 3
    assert set(result["run"]["train"]) == {"off", "on"}
    assert all(r["steps_per_s"] > 0 and r["steps_per_s_over_bare_lm"] > 0 for r in result["run"]["train"].values())

    plan = bench_paper_scale.memory_plan(
        bench_paper_scale.captioner_config(*bench_paper_scale.architectures(tiny=False), tiny=False),
        torch.bfloat16, batch=16, prompt_tokens=7, caption_tokens=30)
    assert plan["trainable_parameters"] == TRAINABLE_PARAMETERS and plan["sequence_length"] == 49
    off, on = plan["settings"]["off"], plan["settings"]["on"]
    assert off["gradients"] == 4 * TRAINABLE_PARAMETERS and off["optimizer"] == 8 * TRAINABLE_PARAMETERS
    assert plan["parameter_bytes_by_part"]["language_model"] == 2 * LLAMA_2_7B_PARAMETERS
    assert on["activations"] < off["activations"] / 5 and on["total"] < off["total"]
