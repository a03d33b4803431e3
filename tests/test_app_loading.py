"""`diffusion_link.apps.loading`: how every app loads its captioner (its bad-folder errors are in test_bad_folders)."""

import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import pipeline

from diffusion_link import DiffusionLinkForAudioCaptioning, IdentityBridge
from diffusion_link.apps.loading import load_captioning_pipeline

from .conftest import write_wav


def lora_layers(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def test_the_apps_merge_lora_for_captioning_with_the_same_captions(saved_tiny_captioner, tmp_path):
    clips = [str(write_wav(tmp_path / f"{i}.wav", seed=i)) for i in range(3)]
    as_loaded = pipeline("audio-captioning", model=str(saved_tiny_captioner))
    assert as_loaded.model.config.lora_r > 0 and lora_layers(as_loaded.model)  # Python users keep their adapters

    merged = load_captioning_pipeline(saved_tiny_captioner)
    assert merged.model.config.lora_r == 0 and not lora_layers(merged.model)
    q_proj = "language_model.model.layers.0.self_attn.q_proj"
    base = as_loaded.model.get_submodule(q_proj).base_layer.weight
    assert not base.equal(merged.model.get_submodule(q_proj).weight)  # the adapters are in the weights now
    for call in ({"max_new_tokens": 6}, {"max_new_tokens": 6, "num_candidates": 2}):
        want, got = as_loaded(clips, **call), merged(clips, **call)
        assert [r["generated_text"] for r in got] == [r["generated_text"] for r in want]
        assert all(r["generated_text"] for r in got)

    kept = load_captioning_pipeline(saved_tiny_captioner, merge_lora=False)
    assert kept.model.config.lora_r > 0 and lora_layers(kept.model)


@pytest.fixture(scope="module")
def referenced_captioner(tiny_parts, tmp_path_factory):
    """A captioner saved with referenced bases, its LoRA adapters trained-looking (B is zero when peft starts)."""
    folder = tmp_path_factory.mktemp("merge-referenced")
    model = DiffusionLinkForAudioCaptioning.from_pretrained_parts(
        tiny_parts["clap"], tiny_parts["llama"], IdentityBridge(), lora_r=2, lora_alpha=4)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    model.save_pretrained(folder)
    return folder


def test_merging_on_load_gives_peft_merge_to_the_bit_without_peft_layers(referenced_captioner):
    merged = DiffusionLinkForAudioCaptioning.from_pretrained(referenced_captioner, merge_lora=True)
    by_peft = DiffusionLinkForAudioCaptioning.from_pretrained(referenced_captioner).merge_and_unload()
    assert merged.config.lora_r == by_peft.config.lora_r == 0 and not lora_layers(merged)
    ours, theirs = merged.state_dict(), by_peft.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    unmerged = DiffusionLinkForAudioCaptioning.from_pretrained(referenced_captioner)
    q_proj = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(ours[q_proj], unmerged.state_dict()[q_proj.replace(".weight", ".base_layer.weight")])
    # The folder's own config is untouched: loaded again, it has its adapters.
    assert unmerged.config.lora_r == 2 and lora_layers(unmerged)


def with_lora(folder, dest, edit):
    shutil.copytree(folder, dest)
    state = load_file(dest / "model.safetensors")
    save_file(edit(state), dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def drop_one(state):
    return {k: v for k, v in state.items() if k != sorted(k for k in state if "lora_A" in k)[0]}


def wrong_rank(state):
    key = sorted(k for k in state if "lora_B" in k)[0]
    return {**state, key: torch.zeros(state[key].shape[0], 3)}


def extra_adapter(state):
    return {**state, "language_model.model.layers.0.mlp.up_proj.lora_A.default.weight": torch.zeros(2, 32)}


@pytest.mark.parametrize("edit, fragment", [(drop_one, "missing (1)"), (extra_adapter, "unexpected (1)"),
                                            (wrong_rank, "rank 2 on a")], ids=["missing", "unexpected", "wrong-rank"])
def test_merging_on_load_is_strict_about_the_adapters(referenced_captioner, tmp_path, edit, fragment):
    folder = with_lora(referenced_captioner, tmp_path / "bad", edit)
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'model.safetensors'}: ") + ".*" + re.escape(fragment)):
        DiffusionLinkForAudioCaptioning.from_pretrained(folder, merge_lora=True)
