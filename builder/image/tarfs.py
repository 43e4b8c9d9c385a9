"""An image filesystem read from ONE streaming pass over a tar (e.g. ``docker export``).

Nothing is unpacked to disk. While the tar streams by, every entry is indexed, every regular
file is SHA-256'd (so ``sha256_many`` is a dictionary lookup), and the bytes of the few files a
``keep(path)`` predicate selects (the LibOS's libpal.so, small scripts) are held in memory.
Everything else about a file is known except its content.

Paths follow ``ppml_build.image.rootfs``: in-image absolute and normalised; '..' in a tar member name
can never climb above the image root.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from .rootfs import HEAD_SIZE, Entry, EntryKind, RootFSError, normalize
from .tarstream import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Member,
    TarFormatError,
    TarReader,
)

KeepPredicate = Callable[[str], bool]

_CHUNK = 1 << 20
# OCI image layer whiteouts (image-spec layer.md): a removed name, an opaque directory.
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
# Directories a tar lists only implicitly (a member "a/b/c" without "a/b/") get this mode.
_IMPLICIT_DIR_MODE = stat.S_IFDIR | 0o755


def keep_nothing(path: str) -> bool:
    return False


def keep_paths(*paths: str) -> KeepPredicate:
    """A ``keep`` predicate for an exact set of in-image paths."""
    wanted = {normalize(p) for p in paths}
    return lambda path: path in wanted


@dataclass
class _FileData:
    sha256: str
    content: bytes | None  # None: hashed but not kept
    head: bytes = b""  # the first HEAD_SIZE bytes, always kept ('#!' lines)


@dataclass
class TarRootFS:
    """RootFS over an indexed tar stream. Build it with ``from_fileobj`` or ``from_chunks``."""

    entries: dict[str, Entry] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    files: dict[str, _FileData] = field(default_factory=dict)
    hardlinks: dict[str, str] = field(default_factory=dict)  # link path -> target path
    total_file_bytes: int = 0

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_chunks(cls, chunks: Iterable[bytes], keep: KeepPredicate | None = None) -> "TarRootFS":
        """Index a flattened filesystem tar given as byte chunks (``docker export``)."""
        fs = cls.empty()
        fs._add_tar(chunks, keep or keep_nothing, layer=False)
        return fs

    @classmethod
    def from_fileobj(cls, fileobj: IO[bytes], keep: KeepPredicate | None = None) -> "TarRootFS":
        """Index a tar read sequentially from ``fileobj`` (never seeks)."""
        return cls.from_chunks(iter(lambda: fileobj.read(_CHUNK), b""), keep)

    @classmethod
    def empty(cls) -> "TarRootFS":
        fs = cls()
        fs._add_dir("/", _IMPLICIT_DIR_MODE)
        return fs

    def apply_layer(self, chunks: Iterable[bytes], keep: KeepPredicate | None = None) -> None:
        """Lay one image layer (an OCI/Docker layer diff tar) over what is indexed so far.

        Whiteouts follow the OCI image spec: ``dir/.wh.NAME`` removes NAME of the layers below,
        ``dir/.wh..wh..opq`` hides everything the layers below have under ``dir``; neither
        touches what this same layer adds.
        """
        self._add_tar(chunks, keep or keep_nothing, layer=True)

    def _add_tar(self, chunks: Iterable[bytes], keep: KeepPredicate, *, layer: bool) -> None:
        reader = TarReader(chunks)
        added: set[str] = set()  # paths this tar has put in place (whiteouts spare them)
        try:
            for member in reader:
                path = normalize("/" + member.name)
                if layer:
                    if path == "/":
                        continue  # a container's root is the engine's (0755), not a layer's
                    parent, _, base = path.rpartition("/")
                    if base.startswith(WHITEOUT_PREFIX):
                        self._whiteout(parent or "/", base, added)
                        continue
                    # Parents count as this layer's too, listed or only implied by the path.
                    cursor = path
                    while cursor != "/" and cursor not in added:
                        added.add(cursor)
                        cursor = cursor.rpartition("/")[0] or "/"
                self._add_member(reader, member, path, keep)
        except TarFormatError as err:
            raise RootFSError(
                f"the image tar stream is not a readable tar archive: {err}"
            ) from None

    def _whiteout(self, parent: str, base: str, added: set[str]) -> None:
        if base == OPAQUE_WHITEOUT:
            for name in list(self.children.get(parent, ())):
                self._remove_lower(posixpath.join(parent, name), added)
        else:
            # The lower layers' NAME goes; what this layer itself puts at NAME stays, whichever
            # comes first in the tar.
            self._remove_lower(posixpath.join(parent, base[len(WHITEOUT_PREFIX) :]), added)

    def _remove_lower(self, path: str, added: set[str]) -> None:
        """Remove ``path`` and what is under it, except what ``added`` names (this layer's)."""
        if path not in added:
            self._remove(path)
            return
        for name in list(self.children.get(path, ())):
            self._remove_lower(posixpath.join(path, name), added)

    def _remove(self, path: str) -> None:
        self._forget(path)
        parent, _, name = path.rpartition("/")
        siblings = self.children.get(parent or "/")
        if siblings is not None:
            siblings.discard(name)

    def _add_dir(self, path: str, mode: int) -> None:
        self.entries[path] = Entry(path, "dir", 0, mode)
        self.children.setdefault(path, set())

    def _link_parent(self, path: str) -> None:
        """Record ``path`` in its parent's listing, creating parents the tar only implies."""
        while path != "/":
            parent, _, name = path.rpartition("/")
            parent = parent or "/"
            self.children.setdefault(parent, set()).add(name)
            if parent in self.entries:
                return
            self.entries[parent] = Entry(parent, "dir", 0, _IMPLICIT_DIR_MODE)
            path = parent

    def _add_member(
        self, reader: TarReader, member: Member, path: str, keep: KeepPredicate
    ) -> None:
        perm = member.mode
        kind = member.type
        if path == "/":
            if kind == DIRECTORY:
                self.entries["/"] = Entry("/", "dir", 0, stat.S_IFDIR | perm)
            return
        existing = self.entries.get(path)
        if kind == DIRECTORY and existing is not None and existing.kind == "dir":
            # Seen before (implied by a child, listed twice, or a lower layer's): keep children.
            self.entries[path] = Entry(path, "dir", 0, stat.S_IFDIR | perm)
            return
        if existing is not None:
            self._forget(path)  # a later member with the same name replaces the earlier one
        if kind == DIRECTORY:
            self.entries[path] = Entry(path, "dir", 0, stat.S_IFDIR | perm)
            self.children.setdefault(path, set())
        elif kind == SYMLINK:
            target = member.linkname
            self.entries[path] = Entry(
                path,
                "symlink",
                len(target.encode("utf-8", "surrogateescape")),
                stat.S_IFLNK | 0o777,
                target,
            )
        elif kind == HARDLINK:
            self._add_hardlink(path, normalize("/" + member.linkname), keep)
        elif kind == REGULAR:
            self.entries[path] = Entry(path, "file", member.size, stat.S_IFREG | perm)
            self._hash_member(reader, member, path, keep(path))
        else:
            kind_bits = {CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}[kind]
            self.entries[path] = Entry(path, "other", 0, kind_bits | perm)
        self._link_parent(path)

    def _hash_member(self, reader: TarReader, member: Member, path: str, kept: bool) -> None:
        digest = hashlib.sha256()
        parts: list[bytes] | None = [] if kept else None
        head = b""
        for piece in reader.data():
            if len(head) < HEAD_SIZE:
                head += piece[: HEAD_SIZE - len(head)].tobytes()
            digest.update(piece)
            if parts is not None:
                parts.append(piece.tobytes())
        self.files[path] = _FileData(
            digest.hexdigest(), b"".join(parts) if parts is not None else None, head
        )
        self.total_file_bytes += member.size

    def _add_hardlink(self, path: str, target: str, keep: KeepPredicate) -> None:
        # A hard link is the same inode as an earlier member: same kind, mode, size, content.
        source = self.entries.get(target)
        if source is None:
            raise RootFSError(
                f"{path}: hard link to {target}, which the tar stream has not shown yet"
            )
        self.entries[path] = Entry(path, source.kind, source.size, source.mode, source.link_target)
        if target in self.files:
            data = self.files[target]
            self.files[path] = _FileData(data.sha256, data.content, data.head)
            self.hardlinks[path] = target

    def _forget(self, path: str) -> None:
        old = self.entries.pop(path, None)
        self.files.pop(path, None)
        self.hardlinks.pop(path, None)
        if old is not None and old.kind == "dir":
            # Replacing a directory drops what was under it, as extraction would.
            for name in self.children.pop(path, ()):
                self._forget(posixpath.join(path, name))

    # -- the RootFS protocol ----------------------------------------------------------------

    def lstat(self, path: str) -> Entry | None:
        return self.entries.get(normalize(path))

    def listdir(self, path: str) -> list[str]:
        path = normalize(path)
        entry = self.entries.get(path)
        if entry is None:
            raise RootFSError(f"{path}: no such directory in the image")
        if entry.kind != "dir":
            raise RootFSError(f"{path}: not a directory")
        return list(self.children.get(path, ()))

    def read_bytes(self, path: str) -> bytes:
        path = normalize(path)
        data = self._file(path)
        if data.content is None:
            raise RootFSError(
                f"{path}: its content was not kept from the image export (only files chosen by "
                "the keep predicate are held in memory); add this path to keep= when exporting"
            )
        return data.content

    def head(self, path: str) -> bytes:
        return self._file(normalize(path)).head

    def readable(self, path: str) -> bool:
        return normalize(path) in self.entries

    def sha256_many(self, paths: Iterable[str]) -> dict[str, str]:
        return {p: self._file(normalize(p)).sha256 for p in paths}

    def _file(self, path: str) -> _FileData:
        data = self.files.get(path)
        if data is None:
            entry = self.entries.get(path)
            if entry is None:
                raise RootFSError(f"{path}: no such file in the image")
            raise RootFSError(f"{path}: not a regular file ({entry.kind})")
        return data

    # -- conveniences -----------------------------------------------------------------------

    def walk(self) -> Iterator[Entry]:
        """Every entry, parents before children, names sorted (for tests and listings)."""
        yield from (self.entries[p] for p in sorted(self.entries))

    def __len__(self) -> int:
        return len(self.entries)


__all__ = ["TarRootFS", "KeepPredicate", "keep_nothing", "keep_paths", "EntryKind"]
