"""Bad saved folders, systematically: each class of damage a config.json or a weights file can carry, with what
the loader must answer (the exception type, and a message naming the file and the key), and what a saved config
must never carry (a path of the machine that saved it).

- a config whose sub-configs are missing, partial or of the wrong type: an error before any model is built (a
  missing `text_config` once became a default 7B LLaMA and the OOM killer ended the process);
- a weights file that is empty or truncated: an `OSError` naming it (safetensors' own error names no file);
- a referenced base (the frozen tower or LM a captioner refers to) held to the same rules as the captioner itself:
  safetensors only, never unpickled, strictly;
- saved configs hold no local paths they do not need to load.
"""

import json
import os
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, pipeline

from diffusion_link import (
    DiffusionLinkBridge,
    DiffusionLinkCaptionerConfig,
    DiffusionLinkConfig,
    DiffusionLinkForAudioCaptioning,
    IdentityBridge,
)

from .conftest import RunsCode


def edited_copy(folder, dest, edit):
    """A copy of `folder` whose config.json is `edit(config dict)` (a dict, or the raw text to write)."""
    shutil.copytree(folder, dest)
    config = json.loads((dest / "config.json").read_text())
    new = edit(config)
    (dest / "config.json").write_text(new if isinstance(new, str) else json.dumps(new))
    return dest


def without(key, sub=None):
    if sub is None:
        return lambda c: {k: v for k, v in c.items() if k != key}
    return lambda c: {**c, key: {k: v for k, v in c[key].items() if k != sub}}


def replaced(key, value, sub=None):
    if sub is None:
        return lambda c: {**c, key: value}
    return lambda c: {**c, key: {**c[key], sub: value}}


# ------------------------------------------------------------------------------------------ the captioner's config
# name -> (edit of a saved tiny captioner's config.json, expected exception, message fragment after the file)
CONFIG_CASES = {
    "no-text_config": (without("text_config"), ValueError, "`text_config` is missing"),
    "no-audio_config": (without("audio_config"), ValueError, "`audio_config` is missing"),
    "no-bridge_config": (without("bridge_config"), ValueError, "`bridge_config` is missing"),
    "null-text_config": (replaced("text_config", None), ValueError, "`text_config` is missing"),
    "text_config-without-model_type": (without("text_config", "model_type"), ValueError,
                                       "`text_config` has no `model_type`"),
    "text_config-without-hidden_size": (without("text_config", "hidden_size"), ValueError,
                                        "`text_config` lacks ['hidden_size']"),
    "text_config-without-layers": (without("text_config", "num_hidden_layers"), ValueError,
                                   "`text_config` lacks ['num_hidden_layers']"),
    "text_config-unknown-model_type": (replaced("text_config", "no-such-model", "model_type"), ValueError,
                                       "`text_config` has an unknown model_type 'no-such-model'"),
    "audio_config-without-its-audio_config": (without("audio_config", "audio_config"), ValueError,
                                              "`audio_config.audio_config` is missing"),
    "audio_config-with-a-string-text_config": (replaced("audio_config", "x", "text_config"), TypeError,
                                               "`audio_config.text_config` must be a JSON object"),
    "bridge_config-without-model_type": (without("bridge_config", "model_type"), ValueError,
                                         "`bridge_config` has no `model_type`"),
    "bridge_config-of-another-type": (replaced("bridge_config", "llama", "model_type"), ValueError,
                                      "`bridge_config` has model_type 'llama'; expected 'diffusion_link'"),
    "bridge_config-string": (replaced("bridge_config", "x"), TypeError, "`bridge_config` must be a JSON object"),
    "text_config-string": (replaced("text_config", "x"), TypeError, "`text_config` must be a JSON object"),
    "audio_config-list": (replaced("audio_config", [1]), TypeError, "`audio_config` must be a JSON object"),
    "bridge-field-of-the-wrong-type": (replaced("bridge_config", "x", "dropout"), ValueError,
                                       "`dropout` must be a finite number, got 'x'"),
    "lora_alpha-string": (replaced("lora_alpha", "x"), ValueError, "`lora_alpha` must be a finite number"),
    "lora_target_modules-string": (replaced("lora_target_modules", "q_proj"), TypeError,
                                   "`lora_target_modules` must be a list of module names"),
    "custom_pipelines-string": (replaced("custom_pipelines", "x"), TypeError, "`custom_pipelines` must map"),
    "confidence_calibration-string": (replaced("confidence_calibration", "x"), ValueError,
                                      "`confidence_calibration` must be the dict"),
}


@pytest.fixture
def never_built(monkeypatch):
    """The captioner class refuses to be instantiated: a config error must come before any model is built."""

    def refuse(self, config, *args, **kwargs):
        raise AssertionError(f"a captioner was built from a bad config (text_config {config.text_config.hidden_size} wide)")

    monkeypatch.setattr(DiffusionLinkForAudioCaptioning, "__init__", refuse)


