import numpy as np
import pytest
import soundfile as sf
import torch

from diffusion_link.experiments.embedding_files import load_embeddings
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


def _argv(clap_dir, clips, out, *extra):
    return ["--model_name_or_path", str(clap_dir), "--captions_file", str(clips / "pairs.csv"), "--audio_dir",
            str(clips / "clips"), "--unpaired_captions_file", str(clips / "texts.txt"), "--output_file", str(out),
            "--batch_size", "1", *extra]


def _count_encoder_calls(monkeypatch, fail_after: int | None = None) -> dict:
    """Wrap the script's encoder calls: count them and, with `fail_after`, raise on the call after that many."""
    calls = {"audio": 0, "text": 0}

    def wrap(fn, kind):
        def counted(*args, **kwargs):
            if fail_after is not None and calls["audio"] + calls["text"] >= fail_after:
                raise KeyboardInterrupt("simulated interruption")
            calls[kind] += 1
            return fn(*args, **kwargs)
        return counted

    monkeypatch.setattr(extract_embeddings, "embed_audio", wrap(extract_embeddings.embed_audio, "audio"))
    monkeypatch.setattr(extract_embeddings, "embed_text", wrap(extract_embeddings.embed_text, "text"))
    return calls


def test_interrupted_extraction_resumes_without_recomputing_finished_batches(clap_dir, clips, monkeypatch):
    reference = clips / "reference.safetensors"
    with monkeypatch.context() as m:
        calls = _count_encoder_calls(m)
        extract_embeddings.main(_argv(clap_dir, clips, reference))
    # 3 unique files one per batch, 4 captions in one batch of 4, 2 unpaired captions in one batch.
    assert calls == {"audio": 3, "text": 2}
    assert not (clips / "reference.safetensors.partial").exists()  # the shards go once the output is written

    out = clips / "embeds.safetensors"
    with monkeypatch.context() as m:
        _count_encoder_calls(m, fail_after=2)  # dies on the third audio batch
        with pytest.raises(KeyboardInterrupt):
            extract_embeddings.main(_argv(clap_dir, clips, out))
    assert not out.exists()  # no half output
    assert sorted(p.name for p in (clips / "embeds.safetensors.partial").iterdir()) == [
        "audio-000000000.safetensors", "audio-000000001.safetensors"]

    with monkeypatch.context() as m:
        calls = _count_encoder_calls(m)
        extract_embeddings.main(_argv(clap_dir, clips, out))
    assert calls == {"audio": 1, "text": 2}  # the two finished audio batches were read back, not recomputed
    (a, meta_a), (b, meta_b) = load_embeddings(reference), load_embeddings(out)
    assert meta_a == meta_b and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not (clips / "embeds.safetensors.partial").exists()
    assert sorted(p.name for p in clips.iterdir() if "safetensors" in p.name) == ["embeds.safetensors", "reference.safetensors"]


def test_damaged_or_stale_shards_are_recomputed_not_trusted(clap_dir, clips, monkeypatch):
    out = clips / "embeds.safetensors"

    def interrupted_run():
        with monkeypatch.context() as m:
            _count_encoder_calls(m, fail_after=2)
            with pytest.raises(KeyboardInterrupt):
                extract_embeddings.main(_argv(clap_dir, clips, out))

    def rerun():
        with monkeypatch.context() as m:
            calls = _count_encoder_calls(m)
            return extract_embeddings.main(_argv(clap_dir, clips, out)), calls["audio"]

    interrupted_run()
    shard = clips / "embeds.safetensors.partial" / "audio-000000001.safetensors"
    shard.write_bytes(shard.read_bytes()[:40])  # cut short (a copy that died half way)
    tensors, audio_calls = rerun()
    assert audio_calls == 2  # shard 0 reused; the damaged shard 1 and the missing shard 2 computed
    fresh = extract_embeddings.main(_argv(clap_dir, clips, clips / "fresh.safetensors"))
    assert torch.equal(tensors["audio_embeds"], fresh["audio_embeds"])

    interrupted_run()
    # The list changed before the rerun (another first file): no shard holds the same items any more.
    (clips / "pairs.csv").write_text("file_name,caption\nnoise.flac,static noise\ntone.wav,a beep\nlong.wav,a hiss\n")
    tensors, audio_calls = rerun()
    assert audio_calls == 3
    torch.testing.assert_close(tensors["audio_embeds"][1], fresh["audio_embeds"][0], atol=0, rtol=0)  # tone.wav


