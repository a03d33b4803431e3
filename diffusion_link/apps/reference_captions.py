"""Reference captions for evaluation, read from the files that caption datasets ship.

- `read_references_csv`: a CSV with a `file_name` column (or AudioCaps' `youtube_id`) and caption columns `caption`
  or `caption_1` .. `caption_N` (Clotho); rows of the same file are grouped (AudioCaps has one caption per row).
- `read_sidecar_references`: audio files with sidecar text files (`dog.txt` next to `dog.wav`), one reference per
  line.
- `read_caption_file`: a plain list of captions (text-only training data): a CSV with a `caption` column, or one
  caption per line.

Both return the audio files and, per file, its list of references; every error names the file it is about. Each
file is opened by `open_text_file`: a regular UTF-8 text file, never a FIFO, a terminal or a folder (reading a FIFO
or `/dev/stdin` would wait for a writer forever, as the audio readers refuse them too).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Sequence

from diffusion_link.audio_io import AUDIO_EXTENSIONS


logger = logging.getLogger(__name__)


KEY_COLUMNS = ("file_name", "youtube_id")
CAPTION_COLUMN = re.compile(r"caption(_\d+)?")


# ---------------------------------------------------------------------------------------------------- reading
@contextmanager
def open_text_file(path: str | os.PathLike, what: str, newline: str | None = None) -> Iterator[IO[str]]:
    """`path` open for reading as UTF-8 text (a byte-order mark skipped) when it is a regular file; else `ValueError`
    naming it and what it is (a FIFO, a folder, a device, `/dev/stdin` on a pipe or a terminal), before anything is
    read. A file that is not UTF-8, or a CSV field past the csv module's limit, is a `ValueError` naming the file,
    not a `UnicodeDecodeError` / `csv.Error` that does not.

    The file is opened non-blocking and checked on its descriptor: a FIFO opens at once instead of waiting for a
    writer, and it cannot be swapped in between a check and the open."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path}: expected a regular file of {what}, got {_file_kind(mode)}.")
    except BaseException:
        os.close(fd)
        raise
    with open(fd, newline=newline, encoding="utf-8-sig") as f:
        try:
            yield f
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err}); save the {what} as UTF-8.") from None
        except csv.Error as err:
            raise ValueError(f"{path}: not a readable CSV ({err}).") from None


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device (a terminal, say)"
    return "a socket or another special file"


# ---------------------------------------------------------------------------------------------------- references
def read_references_csv(
    path: str | os.PathLike, audio_dir: str | os.PathLike | None = None
) -> tuple[list[str], list[list[str]]]:
    """Audio files and their reference captions from a CSV, in the CSV's order of first appearance.

    Args:
        path: a CSV with a key column, `file_name` (a path relative to `audio_dir`, or absolute) or, for AudioCaps,
            `youtube_id`, and caption columns `caption` and/or `caption_1` .. `caption_N`. Other columns
            (`audiocap_id`, `start_time`, ...) are ignored. Rows with the same key are grouped, their captions
            concatenated in order. Blank caption cells are dropped.
        audio_dir: where the audio files are; default: the CSV's folder. A `youtube_id` is matched to a file in it
            (searched recursively) named `<id>.<ext>`, `Y<id>.<ext>` (AudioSet) or `<id>_<start_time>.<ext>`; an id
            without a file is kept as `audio_dir/<id>`, which the evaluation then reports as a missing file.

    Returns:
        `(files, references)`: N paths and N lists of reference captions.

    Raises `ValueError` naming the file when the columns are not the expected ones (listing the columns found),
    when a key cell is empty, or when a file has no non-blank caption (listing the files and their CSV lines).
    """
    path = os.fspath(path)
    audio_dir = os.fspath(audio_dir) if audio_dir is not None else os.path.dirname(os.path.abspath(path))
    with open_text_file(path, "reference captions", newline="") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        key = next((c for c in KEY_COLUMNS if c in header), None)
        caption_columns = sorted(
            (c for c in header if CAPTION_COLUMN.fullmatch(c)), key=lambda c: int(c[8:]) if c != "caption" else 0
        )
        if key is None or not caption_columns:
            raise ValueError(
                f"{path}: expected a `file_name` column (or AudioCaps' `youtube_id`) and caption columns `caption` "
                f"or `caption_1`, `caption_2`, ...; found columns {header}."
            )
        key_at, start_at = header.index(key), header.index("start_time") if "start_time" in header else None
        caption_at = [header.index(c) for c in caption_columns]
        groups: dict[str, dict[str, Any]] = {}
        empty_keys = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            row = row + [""] * (len(header) - len(row))
            name = row[key_at].strip()
            if not name:
                empty_keys.append(reader.line_num)
                continue
            group = groups.setdefault(name, {"references": [], "lines": [], "start_time": None})
            group["references"] += [row[i].strip() for i in caption_at if row[i].strip()]
            group["lines"].append(reader.line_num)
            if start_at is not None and group["start_time"] is None:
                group["start_time"] = row[start_at].strip()
    if empty_keys:
        raise ValueError(f"{path}: empty `{key}` on lines {empty_keys[:10]}.")
    if not groups:
        raise ValueError(f"{path}: no rows.")
    unreferenced = [f"{name} (lines {g['lines'][:5]})" for name, g in groups.items() if not g["references"]]
    if unreferenced:
        raise ValueError(
            f"{path}: {len(unreferenced)} files have no reference caption: {', '.join(unreferenced[:10])}. Every "
            f"file needs at least one non-empty caption in {caption_columns}."
        )
    if key == "file_name":
        files = [os.path.join(audio_dir, name) for name in groups]
    else:
        index = _audio_index(audio_dir)
        files = [_find_youtube_clip(index, audio_dir, name, g["start_time"]) for name, g in groups.items()]
    return files, [g["references"] for g in groups.values()]


