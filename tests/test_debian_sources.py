"""The starter's Debian sources: caption variants, near-duplicate groups, the sources over extracted recordings, and
class accuracy within each clip's own source."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from diffusion_link.metrics import caption_class_correct, class_accuracy
from diffusion_link.starter.debian.manifest import Recording, check_package, extract_found, md5, recording_file, write_manifest
from diffusion_link.starter.debian.packages import FetchedPackage
from diffusion_link.starter.debian.sources import caption_variants, debian_sources, near_duplicate_key, verb_base
from diffusion_link.starter.world import StarterWorld, source_folds


@pytest.mark.parametrize("concept, variants", [
    ("a pig grunting", ["A pig grunting", "A pig grunts", "A pig is grunting", "A pig grunts nearby",
                        "The sound of a pig grunting"]),
    ("chickens clucking", ["Chickens clucking", "Chickens cluck", "Chickens are clucking", "Chickens cluck nearby",
                           "The sound of chickens clucking"]),
    ("chopping wood with an axe", ["Chopping wood with an axe", "Someone chops wood with an axe",
                                   "Someone is chopping wood with an axe", "Someone chops wood with an axe nearby",
                                   "The sound of chopping wood with an axe"]),
    ("a door opening and closing", ["A door opening and closing", "A door opens and closes",
                                    "A door is opening and closing", "A door opens and closes nearby",
                                    "The sound of a door opening and closing"]),
    ("an explosion", ["An explosion", "The sound of an explosion", "An explosion is heard", "An explosion nearby",
                      "A recording of an explosion"]),
    ("a boiling pot", ["A boiling pot", "The sound of a boiling pot", "A boiling pot is heard", "A boiling pot nearby",
                       "A recording of a boiling pot"]),
])
def test_caption_variants(concept, variants):
    assert caption_variants(concept) == variants


@pytest.mark.parametrize("word, base", [("grunting", "grunt"), ("chopping", "chop"), ("striking", "strike"),
                                        ("crackling", "crackle"), ("hissing", "hiss"), ("rolling", "roll"),
                                        ("chiselling", "chisel"), ("crying", "cry")])
def test_verb_base(word, base):
    assert verb_base(word) == base


def rec(member, caption="cattle mooing", package="tiny-sounds", data=None):
    data = data if data is not None else member.encode()
    return Recording(package, "1.0-1", "usr/share/a.zip", member, md5(data), "CC0", caption)


def test_near_duplicate_key_groups_numbered_takes_of_one_folder():
    keys = {near_duplicate_key(rec(m)) for m in ("audio/fauna/cattle_01.ogg", "audio/fauna/cattle_02.ogg",
                                                 "audio/fauna/cattle3.ogg")}
    assert keys == {"tiny-sounds:audio/fauna/cattle"}
    assert near_duplicate_key(rec("audio/fauna/cattle_01.ogg")) != near_duplicate_key(rec("audio/other/cattle_01.ogg"))
    assert near_duplicate_key(rec("audio/fauna/cattle_01.ogg")) != near_duplicate_key(rec("audio/fauna/sheep_01.ogg"))


def tone(seconds=0.5, rate=22050, freq=440.0):
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def wav_bytes(tmp_path, name, freq):
    path = tmp_path / name
    sf.write(path, tone(freq=freq), 22050)
    return path.read_bytes()


@pytest.fixture
def tiny_debian(tmp_path):
    """A manifest of two packages (a concept shared between them), their captions file and extracted audio."""
    data = {m: wav_bytes(tmp_path, f"{i}.wav", 200 + 100 * i)
            for i, m in enumerate(["cow_01.wav", "cow_02.wav", "door.wav", "cow_03.wav"])}
    rows = [Recording("0ad-data", "1", "usr/a.zip", "cow_01.wav", md5(data["cow_01.wav"]), "CC0", "a cow mooing"),
            Recording("0ad-data", "1", "usr/a.zip", "cow_02.wav", md5(data["cow_02.wav"]), "CC0", "a cow mooing"),
            Recording("0ad-data", "1", "usr/a.zip", "door.wav", md5(data["door.wav"]), "CC0", "a door creaking"),
            Recording("minetest-data", "2", "usr/m/cow_03.wav", "", md5(data["cow_03.wav"]), "CC0", "a cow mooing")]
    manifest = tmp_path / "manifest.tsv"
    write_manifest(rows, str(manifest))
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"classes": {c: caption_variants(c) for c in ("a cow mooing", "a door creaking")}}))
    audio = tmp_path / "audio"
    for r in rows:
        check = check_package(FetchedPackage(r.package, r.version, "", str(tmp_path)), [])
        check.found[r.md5] = data[r.member or "cow_03.wav"]
        assert extract_found(check, [r], str(audio)) == 1
        assert extract_found(check, [r], str(audio)) == 0  # kept when already there
    return {"manifest": str(manifest), "captions": str(captions), "audio": str(audio), "rows": rows}


def test_debian_sources_read_the_extracted_recordings(tiny_debian):
    sources = debian_sources(["0ad-data", "minetest-data"], tiny_debian["audio"], tiny_debian["manifest"],
                             tiny_debian["captions"])
    world = StarterWorld(sources)
    assert world.labels == ["a cow mooing", "a door creaking"]
    assert world.captions.captions("a cow mooing") == caption_variants("a cow mooing")  # shared label, each text once
    split = world.split()
    assert split["test"] == []
    assert [(c["source"], c["name"]) for c in split["train"]] == [
        ("0ad-data", "usr/a.zip/cow_01.wav"), ("0ad-data", "usr/a.zip/cow_02.wav"), ("0ad-data", "usr/a.zip/door.wav"),
        ("minetest-data", "usr/m/cow_03.wav")]
    for clip, row in zip(split["train"], tiny_debian["rows"]):
        with open(world.audio_path(clip), "rb") as f:
            assert md5(f.read()) == row.md5
    # The two takes of one cow share a recording group, so a fold never splits them.
    folds = source_folds(split["train"], num_folds=2)
    assert folds[0] == folds[1]
    assert world.source_label_mask().tolist() == [[True, True], [True, False]]


def test_debian_source_without_its_audio_says_how_to_fetch_it(tiny_debian, tmp_path):
    (sources,) = debian_sources(["minetest-data"], str(tmp_path / "empty"), tiny_debian["manifest"], tiny_debian["captions"])
    with pytest.raises(FileNotFoundError, match=r"training/debian_sounds.py --packages minetest-data"):
        StarterWorld([sources]).split()


def test_debian_sources_refuse_unknown_packages_and_concepts_without_captions(tiny_debian, tmp_path):
    with pytest.raises(ValueError, match="Unknown Debian collections"):
        debian_sources(["no-such-package"], tiny_debian["audio"], tiny_debian["manifest"], tiny_debian["captions"])
    captions = tmp_path / "few.json"
    captions.write_text(json.dumps({"classes": {"a cow mooing": ["A cow moos"]}}))
    with pytest.raises(ValueError, match="no caption variants for the concepts \\['a door creaking'\\]"):
        debian_sources(["0ad-data"], tiny_debian["audio"], tiny_debian["manifest"], str(captions))


def test_class_accuracy_within_each_clips_own_labels():
    prototypes = torch.eye(3)
    embeds = torch.tensor([[0.2, 1.0, 0.0], [0.0, 0.2, 1.0]])  # nearest: class 1, class 2
    labels = torch.tensor([0, 1])
    assert class_accuracy(embeds, labels, prototypes) == 0.0
    candidates = torch.tensor([[True, False, False], [True, True, False]])  # clip 0 may only be class 0, clip 1: 0 or 1
    assert class_accuracy(embeds, labels, prototypes, candidates) == 1.0
    right = caption_class_correct(["a", "b"], labels, prototypes, lambda texts: embeds[: len(texts)], candidates)
    assert right == [True, True]
    with pytest.raises(ValueError, match="`candidates` has shape"):
        class_accuracy(embeds, labels, prototypes, candidates[:, :2])