def test_on_error_skip_drops_unreadable_files_and_names_them(clap_dir, clips, caplog):
    (clips / "clips" / "broken.wav").write_bytes(b"not audio")
    (clips / "pairs.csv").write_text(
        "file_name,caption\ntone.wav,a steady tone\nmissing.wav,nothing\nbroken.wav,noise\ntone.wav,a beep\n")
    out = clips / "embeds.safetensors"
    argv = ["--model_name_or_path", str(clap_dir), "--captions_file", str(clips / "pairs.csv"), "--audio_dir",
            str(clips / "clips"), "--output_file", str(out), "--batch_size", "2"]
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        extract_embeddings.main(argv)  # the default stops at the first unreadable file
    with caplog.at_level("WARNING"):
        tensors = extract_embeddings.main(argv + ["--on_error", "skip"])
    _, meta = load_embeddings(out)
    assert meta["file_names"] == ["tone.wav", "tone.wav"] and meta["captions"] == ["a steady tone", "a beep"]
    assert tensors["audio_embeds"].shape == (2, 24) and tensors["text_embeds"].shape == (2, 24)
    assert "missing.wav" in caplog.text and "broken.wav" in caplog.text
    assert "skipped 2 of 3 audio files" in caplog.text
    with pytest.raises(ValueError, match="on_error"):
        extract_embeddings.ExtractionArguments(model_name_or_path="x", output_file="y", captions_file="z", on_error="warn")


def _many_clips(root, count: int = 6):
    """`count` short clips and a pairs CSV with two captions for the first one."""
    rng = np.random.default_rng(1)
    audio_dir = root / "many"
    audio_dir.mkdir(exist_ok=True)
    names = [f"clip{i}.wav" for i in range(count)]
    for i, name in enumerate(names):
        sf.write(audio_dir / name, (0.05 * (i + 1) * rng.standard_normal(16000)).astype(np.float32), 16000)
    rows = [f"{n},sound number {i}" for i, n in enumerate(names)] + [f"{names[0]},again the first"]
    (root / "many.csv").write_text("file_name,caption\n" + "\n".join(rows) + "\n")
    (root / "many_texts.txt").write_text("\n".join(f"caption {i}" for i in range(9)) + "\n")
    return audio_dir


def assert_same_file(path, reference):
    """Equal tensors (bit for bit) and metadata. Not the bytes: safetensors writes its metadata map in hash order,
    which differs between any two processes."""
    (tensors, meta), (expected, expected_meta) = load_embeddings(path), load_embeddings(reference)
    assert meta == expected_meta and set(tensors) == set(expected)
    for key in expected:
        assert torch.equal(tensors[key], expected[key]), key


def _torchrun(argv, port, nproc: int = 2):
    """The script under torchrun; `nproc=0`: one plain process. Every process with one thread, so that the kernels
    (and hence the last bits) are the same in every run."""
    import os
    import subprocess
    import sys

    from .conftest import REPO_ROOT

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"] if nproc else []
    proc = subprocess.run([sys.executable, *launcher, os.path.join(REPO_ROOT, "training", "extract_embeddings.py"),
                           *argv], env=env, capture_output=True, text=True, timeout=300)
    return proc


def _many_argv(clap_dir, root, out):
    return ["--model_name_or_path", str(clap_dir), "--captions_file", str(root / "many.csv"), "--audio_dir",
            str(root / "many"), "--unpaired_captions_file", str(root / "many_texts.txt"), "--output_file", str(out),
            "--batch_size", "1"]


@pytest.mark.integration
def test_two_ranks_write_the_file_one_process_writes(clap_dir, tmp_path):
    _many_clips(tmp_path)
    single, multi = tmp_path / "single.safetensors", tmp_path / "multi.safetensors"
    assert _torchrun(_many_argv(clap_dir, tmp_path, single), port=0, nproc=0).returncode == 0
    proc = _torchrun(_many_argv(clap_dir, tmp_path, multi), port=29537)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_file(multi, single)
    assert not (tmp_path / "multi.safetensors.partial").exists()


@pytest.mark.integration
def test_a_rank_that_dies_mid_run_resumes_from_its_shards(clap_dir, tmp_path):
    audio_dir = _many_clips(tmp_path)
    reference, out = tmp_path / "reference.safetensors", tmp_path / "out.safetensors"
    assert _torchrun(_many_argv(clap_dir, tmp_path, reference), port=0, nproc=0).returncode == 0
    good = (audio_dir / "clip3.wav").read_bytes()
    (audio_dir / "clip3.wav").write_bytes(b"not audio")  # batch 3 belongs to rank 1: it raises there, mid-run
    proc = _torchrun(_many_argv(clap_dir, tmp_path, out), port=29539)
    assert proc.returncode != 0 and "clip3.wav" in proc.stderr and not out.exists()
    done = sorted(p.name for p in (tmp_path / "out.safetensors.partial").iterdir())
    assert "audio-000000000.safetensors" in done  # rank 0's first batch was kept
    (audio_dir / "clip3.wav").write_bytes(good)  # the cause fixed, the same command again
    proc = _torchrun(_many_argv(clap_dir, tmp_path, out), port=29541)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_file(out, reference)
    assert "reused" in proc.stderr  # finished batches were not recomputed
