"""The result files of `diffusion-link caption` (`diffusion_link.apps.result_files`), without a model: resume and
compaction (one row per file, the latest winning), half-written records, files that are not result files, CSV cells
(JSON-encoded lists, formula injection), streams that are written and never read."""

import csv
import io
import json
import os
import threading

import pytest

from diffusion_link.apps.result_files import (
    CSV_FIELDS,
    ResultFile,
    csv_cells,
    is_csv,
    neutralize_formula,
    result_key,
    write_rows,
)


def ok(name, text="a dog barks"):
    return {"file": result_key(name), "generated_text": text, "is_silent": False, "duration_s": 2.0}


def failed(name):
    return {"file": result_key(name), "error": f"AudioDecodeError: {name}: Format not recognised"}


def run(path, rows=()):
    """One caption run writing `rows`; the keys it found done when it started."""
    with ResultFile(str(path)) as results:
        done = set(results.done)
        for row in rows:
            results.write(row)
    return done


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        if is_csv(str(path)):
            return list(csv.DictReader(f))
        return [json.loads(line) for line in f]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names resolve here


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv"])
def test_reruns_keep_one_row_per_file_latest_winning(name):
    run(name, [ok("a.wav"), failed("bad.wav"), ok("dir/x.wav")])
    # a rerun skips what has a result, retries the failure; "./dir/x.wav" is dir/x.wav
    assert run(name, [failed("bad.wav")]) == {result_key("a.wav"), result_key("./dir/x.wav")}
    assert run(name, [ok("bad.wav", "fixed")]) == {result_key("a.wav"), result_key("dir/x.wav")}
    rows = read_rows(name)
    assert [r["file"] for r in rows] == [result_key(f) for f in ("a.wav", "bad.wav", "dir/x.wav")]  # first place
    assert rows[1]["generated_text"] == "fixed" and not rows[1].get("error")
    assert run(name) == {result_key(f) for f in ("a.wav", "bad.wav", "dir/x.wav")}


# name -> (file name, what a killed run left after the complete rows, the files the rerun finds done)
HALF_WRITTEN = {
    "jsonl-cut-mid-object": ("out.jsonl", '{"file": "/tmp/b.wav", "generated_te', {"a.wav"}),
    "jsonl-cut-before-newline": ("out.jsonl", '{"file": "/tmp/b.wav", "generated_text": "x"}', {"a.wav", "/tmp/b.wav"}),
    "csv-cut-mid-row": ("out.csv", "/tmp/b.wav,a ca", {"a.wav"}),
    # a file name holding a newline, cut just after it: the open quote must not swallow the next rows
    "csv-cut-inside-quoted-newline": ("out.csv", '"/tmp/new\n', {"a.wav"}),
    "csv-cut-inside-quoted-text": ("out.csv", '/tmp/b.wav,"a dog\nbarks', {"a.wav"}),
}


@pytest.mark.parametrize("case", HALF_WRITTEN)
def test_a_half_written_last_record_is_dropped_and_its_file_redone(case, caplog):
    name, tail, done = HALF_WRITTEN[case]
    run(name, [ok("a.wav")])
    with open(name, "a", newline="", encoding="utf-8") as f:
        f.write(tail)
    assert run(name, [ok("new\nline.wav"), ok("c.wav")]) == {result_key(f) for f in done}
    files = [r["file"] for r in read_rows(name)]
    assert files == [result_key(f) for f in ("a.wav", *sorted(done - {"a.wav"}), "new\nline.wav", "c.wav")]
    assert ("dropped the half-written last row" in caplog.text) == (len(done) == 1)


