"""The starter's joint space in users' hands, on real held-out clips: `diffusion-link search` and transformers' own
`pipeline("zero-shot-audio-classification")` with the starter's encoder."""

import json
import os

import pytest
import torch

from diffusion_link.starter import STARTER_DIR, default_captioner
from diffusion_link.starter.world import read_split

from .conftest import REPO_ROOT


DATA = os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
CLASSES = {"dog": "A dog barks", "rain": "Rain falls", "siren": "A siren wails", "church_bells": "Church bells ring",
           "crying_baby": "A baby cries"}

pytestmark = [
    pytest.mark.skipif(default_captioner() is None, reason="this checkout has no starter captioner"),
    pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "esc50")), reason=f"no ESC-50 clips at {DATA}"),
    pytest.mark.integration,  # the real starter model
]


@pytest.fixture(scope="module")
def test_clips(tmp_path_factory):
    """The starter's held-out (test-split) clips of five classes, linked into one folder: {file: class}."""
    folder = tmp_path_factory.mktemp("esc50-test-clips")
    clips = {}
    for clip in read_split()["test"]:
        if clip["category"] in CLASSES and clip.get("source", "esc50") == "esc50":
            link = folder / clip["filename"]
            os.symlink(os.path.join(DATA, "esc50", "audio", clip["filename"]), link)
            clips[str(link)] = clip["category"]
    assert len(clips) == 15
    return folder, clips


def test_search_finds_the_queried_sound_among_held_out_clips(test_clips, tmp_path, capsys):
    from diffusion_link.apps.cli import main

    folder, clips = test_clips
    hits = []
    for category, query in CLASSES.items():
        out = tmp_path / f"{category}.jsonl"
        assert main(["search", query, str(folder), "--top-k", "3", "--output", str(out),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["rank"] for r in rows] == [1, 2, 3]
        hits += [clips[r["file"]] == category for r in rows]
    assert "(0 embedded now" in capsys.readouterr().err  # the last query read every clip from the cache
    assert sum(hits) / len(hits) >= 0.6  # precision@3 over five queries (chance: 0.2)


def test_transformers_zero_shot_pipeline_runs_on_the_starter_encoder(test_clips):
    from transformers import pipeline

    from diffusion_link import StarterAudioTextEncoder, StarterFeatureExtractor
    from diffusion_link.audio_io import load_audio
    from diffusion_link.starter.world import text_tokenizer

    encoder = StarterAudioTextEncoder.from_pretrained(os.path.join(STARTER_DIR, "encoder"))
    extractor = StarterFeatureExtractor.from_pretrained(os.path.join(STARTER_DIR, "encoder"))
    classify = pipeline("zero-shot-audio-classification", model=encoder, feature_extractor=extractor,
                        tokenizer=text_tokenizer(encoder))
    _, clips = test_clips
    labels = list(CLASSES.values())
    right = 0
    for path, category in clips.items():
        result = classify(load_audio(path, extractor.sampling_rate), candidate_labels=labels, hypothesis_template="{}")
        assert sorted(r["label"] for r in result) == sorted(labels)
        assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-4)
        right += result[0]["label"] == CLASSES[category]
    assert right / len(clips) >= 0.6  # chance: 0.2
    # The pipeline's scores are the joint space's: softmax of the scaled cosines.
    path = next(iter(clips))
    features = extractor(load_audio(path, extractor.sampling_rate), return_tensors="pt")
    tokens = text_tokenizer(encoder)(labels, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = encoder(**tokens, **features).logits_per_audio[0]
    result = {r["label"]: r["score"] for r in classify(load_audio(path, extractor.sampling_rate),
                                                       candidate_labels=labels, hypothesis_template="{}")}
    assert [result[l] for l in labels] == pytest.approx(logits.softmax(0).tolist(), abs=1e-5)
