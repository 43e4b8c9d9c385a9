"""A forward-only tar reader over byte chunks, for image exports and layer blobs.

Why not ``tarfile``: in stream mode (``r|``) it copies every member's data through its own
buffers in small pieces, which cost more than hashing the bytes did on a 1 GiB image. This
reader hands out zero-copy ``memoryview`` slices of the chunks it is fed, so a consumer can
hash a file while it streams by. It reads what container engines and registries produce —
POSIX ustar, PAX extended headers (path, linkpath, size; Go's ``archive/tar`` writes them for
long names) and GNU long names/links — and refuses what it cannot represent (sparse files).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

BLOCK = 512

REGULAR = "0"
HARDLINK = "1"
SYMLINK = "2"
CHARDEV = "3"
BLOCKDEV = "4"
DIRECTORY = "5"
FIFO = "6"
_REGULAR_ALIASES = {"\0": REGULAR, "7": REGULAR, "": REGULAR}  # '7': contiguous file
_GNU_LONGNAME = "L"
_GNU_LONGLINK = "K"
_PAX_NEXT = "x"
_PAX_GLOBAL = "g"
_GNU_SPARSE = "S"


class TarFormatError(ValueError):
    """The stream is not a tar archive this reader can follow."""


@dataclass(slots=True)
class Member:
    name: str  # as stored (relative, maybe with './' or a trailing '/')
    type: str  # one of REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO
    mode: int  # permission bits (0o7777)
    size: int  # bytes of data that follow (regular files only; 0 otherwise)
    linkname: str


def _text(field: bytes) -> str:
    end = field.find(b"\0")
    if end >= 0:
        field = field[:end]
    return field.decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field and field[0] in (0x80, 0xFF):  # GNU base-256 for values octal cannot hold
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarFormatError(f"bad numeric field {field!r} in a tar header") from None


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<len> <key>=<value>\\n"`` records; <len> counts the whole record."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("malformed PAX extended header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("malformed PAX extended header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarReader:
    """Members of a tar given as an iterable of byte chunks, read once, front to back.

    ``for member in reader`` yields each member; ``reader.data()`` then yields that member's
    content as memoryviews (valid until the next chunk is pulled: consume or copy them). Data
    a consumer does not read is skipped.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")
        self._remaining = 0  # unread data bytes of the current member
        self._padding = 0  # zero bytes after them, up to the block boundary
        self._global: dict[str, str] = {}

    # -- raw input ----------------------------------------------------------------------------

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._view = memoryview(chunk)
                return True
        return False

    def _take(self, n: int) -> bytes:
        """Exactly ``n`` bytes (fewer only at the end of the input)."""
        if len(self._view) >= n:
            out = self._view[:n].tobytes()
            self._view = self._view[n:]
            return out
        parts = [self._view.tobytes()]
        have = len(parts[0])
        self._view = memoryview(b"")
        while have < n and self._fill():
            piece = self._view[: n - have]
            parts.append(piece.tobytes())
            have += len(piece)
            self._view = self._view[len(piece) :]
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n:
            if not self._view and not self._fill():
                raise TarFormatError("the tar stream ends in the middle of a member")
            step = min(n, len(self._view))
            self._view = self._view[step:]
            n -= step

    # -- members ------------------------------------------------------------------------------

    def data(self) -> Iterator[memoryview]:
        """The current member's content, in pieces."""
        while self._remaining:
            if not self._view and not self._fill():
                raise TarFormatError("the tar stream ends in the middle of a file")
            piece = self._view[: self._remaining]
            self._view = self._view[len(piece) :]
            self._remaining -= len(piece)
            yield piece

    def _finish_member(self) -> None:
        self._skip(self._remaining + self._padding)
        self._remaining = self._padding = 0

    def _read_payload(self, size: int) -> bytes:
        data = self._take(size)
        if len(data) < size:
            raise TarFormatError("the tar stream ends inside an extended header")
        self._skip(-size % BLOCK)
        return data

    def __iter__(self) -> Iterator[Member]:
        return self

    def __next__(self) -> Member:
        self._finish_member()
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            header = self._take(BLOCK)
            pending = bool(pax) or long_name is not None or long_link is not None
            if len(header) < BLOCK:
                if not header and not pending:
                    raise StopIteration  # no end-of-archive blocks: tolerated, as tar does
                raise TarFormatError("the tar stream ends inside a header")
            if header.count(0) == BLOCK:
                if pending:
                    raise TarFormatError("an extended header is not followed by its member")
                raise StopIteration  # end-of-archive marker
            stored = _number(header[148:156])
            computed = sum(header) - sum(header[148:156]) + 8 * 0x20
            if stored != computed:
                raise TarFormatError("a tar header's checksum does not match (not a tar stream?)")
            kind = chr(header[156]) if header[156] else "\0"
            size = _number(header[124:136])
            if kind == _PAX_NEXT:
                pax.update(_pax_records(self._read_payload(size)))
                continue
            if kind == _PAX_GLOBAL:
                self._global.update(_pax_records(self._read_payload(size)))
                continue
            if kind == _GNU_LONGNAME:
                long_name = _text(self._read_payload(size))
                continue
            if kind == _GNU_LONGLINK:
                long_link = _text(self._read_payload(size))
                continue
            if kind == _GNU_SPARSE:
                raise TarFormatError("sparse files in a tar stream are not supported")
            break

        fields = {**self._global, **pax}
        name = _text(header[0:100])
        if header[257:263] == b"ustar\0" and header[345]:  # POSIX prefix (not GNU's layout)
            name = _text(header[345:500]) + "/" + name
        name = fields.get("path", long_name or name)
        linkname = fields.get("linkpath", long_link or _text(header[157:257]))
        if "size" in fields:
            try:
                size = int(fields["size"])
            except ValueError:
                raise TarFormatError("a PAX size that is not a number") from None
        kind = _REGULAR_ALIASES.get(kind, kind)
        if kind == REGULAR and name.endswith("/"):
            kind = DIRECTORY  # old (V7) tars mark directories only by the trailing '/'
        if size < 0:
            raise TarFormatError(f"{name}: negative size in a tar header")
        if kind not in (REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO):
            raise TarFormatError(f"{name}: unknown tar member type {kind!r}")
        # Only regular files carry data: for header-only types the size field is ignored, as
        # Go's archive/tar and Python's tarfile do.
        if kind != REGULAR:
            size = 0
        self._remaining = size
        self._padding = -size % BLOCK
        return Member(name, kind, _number(header[100:108]) & 0o7777, size, linkname)


__all__ = [
    "TarReader",
    "Member",
    "TarFormatError",
    "REGULAR",
    "HARDLINK",
    "SYMLINK",
    "CHARDEV",
    "BLOCKDEV",
    "DIRECTORY",
    "FIFO",
]
