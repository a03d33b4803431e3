import csv
import json
import os
import shutil

import pytest

from diffusion_link.apps.cli import main
from diffusion_link.apps.evaluation import (
    DEFAULT_EVALUATION_METRICS,
    PREDICTION_FIELDS,
    evaluate_captioner,
    resolve_metrics,
)
from diffusion_link.metrics import COCO_METRICS, caption_scores

from .conftest import REPO_ROOT, write_csv, write_wav


CAPTIONS = [
    "a dog barks while cars pass by", "rain falls steadily on a tin roof", "birds chirp in the early morning",
    "wind blows through the trees", "a bell rings several times", "footsteps on a wooden floor",
]
DATA = os.environ.get("DIFFUSION_LINK_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")


@pytest.fixture(scope="module")
def clap_tokenizer_dir(tmp_path_factory):
    """The tiny CLAP's processor (tokenizer included), as a folder: the tiny captioner's tower's text side."""
    from diffusion_link.testing import tiny_clap

    folder = tmp_path_factory.mktemp("tiny-clap-processor")
    tiny_clap(seed=0)[1].save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Five 1 s noise clips and their names."""
    folder = tmp_path_factory.mktemp("clips")
    return [write_wav(folder / f"clip{i}.wav", seconds=1.0, seed=i) for i in range(5)]


def read_predictions(folder):
    with open(os.path.join(folder, "predictions.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_evaluate_command_writes_predictions_scores_and_gap_and_reports_a_missing_file(
    saved_tiny_captioner, clap_tokenizer_dir, clips, tmp_path, capsys
):
    # Clotho's layout: file_name, caption_1..caption_N; one row names a file that is not there, one a silent clip.
    audio_dir = os.path.dirname(clips[0])
    write_wav(tmp_path / "silent.wav", seconds=1.0, amplitude=0.0)
    rows = [[os.path.basename(c), CAPTIONS[i], f"a sound {i}"] for i, c in enumerate(clips)]
    rows += [["gone.wav", "nothing", ""], [str(tmp_path / "silent.wav"), "silence", ""]]
    refs = write_csv(tmp_path / "refs.csv", ["file_name", "caption_1", "caption_2"], rows)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="1 of 6 predictions are empty"):  # the silent clip's
        code = main(["evaluate", "--references", refs, "--audio-dir", audio_dir, "--output-dir", str(out),
                     "--model", str(saved_tiny_captioner), "--text-tokenizer", clap_tokenizer_dir,
                     "--max-new-tokens", "4", "--batch-size", "4"])
    assert code == 1  # one file failed; the others were captioned
    assert sorted(os.listdir(out)) == ["gap.json", "gap.png", "predictions.csv", "scores.json"]
    captured = capsys.readouterr()
    assert "gone.wav" in captured.err and "1 failed" in captured.err and "| bridged |" in captured.out

    predictions = read_predictions(out)
    assert list(predictions[0]) == list(PREDICTION_FIELDS) and len(predictions) == 7
    assert all(p["generated_text"] and not p["error"] for p in predictions[:5])
    assert json.loads(predictions[0]["references"]) == [CAPTIONS[0], "a sound 0"]
    assert "gone.wav" in predictions[5]["error"] and json.loads(predictions[5]["references"]) == ["nothing"]
    assert predictions[6]["is_silent"] == "True" and predictions[6]["generated_text"] == ""  # no invented caption

    report = json.loads((out / "scores.json").read_text())
    assert set(DEFAULT_EVALUATION_METRICS) | {"num_predictions"} == set(report["scores"])
    assert report["scores"]["num_predictions"] == 6.0  # the silent clip is scored (as an empty caption)
    assert report["counts"] == {"files": 7, "captioned": 6, "failed": 1, "silent": 1, "references": 12}
    assert report["failures"][0]["file"].endswith("gone.wav")
    assert report["metrics"]["cider_d"]["tokenizer"].startswith("coco") and report["metrics"]["bleu_4"]["variant"]
    assert report["metrics"]["rouge_l"]["num_predictions"] == 6
    assert {"python", "platform", "torch", "transformers", "diffusers"} <= set(report["environment"])
    assert report["model"]["name_or_path"] == str(saved_tiny_captioner)
    assert "--references" in report["command_line"] and report["command_line"].startswith("diffusion-link evaluate")
    assert report["timestamp"].endswith("+00:00") and report["generation"]["strength"] == 0.1

    gap = json.loads((out / "gap.json").read_text())
    assert gap["status"] == "computed" and gap["num_pairs"] == 5 and gap["probe_folds"] == 2  # silent clip left out
    assert gap["raw"]["num_pairs"] == 5.0 and 0 <= gap["bridged"]["retrieval_r1"] <= 1
    assert report["modality_gap"] == gap
    assert (out / "gap.png").stat().st_size > 1000


def test_library_scores_equal_caption_scores_on_the_written_predictions(tiny_pipeline, clap_tokenizer_dir, clips,
                                                                        tmp_path):
    files = clips[:3]
    # References that share words with the captions the tiny model makes, so that the scores are not all 0.
    made = [r["generated_text"] for r in tiny_pipeline(files, max_new_tokens=4)]
    references = [[made[0], CAPTIONS[0]], [made[1].split()[0] + " and more", CAPTIONS[1]], [CAPTIONS[2]]]
    report = evaluate_captioner(tiny_pipeline, files, references, tmp_path, max_new_tokens=4,
                                text_tokenizer=clap_tokenizer_dir, command_line=["test"])
    predictions = read_predictions(tmp_path)
    direct = caption_scores([p["generated_text"] for p in predictions],
                            [json.loads(p["references"]) for p in predictions], DEFAULT_EVALUATION_METRICS)
    assert report["scores"] == direct and direct["exact_match"] > 0 and direct["bleu_1"] > 0
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == direct
    # Three clips are too few for the cross-validated gap figures: skipped, with the reason.
    assert report["modality_gap"]["status"] == "skipped" and "only 3 files" in report["modality_gap"]["reason"]
    assert not (tmp_path / "gap.json").exists() and report["counts"]["failed"] == 0


def test_sidecar_references_limit_and_gap_off(saved_tiny_captioner, clips, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i, clip in enumerate(clips[:3]):
        shutil.copy(clip, folder)
        (folder / os.path.basename(clip).replace(".wav", ".txt")).write_text(f"{CAPTIONS[i]}\n\nanother caption\n")
    out = tmp_path / "out"
    code = main(["evaluate", str(folder), "--output-dir", str(out), "--model", str(saved_tiny_captioner),
                 "--limit", "2", "--gap", "off", "--metrics", "token_f1", "coco", "--max-new-tokens", "3"])
    assert code == 0
    assert sorted(os.listdir(out)) == ["predictions.csv", "scores.json"]
    report = json.loads((out / "scores.json").read_text())
    assert list(report["scores"]) == ["token_f1", *COCO_METRICS, "num_predictions"]
    assert report["counts"]["files"] == 2 and report["modality_gap"] == {"status": "off"}
    assert json.loads(read_predictions(out)[0]["references"]) == [CAPTIONS[0], "another caption"]
    (folder / "clip2.txt").unlink()
    assert main(["evaluate", str(folder), "--output-dir", str(out), "--model", str(saved_tiny_captioner)]) == 2
    assert "clip2.txt" in capsys.readouterr().err


def test_bad_csv_columns_and_empty_references_are_usage_errors(tmp_path, capsys):
    bad = write_csv(tmp_path / "bad.csv", ["path", "text"], [["a.wav", "a dog"]])
    # Input errors are found before any model is loaded.
    assert main(["evaluate", "--references", bad, "--output-dir", str(tmp_path / "o"), "--model", "unused"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "file_name" in err and "caption_1" in err and "['path', 'text']" in err

    empty = write_csv(tmp_path / "empty.csv", ["file_name", "caption_1", "caption_2"],
                      [["a.wav", "a dog", ""], ["b.wav", " ", ""], ["c.wav", "", ""]])
    assert main(["evaluate", "--references", empty, "--output-dir", str(tmp_path / "o"), "--model", "unused"]) == 2
    err = capsys.readouterr().err
    assert "2 files have no reference caption" in err and "b.wav (lines [3])" in err and "c.wav (lines [4])" in err

    assert main(["evaluate", "--output-dir", str(tmp_path / "o"), "--model", "unused"]) == 2
    assert "--references" in capsys.readouterr().err
    assert main(["evaluate", "x.wav", "--references", empty, "--output-dir", str(tmp_path / "o")]) == 2
    assert main(["evaluate", "--references", empty, "--output-dir", "o", "--metrics", "bleu_9", "--model", "x"]) == 2
    assert "bleu_9" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_metric_names_and_groups():
    assert resolve_metrics(None) == DEFAULT_EVALUATION_METRICS == ("exact_match", "token_f1", *COCO_METRICS)
    assert resolve_metrics(["default", "meteor", "bleu_1"]) == (*DEFAULT_EVALUATION_METRICS, "meteor")
    with pytest.raises(ValueError, match="bleu_5"):
        resolve_metrics(["bleu_5"])
    with pytest.raises(TypeError):
        resolve_metrics("bleu_1")


def test_the_gap_uses_the_models_own_text_tokenizer_or_the_one_given(saved_tiny_captioner, clap_tokenizer_dir):
    from transformers import AutoTokenizer

    from diffusion_link import DiffusionLinkForAudioCaptioning
    from diffusion_link.apps.evaluation import _use_text_tokenizer

    model = DiffusionLinkForAudioCaptioning.from_pretrained(saved_tiny_captioner)
    _use_text_tokenizer(model, None)  # the folder's audio_text_tokenizer/, the one the pipeline scores with
    assert model.audio_text_tokenizer("a dog barks").input_ids
    given = AutoTokenizer.from_pretrained(clap_tokenizer_dir)
    _use_text_tokenizer(model, given)
    assert model.audio_text_tokenizer is given
    _use_text_tokenizer(model, clap_tokenizer_dir)
    assert model.audio_text_tokenizer is not given and model.audio_text_tokenizer("a dog").input_ids
    with pytest.raises(ValueError, match="does-not-exist"):
        _use_text_tokenizer(model, "/does-not-exist")


def without_text_tokenizer(saved_tiny_captioner, tmp_path):
    """A copy of the saved tiny captioner without its `audio_text_tokenizer/` (an embedded CLAP that names none)."""
    import shutil

    folder = tmp_path / "no-text-tokenizer"
    shutil.copytree(saved_tiny_captioner, folder)
    shutil.rmtree(folder / "audio_text_tokenizer")
    return str(folder)


def test_evaluate_without_a_text_tokenizer_stops_before_captioning(saved_tiny_captioner, clips, tmp_path, capsys):
    refs = write_csv(tmp_path / "r.csv", ["file_name", "caption"], [[c, CAPTIONS[0]] for c in clips])
    code = main(["evaluate", "--references", refs, "--output-dir", str(tmp_path / "out"), "--model",
                 without_text_tokenizer(saved_tiny_captioner, tmp_path)])
    assert code == 2
    assert "--text-tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- atomic outputs
def test_atomic_open_leaves_the_previous_file_when_a_write_fails(tmp_path):
    from diffusion_link.experiments.atomic_files import atomic_open, atomic_path

    target = tmp_path / "scores.json"
    with atomic_open(target, "w", encoding="utf-8") as f:
        json.dump({"run": 1}, f)
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(target, "w", encoding="utf-8") as f:
            f.write('{"run": 2, "half')  # part of the new content is written, then the writer dies
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"run": 1} and os.listdir(tmp_path) == ["scores.json"]
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "gap.png") as tmp:
            assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)  # savefig reads the format
            open(tmp, "wb").write(b"\x89PNG half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == ["scores.json"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(target, "a"):
            pass


def test_an_interrupted_evaluation_leaves_the_previous_outputs_intact(tiny_pipeline, clips, tmp_path, monkeypatch):
    import diffusion_link.apps.evaluation as evaluation

    files, references = clips[:3], [[c] for c in CAPTIONS[:3]]
    run = dict(max_new_tokens=2, batch_size=1, gap="off", command_line=["test"])
    evaluate_captioner(tiny_pipeline, files, references, tmp_path, **run)
    before = {name: (tmp_path / name).read_bytes() for name in ("predictions.csv", "scores.json")}

    # Killed while captioning the second batch: predictions.csv has its first row only in the temporary file.
    calls = []
    captioner_call = type(tiny_pipeline).__call__

    def dies_on_the_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return captioner_call(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_pipeline), "__call__", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_captioner(tiny_pipeline, files, references, tmp_path, **run)
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == sorted(before)  # no temporary file left behind

    # Killed in the middle of writing scores.json: the new predictions are complete, the old scores untouched.
    def half_a_dump(obj, f, **kwargs):
        f.write(json.dumps(obj)[:20])
        raise OSError("disk full")

    monkeypatch.setattr(evaluation.json, "dump", half_a_dump)
    with pytest.raises(OSError, match="disk full"):
        evaluate_captioner(tiny_pipeline, files, references, tmp_path, **run)
    monkeypatch.undo()
    assert (tmp_path / "scores.json").read_bytes() == before["scores.json"]
    assert len(read_predictions(tmp_path)) == 3 and sorted(os.listdir(tmp_path)) == sorted(before)


# ---------------------------------------------------------------------------------------------- bad inputs
def finishes(call, seconds=10):
    """`call()`'s exception, raised in a thread that must end within `seconds`: a reader that waits on a FIFO
    would hang the suite, so a writer is opened to release it before the test fails."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except Exception as err:  # the error under test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return thread.is_alive(), outcome.get("error")


