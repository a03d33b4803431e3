"""Model cards: rendering from `hub_cards/`, parsing back, `save_pretrained` and `push_to_hub` writing them."""

import json

import pytest
from huggingface_hub import EvalResult, ModelCard

from diffusion_link import DiffusionLinkCaptionerConfig, DiffusionLinkConfig
from diffusion_link.hub.model_cards import (
    TEMPLATES,
    eval_results_from_scores,
    model_card,
    save_model_card,
    template_path,
)

from .conftest import run_python


SECTIONS = ("## Uses", "## How to get started", "## Training details", "## Limits and licences")
SCORES = {"cider_d": 0.412, "bleu_4": 0.173}


def bridge_config():
    return DiffusionLinkConfig(embedding_dim=12, hidden_size=37, num_blocks=2, timestep_embedding_dim=16, strength=0.3,
                               num_inference_steps=3)


def captioner_config():
    return DiffusionLinkCaptionerConfig(
        bridge_config=DiffusionLinkConfig(embedding_dim=512, hidden_size=48, strength=0.2, num_inference_steps=4),
        base_weights="referenced", audio_tower_name_or_path="laion/clap-htsat-unfused",
        language_model_name_or_path="meta-llama/Llama-2-7b-hf", prefix_length=5,
    )


def audiocaps_results():
    return eval_results_from_scores(SCORES, dataset_type="audiocaps", dataset_name="AudioCaps", dataset_split="test")


@pytest.mark.parametrize("name", sorted(name for name, _ in TEMPLATES.values()))
def test_templates_are_found(name):
    assert template_path(name).is_file()


@pytest.mark.parametrize(
    "make_config, expected_text, expected_base",
    [
        (bridge_config, ["| embedding size | 12 |", "`strength` 0.3", "3 DDIM steps", 'from_pretrained("user/model")'], None),
        (
            captioner_config,
            ["`laion/clap-htsat-unfused`", "`meta-llama/Llama-2-7b-hf`", "`diffusion_link`", "`strength` 0.2",
             "4 DDIM steps", "prefix of 5", "`referenced`", 'model="user/model"'],
            ["laion/clap-htsat-unfused", "meta-llama/Llama-2-7b-hf"],
        ),
    ],
)
def test_card_renders_and_parses_back(tmp_path, make_config, expected_text, expected_base):
    card = model_card(make_config(), repo_id="user/model", eval_results=audiocaps_results(), tags=["extra-tag"])
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")

    data = loaded.data
    assert data.license == "cc-by-nc-4.0" and data.library_name == "transformers"
    assert {"diffusion-link", "custom_code", "extra-tag"} <= set(data.tags)
    assert data.base_model == expected_base
    assert data.datasets == ["audiocaps", "clotho"]
    assert data.model_name == "model"
    results = {r.metric_type: (r.metric_value, r.dataset_type, r.dataset_split, r.task_type) for r in data.eval_results}
    assert results == {k: (v, "audiocaps", "test", "audio-captioning") for k, v in SCORES.items()}
    for heading in (*SECTIONS, "## Evaluation"):
        assert heading in loaded.text
    assert "| cider_d | 0.412 | AudioCaps | test |" in loaded.text
    assert "CC BY-NC" in loaded.text and "Clotho" in loaded.text and "AudioCaps" in loaded.text
    for text in expected_text:
        assert text in loaded.text
    assert "{{" not in str(loaded) and "{%" not in str(loaded)  # every template field was filled


def test_card_without_results_has_no_model_index_and_takes_overrides():
    card = ModelCard(str(model_card(bridge_config(), base_model="laion/clap-htsat-unfused", datasets=["esc50"],
                                    license="apache-2.0")))
    assert card.data.eval_results is None and "model-index" not in str(card)
    assert "## Evaluation" not in card.text
    assert card.data.base_model == ["laion/clap-htsat-unfused"] and card.data.datasets == ["esc50"]
    assert card.data.license == "apache-2.0"
    assert 'from_pretrained("path/to/model")' in card.text


