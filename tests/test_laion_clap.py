"""Tests of `diffusion_link.hub.convert_laion_clap`.

No real LAION-CLAP `.pt` can be downloaded offline, so a checkpoint in the LAION layout is built here from a tiny
random `ClapModel` with the inverse of the reference conversion script's mapping (fusing query/key/value back into
`qkv`, and adding the LAION-only tensors the conversion drops), and the round trip must give back the same model.
"""

from __future__ import annotations

import re

import pytest
import torch

from diffusion_link.hub.convert_laion_clap import (
    clap_from_laion_checkpoint,
    convert_laion_clap_state_dict,
    load_laion_clap_state_dict,
)
from diffusion_link.testing import tiny_clap


# HF name fragment -> LAION name fragment, applied in order to audio-encoder keys (attention.output before output).
_AUDIO_INVERSE = [
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("attention.self.", "attn."),
    ("attention.output.dense", "attn.proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("batch_norm", "bn0"),
]


def to_laion_layout(hf_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of the reference mapping: `ClapModel` keys -> an original LAION-CLAP state dict."""
    laion: dict[str, torch.Tensor] = {}
    for key, value in hf_state_dict.items():
        value = value.clone()
        if key.startswith("text_model."):
            laion["text_branch." + key[len("text_model."):]] = value
        elif re.match(r"(text|audio)_projection\.linear[12]\.", key):
            laion[re.sub(r"linear([12])", lambda m: "0" if m.group(1) == "1" else "2", key, count=1)] = value
        elif key.startswith("audio_model.audio_encoder."):
            key = "audio_branch." + key[len("audio_model.audio_encoder."):]
            if re.search(r"\.attention\.self\.(key|value)\.", key):
                continue  # fused with the query below
            if re.search(r"\.attention\.self\.query\.", key):
                parts = [hf_state_dict[key.replace("audio_branch.", "audio_model.audio_encoder.", 1)
                                       .replace(".query.", f".{name}.")] for name in ("query", "key", "value")]
                value = torch.cat(parts, dim=0)
                key = key.replace(".query.", ".qkv.")
            for hf, original in _AUDIO_INVERSE:
                key = key.replace(hf, original)
            laion[key] = value
        else:
            laion[key] = value  # logit_scale_a, logit_scale_t
    # Tensors a LAION checkpoint carries that ClapModel has no place for.
    for block in sorted({k.rsplit(".attn.", 1)[0] for k in laion if ".attn.qkv." in k}):
        laion[f"{block}.attn_mask"] = torch.zeros(4, 64, 64)
    laion["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024)
    laion["audio_branch.logmel_extractor.melW"] = torch.randn(513, 64)
    laion["audio_branch.head.weight"] = torch.randn(527, 64)
    laion["audio_branch.tscam_conv.weight"] = torch.randn(527, 64, 2, 3)
    laion["text_transform.sequential.0.weight"] = torch.randn(24, 24)
    laion["audio_transform.sequential.3.bias"] = torch.randn(24)
    laion["text_branch.embeddings.position_ids"] = torch.arange(514).expand(1, -1)  # RoBERTa's own length
    return laion


@pytest.fixture(scope="module")
def clap():
    model, _ = tiny_clap(seed=0)
    return model


@pytest.fixture(scope="module")
def laion_state_dict(clap):
    return to_laion_layout(clap.state_dict())


def test_layout_is_laions(laion_state_dict):
    assert "audio_branch.layers.0.blocks.0.attn.qkv.weight" in laion_state_dict
    assert "audio_branch.layers.0.blocks.0.mlp.fc2.bias" in laion_state_dict
    assert "audio_branch.bn0.running_mean" in laion_state_dict
    assert "text_projection.2.weight" in laion_state_dict
    assert not any("query" in k for k in laion_state_dict if k.startswith("audio_branch."))


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "ddp_training_checkpoint"])
def test_round_trip_gives_the_same_model(clap, laion_state_dict, tmp_path, wrapped):
    path = tmp_path / "630k-tiny.pt"
    if wrapped:
        torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in laion_state_dict.items()}}, path)
    else:
        torch.save(laion_state_dict, path)

    loaded = clap_from_laion_checkpoint(path, clap.config)

    assert not loaded.training
    original = clap.state_dict()
    restored = loaded.state_dict()
    assert restored.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(restored[key], value), key

    torch.manual_seed(1)
    input_features = torch.randn(2, 1, 1001, 64)
    input_ids = torch.randint(3, clap.config.text_config.vocab_size, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    with torch.no_grad():
        audio = [m.get_audio_features(input_features=input_features).pooler_output for m in (clap, loaded)]
        text = [m.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
                for m in (clap, loaded)]
    assert torch.equal(audio[0], audio[1])
    assert torch.equal(text[0], text[1])


def test_fusion_model_round_trip(tmp_path):
    """A fused HTSAT (`laion/clap-htsat-fused` layout): its AFF fusion block and mel conv keep their names."""
    from transformers import ClapConfig, ClapModel

    config = ClapConfig(
        text_config=dict(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=40),
        audio_config=dict(spec_size=256, num_mel_bins=64, patch_embeds_hidden_size=8, hidden_size=64,
                          depths=[1, 1, 1, 1], num_attention_heads=[2, 2, 2, 2], window_size=8, enable_fusion=True,
                          patch_stride=(4, 4)),
        projection_dim=24,
    )
    torch.manual_seed(0)
    original = ClapModel(config).eval()
    laion = to_laion_layout(original.state_dict())
    assert "audio_branch.patch_embed.fusion_model.local_att.1.running_var" in laion
    torch.save(laion, tmp_path / "fused.pt")
    loaded = clap_from_laion_checkpoint(tmp_path / "fused.pt", config)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_config_from_folder(clap, laion_state_dict, tmp_path):
    clap.config.save_pretrained(tmp_path / "config")
    torch.save(laion_state_dict, tmp_path / "ckpt.pt")
    loaded = clap_from_laion_checkpoint(tmp_path / "ckpt.pt", str(tmp_path / "config"))
    assert torch.equal(loaded.logit_scale_a, clap.logit_scale_a)


def test_qkv_is_split_in_query_key_value_order(clap, laion_state_dict):
    converted = convert_laion_clap_state_dict(laion_state_dict, clap.config)
    prefix = "audio_model.audio_encoder.layers.1.blocks.0.attention.self."
    qkv = laion_state_dict["audio_branch.layers.1.blocks.0.attn.qkv.bias"]
    assert torch.equal(torch.cat([converted[prefix + n + ".bias"] for n in ("query", "key", "value")]), qkv)
    assert not any(k.endswith(("position_ids", "relative_position_index", "attn_mask")) for k in converted)


def test_not_a_checkpoint_names_the_file(clap, tmp_path):
    garbage = tmp_path / "notes.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pt"):
        clap_from_laion_checkpoint(garbage, clap.config)

    other = tmp_path / "other_model.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"other_model\.pt.*not a LAION-CLAP state dict"):
        load_laion_clap_state_dict(other)


def test_unexpected_key_is_named(clap, laion_state_dict, tmp_path):
    extra = dict(laion_state_dict)
    extra["audio_branch.layers.0.blocks.0.mystery.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save(extra, path)
    with pytest.raises(ValueError, match=r"extra\.pt.*no counterpart.*audio_branch\.layers\.0\.blocks\.0\.mystery"):
        clap_from_laion_checkpoint(path, clap.config)


def test_missing_key_is_named(clap, laion_state_dict):
    missing = dict(laion_state_dict)
    del missing["audio_branch.layers.2.blocks.0.mlp.fc1.weight"]
    with pytest.raises(ValueError, match=r"not filled.*layers\.2\.blocks\.0\.intermediate\.dense\.weight"):
        convert_laion_clap_state_dict(missing, clap.config)


def test_shape_mismatch_is_named(clap, laion_state_dict):
    wrong = dict(laion_state_dict)
    wrong["text_projection.0.weight"] = torch.zeros(5, 32)
    with pytest.raises(ValueError, match=r"text_projection\.linear1\.weight \(5, 32\)"):
        convert_laion_clap_state_dict(wrong, clap.config)
