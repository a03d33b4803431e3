import collections
import json
import os

import pytest

from diffusion_link.starter.world import (
    ESC50_CAPTIONS_FILE, SPLIT_FILE, StarterWorld, esc50_split, read_audiocaps_clotho_captions, read_class_captions,
    source_folds, write_split,
)

from .conftest import REPO_ROOT


DATA = os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
needs_data = pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "esc50")),
                                reason=f"the shared ESC-50 data is not at {DATA} (set DIFFUSION_LINK_DATA)")


def test_our_class_captions_cover_every_esc50_class():
    captions = list(read_class_captions().items())
    assert len(captions) == 50 and all(len(c) == 5 and len(set(c)) == 5 for _, c in captions)
    assert captions[0][0] == "dog" and captions[49][0] == "hand_saw"
    with open(ESC50_CAPTIONS_FILE, encoding="utf-8") as f:
        assert "CC0" in json.load(f)["license"]


@needs_data
def test_split_is_5_train_3_test_per_class_deterministic_and_disjoint():
    split = esc50_split(DATA)
    assert split == esc50_split(DATA)
    train, test = split["train"], split["test"]
    assert len(train) == 250 and len(test) == 150
    assert not {c["filename"] for c in train} & {c["filename"] for c in test}
    per_class = collections.Counter(c["target"] for c in test)
    assert set(per_class.values()) == {3} and len(per_class) == 50
    # Clips of one recording stay on one side, except in the classes the split lists.
    test_sources = {(c["target"], c["src_file"]) for c in test}
    leaks = {c["category"] for c in train if (c["target"], c["src_file"]) in test_sources}
    assert leaks <= set(split["split_within_source"]) and len(split["split_within_source"]) <= 5


@needs_data
def test_caption_corpus_is_audiocaps_train_plus_clotho_development():
    captions = read_audiocaps_clotho_captions(DATA)
    assert len(captions) > 60000 and all(captions)


@needs_data
def test_committed_split_matches_the_rule():
    if not os.path.exists(SPLIT_FILE):
        pytest.skip("no committed starter")
    with open(SPLIT_FILE, encoding="utf-8") as f:
        committed = json.load(f)
    assert [c["filename"] for c in committed["test"]] == [c["filename"] for c in esc50_split(DATA)["test"]]


@needs_data
def test_the_world_writes_the_committed_split_byte_for_byte(tmp_path):
    if not os.path.exists(SPLIT_FILE):
        pytest.skip("no committed starter")
    write_split(StarterWorld(data=DATA).split(), str(tmp_path / "split.json"))
    assert (tmp_path / "split.json").read_bytes() == open(SPLIT_FILE, "rb").read()


def test_source_folds_keep_recordings_together_and_spread_each_class():
    # Class 0: 5 one-clip recordings; class 1: recordings of 2, 2 and 1 clips; class 2: one recording of 3 clips.
    clips = ([{"target": 0, "src_file": f"a{i}"} for i in range(5)]
             + [{"target": 1, "src_file": s} for s in ("b0", "b0", "b1", "b1", "b2")]
             + [{"target": 2, "src_file": "c0"} for _ in range(3)])
    folds = source_folds(clips, num_folds=5, seed=0)
    assert folds == source_folds(clips, num_folds=5, seed=0) and set(folds) <= set(range(5))
    by_source = collections.defaultdict(set)
    for clip, fold in zip(clips, folds):
        by_source[clip["src_file"]].add(fold)
    assert all(len(f) == 1 for f in by_source.values())  # a recording never straddles folds
    assert len(set(folds[:5])) == 5  # one clip of class 0 in each fold
    assert len(set(folds[5:10])) == 3  # class 1's three recordings in three folds
    with pytest.raises(ValueError, match="num_folds"):
        source_folds(clips, num_folds=1)


@needs_data
def test_source_folds_of_the_starter_leave_most_training_clips_4_of_their_class():
    train = esc50_split(DATA)["train"]
    folds = source_folds(train, 5, seed=0)
    kept = [sum(1 for o, g in zip(train, folds) if o["target"] == c["target"] and g != f) for c, f in zip(train, folds)]
    # Stratified: 166 of 250 held-out clips keep 4 of their class's 5 clips in the other folds (a random
    # assignment of recordings to folds keeps 82).
    assert sum(k == 4 for k in kept) >= 150
    assert sorted(collections.Counter(folds).values())[0] >= 45
