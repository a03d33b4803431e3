"""Atomic file writes: the content goes to a temporary file in the target's folder, which is renamed over the target
(`os.replace`, atomic on POSIX and Windows) only once it is complete. A crash or a kill therefore never leaves a
half-written output: the target is the previous version or the new one. On an exception the temporary file is
removed; after a hard kill (SIGKILL) a `.<name>.tmp-<pid><suffix>` file may remain next to the target, never in its
place.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to `path` (same folder, same suffix, so writers that read the format from the
    name, such as matplotlib's `savefig`, still do); on success it replaces `path`, on an exception it is removed."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    suffix = os.path.splitext(name)[1]
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """`open(path, mode, **open_kwargs)` for writing, made atomic: the file appears at `path` complete (flushed and
    fsynced) when the block ends, or not at all if it raises."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open writes a new file: mode must contain 'w' or 'x', got {mode!r}.")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
