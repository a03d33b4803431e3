"""The readers of the archives Debian's packages pack sounds in, on tiny archives of each format built here."""

import gzip
import io
import struct
import zipfile
import zlib

import pytest

from diffusion_link.starter.debian.archives import (
    ArchiveError, archive_reader, c4_scramble, opensfx_descriptions, read_archive, read_c4group, read_member,
    read_opensfx, read_rcc, read_zip,
)


WAV = b"RIFF\x24\x00\x00\x00WAVEfmt fake"
OGG = b"OggS\x00\x02fake ogg bytes"


# ------------------------------------------------------------------------------------------------ tiny writers
def c4group(members: dict, packed: bool = True) -> bytes:
    """A C4Group of `members` (name -> bytes, or a dict for a nested group), gzip-packed with OpenClonk's magic."""
    blobs, entries, offset = [], [], 0
    for name, value in members.items():
        child = isinstance(value, dict)
        blob = c4group(value, packed=False) if child else value
        entries.append(name.encode().ljust(260, b"\0") + struct.pack("<5i", 0, int(child), len(blob), 0, offset)
                       + b"\0" * 36)
        blobs.append(blob)
        offset += len(blob)
    header = bytearray(b"RedWolf Design GrpFolder".ljust(204, b"\0"))
    struct.pack_into("<3i", header, 28, 1, 2, len(members))
    raw = c4_scramble(bytes(header)) + b"".join(entries) + b"".join(blobs)
    return b"\x1e\x8c" + gzip.compress(raw)[2:] if packed else raw


def rcc(tree: dict, version: int = 1, compress: tuple = ()) -> bytes:
    """A Qt resource file of `tree` (name -> bytes, or a dict for a folder); names in `compress` are zlib-packed."""
    node_size = 14 if version < 2 else 22
    nodes, names, data = [], bytearray(), bytearray()

    def add_name(name: str) -> int:
        at = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return at

    def add_dir(index: int, name: str, children: dict):
        first = len(nodes)
        nodes.extend([None] * len(children))
        nodes[index] = struct.pack(">iHii", add_name(name), 2, len(children), first)
        for i, (child, value) in enumerate(children.items()):
            if isinstance(value, dict):
                add_dir(first + i, child, value)
            else:
                blob = struct.pack(">I", len(value)) + zlib.compress(value) if child in compress else value
                nodes[first + i] = struct.pack(">iHhhi", add_name(child), 1 if child in compress else 0, 0, 0,
                                               len(data))
                data.extend(struct.pack(">i", len(blob)) + blob)

    nodes.append(None)
    add_dir(0, "", tree)
    tree_bytes = b"".join(node.ljust(node_size, b"\0") for node in nodes)
    header = 20
    return (b"qres" + struct.pack(">4i", version, header, header + len(tree_bytes),
                                  header + len(tree_bytes) + len(data)) + tree_bytes + bytes(data) + bytes(names))


def opensfx(entries: list[tuple[str, bytes]]) -> bytes:
    """An OpenTTD sound catalogue of (description, wav bytes) entries."""
    bodies = [bytes([len(text) + 1]) + text.encode() + b"\0" + wav for text, wav in entries]
    offset, table = 8 * len(entries), b""
    for body in bodies:
        table += struct.pack("<2I", offset | 0x80000000, len(body))
        offset += len(body)
    return table + b"".join(bodies)


# ------------------------------------------------------------------------------------------------------ tests
def test_zip_and_pk3_members():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("audio/fauna/cow.ogg", OGG)
        archive.writestr("audio/empty/", b"")
        archive.writestr("sound/door.wav", WAV)
    assert dict(read_zip(buffer.getvalue())) == {"audio/fauna/cow.ogg": OGG, "sound/door.wav": WAV}


def test_c4group_nested_groups_and_scramble():
    archive = c4group({"Hits.ocg": {"Rock.ocg": {"RockHit1.ogg": OGG}, "Glass.wav": WAV}, "Thunder.ogg": OGG + b"!"})
    assert archive[:2] == b"\x1e\x8c"
    assert dict(read_c4group(archive)) == {
        "Hits.ocg/Rock.ocg/RockHit1.ogg": OGG, "Hits.ocg/Glass.wav": WAV, "Thunder.ogg": OGG + b"!"}
    assert c4_scramble(c4_scramble(b"RedWolf Design abc")) == b"RedWolf Design abc"


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_folders_and_zlib(version):
    archive = rcc({"gcompris": {"sounds": {"bark.ogg": OGG, "train.wav": WAV * 20}}, "top.wav": WAV},
                  version=version, compress=("train.wav",))
    assert dict(read_rcc(archive)) == {
        "gcompris/sounds/bark.ogg": OGG, "gcompris/sounds/train.wav": WAV * 20, "top.wav": WAV}


def test_opensfx_entries_descriptions_and_placeholders():
    catalogue = opensfx([('"Cow". By A. License: CC0.', WAV), ('"Unused/Nothing". Empty.', b""),
                         ('"Horn". By B. License: CC-BY 3.0.', WAV + b"horn")])
    assert dict(read_opensfx(catalogue)) == {"entry 0": WAV, "entry 2": WAV + b"horn"}
    descriptions = opensfx_descriptions(catalogue)
    assert descriptions["entry 0"] == '"Cow". By A. License: CC0.'
    assert descriptions["entry 1"].startswith('"Unused/Nothing"')


def test_read_archive_by_suffix_and_read_member(tmp_path):
    path = tmp_path / "Sound.OCG"
    path.write_bytes(c4group({"Door.wav": WAV}))
    assert archive_reader(str(path)) is read_c4group
    assert list(read_archive(str(path))) == [("Door.wav", WAV)]
    assert read_member(str(path), "Door.wav") == WAV
    with pytest.raises(KeyError, match="Window.wav"):
        read_member(str(path), "Window.wav")
    with pytest.raises(ValueError, match=r"\.tar.*expected one of"):
        archive_reader(str(tmp_path / "sounds.tar"))


@pytest.mark.parametrize("reader, data, message", [
    (read_zip, b"not a zip", "not a zip"),
    (read_c4group, b"\x1e\x8c" + b"garbage", "gzip stream"),
    (read_c4group, b"\0" * 300, "not a C4Group"),
    (read_rcc, b"qrez" + b"\0" * 30, "qres"),
    (read_rcc, b"qres" + struct.pack(">4i", 1, 10**6, 0, 0), "outside the file"),
    (read_opensfx, struct.pack("<2I", 0x80000000 | 800, 10), "cannot hold"),
])
def test_broken_archives_raise_archive_error_naming_the_archive(reader, data, message):
    with pytest.raises(ArchiveError, match=message) as caught:
        list(reader(data, "broken.bin"))
    assert "broken.bin" in str(caught.value)


def test_c4group_entry_past_the_end_is_an_error():
    archive = bytearray(c4group({"a.wav": WAV}, packed=False))
    struct.pack_into("<i", archive, 204 + 260 + 8, 10**6)  # the entry's size
    with pytest.raises(ArchiveError, match="a.wav"):
        list(read_c4group(bytes(archive), "g.ocg"))
