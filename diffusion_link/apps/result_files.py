"""Result files of `diffusion-link caption` (and the ranking `search` writes): their format, resume and safety, in
one place.

Format: a name ending in `.csv`, in any case (`X.CSV` too), is CSV with the columns `CSV_FIELDS`; any other name is
JSON lines, one object per line. Without `--output`, JSON lines go to stdout.

One row per audio file. `file` holds the file's resolved path (`os.path.realpath`), the same in both formats: it is
the key a rerun matches, so `./dir/x.wav`, `dir/x.wav` and a link to it are one file, whatever folder the rerun starts
in. A rerun skips the files that have a result and captions again those whose row is an error.

Crash safety: each row is appended and flushed as its file finishes, so a killed run keeps every finished file. At the
start and at the end of a run the file is compacted: one row per file, the latest winning (in the place of the file's
first row), rewritten atomically (a temporary file renamed over it; through a link, over its target). The file is
parsed, never cut at a newline: a record a kill left half-written, even inside a quoted CSV cell that holds a newline,
is dropped with a warning and its file is captioned again. A line that is no result row (a JSON line without "file",
a CSV without a `file` column) stops the run with an error naming the file and the line: such an output is someone
else's file, not to be rewritten. Compacting holds the file in memory (a few hundred bytes a file; more with
`chunks`), and two runs must not share one output.

Non-regular outputs (`/dev/stdout`, a pipe, a FIFO, a character device) are written only: never read, resumed,
truncated or compacted.

CSV cells: `chunks` (each window's timestamp and caption) and `candidates` are JSON-encoded, so no field of a result is
lost (a result key without a column is an error, not a dropped value). Text cells that begin with `=`, `+`, `-`, `@`,
a tab or a carriage return get a leading `'`, as OWASP advises against formula injection (a spreadsheet would run
them; a file name is enough). Numbers are written as they are, and the key is never touched (a resolved path begins
with the root or a drive). Rows read back are written back as they were: never neutralised twice, never undone.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from typing import IO

from diffusion_link.experiments.atomic_files import atomic_path


logger = logging.getLogger(__name__)

CSV_FIELDS = ("file", "generated_text", "is_silent", "duration_s", "sampling_rate", "num_channels", "peak_dbfs",
              "error", "confidence", "below_min_confidence", "chunks", "candidates")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def is_csv(path: str) -> bool:
    """Whether `path` names a CSV output (its suffix, in any case)."""
    return os.path.splitext(path)[1].lower() == ".csv"


def is_stream(path: str) -> bool:
    """Whether `path` exists and is not a regular file (a pipe, a FIFO, a character device): reading it would block
    or consume what another process writes, so it is only written."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def result_key(path: str) -> str:
    """The key of an audio file's row, and what its `file` holds: the resolved path."""
    return os.path.realpath(path)


