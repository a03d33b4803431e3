"""The manifest of Debian recordings: content-keyed checks (moved, changed, missing), deduplication, the columns."""

import io
import zipfile

import pytest

from diffusion_link.starter.debian.collections import BY_PACKAGE, COLLECTIONS, keeps
from diffusion_link.starter.debian.manifest import (
    COLUMNS, Recording, check_package, deduplicate, md5, package_contents, read_manifest, write_manifest,
)
from diffusion_link.starter.debian.packages import FetchedPackage


def zipped(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def package(tmp_path, files, version="2.0-1"):
    """A fetched package whose unpacked tree holds `files` (path -> bytes)."""
    for path, data in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    return FetchedPackage("tiny-sounds", version, deb="", root=str(tmp_path))


def row(file, member, data, version="1.0-1", caption="a cow mooing"):
    return Recording("tiny-sounds", version, file, member, md5(data), "CC0", caption)


def test_package_contents_reads_archive_members_and_plain_files(tmp_path):
    fetched = package(tmp_path, {"usr/share/a.zip": zipped({"audio/cow.ogg": b"moo"}), "usr/share/door.wav": b"creak"})
    assert list(package_contents(fetched, ["usr/share/a.zip", "usr/share/door.wav", "usr/share/gone.wav"])) == [
        ("usr/share/a.zip", "audio/cow.ogg", b"moo"), ("usr/share/door.wav", "", b"creak")]


def test_check_matches_by_content_and_reports_moved_changed_missing_and_versions(tmp_path):
    fetched = package(tmp_path, {
        "usr/share/a.zip": zipped({"audio/cow.ogg": b"moo", "audio/new/door.ogg": b"creak", "audio/dog.ogg": b"WOOF"}),
    })
    rows = [row("usr/share/a.zip", "audio/cow.ogg", b"moo"),          # same place, same content
            row("usr/share/a.zip", "audio/door.ogg", b"creak"),       # moved inside the archive
            row("usr/share/a.zip", "audio/dog.ogg", b"woof"),         # same place, other content
            row("usr/share/b.zip", "audio/cat.ogg", b"meow")]         # gone
    check = check_package(fetched, rows)
    assert set(check.found) == {md5(b"moo"), md5(b"creak")}
    assert [(r.member, place) for r, place in check.moved] == [("audio/door.ogg", ("usr/share/a.zip", "audio/new/door.ogg"))]
    assert [r.member for r in check.changed] == ["audio/dog.ogg"]
    assert [r.member for r in check.missing] == ["audio/cat.ogg"]
    assert "(manifest written from 1.0-1, fetched 2.0-1)" in check.summary()
    assert "2 recordings found by content, 1 of them moved, 1 changed, 1 missing" in check.summary()


def test_deduplicate_keeps_the_first_of_each_content():
    rows = [row("f", "a.ogg", b"x"), row("f", "b.ogg", b"y"), row("f", "c.ogg", b"x")]
    kept, dropped = deduplicate(rows)
    assert [r.member for r in kept] == ["a.ogg", "b.ogg"]
    assert [(d.member, k.member) for d, k in dropped] == [("c.ogg", "a.ogg")]


def test_manifest_round_trip_and_wrong_columns(tmp_path):
    rows = [row("usr/share/a.zip", "audio/cow, 1.ogg", b"moo", caption='a cow "moos"\tloudly')]
    write_manifest(rows, tmp_path / "m.tsv")
    assert read_manifest(tmp_path / "m.tsv") == rows
    (tmp_path / "bad.tsv").write_text("package\tfile\n0ad\tx\n")
    with pytest.raises(ValueError, match=r"bad.tsv.*expected the columns"):
        read_manifest(tmp_path / "bad.tsv")
    assert COLUMNS[:2] == ["package", "version"]


def test_collections_skip_instruments_and_doubtful_packages():
    names = {c.package for c in COLLECTIONS}
    assert not names & {"hydrogen-drumkits", "lmms-common", "hedgewars-data", "lincity-ng-data", "bucklespring-data"}
    gcompris = BY_PACKAGE["gcompris-qt-data"]
    assert not keeps(gcompris, "usr/share/gcompris-qt/rcc/instruments.rcc", "banjo.ogg")
    assert keeps(gcompris, "usr/share/gcompris-qt/rcc/memory-sound.rcc", "train.ogg")
