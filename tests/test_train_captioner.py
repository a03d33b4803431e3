import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoTokenizer, pipeline

from diffusion_link import DiffusionLinkForAudioCaptioning
from diffusion_link.experiments.embedding_files import save_embeddings
from diffusion_link.metrics import caption_scores
from training import train_captioner

from .conftest import CAPTIONS, REPO_ROOT, write_wav


@pytest.fixture(scope="module")
def caption_data(tiny_parts):
    """A tiny synthetic caption set: one distinct unit embedding per caption, as text and as 'audio'."""
    root = tiny_parts["root"]
    embeds = F.normalize(torch.randn(len(CAPTIONS), 24, generator=torch.Generator().manual_seed(0)), dim=-1)
    save_embeddings(root / "captions.safetensors", {"audio_embeds": embeds, "text_embeds": embeds}, {"captions": CAPTIONS})
    (root / "captions.txt").write_text("\n".join(CAPTIONS) + "\n\n")
    return {"file": str(root / "captions.safetensors"), "txt": str(root / "captions.txt"), "embeds": embeds}


def values_for(tiny_parts, caption_data, output_dir, **overrides):
    values = {
        "audio_tower_name_or_path": tiny_parts["clap"], "language_model_name_or_path": tiny_parts["llama"],
        "bridge_name_or_path": tiny_parts["bridge"], "train_file": caption_data["file"], "output_dir": str(output_dir),
        "max_steps": 150, "per_device_train_batch_size": 8, "learning_rate": 1e-2, "lora_r": 8, "lora_alpha": 16,
        "lora_target_modules": "q_proj,v_proj,lm_head", "prefix_length": 3, "prompt": "", "logging_steps": 10,
        "save_strategy": "no", "disable_tqdm": True, "seed": 3, "log_level": "warning",
    }
    values.update(overrides)
    return values


def argv_for(tiny_parts, caption_data, output_dir, **overrides):
    argv = []
    for key, value in values_for(tiny_parts, caption_data, output_dir, **overrides).items():
        argv += [f"--{key}", str(value)]
    return argv


def reproduce(model, tokenizer, embeds) -> float:
    ids = model.generate(text_embeds=embeds, max_new_tokens=12)
    predictions = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return caption_scores(predictions, [[c] for c in CAPTIONS])["token_f1"]


def test_zero_shot_training_learns_the_captions(tiny_parts, caption_data, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_parts["llama"])
    untrained = train_captioner.build_model(train_captioner.parse_args(argv_for(tiny_parts, caption_data, tmp_path))[0])
    before = reproduce(untrained.eval(), tokenizer, caption_data["embeds"])

    pipe = train_captioner.main(argv_for(tiny_parts, caption_data, tmp_path / "run"))
    after = reproduce(pipe.model, tokenizer, caption_data["embeds"])
    assert after >= 0.9 and after > before + 0.4, (before, after)
    # The saved folder is a complete pipeline folder.
    captioner = pipeline("audio-captioning", model=str(tmp_path / "run"))
    assert captioner(write_wav(tmp_path / "clip.wav"), max_new_tokens=6)["generated_text"]


def test_training_loss_falls_by_a_large_factor(tiny_parts, caption_data, tmp_path):
    train_captioner.main(argv_for(tiny_parts, caption_data, tmp_path, save_strategy="steps", save_steps=150))
    log = json.loads((tmp_path / "checkpoint-150" / "trainer_state.json").read_text())["log_history"]
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < losses[0] / 20, losses


def test_caption_file_is_embedded_with_the_towers_text_side(tiny_parts, caption_data, tmp_path):
    argv = argv_for(tiny_parts, caption_data, tmp_path, train_file=caption_data["txt"], max_steps=2,
                    text_tokenizer_name_or_path=tiny_parts["clap"])
    pipe = train_captioner.main(argv)
    assert isinstance(pipe.model, DiffusionLinkForAudioCaptioning)
    # The tokenizer the captions were embedded with is saved with the model, which finds it on load.
    assert (tmp_path / "audio_text_tokenizer" / "tokenizer.json").is_file()
    loaded = DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path)
    assert loaded.audio_text_tokenizer("a dog barks").input_ids == pipe.audio_text_tokenizer("a dog barks").input_ids
    with pytest.raises(ValueError, match="text_tokenizer_name_or_path"):
        train_captioner.main(argv_for(tiny_parts, caption_data, tmp_path / "x", train_file=caption_data["txt"], max_steps=2))


