import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoModel

from diffusion_link import (
    DiffusionLinkBridge,
    DiffusionLinkCaptionerConfig,
    DiffusionLinkConfig,
    DiffusionLinkForAudioCaptioning,
    IdentityBridge,
    MeanShiftBridge,
)

from .conftest import run_python


D = 24  # the tiny CLAP's projection size


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture
def model(tiny_parts):
    torch.manual_seed(0)
    bridge = DiffusionLinkBridge.from_pretrained(tiny_parts["bridge"])
    model = DiffusionLinkForAudioCaptioning.from_pretrained_parts(
        tiny_parts["clap"], tiny_parts["llama"], bridge, prefix_length=3, lora_r=4, lora_alpha=8,
        base_weights="embedded",
    )
    with torch.no_grad():  # LoRA B starts at zero; give the adapters a visible effect
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model.eval()


def prompt_ids(n=1):
    return torch.tensor([[5, 6, 7]]).expand(n, -1)


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bridge_type": "unet"}, "bridge_type"),
        ({"prefix_length": 0}, "prefix_length"),
        ({"lora_r": -1}, "lora_r"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"lora_target_modules": []}, "lora_target_modules"),
        ({"noise_injection_std": -0.1}, "noise_injection_std"),
        ({"base_weights": "remote"}, "base_weights"),
        ({"base_weights": "referenced"}, "audio_tower_name_or_path"),
        ({"bridge_config": {"embedding_dim": 7}}, "embedding_dim"),
        ({"audio_config": {"model_type": "no-such-model"}}, "model_type"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusionLinkCaptionerConfig(**kwargs)


def test_config_defaults_follow_the_paper_recipe():
    config = DiffusionLinkCaptionerConfig()
    assert config.audio_config.model_type == "clap" and config.text_config.model_type == "llama"
    assert config.embedding_dim == config.audio_config.projection_dim == config.bridge_config.embedding_dim
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.05)
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    assert config.prompt == "Describe the audio you hear."


# ---------------------------------------------------------------------------------------------------- structure
def test_parts_and_what_trains(model):
    assert {"audio_tower", "bridge", "multi_modal_projector", "language_model"} <= {n for n, _ in model.named_children()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("multi_modal_projector.") or "lora_" in n for n in trainable)
    assert any("lora_A" in n for n in trainable) and any(n.startswith("multi_modal_projector.") for n in trainable)
    model.train()
    assert model.training and not model.audio_tower.training and not model.bridge.training


@pytest.mark.parametrize("bridge_type, cls", [("identity", IdentityBridge), ("mean_shift", MeanShiftBridge),
                                              ("diffusion_link", DiffusionLinkBridge)])
def test_bridge_type_builds_the_peer(bridge_type, cls, tiny_parts):
    from transformers import AutoConfig

    config = DiffusionLinkCaptionerConfig(
        audio_config=AutoConfig.from_pretrained(tiny_parts["clap"]), text_config=AutoConfig.from_pretrained(tiny_parts["llama"]),
        bridge_type=bridge_type, bridge_config=DiffusionLinkConfig(embedding_dim=D, hidden_size=8), lora_r=0,
    )
    assert isinstance(DiffusionLinkForAudioCaptioning(config).bridge, cls)