LOADERS = {
    "from_pretrained": DiffusionLinkForAudioCaptioning.from_pretrained,
    "AutoConfig": AutoConfig.from_pretrained,
    "pipeline": lambda folder: pipeline("audio-captioning", model=str(folder)),
}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_a_bad_captioner_config_is_refused_before_any_model_is_built(saved_tiny_captioner, tmp_path, never_built,
                                                                       name, loader):
    edit, error, fragment = CONFIG_CASES[name]
    folder = edited_copy(saved_tiny_captioner, tmp_path / name, edit)
    with pytest.raises(error, match=re.escape(f"{folder / 'config.json'}: {fragment}")) as err:
        LOADERS[loader](folder)
    assert type(err.value) is error


# name -> (raw config.json text, expected exception, message fragment)
CONFIG_FILE_CASES = {
    "json-list": ("[1, 2]", ValueError, "config.json holds a JSON list; expected a JSON object"),
    "json-string": ('"x"', ValueError, "config.json holds a JSON str; expected a JSON object"),
    "empty": ("", OSError, "is not a valid JSON file"),
    "cut-short": ('{"model_type": "diffusion_link_captioner", "text_config": {', OSError, "is not a valid JSON file"),
}


@pytest.mark.parametrize("model_class", [DiffusionLinkForAudioCaptioning, DiffusionLinkBridge])
@pytest.mark.parametrize("name", list(CONFIG_FILE_CASES))
def test_a_config_file_that_is_not_a_json_object_is_refused_naming_it(saved_tiny_captioner, tmp_path, name,
                                                                        model_class):
    text, error, fragment = CONFIG_FILE_CASES[name]
    folder = edited_copy(saved_tiny_captioner, tmp_path / name, lambda c: text)
    with pytest.raises(error, match=re.escape(str(folder))) as err:
        model_class.from_pretrained(folder)
    assert fragment in str(err.value)


def test_configs_built_in_code_keep_their_defaults():
    # transformers builds configs without arguments itself (`recursive_diff_dict`); only saved ones must be whole.
    config = DiffusionLinkCaptionerConfig()
    assert config.text_config.model_type == "llama" and config.bridge_config.embedding_dim == config.embedding_dim
    assert config.to_diff_dict()["model_type"] == "diffusion_link_captioner"
    assert DiffusionLinkConfig().to_diff_dict()["model_type"] == "diffusion_link"
    # Its own dict is whole: it round-trips through the saved-file rules.
    assert DiffusionLinkCaptionerConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_a_bridge_config_of_the_wrong_type_is_a_type_error_in_code_too():
    with pytest.raises(TypeError, match="`bridge_config` must be a dict or a DiffusionLinkConfig, got str"):
        DiffusionLinkCaptionerConfig(bridge_config="x")


def test_a_bad_bridge_config_names_its_file(saved_bridge_folder, tmp_path):
    folder = edited_copy(saved_bridge_folder, tmp_path / "bridge", replaced("hidden_size", "x"))
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'config.json'}: `hidden_size` must be a positive int")):
        DiffusionLinkBridge.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------- weights files
def empty(file):
    file.write_bytes(b"")


def truncated(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def one_byte_short(file):
    file.write_bytes(file.read_bytes()[:-1])


def header_only(file):
    data = file.read_bytes()
    file.write_bytes(data[: 8 + int.from_bytes(data[:8], "little")])


DAMAGE = {"empty": empty, "truncated": truncated, "one-byte-short": one_byte_short, "header-only": header_only}


@pytest.fixture(scope="module")
def saved_bridge_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-folders-bridge")
    DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=12, hidden_size=37, num_blocks=2)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def referenced(tiny_parts, tmp_path_factory):
    """A captioner with referenced bases (its own copies of the tiny CLAP and LLaMA folders) saved as trained parts."""
    root = tmp_path_factory.mktemp("bad-folders-referenced")
    for part in ("clap", "llama"):
        shutil.copytree(tiny_parts[part], root / part)
    model = DiffusionLinkForAudioCaptioning.from_pretrained_parts(str(root / "clap"), str(root / "llama"),
                                                                  IdentityBridge(), lora_r=2, lora_alpha=4)
    model.save_pretrained(root / "captioner")
    return root


def folder_of(which, saved_tiny_captioner, saved_bridge_folder, referenced):
    return {"bridge": saved_bridge_folder, "embedded captioner": saved_tiny_captioner,
            "referenced captioner": referenced / "captioner"}[which]


