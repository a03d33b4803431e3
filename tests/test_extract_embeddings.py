import numpy as np
import pytest
import soundfile as sf
import torch

from diffusion_link.embedding_data import load_embeddings
from diffusion_link.testing import tiny_clap
from training import extract_embeddings


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-clap")
    model, processor = tiny_clap(seed=0)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(0)
    audio_dir = tmp_path / "clips"
    audio_dir.mkdir()
    sf.write(audio_dir / "tone.wav", 0.3 * np.sin(np.linspace(0, 2000, 44100 * 2)).astype(np.float32), 44100)
    sf.write(audio_dir / "noise.flac", (0.1 * rng.standard_normal((16000, 2))).astype(np.float32), 16000)
    sf.write(audio_dir / "long.wav", (0.1 * rng.standard_normal(48000 * 23)).astype(np.float32), 48000)
    (tmp_path / "pairs.csv").write_text(
        "file_name,caption\ntone.wav,a steady tone\nnoise.flac,static noise\ntone.wav,a beep\nlong.wav,a long hiss\n"
    )
    (tmp_path / "texts.txt").write_text("a dog barks\n\nrain on a roof\n")
    return tmp_path


def test_extracts_paired_and_unpaired_embeddings(clap_dir, clips):
    out = clips / "embeds.safetensors"
    argv = ["--model_name_or_path", str(clap_dir), "--captions_file", str(clips / "pairs.csv"), "--audio_dir",
            str(clips / "clips"), "--unpaired_captions_file", str(clips / "texts.txt"), "--output_file", str(out),
            "--batch_size", "2"]
    extract_embeddings.main(argv)
    tensors, meta = load_embeddings(out)
    assert tensors["audio_embeds"].shape == (4, 24) and tensors["text_embeds"].shape == (4, 24)
    assert tensors["unpaired_text_embeds"].shape == (2, 24)  # the empty line is skipped
    torch.testing.assert_close(tensors["audio_embeds"].norm(dim=-1), torch.ones(4))
    # A file with two captions is embedded once and repeated.
    torch.testing.assert_close(tensors["audio_embeds"][0], tensors["audio_embeds"][2])
    assert meta["file_names"] == ["tone.wav", "noise.flac", "tone.wav", "long.wav"]
    assert meta["captions"][1] == "static noise"
    assert meta["unpaired_captions"] == ["a dog barks", "rain on a roof"]
    # Deterministic: a second run (the 23 s clip is windowed, not randomly cropped) gives the same numbers.
    extract_embeddings.main(argv[:-2] + ["--batch_size", "3"])
    again, _ = load_embeddings(out)
    torch.testing.assert_close(again["audio_embeds"], tensors["audio_embeds"], atol=1e-5, rtol=0)


def test_missing_audio_file_is_named(clap_dir, clips):
    (clips / "bad.csv").write_text("file_name,caption\nmissing.wav,nothing\n")
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        extract_embeddings.main(["--model_name_or_path", str(clap_dir), "--captions_file", str(clips / "bad.csv"),
                                 "--audio_dir", str(clips / "clips"), "--output_file", str(clips / "x.safetensors")])


def test_empty_caption_rows_are_reported(clap_dir, clips):
    (clips / "empty.csv").write_text("file_name,caption\ntone.wav,\n")
    with pytest.raises(ValueError, match="empty caption"):
        extract_embeddings.main(["--model_name_or_path", str(clap_dir), "--captions_file", str(clips / "empty.csv"),
                                 "--audio_dir", str(clips / "clips"), "--output_file", str(clips / "x.safetensors")])


def test_needs_some_captions():
    with pytest.raises(ValueError, match="captions_file"):
        extract_embeddings.main(["--model_name_or_path", "x", "--output_file", "y"])
