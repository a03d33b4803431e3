"""Loading is safe: a folder that does not hold what it claims raises a `ValueError` naming the folder (and the
offending keys) instead of a silently re-initialised model, and pickle weights are never unpickled unsafely."""

import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion_link import DiffusionLinkBridge, DiffusionLinkForAudioCaptioning

from .conftest import RunsCode


@pytest.fixture
def saved_bridge(tiny_bridge, tmp_path):
    folder = tmp_path / "bridge"
    tiny_bridge.save_pretrained(folder)
    return folder


def copy_with_config(folder, dest, **changes):
    shutil.copytree(folder, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_a_good_folder_loads_exactly(saved_bridge, tiny_bridge):
    loaded, info = DiffusionLinkBridge.from_pretrained(saved_bridge, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for key, value in tiny_bridge.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_missing_config_is_refused(saved_bridge, tmp_path):
    folder = tmp_path / "no-config"
    shutil.copytree(saved_bridge, folder)
    os.remove(folder / "config.json")
    with pytest.raises(ValueError, match=rf"{folder}.*no config.json"):
        DiffusionLinkBridge.from_pretrained(folder)


@pytest.mark.parametrize("model_type", ["bert", "diffusion_link_captioner"])
def test_config_of_another_model_type_is_refused(saved_bridge, tmp_path, model_type):
    folder = copy_with_config(saved_bridge, tmp_path / "foreign", model_type=model_type)
    with pytest.raises(ValueError, match=rf"{folder}.*model_type '{model_type}'.*'diffusion_link'"):
        DiffusionLinkBridge.from_pretrained(folder)


def test_captioner_refuses_a_bridge_folder(saved_bridge):
    with pytest.raises(ValueError, match=rf"{saved_bridge}.*model_type 'diffusion_link'.*'diffusion_link_captioner'"):
        DiffusionLinkForAudioCaptioning.from_pretrained(saved_bridge)


def test_weights_of_the_wrong_shape_are_refused(saved_bridge, tmp_path):
    # Saved with embedding_dim=12; the edited config asks for 16.
    folder = copy_with_config(saved_bridge, tmp_path / "wrong-shape", embedding_dim=16)
    with pytest.raises(ValueError, match=rf"{folder}.*mismatched keys \(8\).*denoiser.in_proj.weight"):
        DiffusionLinkBridge.from_pretrained(folder)
    # An explicit opt-in still re-initialises them, as in transformers.
    model = DiffusionLinkBridge.from_pretrained(folder, ignore_mismatched_sizes=True)
    assert model.config.embedding_dim == 16 and model.embed_mean.shape == (16,)


def test_missing_and_unexpected_weights_are_refused(saved_bridge, tmp_path):
    folder = tmp_path / "edited-weights"
    shutil.copytree(saved_bridge, folder)
    state = load_file(folder / "model.safetensors")
    del state["denoiser.blocks.0.fc1.bias"]
    state["extra.weight"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['denoiser.blocks.0.fc1.bias'\]") as err:
        DiffusionLinkBridge.from_pretrained(folder)
    assert str(folder) in str(err.value) and "unexpected keys (1): ['extra.weight']" in str(err.value)


def test_captioner_with_edited_weights_is_refused(saved_tiny_captioner, tmp_path):
    folder = tmp_path / "captioner"
    shutil.copytree(saved_tiny_captioner, folder)
    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.startswith("multi_modal_projector."))
    del state[key]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{folder}.*missing keys \(1\): \['{key}'\]"):
        DiffusionLinkForAudioCaptioning.from_pretrained(folder)
    # The unedited folder (tied/shared weights and all) loads without complaint.
    DiffusionLinkForAudioCaptioning.from_pretrained(saved_tiny_captioner)


def test_pickle_weights_are_never_unpickled(saved_bridge, tiny_bridge, tmp_path):
    folder = tmp_path / "pickle-only"
    folder.mkdir()
    shutil.copy(saved_bridge / "config.json", folder / "config.json")
    marker = tmp_path / "code-ran"
    torch.save({**tiny_bridge.state_dict(), "payload": RunsCode(marker)}, folder / "pytorch_model.bin")
    # By default only safetensors are read: a pickle-only folder is refused without opening the pickle.
    with pytest.raises(OSError, match=rf"model.safetensors.*{folder}"):
        DiffusionLinkBridge.from_pretrained(folder)
    assert not marker.exists()
    # Asked for explicitly, the pickle goes through torch.load(weights_only=True), which refuses the payload.
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        DiffusionLinkBridge.from_pretrained(folder, use_safetensors=False)
    assert not marker.exists()


@pytest.mark.parametrize("base_weights", ["embedded", "referenced"])
def test_freezing_and_dtype_placement_run_once_per_load(tiny_parts, tmp_path, monkeypatch, base_weights):
    from diffusion_link import IdentityBridge

    parts = (tiny_parts["clap"], tiny_parts["llama"]) if base_weights == "referenced" else None
    if parts is None:
        from transformers import AutoModel, AutoModelForCausalLM

        parts = (AutoModel.from_pretrained(tiny_parts["clap"]), AutoModelForCausalLM.from_pretrained(tiny_parts["llama"]))
    model = DiffusionLinkForAudioCaptioning.from_pretrained_parts(*parts, IdentityBridge(), base_weights=base_weights,
                                                                  lora_r=2, lora_alpha=4)
    model.save_pretrained(tmp_path)
    calls = {"apply_freezing": 0, "trained_parts_to_float32": 0}
    for name in calls:
        real = getattr(DiffusionLinkForAudioCaptioning, name)

        def counted(self, _real=real, _name=name):
            calls[_name] += 1
            return _real(self)

        monkeypatch.setattr(DiffusionLinkForAudioCaptioning, name, counted)
    loaded = DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path)
    assert calls == {"apply_freezing": 1, "trained_parts_to_float32": 1}
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("multi_modal_projector.") for n in trainable)