@pytest.mark.parametrize("which", ["bridge", "embedded captioner", "referenced captioner"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_weights_file_is_refused_naming_it(saved_tiny_captioner, saved_bridge_folder, referenced, tmp_path,
                                                     which, damage):
    folder = tmp_path / "damaged"
    shutil.copytree(folder_of(which, saved_tiny_captioner, saved_bridge_folder, referenced), folder)
    DAMAGE[damage](folder / "model.safetensors")
    model_class = DiffusionLinkBridge if which == "bridge" else DiffusionLinkForAudioCaptioning
    with pytest.raises(OSError, match=re.escape(f"{folder / 'model.safetensors'} is not a readable safetensors file")):
        model_class.from_pretrained(folder)


# -------------------------------------------------------------------------------------------- referenced bases
def pickle_only(base, marker):
    state = load_file(base / "model.safetensors")
    os.remove(base / "model.safetensors")
    torch.save({**state, "payload": RunsCode(marker)}, base / "pytorch_model.bin")


def half_the_weights(base, marker):
    state = load_file(base / "model.safetensors")
    save_file(dict(sorted(state.items())[: len(state) // 2]), base / "model.safetensors", metadata={"format": "pt"})


def one_unexpected_weight(base, marker):
    state = load_file(base / "model.safetensors")
    save_file({**state, "extra.weight": torch.zeros(3)}, base / "model.safetensors", metadata={"format": "pt"})


def one_wrong_shape(base, marker):
    state = load_file(base / "model.safetensors")
    key = sorted(k for k, v in state.items() if v.ndim == 2)[0]
    save_file({**state, key: torch.zeros(3, 3)}, base / "model.safetensors", metadata={"format": "pt"})


def damaged(base, marker):
    truncated(base / "model.safetensors")


# name -> (what is done to the base folder, expected exception, message fragment after the file's path)
BASE_CASES = {
    "pickle-only": (pickle_only, OSError, "pytorch_model.bin is a pickle, and referenced bases are read from "
                                          "safetensors only"),
    "half-the-weights": (half_the_weights, ValueError, "model.safetensors do not match"),
    "one-unexpected-weight": (one_unexpected_weight, ValueError, "unexpected keys (1): ['extra.weight']"),
    "one-wrong-shape": (one_wrong_shape, ValueError, "mismatched keys (1)"),
    "truncated": (damaged, OSError, "model.safetensors is not a readable safetensors file"),
}


@pytest.mark.parametrize("base", ["llama", "clap"])
@pytest.mark.parametrize("name", list(BASE_CASES))
def test_a_bad_referenced_base_is_refused_naming_its_file(referenced, tmp_path, name, base):
    make, error, fragment = BASE_CASES[name]
    shutil.copytree(referenced / base, tmp_path / base)
    marker = tmp_path / "code-ran"
    make(tmp_path / base, marker)
    field = {"llama": "language_model_name_or_path", "clap": "audio_tower_name_or_path"}[base]
    folder = edited_copy(referenced / "captioner", tmp_path / "captioner", replaced(field, str(tmp_path / base)))
    pattern = re.escape(str(tmp_path / base)) + ".*" + re.escape(fragment)
    with pytest.raises(error, match=pattern):
        DiffusionLinkForAudioCaptioning.from_pretrained(folder)
    # Building a new captioner from the same base is held to the same rules.
    parts = {"clap": str(referenced / "clap"), "llama": str(referenced / "llama"), base: str(tmp_path / base)}
    with pytest.raises(error, match=pattern):
        DiffusionLinkForAudioCaptioning.from_pretrained_parts(parts["clap"], parts["llama"], IdentityBridge())
    assert not marker.exists()  # the pickle was never opened


def test_intact_referenced_bases_load_exactly(referenced):
    model = DiffusionLinkForAudioCaptioning.from_pretrained(referenced / "captioner")
    for base, part in (("llama", model.language_model), ("clap", model.audio_tower)):
        saved = load_file(referenced / base / "model.safetensors")
        state = {k: v for k, v in part.state_dict().items() if "lora_" not in k}
        for key, value in saved.items():
            torch.testing.assert_close(state[key.replace("base_layer.", "")] if key in state else
                                       _lora_wrapped(state, key), value, rtol=0, atol=0)


def _lora_wrapped(state, key):
    # peft moves a targeted `q_proj.weight` to `q_proj.base_layer.weight`.
    module, _, leaf = key.rpartition(".")
    return state[f"{module}.base_layer.{leaf}"]


# ------------------------------------------------------------------------------- no machine paths in saved configs
def strings_in(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)
    elif isinstance(value, str):
        yield value


def test_a_saved_pipeline_config_holds_no_path_of_the_saving_machine(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    # The task's registration is kept (how the folder's pipeline code is found), without the package's default model.
    assert config["custom_pipelines"]["audio-captioning"]["impl"] == "pipeline_audio_captioning.AudioCaptionPipeline"
    assert "default" not in config["custom_pipelines"]["audio-captioning"]
    for name in ("audio_config", "text_config", "bridge_config"):
        assert "_name_or_path" not in config[name], name
    assert not [s for s in strings_in(config) if os.path.isabs(s)]


def test_loaded_sub_configs_forget_where_they_were_loaded_from(referenced, tmp_path):
    model = DiffusionLinkForAudioCaptioning.from_pretrained(referenced / "captioner")
    assert model.language_model.config.name_or_path == str(referenced / "llama")  # set by transformers' loading
    model.save_pretrained(tmp_path / "resaved")
    config = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert "_name_or_path" not in config["text_config"] and "_name_or_path" not in config["audio_config"]
    # The references are how the bases load: kept as given.
    assert config["language_model_name_or_path"] == str(referenced / "llama")


def test_a_stored_default_model_is_dropped_on_load(saved_tiny_captioner, tmp_path):
    # A folder saved before the fix carries the saving machine's starter folder as the task's default model.
    default = {"model": ["/home/someone/diffusion_link/starter/captioner", None]}
    folder = edited_copy(saved_tiny_captioner, tmp_path / "old", lambda c: {
        **c, "custom_pipelines": {"audio-captioning": {**c["custom_pipelines"]["audio-captioning"], "default": default}}})
    config = DiffusionLinkCaptionerConfig.from_pretrained(folder)
    config.save_pretrained(tmp_path / "resaved")
    assert "/home/someone" not in (tmp_path / "resaved" / "config.json").read_text()


def test_a_local_base_reference_is_kept_with_a_warning(referenced, tmp_path, monkeypatch):
    from diffusion_link import configuration_diffusion_link_captioner as module

    warnings = []
    monkeypatch.setattr(module.logger, "warning", lambda message, *args: warnings.append(message % args if args else message))
    config = DiffusionLinkCaptionerConfig.from_pretrained(referenced / "captioner")
    config.save_pretrained(tmp_path / "saved")
    assert len(warnings) == 2  # the tower and the LM; the tokenizer reference is unset
    assert all("is the local path" in w and "push_to_hub" in w for w in warnings)
    assert str(referenced / "llama") in " ".join(warnings)
    # A Hub id or a package:/cache: reference is not a local path: no warning.
    warnings.clear()
    config.audio_tower_name_or_path = config.language_model_name_or_path = "package:some_package/model"
    config.save_pretrained(tmp_path / "saved-by-reference")
    assert warnings == []


# ------------------------------------------------------------------------------------- every app, one loader
def run_app(app, folder, clip, tmp_path):
    """Load `folder` through one app; the exit code (None for the web page, which raises)."""
    from diffusion_link.apps.cli import main
    from diffusion_link.apps.web_demo import load_demo

    refs = tmp_path / "refs.csv"
    refs.write_text(f"file_name,caption\n{clip},a dog barks\n")
    commands = {
        "caption": ["caption", str(clip), "--output", str(tmp_path / "out.jsonl")],
        "search": ["search", "a dog barks", str(clip)],
        "evaluate": ["evaluate", "--references", str(refs), "--output-dir", str(tmp_path / "eval")],
    }
    if app == "web page":
        load_demo(str(folder))
        return None
    return main([*commands[app], "--model", str(folder)])


# damage -> (what is done to the config, to the copied folder, the loader's own words after the file's path)
APP_CASES = {
    "truncated weights": (lambda c: c, lambda folder: truncated(folder / "model.safetensors"),
                          "model.safetensors is not a readable safetensors file"),
    "no text_config": (without("text_config"), lambda folder: None, "config.json: `text_config` is missing"),
}


@pytest.mark.parametrize("app", ["caption", "search", "evaluate", "web page"])
@pytest.mark.parametrize("damage", list(APP_CASES))
def test_every_app_shows_the_loaders_own_error_for_a_bad_folder(saved_tiny_captioner, tmp_path, capsys, app, damage):
    from .conftest import write_wav

    edit, make, fragment = APP_CASES[damage]
    folder = edited_copy(saved_tiny_captioner, tmp_path / "bad", edit)
    make(folder)
    clip = write_wav(tmp_path / "a.wav", seconds=1.0)
    if app == "web page":
        with pytest.raises((OSError, ValueError)) as err:
            run_app(app, folder, clip, tmp_path)
        message = str(err.value)
    else:
        assert run_app(app, folder, clip, tmp_path) == 2
        message = capsys.readouterr().err
    # One line from the loader itself, not pipeline()'s "Could not load model" with every class's traceback.
    assert fragment in message and str(folder) in message
    assert "Could not load model" not in message and "Traceback" not in message