def test_captioner_card_lists_only_hub_ids_as_base_models(tmp_path):
    config = captioner_config()
    config.audio_tower_name_or_path = "package:aisfx/model"
    config.language_model_name_or_path = str(tmp_path)
    card = ModelCard(str(model_card(config)))
    assert card.data.base_model is None
    assert "`package:aisfx/model`" in card.text


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="model_type"):
        model_card(object())
    with pytest.raises(TypeError, match="EvalResult"):
        model_card(bridge_config(), eval_results=[{"cider_d": 0.4}])
    with pytest.raises(TypeError, match="number"):
        eval_results_from_scores({"cider_d": "high"}, dataset_type="audiocaps", dataset_name="AudioCaps")
    assert isinstance(audiocaps_results()[0], EvalResult)


def test_save_model_card_keeps_an_existing_readme(tmp_path):
    (tmp_path / "README.md").write_text("my own card\n")
    assert not save_model_card(tmp_path, bridge_config())
    assert (tmp_path / "README.md").read_text() == "my own card\n"


def test_bridge_save_pretrained_writes_card_and_keeps_an_existing_one(tiny_bridge, tmp_path):
    from transformers import AutoModel

    tiny_bridge.save_pretrained(tmp_path / "a", model_card_kwargs={"eval_results": audiocaps_results()})
    card = ModelCard.load(tmp_path / "a" / "README.md")
    assert card.data.eval_results[0].metric_value == SCORES["cider_d"]
    assert f"| embedding size | {tiny_bridge.config.embedding_dim} |" in card.text
    assert type(AutoModel.from_pretrained(tmp_path / "a", trust_remote_code=True)).__name__ == "DiffusionLinkBridge"

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "README.md").write_text("my own card\n")
    tiny_bridge.save_pretrained(tmp_path / "b")
    assert (tmp_path / "b" / "README.md").read_text() == "my own card\n"
    assert (tmp_path / "b" / "model.safetensors").is_file()


def test_captioner_save_pretrained_writes_card(saved_tiny_captioner):
    card = ModelCard.load(saved_tiny_captioner / "README.md")
    assert "diffusion-link" in card.data.tags
    for heading in SECTIONS:
        assert heading in card.text
    config = json.loads((saved_tiny_captioner / "config.json").read_text())
    assert f"embedding size {config['embedding_dim']}" in card.text


@pytest.mark.integration  # a fresh Python process
def test_push_to_hub_uploads_our_card_and_keeps_one_already_there(hub, tiny_bridge, tmp_path):
    local = tmp_path / "bridge"
    tiny_bridge.save_pretrained(local)
    (local / "README.md").unlink()  # `save_pretrained(push_to_hub=True)` below writes it again
    scores = json.dumps(SCORES)
    run_python(
        "import json\n"
        "from huggingface_hub import HfApi\n"
        "from diffusion_link import DiffusionLinkBridge\n"
        "from diffusion_link.hub.model_cards import eval_results_from_scores\n"
        f"bridge = DiffusionLinkBridge.from_pretrained({str(local)!r})\n"
        f"results = eval_results_from_scores(json.loads({scores!r}), dataset_type='audiocaps', dataset_name='AudioCaps')\n"
        "bridge.push_to_hub('user/bridge', tags=['pushed'], model_card_kwargs={'eval_results': results})\n"
        "HfApi().create_repo('user/mine')\n"
        "HfApi().upload_file(path_or_fileobj=b'my own card\\n', path_in_repo='README.md', repo_id='user/mine')\n"
        "bridge.push_to_hub('user/mine')\n"
        f"bridge.save_pretrained({str(local)!r}, push_to_hub=True, repo_id='user/saved')\n"
    )

    def pushed(repo_id):
        repo = hub.repos[("model", repo_id)]
        return repo.commits[repo.refs["main"]]

    files = pushed("user/bridge")
    assert {"README.md", "config.json", "model.safetensors"} <= set(files)
    card = ModelCard(files["README.md"].content.decode())
    assert card.data.library_name == "transformers" and {"diffusion-link", "pushed"} <= set(card.data.tags)
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == SCORES
    assert card.data.model_name == "bridge" and 'from_pretrained("user/bridge")' in card.text

    mine = pushed("user/mine")
    assert mine["README.md"].content == b"my own card\n" and "model.safetensors" in mine

    saved = pushed("user/saved")
    assert "model.safetensors" in saved and ModelCard(saved["README.md"].content.decode()).data.license == "cc-by-nc-4.0"
    assert (local / "README.md").is_file()
