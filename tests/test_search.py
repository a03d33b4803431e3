"""`diffusion-link search`: a text query ranks the sounds under a folder in the joint space; embeddings cached by
content and model; unreadable files reported, never dropped silently."""

import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from diffusion_link.apps.cli import main

from .conftest import write_wav


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.wav", "b.wav", "sub/c.flac"]):
        write_wav(folder / name, seed=i + 1, rate=16000, amplitude=0.05 * (i + 1))
    (folder / "broken.wav").write_bytes(b"not audio at all")
    return folder


def test_search_ranks_by_joint_space_cosine_and_caches_by_content(saved_tiny_captioner, clips, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("DIFFUSION_LINK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "hits.jsonl"
    code = main(["search", "a door creaking", str(clips), "--model", str(saved_tiny_captioner), "--output", str(out)])
    assert code == 1  # broken.wav failed, and says so
    err = capsys.readouterr().err
    assert "broken.wav" in err and "ranked 3 of 4 files (3 embedded now" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert {r["query"] for r in rows} == {"a door creaking"}
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    # The scores are the cosines of the captioner's own audio and text embeddings.
    from transformers import pipeline

    from diffusion_link.audio_io import prepare_audio

    pipe = pipeline("audio-captioning", model=str(saved_tiny_captioner))
    text = pipe.model.embed_text(["a door creaking"])[0]
    for row in rows:
        audio = pipe.model.embed_audio(waveforms=[prepare_audio(row["file"], pipe.feature_extractor.sampling_rate).waveform],
                                       feature_extractor=pipe.feature_extractor)[0]
        assert row["score"] == pytest.approx(float(F.normalize(audio, dim=-1) @ F.normalize(text, dim=-1)), abs=1e-3)
    # A second query embeds nothing again; an edited file is embedded anew.
    assert main(["search", "rain", str(clips), "--model", str(saved_tiny_captioner), "--top-k", "2"]) == 1
    captured = capsys.readouterr()
    assert "(0 embedded now" in captured.err
    assert len([line for line in captured.out.splitlines() if line.strip()[:1].isdigit()]) == 2  # the table, top 2
    write_wav(clips / "a.wav", seed=9, rate=16000)
    os.remove(clips / "broken.wav")
    assert main(["search", "rain", str(clips), "--model", str(saved_tiny_captioner)]) == 0
    assert "(1 embedded now" in capsys.readouterr().err


def test_search_refuses_bad_input_with_a_message(saved_tiny_captioner, clips, tmp_path, capsys):
    assert main(["search", "rain", str(clips), "--model", str(saved_tiny_captioner), "--top-k", "0"]) == 2
    assert "argument --top-k: expected a positive integer, got '0'" in capsys.readouterr().err
    assert main(["search", "  ", str(clips / "a.wav"), "--model", str(saved_tiny_captioner)]) == 2
    assert "query must be a non-empty text" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["search", "rain", str(empty), "--model", str(saved_tiny_captioner)]) == 2
    assert "no audio file under" in capsys.readouterr().err
