import csv
import json
import math
import os
import shutil

import pytest
import torch

from diffusion_link import DiffusionLinkBridge, DiffusionLinkConfig
from diffusion_link.apps.cli import main
from diffusion_link.experiments.embedding_files import save_embeddings
from diffusion_link.experiments.synthetic_gap import synthetic_gap_embeddings


def test_gap_command_reports_raw_and_bridged_figures(tmp_path, capsys):
    data = synthetic_gap_embeddings(40, embedding_dim=12, seed=0)
    save_embeddings(tmp_path / "e.safetensors", {k: data[k] for k in ("audio_embeds", "text_embeds")})
    torch.manual_seed(0)
    DiffusionLinkBridge(DiffusionLinkConfig(embedding_dim=12, hidden_size=16)).save_pretrained(tmp_path / "bridge")
    code = main(["gap", str(tmp_path / "e.safetensors"), "--bridge", str(tmp_path / "bridge"), "--json",
                 str(tmp_path / "gap.json"), "--plot", str(tmp_path / "gap.png")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| raw |" in out and "| bridged |" in out
    report = json.loads((tmp_path / "gap.json").read_text())
    assert report["raw"]["num_pairs"] == 40 and 0 <= report["bridged"]["retrieval_r1"] <= 1
    assert (tmp_path / "gap.png").stat().st_size > 1000


def test_gap_command_errors_name_the_file(tmp_path, capsys):
    save_embeddings(tmp_path / "t.safetensors", {"unpaired_text_embeds": torch.randn(4, 12)})
    assert main(["gap", str(tmp_path / "t.safetensors")]) == 2
    assert "t.safetensors" in capsys.readouterr().err
    assert main(["gap", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_caption_command_writes_jsonl_reports_failures_and_resumes(saved_tiny_captioner, tmp_path, capsys):
    from .conftest import write_wav

    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    write_wav(clips / "a.wav", seed=1)
    write_wav(clips / "sub" / "b.flac", seed=2, rate=16000)
    (clips / "broken.wav").write_bytes(b"not audio at all")
    (clips / "notes.txt").write_text("not audio")
    out = tmp_path / "captions.jsonl"
    code = main(["caption", str(clips), "--model", str(saved_tiny_captioner), "--output", str(out),
                 "--max-new-tokens", "6", "--batch-size", "2"])
    assert code == 1  # one file failed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_file = {r["file"].split("/")[-1]: r for r in rows}
    assert set(by_file) == {"a.wav", "b.flac", "broken.wav"}  # notes.txt is not audio
    assert by_file["a.wav"]["generated_text"] and by_file["b.flac"]["sampling_rate"] == 16000
    assert "broken.wav" in by_file["broken.wav"]["error"]
    assert "1 failed" in capsys.readouterr().err
    # A second run skips what is done and retries only the failure.
    code = main(["caption", str(clips), "--model", str(saved_tiny_captioner), "--output", str(out), "--on-error", "skip"])
    assert code == 1
    assert "skipping 2 files" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3


def test_caption_command_csv_glob_and_raise(saved_tiny_captioner, tmp_path, capsys):
    from .conftest import write_wav

    write_wav(tmp_path / "x1.wav", seed=1)
    write_wav(tmp_path / "x2.wav", seed=2)
    out = tmp_path / "c.csv"
    assert main(["caption", str(tmp_path / "x*.wav"), "--model", str(saved_tiny_captioner), "--output", str(out),
                 "--max-new-tokens", "4"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("file,generated_text,is_silent") and len(lines) == 3
    (tmp_path / "x3.wav").write_bytes(b"junk")
    assert main(["caption", str(tmp_path / "x3.wav"), "--model", str(saved_tiny_captioner), "--on-error", "raise"]) == 2
    assert "x3.wav" in capsys.readouterr().err


def test_caption_command_without_a_model_says_so(tmp_path, capsys, monkeypatch):
    import diffusion_link.starter

    from .conftest import write_wav

    monkeypatch.setattr(diffusion_link.starter, "default_captioner", lambda: None)  # an install without the starter
    assert main(["caption", write_wav(tmp_path / "a.wav")]) == 2
    assert "this install has no starter captioner" in capsys.readouterr().err
    assert main(["evaluate", write_wav(tmp_path / "b.wav"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["caption", str(tmp_path / "none*.wav"), "--model", "x"]) == 2
    assert "No file matches" in capsys.readouterr().err


def test_caption_command_candidates_confidence_and_min_confidence(saved_tiny_captioner, tmp_path, capsys):
    import shutil

    from diffusion_link.reranking import CONFIDENCE_FEATURES

    from .conftest import write_wav

    write_wav(tmp_path / "a.wav", seed=1)
    write_wav(tmp_path / "b.wav", seed=2)
    plain = ["caption", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--max-new-tokens", "6"]
    # an uncalibrated model gives candidates but no confidence, and --min-confidence says why it cannot apply
    assert main([*plain, "--model", str(saved_tiny_captioner), "--min-confidence", "0.5"]) == 2
    assert "calibrated" in capsys.readouterr().err
    calibrated = tmp_path / "calibrated"
    shutil.copytree(saved_tiny_captioner, calibrated)
    config = json.loads((calibrated / "config.json").read_text())
    # a calibration in which the confidence is the logistic of the pick's audio-caption similarity
    config["confidence_calibration"] = {"features": list(CONFIDENCE_FEATURES), "coef": [1.0, 0.0, 0.0, 0.0],
                                        "intercept": 0.0, "mean": [0.0] * 4, "scale": [1.0] * 4}
    config["num_candidates"] = 3
    (calibrated / "config.json").write_text(json.dumps(config))
    out = tmp_path / "c.jsonl"
    assert main([*plain, "--model", str(calibrated), "--rerank", "similarity", "--min-confidence", "0.5",
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        assert row["generated_text"] == row["candidates"][0]["text"]
        similarity = row["candidates"][0]["audio_text_similarity"]
        assert row["confidence"] == pytest.approx(1 / (1 + math.exp(-similarity)))
        assert row["below_min_confidence"] == (row["confidence"] < 0.5)  # marked, and kept
    csv_out = tmp_path / "c.csv"
    assert main([*plain, "--model", str(calibrated), "--output", str(csv_out), "--min-confidence", "0.5"]) == 0
    header = csv_out.read_text().splitlines()[0].split(",")
    assert "confidence" in header and "below_min_confidence" in header
    old = tmp_path / "old.csv"  # a file an older version began, with fewer columns: they come first, the new follow
    old.write_text("file,generated_text,is_silent\n")
    assert main([*plain, "--model", str(calibrated), "--output", str(old)]) == 0
    with open(old, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["file", "generated_text", "is_silent"] and len(rows) == 2
    assert all(json.loads(row["candidates"]) and float(row["confidence"]) > 0 for row in rows)  # nothing dropped
    assert main([*plain, "--model", str(calibrated), "--min-confidence", "1.5"]) == 2
    assert "--min-confidence" in capsys.readouterr().err


def test_rerank_choices_are_the_configs():
    from diffusion_link.apps.cli import build_parser
    from diffusion_link.configuration_diffusion_link_captioner import RERANK_MODES

    caption = build_parser()._subparsers._group_actions[0].choices["caption"]
    (rerank,) = [action for action in caption._actions if action.dest == "rerank"]
    assert tuple(rerank.choices) == RERANK_MODES


def test_caption_reruns_keep_one_row_per_file_and_retry_failures(saved_tiny_captioner, tmp_path, monkeypatch, capsys):
    from .conftest import write_wav

    monkeypatch.chdir(tmp_path)
    os.makedirs("dir")
    write_wav("a.wav", seed=1)
    write_wav("dir/x.wav", seed=2)
    open("broken.wav", "wb").write(b"junk")
    argv = ["caption", "a.wav", "./dir/x.wav", "dir/x.wav", "broken.wav", "--model", str(saved_tiny_captioner),
            "--max-new-tokens", "4", "--output", "out.jsonl"]
    for _ in range(3):
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert "captioned 2 of 3 files; 1 failed" in err and err.count("skipping 2 files") == 2  # broken.wav retried
    rows = [json.loads(line) for line in open("out.jsonl", encoding="utf-8")]
    assert [r["file"] for r in rows] == [os.path.realpath(f) for f in ("a.wav", "dir/x.wav", "broken.wav")]
    shutil.copy("a.wav", "broken.wav")  # mended: its error row is replaced, in its place
    assert main(argv) == 0
    rows = [json.loads(line) for line in open("out.jsonl", encoding="utf-8")]
    assert len(rows) == 3 and "error" not in rows[2] and rows[2]["file"] == os.path.realpath("broken.wav")


def test_caption_csv_resume_parses_a_cut_inside_a_quoted_file_name(saved_tiny_captioner, tmp_path, monkeypatch):
    from .conftest import write_wav

    monkeypatch.chdir(tmp_path)
    write_wav("a.wav", seed=1)
    write_wav("new\nline.wav", seed=2)  # file names may hold newlines: the CSV cell is quoted
    write_wav("=cmd.wav", seed=3)
    argv = ["caption", "a.wav", "new\nline.wav", "=cmd.wav", "--model", str(saved_tiny_captioner),
            "--max-new-tokens", "4", "--chunk-length-s", "1", "--output", "OUT.CSV"]  # CSV by its suffix, any case
    assert main(argv) == 0
    text = open("OUT.CSV", newline="", encoding="utf-8").read()
    cut = text.index("new\n") + 4  # a run killed just after the newline inside the quotes
    open("OUT.CSV", "w", newline="", encoding="utf-8").write(text[:cut])
    assert main(argv) == 0
    with open("OUT.CSV", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [os.path.realpath(f) for f in ("a.wav", "new\nline.wav", "=cmd.wav")]
    for row in rows:  # the per-window timestamps are kept, JSON-encoded
        assert [c["timestamp"] for c in json.loads(row["chunks"])] == [[0.0, 1.0], [1.0, 2.0]]


def test_a_model_folder_that_fails_to_load_is_one_error_line(saved_tiny_captioner, tmp_path, capsys):
    from .conftest import write_wav

    broken = tmp_path / "broken-model"
    shutil.copytree(saved_tiny_captioner, broken)
    (broken / "model.safetensors").write_bytes(b"")
    clip = write_wav(tmp_path / "a.wav")
    for argv in (["caption", clip], ["search", "rain", clip]):
        assert main([*argv, "--model", str(broken)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("error: ") and "model.safetensors" in err


@pytest.mark.integration
def test_caption_to_a_pipe_writes_and_never_reads_it(saved_tiny_captioner, tmp_path):
    from .conftest import run_python, write_wav

    clip = write_wav(tmp_path / "a.wav")
    # stdout is a pipe here: reading /dev/stdout first (the resume check) used to wait for ever
    out = run_python(f"import sys; from diffusion_link.apps.cli import main; sys.exit(main(['caption', {clip!r}, "
                     f"'--model', {str(saved_tiny_captioner)!r}, '--max-new-tokens', '4', '--output', '/dev/stdout']))",
                     timeout=120)
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["file"] == os.path.realpath(clip) and row["generated_text"]


def test_ctrl_c_keeps_the_finished_rows_and_says_how_to_go_on(saved_tiny_captioner, tmp_path, monkeypatch, capsys):
    from diffusion_link.apps import loading

    from .conftest import write_wav

    clips = [write_wav(tmp_path / f"{i}.wav", seed=i) for i in range(3)]
    real = loading.load_captioning_pipeline

    class InterruptedAfterOneBatch:  # the pipeline, with Ctrl-C pressed during its second batch
        def __init__(self, model, trust_remote_code=False):
            self.pipe = real(model, trust_remote_code)
            self.model, self.calls = self.pipe.model, 0

        def __call__(self, *args, **kwargs):
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt
            return self.pipe(*args, **kwargs)

    monkeypatch.setattr(loading, "load_captioning_pipeline", InterruptedAfterOneBatch)
    out = tmp_path / "out.jsonl"
    argv = ["caption", *map(str, clips), "--model", str(saved_tiny_captioner), "--max-new-tokens", "4",
            "--batch-size", "1", "--output", str(out)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"interrupted; the rows written so far are in {out}" in err and "Traceback" not in err
    assert [json.loads(line)["file"] for line in out.open()] == [os.path.realpath(clips[0])]
    monkeypatch.setattr(loading, "load_captioning_pipeline", real)
    assert main(argv) == 0 and "skipping 1 files" in capsys.readouterr().err
    assert [json.loads(line)["file"] for line in out.open()] == [os.path.realpath(c) for c in clips]