def test_supervised_mode_and_generation_metrics_at_eval(tiny_parts, caption_data, tmp_path):
    argv = argv_for(tiny_parts, caption_data, tmp_path, mode="supervised", max_steps=20, eval_strategy="steps",
                    eval_steps=10, validation_file=caption_data["file"], max_eval_generations=4)
    train_captioner.main(argv)
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert {"eval_loss", "eval_token_f1", "eval_exact_match"} <= set(results)
    assert 0.0 <= results["eval_token_f1"] <= 1.0


def test_resume_restores_the_adapter_and_matches_an_uninterrupted_run(tiny_parts, caption_data, tmp_path):
    common = dict(max_steps=12, save_strategy="steps", save_steps=6, base_weights="embedded")
    train_captioner.main(argv_for(tiny_parts, caption_data, tmp_path / "full", **common))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-6", resumed / "checkpoint-6")
    train_captioner.main(argv_for(tiny_parts, caption_data, resumed, **common))
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(resumed / "model.safetensors")
    lora = [k for k in a if "lora_" in k]
    assert lora and a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    checkpoint = load_file(resumed / "checkpoint-6" / "model.safetensors")
    assert any(not torch.equal(checkpoint[k], b[k]) for k in lora)  # the adapter trained on after the resume


def test_json_config_and_report_to_none(tiny_parts, caption_data, tmp_path):
    values = values_for(tiny_parts, caption_data, tmp_path / "run", max_steps=2)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(values))
    _, data_args, training_args = train_captioner.parse_args([str(config)])
    assert training_args.report_to in ([], ["none"], "none") and data_args.mode == "zero_shot"
    assert training_args.remove_unused_columns is True  # the script switches it off itself, for the collator
    pipe = train_captioner.main([str(config)])
    assert (tmp_path / "run" / "model.safetensors").exists() and pipe.model.config.prefix_length == 3


def test_empty_captions_are_rejected(tiny_parts, caption_data, tmp_path):
    path = tmp_path / "bad.safetensors"
    save_embeddings(path, {"audio_embeds": caption_data["embeds"][:2], "text_embeds": caption_data["embeds"][:2]},
                    {"captions": ["a dog", "  "]})
    with pytest.raises(ValueError, match="empty captions"):
        train_captioner.main(argv_for(tiny_parts, caption_data, tmp_path, train_file=str(path), max_steps=1))


def test_bad_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        train_captioner.DataArguments(train_file="x", mode="few_shot")


@pytest.mark.integration
def test_two_process_ddp_run_on_cpu(tiny_parts, caption_data, tmp_path):
    argv = argv_for(tiny_parts, caption_data, tmp_path / "ddp", max_steps=4, per_device_train_batch_size=4,
                    save_strategy="steps", save_steps=4)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
         os.path.join(REPO_ROOT, "training", "train_captioner.py"), *argv],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((tmp_path / "ddp" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # One gloo group, not two processes each training alone: every step reads 2 x 4 of the captions.
    assert state["epoch"] == pytest.approx(4 * 2 * 4 / len(CAPTIONS))
    assert (tmp_path / "ddp" / "config.json").exists()


def test_dtype_loads_the_language_model_in_bf16_and_keeps_the_trained_parts_float32(tiny_parts, caption_data, tmp_path):
    def dtypes(model):
        lm = model.language_model
        return ({p.dtype for n, p in lm.named_parameters() if "lora_" not in n},
                {p.dtype for n, p in lm.named_parameters() if "lora_" in n},
                {p.dtype for p in (*model.bridge.parameters(), *model.multi_modal_projector.parameters())})

    argv = argv_for(tiny_parts, caption_data, tmp_path, dtype="bfloat16", base_weights="embedded")
    model = train_captioner.build_model(train_captioner.parse_args(argv)[0])
    assert dtypes(model) == ({torch.bfloat16}, {torch.float32}, {torch.float32})
    model.save_pretrained(tmp_path / "saved")
    again = train_captioner.build_model(train_captioner.ModelArguments(model_name_or_path=str(tmp_path / "saved"),
                                                                        dtype="bfloat16"))
    assert dtypes(again) == ({torch.bfloat16}, {torch.float32}, {torch.float32})
    ids = again.generate(text_embeds=caption_data["embeds"][:2], max_new_tokens=3)
    assert ids.shape[0] == 2