def neutralize_formula(text: str) -> str:
    """`text` with a leading `'` when a spreadsheet would read it as a formula (OWASP's CSV injection advice)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def csv_cells(row: dict, fields: Sequence[str]) -> dict:
    """A result row as the cells of a CSV with the columns `fields`: lists and dicts JSON-encoded, text neutralised
    (`neutralize_formula`), numbers as they are. `ValueError` for a key without a column rather than a lost value."""
    missing = [key for key in row if key not in fields]
    if missing:
        raise ValueError(f"the CSV output has no column for {missing} (its columns: {list(fields)}); write JSON lines "
                         "(a name ending in .jsonl) to keep them.")
    return {key: _cell(value) for key, value in row.items()}


def _cell(value):
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        return neutralize_formula(value)
    return value


# ---------------------------------------------------------------------------------------------------- reading
class _Rows:
    """The rows of an existing result file, one per key (the latest; in the place of the key's first row), as read:
    raw JSON lines or CSV cells, never re-encoded."""

    def __init__(self, header: list[str] | None):
        self.header = header  # CSV columns; None for JSON lines
        self.by_key: dict[str, str | list[str]] = {}
        self.failed: set[str] = set()  # keys whose latest row is an error

    def add(self, file: str, record, failed: bool) -> None:
        key = result_key(file)
        self.by_key[key] = record
        (self.failed.add if failed else self.failed.discard)(key)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        try:
            return f.read()
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); it is not a result file "
                             "of `diffusion-link caption`: give another --output.") from None


def _not_a_result(path: str, line: int, what: str) -> ValueError:
    return ValueError(f"{path} line {line}: {what}; it is not a result file of `diffusion-link caption` (give another "
                      "--output, or mend the line).")


def _json_row(path: str, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise _not_a_result(path, number, f"not JSON ({err.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not row["file"]:
        raise _not_a_result(path, number, f'not a result row (a JSON object with "file"), got {line[:80]!r}')
    return row


def _read_json_lines(path: str, text: str) -> tuple[_Rows, int | None]:
    """The rows of a JSON lines file, and the number of a half-written last line that was dropped (or None)."""
    rows, dropped = _Rows(None), None
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    for number, line in enumerate(lines, 1):
        if line.strip():
            row = _json_row(path, number, line)
            rows.add(row["file"], line.rstrip("\r"), "error" in row)
    if tail.strip():  # no newline after it: complete only if it parses (no prefix of an object does)
        try:
            row = _json_row(path, len(lines) + 1, tail)
            rows.add(row["file"], tail, "error" in row)
        except ValueError:
            dropped = len(lines) + 1
    return rows, dropped


def _csv_records(path: str, text: str) -> list[tuple[int, list[str], str]]:
    """(first line number, cells, raw text) of each CSV record, parsed by the csv module (a cell may hold newlines)."""
    consumed = 0

    def lines():
        nonlocal consumed
        for line in io.StringIO(text, newline=""):
            consumed += len(line)
            yield line

    records, start, line_number = [], 0, 1
    reader = csv.reader(lines())
    # A long file's `chunks` cell can pass the csv module's 128 KiB default; the whole text is in memory anyway.
    limit = csv.field_size_limit(max(len(text), csv.field_size_limit()))
    try:
        for cells in reader:  # the reader reads no further than the end of the record it yields
            records.append((line_number, cells, text[start:consumed]))
            start, line_number = consumed, reader.line_num + 1
    except csv.Error as err:
        raise _not_a_result(path, line_number, f"not CSV ({err})") from None
    finally:
        csv.field_size_limit(limit)
    return records


def _read_csv(path: str, text: str) -> tuple[_Rows, int | None]:
    """The rows of a CSV file, and the first line of a half-written last record that was dropped (or None)."""
    records = _csv_records(path, text)
    dropped = None
    if records:
        number, _, raw = records[-1]
        # Complete: ended by a line break outside quotes (an odd count of quote characters means inside a cell).
        if not raw.endswith(("\n", "\r")) or raw.count('"') % 2:
            records.pop()
            dropped = number
    records = [r for r in records if r[1]]  # blank lines
    if not records:
        return _Rows(list(CSV_FIELDS)), dropped
    header = records[0][1]
    if "file" not in header:
        raise _not_a_result(path, records[0][0], f"the header has no `file` column, got {header[:12]}")
    # Columns this version writes and an older file lacks are added (at the end), so that nothing new is dropped.
    rows = _Rows(header + [f for f in CSV_FIELDS if f not in header])
    index, error = header.index("file"), header.index("error") if "error" in header else None
    for number, cells, _ in records[1:]:
        if len(cells) > len(header):
            raise _not_a_result(path, number, f"{len(cells)} cells under a header of {len(header)} columns")
        if index >= len(cells) or not cells[index]:
            raise _not_a_result(path, number, "a row without a `file`")
        failed = error is not None and error < len(cells) and bool(cells[error])
        rows.add(cells[index], cells, failed)
    return rows, dropped


def _serialize(rows: _Rows) -> str:
    if rows.header is None:
        return "".join(line + "\n" for line in rows.by_key.values())
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(rows.header)
    writer.writerows(cells + [""] * (len(rows.header) - len(cells)) for cells in rows.by_key.values())
    return out.getvalue()


def _rewrite(path: str, text: str) -> None:
    """Replace the file's content atomically (a temporary file renamed over it), keeping the mode of an existing
    file; through a link, its target is replaced."""
    target = os.path.realpath(path)
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(target):
            shutil.copymode(target, tmp)


def compact(path: str, csv_format: bool) -> _Rows | None:
    """Compact the regular result file at `path` (one row per file, the latest winning; a half-written last record
    dropped with a warning; columns this version writes added to an older CSV) and return its rows; None when there
    is no file."""
    if not os.path.exists(path):
        return None
    text = _read_text(path)
    rows, dropped = (_read_csv if csv_format else _read_json_lines)(path, text)
    if dropped is not None:
        logger.warning("%s: dropped the half-written last row (line %d) a stopped run left; its file is captioned "
                       "again.", path, dropped)
    compacted = _serialize(rows)
    if compacted != text:
        _rewrite(path, compacted)
    return rows


# ---------------------------------------------------------------------------------------------------- writing
class ResultFile:
    """The output of a caption run: `with ResultFile(path) as results:` compacts the file, `results.done` holds the
    keys (`result_key`) of the files it already has a result for, `results.write(row)` appends one row and flushes
    it, and leaving the block compacts the file again. `path` None: JSON lines to stdout."""

    def __init__(self, path: str | None):
        self.path = path
        self.done: set[str] = set()
        self._handle: IO | None = None
        self._csv: csv.DictWriter | None = None
        # A regular file is worked on through its resolved path: compacting replaces the file, so a name that
        # reaches it through a descriptor (`/dev/stdout` redirected to a file) would go on writing to the old one.
        self._target: str | None = None

    def __enter__(self) -> ResultFile:
        if self.path is None:
            self._handle = sys.stdout
            return self
        csv_format, columns = is_csv(self.path), list(CSV_FIELDS)
        if is_stream(self.path):
            self._handle = open(self.path, "w", encoding="utf-8", newline="")
        else:
            self._target = os.path.realpath(self.path)
            rows = compact(self._target, csv_format)
            if rows is not None:
                self.done = set(rows.by_key) - rows.failed
                columns = rows.header or columns
            self._handle = open(self._target, "a", encoding="utf-8", newline="")
        if csv_format:
            self._csv = csv.DictWriter(self._handle, fieldnames=columns)
            if self._target is None or os.path.getsize(self._target) == 0:  # a stream, or a new file
                self._csv.writeheader()
                self._handle.flush()
        return self

    def write(self, row: dict) -> None:
        """Append one result row (a dict with `file`) and flush it: it is on disk before the next file starts."""
        if self._csv is not None:
            self._csv.writerow(csv_cells(row, self._csv.fieldnames))
        else:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def __exit__(self, *exc) -> None:
        if self._handle is not sys.stdout:
            self._handle.close()
        if self._target is not None:
            compact(self._target, self._csv is not None)


def write_rows(path: str, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """Write `rows` as the whole content of `path`: CSV with the columns `fields` (cells as `csv_cells` makes them)
    or JSON lines, by the name. A regular file is replaced atomically; a stream is written directly."""
    out = io.StringIO(newline="")
    if is_csv(path):
        writer = csv.DictWriter(out, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(csv_cells(row, fields) for row in rows)
    else:
        out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if is_stream(path):
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(out.getvalue())
    else:
        _rewrite(path, out.getvalue())
