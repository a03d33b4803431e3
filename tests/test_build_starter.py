"""The starter build's bridge and decoder stages (`diffusion_link.starter.build`) on tiny stand-ins: the bridge
validates on head fold 0 (never trained on) and picks its depth there by `diffusion_link.experiments.depth_selection`'s
rule; `--decoder_from` reuses a trained decoder."""

import os

import pytest
import torch

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig
from diffusion_link.experiments.depth_selection import pick_depth, sweep_depths, sweep_depths_cross_fitted
from diffusion_link.experiments.embedding_files import load_embeddings
from diffusion_link.starter.build import bridges, decoder, decoding, heads
from diffusion_link.starter.build.arguments import parse_args
from diffusion_link.starter.world import CaptionTable
from diffusion_link.testing import tiny_captioner


D = 8


@pytest.fixture
def world():
    """10 training clips of 5 classes in 5 head folds (fold = clip % 5), 5 captions a class."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])  # 10 train clips, then 2 test clips
    head = {"oof": torch.randn(10, D), "folds": torch.arange(10) % 5, "labels": labels}
    towers = {"esc_text": torch.randn(25, D), "corpus_text": torch.randn(30, D)}
    captions = CaptionTable([{f"class{c}": [f"caption {k} of class {c}" for k in range(5)] for c in range(5)}])
    return captions, towers, head


def test_the_bridge_validates_on_fold_0_and_trains_on_the_other_folds(world, tmp_path):
    captions, towers, head = world
    validation, _ = load_embeddings(bridges.bridge_validation_file(str(tmp_path), captions, towers, head))
    train, _ = load_embeddings(bridges.bridge_train_file(str(tmp_path), captions, towers, head))
    fold0 = [0, 5]  # clips 0 and 5, both class 0
    torch.testing.assert_close(validation["audio_embeds"], head["oof"][fold0])
    torch.testing.assert_close(validation["text_embeds"], towers["esc_text"][[0, 0]])  # the class's first caption
    assert len(train["audio_embeds"]) == 8 * 5  # the 8 other clips, each with its class's 5 captions
    for row in validation["audio_embeds"]:
        assert not (train["audio_embeds"] == row).all(dim=1).any()  # no validation clip is trained on
    # each clip with each caption of its class, in caption order: rows 5c .. 5c+4 of the class's caption table
    torch.testing.assert_close(train["text_embeds"][:5], towers["esc_text"][captions.class_caption_rows(1)])
    argv = bridges.bridge_arguments(parse_args([]), "t.safetensors", "out", "v.safetensors")
    assert argv[argv.index("--validation_file") + 1] == "v.safetensors"


def test_cross_fitted_depth_applies_the_depth_rule_on_every_fold_and_sets_it_everywhere(world):
    captions, towers, head = world
    torch.manual_seed(1)
    models = [DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=D, hidden_size=16, num_blocks=1)).eval()
              for _ in range(5)]
    grid = [0.05, 0.2, 0.6]
    pick = bridges.cross_fitted_depth(models, captions, towers, head, grid)
    pairs = [bridges.fold_pairs(captions, towers, head, fold) for fold in range(5)]
    assert pick == pick_depth(sweep_depths_cross_fitted(models, [a for a, _ in pairs], [t for _, t in pairs], grid))
    assert pick["num_pairs"] == 10 and pick["num_folds"] == 5 and pick["strength"] in grid
    assert all(b.config.strength == pick["strength"] and b.config.depth_selection == pick for b in models)
    # a bridge that trains on no audio, once per fold, is swept on all the pairs
    text_only = models[0]
    pooled = bridges.cross_fitted_depth([text_only] * 5, captions, towers, head, grid)
    order = torch.cat([(head["folds"] == f).nonzero().flatten() for f in range(5)])
    whole = pick_depth(sweep_depths(text_only, head["oof"][order], torch.cat([t for _, t in pairs]), grid))
    assert pooled == pytest.approx(whole | {"num_folds": 5}, abs=1e-6)  # linked in 5 batches or in one


def test_decoder_from_reuses_a_trained_decoder_without_training(tmp_path, monkeypatch):
    trained = tmp_path / "trained"
    tiny_captioner().save_pretrained(trained)
    monkeypatch.setattr(decoder, "run_recipe", lambda *a, **k: pytest.fail("the decoder was trained again"))
    monkeypatch.setattr(decoder, "decoder_train_file", lambda args, towers: "decoder_train.safetensors")
    args = parse_args(["--work_dir", str(tmp_path / "work"), "--decoder_from", str(trained)])
    os.makedirs(args.work_dir)
    new_bridge = DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=24, hidden_size=16, num_blocks=1, strength=0.2))
    captioner = decoder.decoder(args, {}, "unused", new_bridge)
    assert captioner.bridge is new_bridge and captioner.config.bridge_config.strength == 0.2
    assert os.path.exists(os.path.join(args.work_dir, "decoder", "model.safetensors"))
    assert DiffusionLinkBridge.from_pretrained(os.path.join(args.work_dir, "bridge_picked")).config.strength == 0.2
    original = tiny_captioner().model
    for name, value in original.multi_modal_projector.state_dict().items():
        torch.testing.assert_close(captioner.multi_modal_projector.state_dict()[name], value)


def test_decodings_are_named_parsed_and_ranked_by_their_rule():
    assert decoding.parse_decoding("greedy") == (1, "combined", 1.0)
    assert decoding.parse_decoding("4:combined@2.0") == (4, "combined", 2.0)
    assert decoding.parse_decoding("8:similarity") == (8, "similarity", 1.0)
    cands = [{"text": "a dog barks", "lm_logprob": -0.2, "audio_text_similarity": 0.1},
             {"text": "rain falls", "lm_logprob": -0.9, "audio_text_similarity": 0.5}]
    run = {"greedy": ["a dog"], "candidates": {2: [cands]}}
    named = dict(decoding.decodings(run, [0.5, 4.0]))
    assert list(named) == ["greedy", "2:lm", "2:similarity", "2:combined@0.5", "2:combined@4.0"]
    assert named["greedy"] == ["a dog"] and named["2:lm"] == ["a dog barks"] and named["2:similarity"] == ["rain falls"]
    assert named["2:combined@0.5"] == ["a dog barks"] and named["2:combined@4.0"] == ["rain falls"]  # -0.15/-0.65; 0.2/1.1
    for name in named:
        assert decoding.parse_decoding(name)[0] == (1 if name == "greedy" else 2)


def test_an_out_of_fold_head_sees_only_augmented_versions_of_its_own_clips():
    augmented = {"clip": torch.tensor([0, 1, 2, 0, 3]), "label": torch.tensor([5, 6, 7, 5, 8]),
                 "partner": torch.tensor([-1, 2, -1, -1, 0]), "audio": torch.arange(5.0)[:, None]}
    keep = torch.tensor([True, False, True, True])  # clip 1 is in the held-out fold
    kept = heads.restrict(augmented, keep)
    assert kept["clip"].tolist() == [0, 2, 0, 3] and kept["audio"].flatten().tolist() == [0.0, 2.0, 3.0, 4.0]
    assert heads.restrict(None, keep) is None


def test_each_fold_bridge_trains_without_its_fold(world, tmp_path):
    captions, towers, head = world
    for fold in range(5):
        train, _ = load_embeddings(bridges.bridge_train_file(str(tmp_path), captions, towers, head, fold))
        validation, _ = load_embeddings(bridges.bridge_validation_file(str(tmp_path), captions, towers, head, fold))
        held = (head["folds"] == fold).nonzero().flatten()
        torch.testing.assert_close(validation["audio_embeds"], head["oof"][held])
        assert len(train["audio_embeds"]) == (10 - len(held)) * 5
        for row in validation["audio_embeds"]:
            assert not (train["audio_embeds"] == row).all(dim=1).any()
    assert len({p.name for p in tmp_path.iterdir()}) == 10  # fold 0 keeps the starter's file names, the rest their own


def test_held_out_clips_are_captioned_through_the_bridge_of_their_fold(world, monkeypatch):
    _, _, head = world
    captioner = tiny_captioner().model
    models = [DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=D, hidden_size=16, num_blocks=1)) for _ in range(5)]
    seen = []

    def fake_decode_all(args, model, tokenizer, audio, counts=None):
        fold = next(i for i, b in enumerate(models) if model.bridge is b)
        seen.append((fold, audio))
        return {"greedy": [f"fold {fold}"] * len(audio), "candidates": {2: [[{"fold": fold}]] * len(audio)},
                "seconds": {1: 1.0, 2: 2.0}}

    monkeypatch.setattr(decoding, "decode_all", fake_decode_all)
    keep = torch.ones(len(head["oof"]), dtype=torch.bool)
    merged = decoding.heldout_decodings(None, captioner, None, head, models, keep)
    assert [fold for fold, _ in seen] == [0, 1, 2, 3, 4]
    for fold, audio in seen:
        torch.testing.assert_close(audio, head["oof"][head["folds"] == fold])
    assert merged["greedy"] == [f"fold {f}" for f in range(5) for _ in range(2)]  # in fold order, 2 clips a fold
    assert [c[0]["fold"] for c in merged["candidates"][2]] == [f for f in range(5) for _ in range(2)]
    assert merged["seconds"] == {1: 5.0, 2: 10.0}
    assert captioner.bridge is models[0] and captioner.config.bridge_config is models[0].config


def test_heldout_mask_keeps_every_first_source_clip_and_a_seeded_draw_of_the_others():
    args = parse_args(["--decoding_heldout_other_clips", "3"])
    head = {"oof": torch.zeros(10, 2), "sources": torch.tensor([0, 0, 1, 1, 2, 2, 2, 1, 0, 2, 0, 0])}  # + 2 test clips
    keep = decoding.heldout_mask(args, head)
    assert keep[[0, 1, 8]].all() and int(keep.sum()) == 6
    assert torch.equal(keep, decoding.heldout_mask(args, head))  # seeded


def test_decode_all_captions_greedy_and_scored_candidates_through_the_captioner():
    pipe = tiny_captioner()
    captioner = pipe.model
    args = parse_args(["--eval_max_new_tokens", "3", "--decoding_candidates", "2"])
    audio = torch.randn(3, captioner.config.embedding_dim)
    run = decoding.decode_all(args, captioner, pipe.tokenizer, audio)
    assert len(run["greedy"]) == 3 and all(isinstance(c, str) for c in run["greedy"])
    assert set(run["seconds"]) == {1, 2} and len(run["candidates"][2]) == 3
    for candidates in run["candidates"][2]:
        assert len(candidates) == 2 and set(candidates[0]) >= {"text", "lm_logprob", "audio_text_similarity"}
    named = dict(decoding.decodings(run, [1.0]))
    assert named["greedy"] == run["greedy"] and len(named["2:similarity"]) == 3


def test_bridge_head_keeps_the_training_clips_of_the_bridge_sources():
    from diffusion_link.starter.build.bridges import bridge_head

    class World:
        sources = {"esc50": None, "0ad-data": None}

    head = {"oof": torch.arange(4.0)[:, None], "folds": torch.tensor([0, 1, 0, 1]),
            "labels": torch.tensor([0, 1, 2, 3, 0, 1]), "sources": torch.tensor([0, 1, 0, 1, 0, 0])}
    linked = bridge_head(parse_args(["--bridge_sources", "esc50"]), World(), head)
    assert linked["oof"].flatten().tolist() == [0.0, 2.0] and linked["folds"].tolist() == [0, 0]
    assert linked["labels"].tolist() == [0, 2, 0, 1]  # the kept training clips', then the test clips'
    assert bridge_head(parse_args(["--bridge_sources", "esc50", "0ad-data"]), World(), head)["oof"].shape == (4, 1)
    with pytest.raises(ValueError, match="--bridge_sources \\['rain'\\]"):
        bridge_head(parse_args(["--bridge_sources", "rain"]), World(), head)
