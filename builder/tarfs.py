"""An image filesystem read from ONE streaming pass over a tar (e.g. ``docker export``).

Nothing is unpacked to disk. While the tar streams by, every entry is indexed, every regular
file is SHA-256'd (so ``sha256_many`` is a dictionary lookup), and the bytes of the few files a
``keep(path)`` predicate selects (the LibOS's libpal.so, small scripts) are held in memory.
Everything else about a file is known except its content.

Paths follow ``ppml_build.rootfs``: in-image absolute and normalised; '..' in a tar member name
can never climb above the image root.
"""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable, Iterator

from .rootfs import HEAD_SIZE, Entry, EntryKind, RootFSError, normalize

KeepPredicate = Callable[[str], bool]

_CHUNK = 1 << 20
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
    def from_fileobj(cls, fileobj: IO[bytes], keep: KeepPredicate | None = None) -> "TarRootFS":
        """Index a tar read sequentially from ``fileobj`` (never seeks)."""
        fs = cls()
        fs._add_dir("/", _IMPLICIT_DIR_MODE)
        keep = keep or keep_nothing
        try:
            with tarfile.open(fileobj=fileobj, mode="r|*") as archive:
                for member in archive:
                    fs._add_member(archive, member, keep)
        except tarfile.TarError as err:
            raise RootFSError(f"the image tar stream is not a readable tar archive: {err}") from err
        return fs

    @classmethod
    def from_chunks(cls, chunks: Iterable[bytes], keep: KeepPredicate | None = None) -> "TarRootFS":
        """Index a tar given as an iterable of byte chunks (the docker SDK's export stream)."""
        reader = io.BufferedReader(_ChunkReader(iter(chunks)), buffer_size=_CHUNK)
        return cls.from_fileobj(reader, keep)

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

    def _add_member(self, archive: tarfile.TarFile, member: tarfile.TarInfo, keep: KeepPredicate) -> None:
        path = normalize("/" + member.name)
        perm = member.mode & 0o7777
        if path == "/":
            if member.isdir():
                self.entries["/"] = Entry("/", "dir", 0, stat.S_IFDIR | perm)
            return
        existing = self.entries.get(path)
        if member.isdir() and existing is not None and existing.kind == "dir":
            # Seen before (implied by a child, or listed twice): keep its children.
            self.entries[path] = Entry(path, "dir", 0, stat.S_IFDIR | perm)
            return
        self._forget(path)  # a later member with the same name replaces the earlier one
        if member.isdir():
            self.entries[path] = Entry(path, "dir", 0, stat.S_IFDIR | perm)
            self.children.setdefault(path, set())
        elif member.issym():
            target = member.linkname
            self.entries[path] = Entry(path, "symlink", len(target.encode()), stat.S_IFLNK | 0o777, target)
        elif member.islnk():
            self._add_hardlink(path, normalize("/" + member.linkname), keep)
        elif member.isreg():
            self.entries[path] = Entry(path, "file", member.size, stat.S_IFREG | perm)
            self._hash_member(archive, member, path, keep(path))
        else:
            kind_bits = {
                tarfile.CHRTYPE: stat.S_IFCHR,
                tarfile.BLKTYPE: stat.S_IFBLK,
                tarfile.FIFOTYPE: stat.S_IFIFO,
            }.get(member.type, 0)
            self.entries[path] = Entry(path, "other", 0, kind_bits | perm)
        self._link_parent(path)

    def _hash_member(self, archive: tarfile.TarFile, member: tarfile.TarInfo, path: str, kept: bool) -> None:
        digest = hashlib.sha256()
        parts: list[bytes] | None = [] if kept else None
        handle = archive.extractfile(member)
        assert handle is not None  # regular files always have a data stream
        head = b""
        while chunk := handle.read(_CHUNK):
            if not head:
                head = chunk[:HEAD_SIZE]
            digest.update(chunk)
            if parts is not None:
                parts.append(chunk)
        self.files[path] = _FileData(digest.hexdigest(),
                                     b"".join(parts) if parts is not None else None, head)
        self.total_file_bytes += member.size

    def _add_hardlink(self, path: str, target: str, keep: KeepPredicate) -> None:
        # A hard link is the same inode as an earlier member: same kind, mode, size, content.
        source = self.entries.get(target)
        if source is None:
            raise RootFSError(f"{path}: hard link to {target}, which the tar stream has not shown yet")
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
            prefix = path + "/"
            for sub in [p for p in self.entries if p.startswith(prefix)]:
                self.entries.pop(sub, None)
                self.files.pop(sub, None)
                self.hardlinks.pop(sub, None)
                self.children.pop(sub, None)
            self.children.pop(path, None)

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


class _ChunkReader(io.RawIOBase):
    """A read-only raw stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


__all__ = ["TarRootFS", "KeepPredicate", "keep_nothing", "keep_paths", "EntryKind"]
