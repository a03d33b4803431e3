"""Readers of the archives Debian's game and educational packages pack their sounds in.

Every reader takes the archive's bytes and yields `(member, data)` pairs: the member's path inside the archive (with
`/` between nested groups) and its bytes. `read_archive(path)` picks the reader from the file name; `read_member`
returns one member or raises `KeyError` naming the archive and the member.

Formats:
- zip / pk3 (0 A.D.'s `public.zip`, UFO:AI's `0snd.pk3`): `zipfile`.
- OpenClonk C4Group (`.ocg`, `.ocd`): a gzip stream whose magic is written `1e 8c`; inside, a 204-byte header
  scrambled by XOR 0xED and a swap of bytes i and i+2 in every triple (`RedWolf Design` once unscrambled; entry count
  at bytes 36-39), then one 316-byte entry per member (name[260], packed, child, size, reserved, offset; offsets count
  from the end of the entry table). A member with `child` set is itself a group and is read recursively.
- Qt `.rcc`: `qres`, then big-endian offsets of the tree, data and names; tree nodes of 14 bytes (format 1) or 22
  (later); directories (flag 2) list children, files point into the data section (4-byte length, then the bytes;
  flag 1: a further 4-byte length and zlib; flag 4: zstd, which needs the `zstandard` package).
- OpenTTD `opensfx.cat`: little-endian `(offset | 0x80000000, size)` pairs, one per entry (the first offset / 8 is
  the count); each entry is a length-prefixed text description (the recording's name, author and licence) and RIFF
  data. Members are named `entry N`; `opensfx_descriptions` gives the texts (placeholders without RIFF data, which
  OpenTTD marks "Unused/Nothing", are not members).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator


Member = tuple[str, bytes]

C4_MAGIC = b"\x1e\x8c"
C4_HEADER_SIZE = 204
C4_ENTRY_SIZE = 316
C4_HEADER_ID = b"RedWolf Design"


class ArchiveError(ValueError):
    """An archive that does not hold what its format says (names the archive and what is wrong)."""


# ------------------------------------------------------------------------------------------------------------ zip
def read_zip(data: bytes, name: str = "archive") -> Iterator[Member]:
    """The files of a zip (or pk3) archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise ArchiveError(f"{name} is not a zip archive: {err}") from None
    for info in archive.infolist():
        if not info.is_dir():
            yield info.filename, archive.read(info)


# ------------------------------------------------------------------------------------------------------- C4Group
def c4_scramble(header: bytes) -> bytes:
    """OpenClonk's header scrambling (XOR 0xED, swap bytes i and i+2 of every triple); it is its own inverse."""
    out = bytearray(b ^ 0xED for b in header)
    for i in range(0, len(out) - 2, 3):
        out[i], out[i + 2] = out[i + 2], out[i]
    return bytes(out)


def read_c4group(data: bytes, name: str = "archive") -> Iterator[Member]:
    """The files of an OpenClonk group (`.ocg`, `.ocd`), nested groups included (their paths joined by `/`)."""
    if data[:2] == C4_MAGIC:
        try:
            data = gzip.decompress(b"\x1f\x8b" + data[2:])
        except (OSError, EOFError, zlib.error) as err:
            raise ArchiveError(f"{name}: the C4Group's gzip stream does not decompress: {err}") from None
    yield from _c4_entries(data, name, prefix="")


def _c4_entries(data: bytes, name: str, prefix: str) -> Iterator[Member]:
    if len(data) < C4_HEADER_SIZE:
        raise ArchiveError(f"{name}: {prefix or 'the group'} is {len(data)} bytes, shorter than a C4Group header")
    header = c4_scramble(data[:C4_HEADER_SIZE])
    if not header.startswith(C4_HEADER_ID):
        raise ArchiveError(f"{name}: {prefix or 'the group'} is not a C4Group (its header does not read "
                           f"{C4_HEADER_ID.decode()!r})")
    (count,) = struct.unpack_from("<i", header, 36)
    table_end = C4_HEADER_SIZE + count * C4_ENTRY_SIZE
    if count < 0 or table_end > len(data):
        raise ArchiveError(f"{name}: {prefix or 'the group'} claims {count} entries, more than its bytes hold")
    for i in range(count):
        entry = data[C4_HEADER_SIZE + i * C4_ENTRY_SIZE:C4_HEADER_SIZE + (i + 1) * C4_ENTRY_SIZE]
        member = entry[:260].split(b"\0", 1)[0].decode("latin-1")
        _packed, child, size, _reserved, offset = struct.unpack_from("<5i", entry, 260)
        start = table_end + offset
        if size < 0 or offset < 0 or start + size > len(data):
            raise ArchiveError(f"{name}: entry {prefix + member!r} points past the end of its group")
        blob = data[start:start + size]
        if child:
            yield from read_c4group(blob, name) if blob[:2] == C4_MAGIC else _c4_entries(blob, name, prefix + member + "/")
        else:
            yield prefix + member, blob


