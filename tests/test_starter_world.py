"""The starter world (`diffusion_link.starter.world`) over several sources: labels indexed across sources, caption rows
per label from the caption table (no "5 captions a class" arithmetic), folds that keep each recording together."""

import collections
import os

import pytest
import torch

from diffusion_link.starter.world import CaptionTable, Source, StarterWorld, source_folds


def tiny_split(name: str, clips: list[tuple[str, str, str]]):
    """A source's split function: every clip (filename, label, recording) on the training side."""

    def split(folder, label_index):
        train = [{"filename": f, "target": label_index[label], "category": label, "src_file": rec}
                 for f, label, rec in clips]
        return {"train": train, "test": [], "split_within_source": []}

    return split


@pytest.fixture
def world():
    birds = Source("birds", "birds/audio", {"crow": ["A crow caws", "Crows caw"], "owl": ["An owl hoots"]},
                   tiny_split("birds", [("b1.wav", "crow", "r1"), ("b2.wav", "crow", "r1"), ("b3.wav", "owl", "r2"),
                                        ("b4.wav", "owl", "r3")]))
    street = Source("street", "street/wav",
                    {"car": ["A car passes", "Traffic", "A car honks", "An engine idles"], "crow": ["A crow calls"]},
                    tiny_split("street", [("s1.wav", "car", "r1"), ("s2.wav", "car", "r1"), ("s3.wav", "car", "r4"),
                                          ("s4.wav", "crow", "r5")]))
    return StarterWorld([birds, street], data="/data")


def test_labels_are_indexed_across_sources_and_caption_rows_come_from_the_table(world):
    captions = world.captions
    assert captions.labels == ["crow", "owl", "car"]
    assert captions.texts == ["A crow caws", "Crows caw", "A crow calls", "An owl hoots",
                              "A car passes", "Traffic", "A car honks", "An engine idles"]
    assert captions.class_caption_rows("crow") == [0, 1, 2]  # both sources' captions of a shared label
    assert captions.class_caption_rows(1) == [3] and captions.class_caption_rows("car") == [4, 5, 6, 7]
    assert captions.row_labels.tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert captions.first_caption_rows(torch.tensor([2, 0, 1])).tolist() == [4, 0, 3]
    clips, rows = captions.pair_rows([1, 2])
    assert clips.tolist() == [0, 1, 1, 1, 1] and rows.tolist() == [3, 4, 5, 6, 7]
    drawn = captions.random_caption_rows([0, 1, 2] * 20, torch.Generator().manual_seed(0))
    assert all(captions.row_labels[r] == l for r, l in zip(drawn, [0, 1, 2] * 20))
    assert set(drawn[2::3]) == {4, 5, 6, 7}  # every caption of a label can be drawn
    embeds = torch.eye(8)
    prototypes = captions.prototypes(embeds)
    assert prototypes.shape == (3, 8)
    torch.testing.assert_close(prototypes[1], embeds[3])
    with pytest.raises(ValueError, match="rows"):
        captions.prototypes(torch.zeros(5, 8))
    with pytest.raises(KeyError, match="dog"):
        captions.class_caption_rows("dog")


def test_the_split_tags_each_clip_with_its_source_and_finds_its_audio(world):
    split = world.split()
    assert [c["source"] for c in split["train"]] == ["birds"] * 4 + ["street"] * 4
    assert [c["target"] for c in split["train"]] == [0, 0, 1, 1, 2, 2, 2, 0]
    assert world.audio_path(split["train"][5]) == os.path.join("/data", "street/wav", "s2.wav")
    assert world.references([1]) == [["An owl hoots"]]


def test_folds_keep_each_recording_of_each_source_together(world):
    clips = world.split()["train"]
    folds = source_folds(clips, num_folds=2, seed=0)
    assert folds == source_folds(clips, num_folds=2, seed=0)
    by_recording = collections.defaultdict(set)
    for clip, fold in zip(clips, folds):
        by_recording[clip["source"], clip["src_file"]].add(fold)
    assert all(len(f) == 1 for f in by_recording.values())
    # "r1" of birds (crow) and "r1" of street (car) are different recordings
    assert len(by_recording) == 6
    # crow has three recordings (birds r1 of 2 clips, street r5 of 1): both folds hold a crow clip
    assert {f for c, f in zip(clips, folds) if c["category"] == "crow"} == {0, 1}


def test_a_source_needs_captions_for_every_label_and_a_world_distinct_sources():
    with pytest.raises(ValueError, match="no caption"):
        Source("x", "x", {"a": []}, tiny_split("x", []))
    source = Source("x", "x", {"a": ["an a"]}, tiny_split("x", []))
    with pytest.raises(ValueError, match="distinct"):
        StarterWorld([source, source])
    with pytest.raises(ValueError, match="at least one"):
        StarterWorld([])


def test_the_esc50_world_is_50_labels_of_5_captions():
    captions = StarterWorld().captions
    assert len(captions.labels) == 50 and len(captions) == 250
    assert torch.equal(captions.row_labels, torch.arange(50).repeat_interleave(5))
    assert captions.class_caption_rows("hand_saw") == [245, 246, 247, 248, 249]
    assert CaptionTable([{"dog": ["a"]}]).index("dog") == 0