def read_sidecar_references(files: Sequence[str]) -> list[list[str]]:
    """The references of audio files from sidecar text files: `clips/dog.txt` (one caption per line, blank lines
    ignored) for `clips/dog.wav`. Raises `ValueError` listing the files without a sidecar or with an empty one."""
    references, missing = [], []
    for path in files:
        sidecar = os.path.splitext(path)[0] + ".txt"
        lines = []
        if os.path.exists(sidecar):  # one that is there but not a regular file is an error naming it, not "missing"
            with open_text_file(sidecar, "reference captions") as f:
                lines = [line.strip() for line in f if line.strip()]
        if not lines:
            missing.append(sidecar)
        references.append(lines)
    if missing:
        raise ValueError(
            f"{len(missing)} audio files have no reference captions: expected a text file next to each, one caption "
            f"per line; missing or empty: {missing[:10]}."
        )
    return references


def _audio_index(audio_dir: str) -> dict[str, list[str]]:
    """File stem -> paths of the audio files under `audio_dir` (recursive)."""
    index: dict[str, list[str]] = {}
    for root, _, names in sorted(os.walk(audio_dir)):
        for name in sorted(names):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in AUDIO_EXTENSIONS:
                index.setdefault(stem, []).append(os.path.join(root, name))
    return index


def _find_youtube_clip(index: dict[str, list[str]], audio_dir: str, youtube_id: str, start_time: str | None) -> str:
    stems = [youtube_id, f"Y{youtube_id}"]
    if start_time:
        stems.append(f"{youtube_id}_{start_time}")
    for stem in stems:
        if stem in index:
            return index[stem][0]
    return os.path.join(audio_dir, youtube_id)


def read_caption_file(path: str | os.PathLike) -> list[str]:
    """The non-empty captions of `path` (stripped; empty ones are dropped with a warning that counts them): a CSV
    (`.csv`, any case) with a `caption` column, else one caption per line."""
    path = os.fspath(path)
    with open_text_file(path, "captions", newline="") as f:
        if path.lower().endswith(".csv"):
            rows = list(csv.DictReader(f))
            if not rows or "caption" not in rows[0]:
                raise ValueError(f"{path}: expected a CSV with a `caption` column.")
            captions = [r["caption"] for r in rows]
        else:
            captions = f.read().splitlines()
    kept = [c.strip() for c in captions if c and c.strip()]
    if len(kept) < len(captions):
        logger.warning("%s: dropped %d empty captions", path, len(captions) - len(kept))
    if not kept:
        raise ValueError(f"{path}: no captions.")
    return kept
