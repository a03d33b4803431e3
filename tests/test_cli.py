import csv
import json
import math

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
    old = tmp_path / "old.csv"  # a file an older version began, with fewer columns: appended rows keep its columns
    old.write_text("file,generated_text,is_silent\n")
    assert main([*plain, "--model", str(calibrated), "--output", str(old)]) == 0
    with open(old, newline="", encoding="utf-8") as f:
        assert [len(row) for row in csv.reader(f)] == [3, 3, 3]
    assert main([*plain, "--model", str(calibrated), "--min-confidence", "1.5"]) == 2
    assert "--min-confidence" in capsys.readouterr().err


def test_rerank_choices_are_the_configs():
    from diffusion_link.apps.cli import build_parser
    from diffusion_link.configuration_diffusion_link_captioner import RERANK_MODES

    caption = build_parser()._subparsers._group_actions[0].choices["caption"]
    (rerank,) = [action for action in caption._actions if action.dest == "rerank"]
    assert tuple(rerank.choices) == RERANK_MODES