# -------------------------------------------------------------------------------------------------------- Qt rcc
def read_rcc(data: bytes, name: str = "archive") -> Iterator[Member]:
    """The files of a Qt resource file (`.rcc`), their paths from the resource root."""
    if data[:4] != b"qres":
        raise ArchiveError(f"{name} is not a Qt resource file (no 'qres' magic)")
    version, tree, payload, names = struct.unpack_from(">4i", data, 4)
    node_size = 14 if version < 2 else 22

    def node_name(index: int) -> str:
        (offset,) = struct.unpack_from(">i", data, tree + index * node_size)
        (length,) = struct.unpack_from(">H", data, names + offset)
        return data[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

    def node(index: int) -> tuple[int, int]:
        """(flags, byte offset) of tree node `index`."""
        at = tree + index * node_size
        return struct.unpack_from(">H", data, at + 4)[0], at

    def walk(index: int, path: str) -> Iterator[Member]:
        flags, at = node(index)
        if flags & 2:
            count, first = struct.unpack_from(">2i", data, at + 6)
            for child in range(first, first + count):
                child_path = path + node_name(child)
                yield from walk(child, child_path + "/" if node(child)[0] & 2 else child_path)
            return
        (offset,) = struct.unpack_from(">i", data, at + 10)
        (length,) = struct.unpack_from(">i", data, payload + offset)
        blob = data[payload + offset + 4:payload + offset + 4 + length]
        if flags & 1:
            try:
                blob = zlib.decompress(blob[4:])
            except zlib.error as err:
                raise ArchiveError(f"{name}: member {path!r} does not decompress: {err}") from None
        elif flags & 4:
            try:
                import zstandard
            except ImportError:
                raise ArchiveError(f"{name}: member {path!r} is zstd-compressed; pip install zstandard") from None
            blob = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        yield path, blob

    try:
        yield from walk(0, "")
    except struct.error as err:
        raise ArchiveError(f"{name}: the resource tree points outside the file ({err})") from None


# ---------------------------------------------------------------------------------------------------- opensfx.cat
def _opensfx_entries(data: bytes, name: str) -> Iterator[tuple[int, bytes, bytes]]:
    if len(data) < 8:
        raise ArchiveError(f"{name} is too short for an opensfx.cat")
    (first,) = struct.unpack_from("<I", data, 0)
    count = (first & 0x7FFFFFFF) // 8
    if count == 0 or count * 8 > len(data):
        raise ArchiveError(f"{name}: its first offset gives {count} entries, which its bytes cannot hold")
    for i in range(count):
        offset, size = struct.unpack_from("<2I", data, 8 * i)
        offset &= 0x7FFFFFFF
        entry = data[offset:offset + size]
        if offset + size > len(data) or not entry:
            raise ArchiveError(f"{name}: entry {i} points past the end of the file")
        riff = entry.find(b"RIFF")
        if riff < 0:  # a placeholder: OpenTTD's "Unused/Nothing" entries hold a description only
            riff = len(entry)
        description = entry[1:riff] if riff and entry[0] == riff - 1 else entry[:riff]
        yield i, description.rstrip(b"\0"), entry[riff:]


def read_opensfx(data: bytes, name: str = "archive") -> Iterator[Member]:
    """The WAV files of an OpenTTD sound catalogue, as `entry N` (placeholder entries without audio are left out;
    `opensfx_descriptions` still lists them)."""
    for i, _description, wav in _opensfx_entries(data, name):
        if wav:
            yield f"entry {i}", wav


def opensfx_descriptions(data: bytes, name: str = "archive") -> dict[str, str]:
    """Each entry's text description (the original recording's name, author and licence)."""
    return {f"entry {i}": text.decode("latin-1").strip() for i, text, _wav in _opensfx_entries(data, name)}


# ----------------------------------------------------------------------------------------------------- dispatch
READERS = {".zip": read_zip, ".pk3": read_zip, ".ocg": read_c4group, ".ocd": read_c4group, ".rcc": read_rcc,
           ".cat": read_opensfx}


def archive_reader(path: str):
    """The reader for `path` by its suffix (case-insensitive); `ValueError` naming the suffixes it knows."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in READERS:
        raise ValueError(f"{path!r} is not an archive this package reads; expected one of {sorted(READERS)}")
    return READERS[suffix]


def read_archive(path: str) -> Iterator[Member]:
    """Every `(member, bytes)` of the archive at `path`."""
    reader = archive_reader(path)
    with open(path, "rb") as f:
        data = f.read()
    yield from reader(data, os.path.basename(path))


def read_member(path: str, member: str) -> bytes:
    """One member's bytes; `KeyError` naming the archive and the member when it holds no such member."""
    for name, blob in read_archive(path):
        if name == member:
            return blob
    raise KeyError(f"{path!r} holds no member {member!r}")