# ---------------------------------------------------------------------------------------------------- forward
def test_loss_covers_only_the_caption_tokens(model):
    ids = torch.tensor([[5, 6, 7, 20, 21, 2], [5, 6, 7, 30, 2, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    labels = torch.tensor([[-100, -100, -100, 20, 21, 2], [-100, -100, -100, 30, 2, -100]])
    out = model(text_embeds=unit(2, D), input_ids=ids, attention_mask=mask, labels=labels)
    head = 1 + 3  # BOS + prefix
    assert out.logits.shape[:2] == (2, head + 6) and out.prefix_embeds.shape == (2, 3, 32)
    full_labels = torch.cat([torch.full((2, head), -100), labels], dim=1)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), full_labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert out.loss.requires_grad


def test_each_embedding_source_reaches_the_prefix(model):
    ids = torch.tensor([[5, 6, 7, 20]])
    text = model(text_embeds=unit(1, D, seed=1), input_ids=ids)
    audio = model(audio_embeds=unit(1, D, seed=1), input_ids=ids)
    # Audio goes through the bridge; text does not.
    torch.testing.assert_close(text.embeds, unit(1, D, seed=1))
    torch.testing.assert_close(audio.embeds, model.bridge.link(unit(1, D, seed=1)))
    features = torch.randn(1, 1, 1001, 64)
    via_tower = model(input_features=features, input_ids=ids)
    torch.testing.assert_close(via_tower.embeds, model.link(model.embed_audio(features)))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, "exactly one"),
        ({"text_embeds": unit(1, D), "audio_embeds": unit(1, D)}, ValueError, "exactly one"),
        ({"text_embeds": unit(1, D + 1)}, ValueError, r"\(batch, 24\)"),
        ({"audio_embeds": torch.full((1, D), float("nan"))}, ValueError, "NaN"),
        ({"text_embeds": unit(2, D), "input_ids": torch.ones(3, 2, dtype=torch.long)}, ValueError, "3 rows"),
    ],
)
def test_forward_rejects_bad_input(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        model(**kwargs)


def test_noise_injection_only_in_training_and_only_on_text(model):
    model.config.noise_injection_std = 0.1
    ids = torch.tensor([[5, 6]])
    model.train()
    a, b = model(text_embeds=unit(1, D), input_ids=ids).embeds, model(text_embeds=unit(1, D), input_ids=ids).embeds
    assert not torch.allclose(a, b) and 0.3 < (a - unit(1, D)).norm() < 0.7  # std 0.1 per coordinate, D=24
    torch.testing.assert_close(model(audio_embeds=unit(1, D), input_ids=ids).embeds, model.link(unit(1, D)))
    model.eval()
    torch.testing.assert_close(model(text_embeds=unit(1, D), input_ids=ids).embeds, unit(1, D))


# ---------------------------------------------------------------------------------------------------- generation
def test_greedy_and_beam_generation(model):
    greedy = model.generate(audio_embeds=unit(2, D), input_ids=prompt_ids(), max_new_tokens=6)
    beams = model.generate(audio_embeds=unit(2, D), input_ids=prompt_ids(), max_new_tokens=6, num_beams=3)
    assert greedy.shape[0] == 2 and greedy.shape[1] <= 6 and beams.shape[0] == 2
    torch.testing.assert_close(model.generate(audio_embeds=unit(2, D), input_ids=prompt_ids(), max_new_tokens=6), greedy)
    # Beam search explores more; its best sequence scores at least as well as the greedy one.
    assert torch.is_tensor(beams) and beams.dtype == torch.long


# ---------------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_keeps_lora_and_generations(model, tmp_path):
    expected = model.generate(audio_embeds=unit(3, D), input_ids=prompt_ids(), max_new_tokens=8)
    trainable = model.num_trainable_parameters()
    model.save_pretrained(tmp_path)
    loaded = DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path).eval()
    assert loaded.num_trainable_parameters() == trainable
    torch.testing.assert_close(loaded.generate(audio_embeds=unit(3, D), input_ids=prompt_ids(), max_new_tokens=8), expected)
    lora = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora and all(torch.equal(loaded.state_dict()[k], v) for k, v in lora.items())
    auto = AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto, DiffusionLinkForAudioCaptioning)


@pytest.mark.integration  # a fresh Python process
def test_merged_export_needs_no_peft(model, tmp_path):
    expected = model.generate(audio_embeds=unit(3, D), input_ids=prompt_ids(), max_new_tokens=8)
    model.merge_and_unload()
    assert model.config.lora_r == 0 and not any("lora_" in k for k in model.state_dict())
    torch.testing.assert_close(model.generate(audio_embeds=unit(3, D), input_ids=prompt_ids(), max_new_tokens=8), expected)
    model.save_pretrained(tmp_path / "merged")
    torch.save({"x": unit(3, D), "expected": expected}, tmp_path / "io.pt")
    out = run_python(
        "import sys; sys.modules['peft'] = None; sys.modules['diffusion_link'] = None\n"
        "import torch\nfrom transformers import AutoModel\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
        f"m = AutoModel.from_pretrained({str(tmp_path / 'merged')!r}, trust_remote_code=True).eval()\n"
        "ids = m.generate(audio_embeds=io['x'], input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=8)\n"
        "print(torch.equal(ids, io['expected']))\n"
    )
    assert out.split()[-1] == "True", out