# name -> (file name, content, line and words the error names)
NOT_RESULT_FILES = {
    "json-without-file": ("out.jsonl", '{"file": "a.wav"}\n{"x": 1}\n', "line 2: not a result row"),
    "json-list": ("out.jsonl", "[1, 2]\n", "line 1: not a result row"),
    "not-json-mid-file": ("out.jsonl", 'hello\n{"file": "a.wav"}\n', "line 1: not JSON"),
    "csv-without-file-column": ("out.csv", "name,caption\r\na.wav,x\r\n", "line 1: the header has no `file` column"),
    "csv-row-without-file": ("out.csv", "file,generated_text\r\n,x\r\n", "line 2: a row without a `file`"),
    "csv-too-many-cells": ("out.csv", "file,generated_text\r\na.wav,x,y\r\n", "line 2: 3 cells under a header of 2"),
    "not-utf8": ("notes.txt", b"\xff\xfe\x00binary", "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", NOT_RESULT_FILES)
def test_a_file_that_is_no_result_file_is_refused_by_name_and_line_and_left_alone(case):
    name, content, message = NOT_RESULT_FILES[case]
    with open(name, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    before = open(name, "rb").read()
    with pytest.raises(ValueError, match="result file") as error:
        run(name, [ok("b.wav")])
    assert name in str(error.value) and message in str(error.value)
    assert open(name, "rb").read() == before


@pytest.mark.parametrize("name, csv_format", [("o.csv", True), ("o.CSV", True), ("dir.v2/o.Csv", True),
                                              ("o.jsonl", False), ("o.json", False), ("csv", False)])
def test_the_format_follows_the_suffix_in_any_case(name, csv_format):
    assert is_csv(name) == csv_format


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_formula_cells_are_neutralised(text):
    assert neutralize_formula(text) == "'" + text
    assert neutralize_formula(neutralize_formula(text)) == "'" + text  # once
    assert csv_cells({"generated_text": text}, CSV_FIELDS)["generated_text"] == "'" + text


def test_numbers_lists_and_the_key_are_written_as_they_are():
    chunks = [{"timestamp": [0.0, 1.0], "generated_text": "=rain", "is_silent": False}]
    cells = csv_cells({"file": "/clips/=x.wav", "peak_dbfs": -7.5, "chunks": chunks, "is_silent": False}, CSV_FIELDS)
    assert cells["file"] == "/clips/=x.wav" and cells["peak_dbfs"] == -7.5 and json.loads(cells["chunks"]) == chunks
    with pytest.raises(ValueError, match="no column for \\['audio_embeds'\\].*JSON lines"):
        csv_cells({"file": "/a.wav", "audio_embeds": [0.1]}, CSV_FIELDS)


def test_csv_keeps_chunks_candidates_and_reads_back_unchanged():
    long_chunks = [{"timestamp": [i, i + 1.0], "generated_text": "wind " * 20} for i in range(2000)]  # > 128 KiB
    row = {**ok("=a.wav", "-a caption"), "chunks": long_chunks, "candidates": [{"text": "x", "lm_score": -1.5}]}
    run("out.csv", [row])
    text = open("out.csv", newline="", encoding="utf-8").read()
    assert run("out.csv") == {result_key("=a.wav")}  # resumes: the key matches, the long cell parses
    assert open("out.csv", newline="", encoding="utf-8").read() == text  # nothing neutralised twice or undone
    limit = csv.field_size_limit(1 << 24)  # a spreadsheet-sized cell: this reader needs the limit raised too
    try:
        (cells,) = read_rows("out.csv")
    finally:
        csv.field_size_limit(limit)
    assert json.loads(cells["chunks"]) == long_chunks and json.loads(cells["candidates"]) == row["candidates"]
    assert cells["generated_text"] == "'-a caption" and cells["peak_dbfs"] == "" and cells["duration_s"] == "2.0"


def test_an_older_csv_keeps_its_rows_and_gains_the_new_columns():
    with open("old.csv", "w", newline="", encoding="utf-8") as f:
        f.write("file,generated_text,is_silent\r\n/clips/a.wav,rain,False\r\n")
    run("old.csv", [{**ok("b.wav"), "confidence": 0.7}])
    rows = read_rows("old.csv")
    assert list(rows[0])[:3] == ["file", "generated_text", "is_silent"] and set(CSV_FIELDS) <= set(rows[0])
    assert rows[0]["generated_text"] == "rain" and rows[1]["confidence"] == "0.7"


def test_compaction_replaces_a_linked_target_and_keeps_its_mode():
    run("real.jsonl", [ok("a.wav"), failed("b.wav")])
    os.chmod("real.jsonl", 0o600)
    os.symlink("real.jsonl", "link.jsonl")
    run("link.jsonl", [ok("b.wav")])
    assert os.path.islink("link.jsonl") and oct(os.stat("real.jsonl").st_mode & 0o777) == "0o600"
    assert [r.get("error") for r in read_rows("real.jsonl")] == [None, None]


def read_fifo_in_thread(path):
    """Start a reader of the FIFO at `path`; returns (thread, its text once joined)."""
    got = io.StringIO()
    thread = threading.Thread(target=lambda: got.write(open(path, encoding="utf-8").read()), daemon=True)
    thread.start()
    return thread, got


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv"])
def test_a_fifo_is_written_never_read(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    thread, got = read_fifo_in_thread(fifo)
    # Reading first (the resume check) would block here for ever: the reader only reads.
    assert run(fifo, [ok("a.wav"), ok("a.wav")]) == set()
    thread.join(10)
    assert not thread.is_alive() and fifo.exists() and not fifo.is_file()
    rows = list(csv.DictReader(io.StringIO(got.getvalue()))) if name.endswith("csv") else [
        json.loads(line) for line in got.getvalue().splitlines()]
    assert [r["file"] for r in rows] == [result_key("a.wav")] * 2  # a stream is not compacted


def test_write_rows_replaces_a_file_and_writes_a_fifo(tmp_path):
    ranking = [{"query": "rain", "rank": 1, "file": "=rain.wav", "score": 0.5}]
    write_rows("r.csv", ranking, ("query", "rank", "file", "score"))
    assert read_rows("r.csv") == [{"query": "rain", "rank": "1", "file": "'=rain.wav", "score": "0.5"}]
    write_rows("r.JSONL", ranking, ("query", "rank", "file", "score"))
    assert read_rows("r.JSONL") == ranking
    os.mkfifo(tmp_path / "fifo")
    thread, got = read_fifo_in_thread(tmp_path / "fifo")
    write_rows(str(tmp_path / "fifo"), ranking, ("query", "rank", "file", "score"))
    thread.join(10)
    assert json.loads(got.getvalue()) == ranking[0] and not (tmp_path / "fifo").is_file()
