"""The starter build's bridge and decoder stages on tiny stand-ins: the bridge validates on head fold 0 (never trained
on) and picks its depth there by `diffusion_link.depth_selection`'s rule; `--decoder_from` reuses a trained decoder."""

import os

import pytest
import torch

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig
from diffusion_link.depth_selection import pick_depth, sweep_depths
from diffusion_link.embedding_files import load_embeddings
from diffusion_link.testing import tiny_captioner
from training import build_starter


D = 8


@pytest.fixture
def world():
    """10 training clips of 5 classes in 5 head folds (fold = clip % 5), 5 captions a class."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])  # 10 train clips, then 2 test clips
    head = {"oof": torch.randn(10, D), "folds": torch.arange(10) % 5, "labels": labels}
    towers = {"esc_text": torch.randn(25, D), "corpus_text": torch.randn(30, D)}
    return towers, head


def test_the_bridge_validates_on_fold_0_and_trains_on_the_other_folds(world, tmp_path):
    towers, head = world
    validation, _ = load_embeddings(build_starter.bridge_validation_file(str(tmp_path), towers, head))
    train, _ = load_embeddings(build_starter.bridge_train_file(str(tmp_path), towers, head))
    fold0 = [0, 5]  # clips 0 and 5, both class 0
    torch.testing.assert_close(validation["audio_embeds"], head["oof"][fold0])
    torch.testing.assert_close(validation["text_embeds"], towers["esc_text"][[0, 0]])  # the class's first caption
    assert len(train["audio_embeds"]) == 8 * 5  # the 8 other clips, each with its class's 5 captions
    for row in validation["audio_embeds"]:
        assert not (train["audio_embeds"] == row).all(dim=1).any()  # no validation clip is trained on
    argv = build_starter.bridge_arguments(build_starter.parse_args([]), "t.safetensors", "out", "v.safetensors")
    assert argv[argv.index("--validation_file") + 1] == "v.safetensors"


def test_pick_strength_applies_the_depth_rule_on_fold_0(world):
    towers, head = world
    torch.manual_seed(1)
    bridge = DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=D, hidden_size=16, num_blocks=1)).eval()
    grid = [0.05, 0.2, 0.6]
    pick = build_starter.pick_strength(bridge, towers, head, grid)
    audio, text = build_starter.fold0_pairs(towers, head)
    assert pick == pick_depth(sweep_depths(bridge, audio, text, grid)) and pick["num_pairs"] == 2
    assert bridge.config.strength == pick["strength"] in grid and bridge.config.depth_selection == pick


def test_decoder_from_reuses_a_trained_decoder_without_training(tmp_path, monkeypatch):
    trained = tmp_path / "trained"
    tiny_captioner().save_pretrained(trained)
    from training import train_captioner

    monkeypatch.setattr(train_captioner, "main", lambda *a, **k: pytest.fail("the decoder was trained again"))
    monkeypatch.setattr(build_starter, "decoder_train_file", lambda args, towers: "decoder_train.safetensors")
    args = build_starter.parse_args(["--work_dir", str(tmp_path / "work"), "--decoder_from", str(trained)])
    os.makedirs(args.work_dir)
    new_bridge = DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=24, hidden_size=16, num_blocks=1, strength=0.2))
    captioner = build_starter.decoder(args, {}, "unused", new_bridge)
    assert captioner.bridge is new_bridge and captioner.config.bridge_config.strength == 0.2
    assert os.path.exists(os.path.join(args.work_dir, "decoder", "model.safetensors"))
    assert DiffusionLinkBridge.from_pretrained(os.path.join(args.work_dir, "bridge_picked")).config.strength == 0.2
    original = tiny_captioner().model
    for name, value in original.multi_modal_projector.state_dict().items():
        torch.testing.assert_close(captioner.multi_modal_projector.state_dict()[name], value)


def test_decodings_are_named_parsed_and_ranked_by_their_rule():
    assert build_starter.parse_decoding("greedy") == (1, "combined", 1.0)
    assert build_starter.parse_decoding("4:combined@2.0") == (4, "combined", 2.0)
    assert build_starter.parse_decoding("8:similarity") == (8, "similarity", 1.0)
    cands = [{"text": "a dog barks", "lm_logprob": -0.2, "audio_text_similarity": 0.1},
             {"text": "rain falls", "lm_logprob": -0.9, "audio_text_similarity": 0.5}]
    run = {"greedy": ["a dog"], "candidates": {2: [cands]}}
    named = dict(build_starter.decodings(run, [0.5, 4.0]))
    assert list(named) == ["greedy", "2:lm", "2:similarity", "2:combined@0.5", "2:combined@4.0"]
    assert named["greedy"] == ["a dog"] and named["2:lm"] == ["a dog barks"] and named["2:similarity"] == ["rain falls"]
    assert named["2:combined@0.5"] == ["a dog barks"] and named["2:combined@4.0"] == ["rain falls"]  # -0.15/-0.65; 0.2/1.1
    for name in named:
        assert build_starter.parse_decoding(name)[0] == (1 if name == "greedy" else 2)


def test_an_out_of_fold_head_sees_only_augmented_versions_of_its_own_clips():
    augmented = {"clip": torch.tensor([0, 1, 2, 0, 3]), "label": torch.tensor([5, 6, 7, 5, 8]),
                 "partner": torch.tensor([-1, 2, -1, -1, 0]), "audio": torch.arange(5.0)[:, None]}
    keep = torch.tensor([True, False, True, True])  # clip 1 is in the held-out fold
    kept = build_starter.restrict(augmented, keep)
    assert kept["clip"].tolist() == [0, 2, 0, 3] and kept["audio"].flatten().tolist() == [0.0, 2.0, 3.0, 4.0]
    assert build_starter.restrict(None, keep) is None