def a_fifo(path):
    os.mkfifo(path)
    return "named pipe"


def a_folder(path):
    os.mkdir(path)
    return "a folder"


def latin_1(path):
    path.write_bytes("file_name,caption\nclip0.wav,un caf\xe9 bruyant\n".encode("latin-1"))
    return "not UTF-8"


def a_huge_field(path):
    path.write_text('file_name,caption\nclip0.wav,"' + "a" * 200_000 + '"\n')
    return "not a readable CSV"


def read_as_references_csv(path):
    from diffusion_link.apps.reference_captions import read_references_csv

    return read_references_csv(path)


def read_as_sidecar(path):  # `path` is the sidecar of an audio file next to it
    from diffusion_link.apps.reference_captions import read_sidecar_references

    return read_sidecar_references([str(path)[: -len(".txt")] + ".wav"])


def read_as_caption_file(path):
    from diffusion_link.apps.reference_captions import read_caption_file

    return read_caption_file(path)


# (reader, what the file is) -> the words of the error; every reader of reference or caption files opens them one way
NOT_READABLE = [
    (reader, make, suffix)
    for reader, suffix in ((read_as_references_csv, ".csv"), (read_as_sidecar, ".txt"), (read_as_caption_file, ".csv"))
    for make in (a_fifo, a_folder, latin_1)
] + [(read_as_references_csv, a_huge_field, ".csv"), (read_as_caption_file, a_huge_field, ".csv")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs as POSIX makes them")
@pytest.mark.parametrize("reader, make, suffix", NOT_READABLE,
                         ids=[f"{r.__name__[8:]}-{m.__name__}" for r, m, _ in NOT_READABLE])
def test_a_references_file_that_is_not_regular_utf8_text_is_refused_by_name(reader, make, suffix, tmp_path):
    path = tmp_path / f"refs{suffix}"
    words = make(path)
    hung, err = finishes(lambda: reader(path))
    if hung:
        open(path, "w").close()  # release the reader
    assert not hung, f"reading {make.__name__} blocked"
    assert isinstance(err, ValueError) and str(path) in str(err) and words in str(err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs as POSIX makes them")
def test_evaluate_refuses_a_fifo_of_references_without_waiting(tmp_path, capsys):
    os.mkfifo(tmp_path / "refs.csv")
    hung, _ = finishes(lambda: main(["evaluate", "--references", str(tmp_path / "refs.csv"), "--output-dir",
                                     str(tmp_path / "out"), "--model", "unused"]))
    if hung:
        open(tmp_path / "refs.csv", "w").close()
    assert not hung
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refs.csv: expected a regular file" in err and "Traceback" not in err


# (arguments of evaluate_captioner) -> (error, words): every one is checked before any file is captioned
BAD_ARGUMENTS = {
    "batch_size=0": ({"batch_size": 0}, ValueError, "`batch_size` must be a positive int, got 0"),
    "batch_size=-1": ({"batch_size": -1}, ValueError, "`batch_size` must be a positive int, got -1"),
    "batch_size=True": ({"batch_size": True}, ValueError, "`batch_size` must be a positive int, got True"),
    "max_new_tokens=0": ({"max_new_tokens": 0}, ValueError, "`max_new_tokens` must be a positive int"),
    "num_beams=0": ({"num_beams": 0}, ValueError, "`num_beams` must be a positive int"),
    "strength=0": ({"strength": 0.0}, ValueError, r"`strength` must be a float in \(0, 1\]"),
    "strength=nan": ({"strength": float("nan")}, ValueError, "`strength` must be a float"),
    "strength=2": ({"strength": 2.0}, ValueError, "`strength` must be a float"),
    "num_inference_steps=0": ({"num_inference_steps": 0}, ValueError, "`num_inference_steps` must be a positive"),
    "num_inference_steps=2.5": ({"num_inference_steps": 2.5}, ValueError, "`num_inference_steps` must be a positive"),
    "steps past the schedule": ({"num_inference_steps": 10**6}, ValueError, "larger than s"),
    "gap=True": ({"gap": True}, ValueError, "`gap` must be one of"),
    "metrics=[]": ({"metrics": []}, ValueError, "Unknown caption metrics"),
    "text_tokenizer=5": ({"text_tokenizer": 5}, TypeError, "`text_tokenizer` must be a tokenizer"),
    "trust_remote_code='yes'": ({"trust_remote_code": "yes"}, TypeError, "`trust_remote_code` must be True or"),
    "command_line as a string": ({"command_line": "diffusion-link x"}, TypeError, "`command_line` must be a list"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_every_argument_of_evaluate_is_checked_before_captioning(case, tiny_pipeline, clips, tmp_path, monkeypatch):
    kwargs, error, words = BAD_ARGUMENTS[case]

    def no_captioning(*args, **kw):
        raise AssertionError("nothing may be captioned")

    monkeypatch.setattr(type(tiny_pipeline), "__call__", no_captioning)
    with pytest.raises(error, match=words):
        evaluate_captioner(tiny_pipeline, clips[:2], [["a dog"], ["rain"]], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# (files, references) -> (error, words)
BAD_REFERENCES = {
    "files as one string": ("clip.wav", [["a dog"]], TypeError, "`files` must be a list.*'clip.wav'"),
    "references as one string": (["clip.wav"], "a dog", TypeError, "`references` must be a list"),
    "a file that is None": ([None], [["a dog"]], TypeError, r"items \[0\] are \['NoneType'\]"),
    "a caption that is a number": (["a.wav", "b.wav"], [[1, "a dog"], ["rain"]], TypeError,
                                   "The references of a.wav must be a list of caption strings"),
    "a reference list that is a string": (["a.wav"], ["a dog"], TypeError, "references of a.wav"),
    "a reference list that is None": (["a.wav"], [None], TypeError, "references of a.wav"),
    "only blank captions": (["a.wav", "b.wav"], [[" ", ""], ["rain"]], ValueError,
                            r"1 files have no non-empty reference caption: \['a.wav'\]"),
    "more files than lists": (["a.wav", "b.wav"], [["rain"]], ValueError, "2 files but 1 reference lists"),
    "no files": ([], [], ValueError, "No files"),
}


@pytest.mark.parametrize("case", list(BAD_REFERENCES))
def test_files_and_references_are_checked_with_the_file_named(case, tiny_pipeline, tmp_path):
    files, references, error, words = BAD_REFERENCES[case]
    with pytest.raises(error, match=words):
        evaluate_captioner(tiny_pipeline, files, references, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_blank_references_are_dropped_and_counted(tiny_pipeline, clips, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="diffusion_link.apps.evaluation"):
        report = evaluate_captioner(tiny_pipeline, clips[:2], [["", "a dog barks", "  "], ("rain",)], tmp_path,
                                    max_new_tokens=2, gap="off", command_line=["test"])
    assert "Dropped 2 blank reference captions" in caplog.text
    assert [json.loads(p["references"]) for p in read_predictions(tmp_path)] == [["a dog barks"], ["rain"]]
    assert report["counts"]["references"] == 2


def test_the_folders_own_text_tokenizer_measures_the_gap_and_a_broken_one_is_named(saved_tiny_captioner, clips,
                                                                                   tmp_path, capsys):
    refs = write_csv(tmp_path / "r.csv", ["file_name", "caption"], [[c, CAPTIONS[i]] for i, c in enumerate(clips)])
    args = ["evaluate", "--references", refs, "--max-new-tokens", "2"]
    # No --text-tokenizer and no --gap off: the saved captioner's own audio_text_tokenizer/ is the one.
    assert main([*args, "--output-dir", str(tmp_path / "out"), "--model", str(saved_tiny_captioner)]) == 0
    assert json.loads((tmp_path / "out" / "gap.json").read_text())["status"] == "computed"

    # A fast tokenizer saved as tokenizer.json alone is the folder's own too.
    bare = tmp_path / "tokenizer-json-only"
    shutil.copytree(saved_tiny_captioner, bare)
    os.remove(bare / "audio_text_tokenizer" / "tokenizer_config.json")
    assert os.listdir(bare / "audio_text_tokenizer") == ["tokenizer.json"]
    assert main([*args, "--output-dir", str(tmp_path / "out1"), "--model", str(bare)]) == 0
    assert json.loads((tmp_path / "out1" / "gap.json").read_text())["status"] == "computed"

    broken = tmp_path / "broken"
    shutil.copytree(saved_tiny_captioner, broken)
    (broken / "audio_text_tokenizer" / "tokenizer.json").write_text("{}")
    assert main([*args, "--output-dir", str(tmp_path / "out2"), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"from {broken / 'audio_text_tokenizer'}" in err and "--text-tokenizer" in err and "Traceback" not in err
    assert not (tmp_path / "out2").exists()
