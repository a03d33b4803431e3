import os

import pytest
import torch

from diffusion_link.experiments.embedding_files import load_embeddings, save_embeddings


def test_round_trip_with_metadata(tmp_path):
    tensors = {"audio_embeds": torch.randn(3, 5), "text_embeds": torch.randn(3, 5), "unpaired_text_embeds": torch.randn(2, 5)}
    path = tmp_path / "e.safetensors"
    save_embeddings(path, tensors, metadata={"files": ["a.wav", "b.wav", "c.wav"], "encoder": "tiny"})
    loaded, meta = load_embeddings(path)
    for key in tensors:
        torch.testing.assert_close(loaded[key], tensors[key])
    assert meta == {"files": ["a.wav", "b.wav", "c.wav"], "encoder": "tiny"}
    assert [p for p in os.listdir(tmp_path)] == ["e.safetensors"]  # no temporary file left behind


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"audio_embeds": torch.randn(3, 5)}, "text_embeds"),
        ({"audio_embeds": torch.randn(3, 5), "text_embeds": torch.randn(2, 5)}, "same number of rows"),
        ({"audio_embeds": torch.randn(3, 5), "text_embeds": torch.randn(3, 4)}, "one D"),
        ({"text_embeds": torch.randn(3, 5), "audio_embeds": torch.randn(3, 5), "labels": torch.randn(3)}, "unknown"),
        ({"text_embeds": torch.randn(0, 5), "audio_embeds": torch.randn(0, 5)}, "empty batch"),
        ({"unpaired_text_embeds": torch.full((2, 5), float("nan"))}, "NaN"),
        ({"text_embeds": torch.randn(3, 5)}, "come together"),
    ],
)
def test_invalid_files_are_rejected_naming_the_file(tmp_path, tensors, message):
    with pytest.raises(ValueError, match=message):
        save_embeddings(tmp_path / "bad.safetensors", tensors)


def test_unreadable_file_error_names_the_file(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        load_embeddings(path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_embeddings(tmp_path / "missing.safetensors")
