"""A read-only view of an image's filesystem, with chroot-style symlink resolution.

Two back ends share one interface: ``DirRootFS`` (a directory on the host, e.g. an unpacked
image) and the tar-stream view of an exported image (``ppml_build.image.tarfs``). Everything above
this module (trusted-file expansion, the manifest renderer) talks in in-image absolute paths
("/opt/spark/jars/x.jar") and never touches host paths, so a symlink can never lead outside the
image.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

EntryKind = Literal["file", "dir", "symlink", "other"]

# Files the engine itself puts into every container (its "init layer"): a ``docker export``
# shows them as empty placeholders, hiding any image content at those paths, and at run time
# they are bind-mounted or mounted fresh. Never trusted-file material.
ENGINE_MANAGED_PATHS = (
    "/.dockerenv",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/mtab",
    "/dev/console",
    "/dev/pts",
    "/dev/shm",
)

# How much of every file's start a RootFS can show without its content: enough for '#!' lines.
HEAD_SIZE = 256
# Same bound as Linux's MAXSYMLINKS: a chain longer than this is treated as a loop.
MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class Entry:
    """One filesystem entry as ``lstat`` sees it (a symlink is not followed)."""

    path: str  # in-image absolute, normalised
    kind: EntryKind
    size: int = 0
    mode: int = 0
    link_target: str | None = None  # only for symlinks, verbatim


class RootFSError(OSError):
    """A path cannot be resolved inside the root (missing, loop, not a directory)."""


class RootFS(Protocol):
    """What trusted-file expansion and manifest rendering need from an image filesystem."""

    def lstat(self, path: str) -> Entry | None:
        """The entry at an in-image path whose parents are already resolved; None if absent."""

    def listdir(self, path: str) -> list[str]:
        """Names in a resolved directory (any order; callers sort)."""

    def read_bytes(self, path: str) -> bytes:
        """Content of a resolved regular file (for small files: libpal.so, scripts)."""

    def head(self, path: str) -> bytes:
        """The first HEAD_SIZE bytes of a resolved regular file (a script's '#!' line)."""

    def sha256_many(self, paths: Iterable[str]) -> dict[str, str]:
        """Lowercase hex SHA-256 of each resolved regular file, keyed by the given path."""


def normalize(path: str) -> str:
    """Absolute, normalised in-image path; '..' at the root stays at the root."""
    if not path.startswith("/"):
        raise RootFSError(f"not an absolute path: {path!r}")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def resolve(fs: RootFS, path: str, *, follow_final: bool = True) -> str:
    """Resolve symlinks in ``path`` as the kernel would with ``fs`` as its root.

    Absolute link targets restart at the image root, '..' never climbs above it, so the
    result is always inside the image. Raises RootFSError for a missing component, a loop, or
    a non-directory in the middle of the path.
    """
    if not path.startswith("/"):
        raise RootFSError(f"not an absolute path: {path!r}")
    pending = [p for p in path.split("/") if p not in ("", ".")]
    pending.reverse()  # a stack: the next component is at the end
    current = "/"
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            current = posixpath.dirname(current) if current != "/" else "/"
            continue
        candidate = posixpath.join(current, part)
        entry = fs.lstat(candidate)
        if entry is None:
            raise RootFSError(f"{candidate}: no such file or directory in the image")
        is_last = not pending
        if entry.kind == "symlink" and (follow_final or not is_last):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise RootFSError(f"{path}: too many levels of symbolic links")
            target = entry.link_target or ""
            if target.startswith("/"):
                current = "/"
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        if not is_last and entry.kind != "dir":
            raise RootFSError(f"{candidate}: not a directory")
        current = candidate
    return current


def stat_followed(fs: RootFS, path: str) -> Entry | None:
    """The entry a path finally names after following every symlink; None if dangling."""
    try:
        return fs.lstat(resolve(fs, path))
    except RootFSError:
        return None


class DirRootFS:
    """An image filesystem unpacked in a host directory (``--rootfs DIR``)."""

    def __init__(self, root: Path, hasher=None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise RootFSError(f"{root}: the rootfs is not a directory")
        self._hasher = hasher

    def host_path(self, path: str) -> Path:
        """Host path of an in-image path (already resolved; never escapes the root)."""
        return self.root / normalize(path).lstrip("/")

    def lstat(self, path: str) -> Entry | None:
        host = self.host_path(path)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError:  # a NUL in the name: no file system holds one
            return None
        except OSError as err:
            # A name longer than the host allows (NAME_MAX, PATH_MAX) cannot be in the image.
            if err.errno == errno.ENAMETOOLONG:
                return None
            raise
        if stat.S_ISLNK(st.st_mode):
            return Entry(normalize(path), "symlink", st.st_size, st.st_mode, os.readlink(host))
        if stat.S_ISDIR(st.st_mode):
            kind: EntryKind = "dir"
        elif stat.S_ISREG(st.st_mode):
            kind = "file"
        else:
            kind = "other"
        return Entry(normalize(path), kind, st.st_size, st.st_mode)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self.host_path(path))

    def read_bytes(self, path: str) -> bytes:
        return self.host_path(path).read_bytes()

    def head(self, path: str) -> bytes:
        with open(self.host_path(path), "rb") as handle:
            return handle.read(HEAD_SIZE)

    def readable(self, path: str) -> bool:
        return os.access(self.host_path(path), os.R_OK)

    def sha256_many(self, paths: Iterable[str]) -> dict[str, str]:
        from .hashing import FileHasher  # local import: hashing pulls in the thread pool

        hasher = self._hasher or FileHasher()
        paths = list(paths)
        digests = hasher.sha256_files([self.host_path(p) for p in paths])
        return dict(zip(paths, digests))
