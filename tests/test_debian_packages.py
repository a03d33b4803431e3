"""Fetching and unpacking Debian packages into the cache, on a tiny package built here with `dpkg-deb --build`."""

import os
import shutil
import subprocess

import pytest

from diffusion_link.starter.debian import packages
from diffusion_link.starter.debian.packages import fetch_package, find_deb


pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian's package tool)")


def build_deb(folder, name="tiny-sounds", version="1:1.0-2", files=None):
    """A real .deb of `files` (path inside the package -> bytes), written as NAME_VERSION_all.deb into `folder`."""
    tree = folder / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Tests <t@example.org>\n"
        "Description: tiny test sounds\n")
    for path, data in (files or {"usr/share/sounds/cow.wav": b"RIFFcow"}).items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    deb = folder / f"{name}_{version.split(':')[-1]}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(tree)
    return deb


def test_fetch_from_a_folder_of_debs_reads_the_version_and_unpacks_into_the_cache(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    deb = build_deb(debs)
    fetched = fetch_package("tiny-sounds", debs_dir=str(debs), cache=str(tmp_path / "cache"))
    assert fetched.version == "1:1.0-2" and fetched.deb == str(deb)
    assert fetched.root.startswith(str(tmp_path / "cache"))
    with open(fetched.path("usr/share/sounds/cow.wav"), "rb") as f:
        assert f.read() == b"RIFFcow"


def test_a_completed_unpack_is_not_repeated_and_a_partial_one_is(tmp_path, monkeypatch):
    debs = tmp_path / "debs"
    debs.mkdir()
    build_deb(debs)
    cache = str(tmp_path / "cache")
    first = fetch_package("tiny-sounds", debs_dir=str(debs), cache=cache)
    os.remove(first.path("usr/share/sounds/cow.wav"))  # a completed unpack is trusted: the mark says so
    again = fetch_package("tiny-sounds", debs_dir=str(debs), cache=cache)
    assert again.root == first.root and not os.path.exists(again.path("usr/share/sounds/cow.wav"))
    os.remove(os.path.join(first.root, packages.DONE_MARK))  # a stopped unpack (no mark) is done again
    redone = fetch_package("tiny-sounds", debs_dir=str(debs), cache=cache)
    assert os.path.exists(redone.path("usr/share/sounds/cow.wav"))


def test_find_deb_matches_the_package_name_exactly(tmp_path):
    build_deb(tmp_path, name="tiny-sounds")
    build_deb(tmp_path, name="tiny-sounds-extra")
    assert os.path.basename(find_deb("tiny-sounds", str(tmp_path))).startswith("tiny-sounds_")
    assert find_deb("tiny", str(tmp_path)) is None


def test_a_package_that_cannot_be_had_names_it_and_the_way_out(tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(packages.shutil, "which", lambda tool: None if tool == "apt-get" else real_which(tool))
    with pytest.raises(RuntimeError, match=r"'no-such-sounds'.*apt-get is not on this machine.*debs_dir"):
        fetch_package("no-such-sounds", debs_dir=str(tmp_path), cache=str(tmp_path / "cache"))


def test_a_broken_deb_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad-sounds_1.0_all.deb").write_bytes(b"not a debian package")
    with pytest.raises(RuntimeError, match="bad-sounds_1.0_all.deb"):
        fetch_package("bad-sounds", debs_dir=str(tmp_path), cache=str(tmp_path / "cache"))
