"""Leave one source out: the held-out world's tensors are rows of the full world's, and the search precision and
the never-named concepts are counted as documented."""

import pytest
import torch

from diffusion_link.experiments.leave_one_source_out import never_named, search_precision, source_clips, subset_towers
from diffusion_link.starter.world import Source, StarterWorld


def source(name, captions, clips):
    def split(folder, label_index):
        return {"train": [dict(c, target=label_index[c["category"]]) for c in clips], "test": [],
                "split_within_source": []}

    return Source(name=name, audio_dir="", captions=captions, split=split)


@pytest.fixture
def worlds():
    a = source("a", {"cow": ["A cow moos"], "door": ["A door creaks"]},
               [{"filename": "1.wav", "category": "cow", "src_file": "1"},
                {"filename": "2.wav", "category": "door", "src_file": "2"}])
    b = source("b", {"cow": ["A cow moos", "Cows moo"], "rain": ["Rain falls"]},
               [{"filename": "1.wav", "category": "rain", "src_file": "1"},
                {"filename": "3.wav", "category": "cow", "src_file": "3"}])
    full = StarterWorld([a, b])
    return full, StarterWorld([b])


def test_subset_towers_takes_the_held_out_worlds_rows_of_the_full_worlds_towers(worlds):
    full, without_a = worlds
    split, sub_split = full.split(), without_a.split()
    towers = {"audio": torch.arange(4.0)[:, None], "esc_text": torch.arange(float(len(full.captions)))[:, None],
              "corpus_text": torch.zeros(1, 1)}
    sub = subset_towers(full, split, towers, without_a, sub_split)
    assert sub["audio"].flatten().tolist() == [2.0, 3.0]  # b's clips, 1.wav of b (not of a) and 3.wav
    assert [full.captions.texts[int(i)] for i in sub["esc_text"].flatten()] == without_a.captions.texts
    clips, audio = source_clips(full, split, towers, "a")
    assert [c["filename"] for c in clips] == ["1.wav", "2.wav"] and audio.flatten().tolist() == [0.0, 1.0]


def test_search_precision_counts_each_concepts_top_clips():
    raw = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]])
    local = torch.tensor([0, 0, 1, 1])
    # Query "x" points at clips 0, 1, 3 (top 2: clips 0, 1, both concept 0); query "y" at clip 2 first, then 3.
    queries = {"x": torch.tensor([1.0, 0.0]), "y": torch.tensor([0.0, 1.0])}
    assert search_precision(raw, local, ["x", "y"], lambda texts: torch.stack([queries[t] for t in texts])) == 1.0
    local = torch.tensor([0, 1, 1, 0])  # now x's top 2 (clips 0, 1) hold one of concept 0, y's (2, 3) one of concept 1
    assert search_precision(raw, local, ["x", "y"], lambda texts: torch.stack([queries[t] for t in texts])) == 0.5


def test_never_named_lists_concepts_without_a_right_caption():
    rows = {"a": {"examples": [{"concept": "cow", "right": False}, {"concept": "cow", "right": True},
                               {"concept": "door", "right": False}]},
            "b": {"examples": [{"concept": "rain", "right": False}]}}
    assert never_named(rows) == ["door", "rain"]