def test_referenced_bases_are_not_copied(tiny_parts, tmp_path):
    torch.manual_seed(0)
    model = DiffusionLinkForAudioCaptioning.from_pretrained_parts(
        tiny_parts["clap"], tiny_parts["llama"], tiny_parts["bridge"], prefix_length=3, lora_r=4, lora_alpha=8,
    ).eval()
    assert model.config.base_weights == "referenced"
    expected = model.generate(audio_embeds=unit(2, D), input_ids=prompt_ids(), max_new_tokens=8)
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("audio_tower.") for k in keys)
    assert all("lora_" in k for k in keys if k.startswith("language_model."))
    assert any(k.startswith("multi_modal_projector.") for k in keys) and any(k.startswith("bridge.") for k in keys)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["audio_tower_name_or_path"] == tiny_parts["clap"]
    loaded = DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.generate(audio_embeds=unit(2, D), input_ids=prompt_ids(), max_new_tokens=8), expected)
    assert loaded.num_trainable_parameters() == model.num_trainable_parameters()


def test_referenced_checkpoint_with_wrong_weights_is_refused(tiny_parts, tmp_path):
    model = DiffusionLinkForAudioCaptioning.from_pretrained_parts(tiny_parts["clap"], tiny_parts["llama"], bridge_type="identity", lora_r=0)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["lora_r"] = 4  # now the file lacks the adapters this config promises
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing"):
        DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path)


def test_bf16_model_generates(model):
    # The paper-scale path runs the LM in bf16; the bridge and projector follow the model's dtype.
    model = model.to(torch.bfloat16)
    ids = model.generate(audio_embeds=unit(2, D), input_ids=prompt_ids(), max_new_tokens=4)
    assert ids.shape[0] == 2
    out = model(text_embeds=unit(2, D), input_ids=torch.tensor([[5, 6], [7, 8]]), labels=torch.tensor([[5, 6], [7, 8]]))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def test_from_pretrained_parts_never_guesses_the_bridge_or_the_base_weights(tiny_parts):
    from diffusion_link import CaptionMemoryBridge, IdentityBridge, LinearMapBridge, MeanShiftBridge

    clap, llama = tiny_parts["clap"], tiny_parts["llama"]
    with pytest.raises(ValueError, match="bridge_type='identity'"):
        DiffusionLinkForAudioCaptioning.from_pretrained_parts(clap, llama, lora_r=0)
    model = DiffusionLinkForAudioCaptioning.from_pretrained_parts(clap, llama, bridge_type="identity", lora_r=0)
    assert model.config.bridge_type == "identity" and isinstance(model.bridge, IdentityBridge)
    for bridge in (LinearMapBridge(D), CaptionMemoryBridge(D)):
        with pytest.raises(TypeError, match=type(bridge).__name__):
            DiffusionLinkForAudioCaptioning.from_pretrained_parts(clap, llama, bridge, lora_r=0)
    with pytest.raises(ValueError, match="contradicts"):
        DiffusionLinkForAudioCaptioning.from_pretrained_parts(clap, llama, MeanShiftBridge(D), bridge_type="identity")
    with pytest.raises(ValueError, match="contradicts"):
        DiffusionLinkForAudioCaptioning.from_pretrained_parts(clap, llama, tiny_parts["bridge"], bridge_type="identity")
    tower = model.audio_tower
    with pytest.raises(ValueError, match=r"\['audio_tower'\].*embedded"):
        DiffusionLinkForAudioCaptioning.from_pretrained_parts(tower, llama, bridge_type="identity")
    embedded = DiffusionLinkForAudioCaptioning.from_pretrained_parts(
        tower, llama, MeanShiftBridge(D), base_weights="embedded", lora_r=0)
    assert embedded.config.base_weights == "embedded" and embedded.config.bridge_type == "mean_shift"
