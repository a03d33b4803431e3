"""The committed manifest of the Debian recordings the starter uses, keyed by content.

One row per recording: `package`, `version` (as fetched when the manifest was written), `file` (path inside the
package), `member` (path inside that file when it is an archive, else empty), `md5` (of the recording's bytes),
`licence` and `caption` (the concept; its natural variants live with the captions data). Machines of this kind run
Debian 12 or 13, whose versions (and some files) differ, so a check matches recordings by md5, wherever in the
package they now are, and reports what differs (`ManifestCheck`) instead of failing on a version string.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields

from diffusion_link.starter.debian.archives import READERS, read_archive
from diffusion_link.starter.debian.packages import FetchedPackage


@dataclass(frozen=True)
class Recording:
    package: str
    version: str
    file: str
    member: str
    md5: str
    licence: str
    caption: str

    @property
    def location(self) -> tuple[str, str]:
        return self.file, self.member


COLUMNS = [f.name for f in fields(Recording)]


def read_manifest(path: str) -> list[Recording]:
    """The manifest's rows; `ValueError` naming the file when its columns are not `COLUMNS`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if reader.fieldnames != COLUMNS:
            raise ValueError(f"{path}: expected the columns {COLUMNS}, found {reader.fieldnames}")
        return [Recording(**row) for row in reader]


def write_manifest(recordings: Iterable[Recording], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in recordings)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def package_contents(fetched: FetchedPackage, files: Iterable[str]) -> Iterator[tuple[str, str, bytes]]:
    """`(file, member, bytes)` of `files` of the package: an archive's members one by one, a plain file whole."""
    for file in sorted(set(files)):
        path = fetched.path(file)
        if not os.path.exists(path):
            continue
        if os.path.splitext(file)[1].lower() in READERS:
            for member, data in read_archive(path):
                yield file, member, data
        else:
            with open(path, "rb") as f:
                yield file, "", f.read()


@dataclass
class ManifestCheck:
    """How a fetched package compares with the manifest's rows of it."""

    package: str
    version: str
    manifest_versions: set[str] = field(default_factory=set)
    found: dict[str, bytes] = field(default_factory=dict)  # md5 -> the recording's bytes
    moved: list[tuple[Recording, tuple[str, str]]] = field(default_factory=list)  # same content, another place
    changed: list[Recording] = field(default_factory=list)  # the place holds other content now
    missing: list[Recording] = field(default_factory=list)  # neither the content nor the place is there

    def summary(self) -> str:
        versions = "" if self.manifest_versions <= {self.version} else \
            f" (manifest written from {', '.join(sorted(self.manifest_versions))}, fetched {self.version})"
        return (f"{self.package}{versions}: {len(self.found)} recordings found by content, {len(self.moved)} of "
                f"them moved, {len(self.changed)} changed, {len(self.missing)} missing")


def check_package(fetched: FetchedPackage, rows: Sequence[Recording], extra_files: Iterable[str] = ()) -> ManifestCheck:
    """Match the manifest's `rows` of one package against what was fetched, by content first and place second.

    The files searched are those the rows name plus `extra_files` (where moved recordings may now be)."""
    wanted = {r.md5: r for r in rows}
    check = ManifestCheck(package=fetched.name, version=fetched.version, manifest_versions={r.version for r in rows})
    at_place = {}
    for file, member, data in package_contents(fetched, [r.file for r in rows] + list(extra_files)):
        digest = md5(data)
        at_place[(file, member)] = digest
        if digest in wanted and digest not in check.found:
            check.found[digest] = data
            if wanted[digest].location != (file, member):
                check.moved.append((wanted[digest], (file, member)))
    for row in rows:
        if row.md5 not in check.found:
            (check.changed if row.location in at_place else check.missing).append(row)
    return check


def deduplicate(recordings: Iterable[Recording]) -> tuple[list[Recording], list[tuple[Recording, Recording]]]:
    """The recordings with each content once (the first kept) and the `(duplicate, kept)` pairs dropped."""
    kept, dropped, seen = [], [], {}
    for r in recordings:
        if r.md5 in seen:
            dropped.append((r, seen[r.md5]))
        else:
            seen[r.md5] = r
            kept.append(r)
    return kept, dropped


def recording_file(recording: Recording) -> str:
    """Where a recording's audio goes in the extracted-audio folder: `PACKAGE/MD5.EXT` (the extension of its member,
    else of its file), so two recordings never share a name and a changed recording never reuses one."""
    extension = os.path.splitext(recording.member or recording.file)[1].lower()
    return os.path.join(recording.package, recording.md5 + extension)


def extract_found(check: ManifestCheck, rows: Sequence[Recording], folder: str) -> int:
    """Write each recording of `rows` that `check` found to `folder`/`recording_file(row)` (kept when already there);
    returns how many files it wrote."""
    written = 0
    for row in rows:
        data = check.found.get(row.md5)
        path = os.path.join(folder, recording_file(row))
        if data is None or os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".partial", "wb") as f:
            f.write(data)
        os.replace(path + ".partial", path)
        written += 1
    return written
