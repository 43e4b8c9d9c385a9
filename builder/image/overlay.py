"""The app image's filesystem as Docker builds it: a base image index plus our app layer.

The app layer is ours: ``COPY rootfs/ /`` of files we staged, then ``WORKDIR``. Docker resolves
each destination with symlinks followed inside the image (FollowSymlinkInScope), creates missing
parent directories, and replaces existing files. We apply the same rules to the base's index, so
the manifest is rendered without exporting the whole image again. An integration test checks this
against a real export of the built image.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from pathlib import Path

from .hashing import FileHasher
from .rootfs import HEAD_SIZE, Entry, RootFS, RootFSError, normalize, resolve


class OverlayRootFS:
    """``base`` with files and directories added on top (host files supply the content)."""

    def __init__(self, base: RootFS, hasher: FileHasher | None = None) -> None:
        self.base = base
        self.hasher = hasher or FileHasher()
        self.added: dict[str, Entry] = {}
        self.host_files: dict[str, Path] = {}
        self.added_children: dict[str, set[str]] = {}

    # -- building the layer ----------------------------------------------------------------

    def _place(self, path: str) -> str:
        """Where Docker puts ``path``: existing components resolved in scope, the rest created."""
        parts = [p for p in normalize(path).split("/") if p]
        current = "/"
        for index, part in enumerate(parts):
            candidate = posixpath.join(current, part)
            entry = self.lstat(candidate)
            if entry is None:
                for missing in parts[index:-1]:
                    candidate = posixpath.join(current, missing)
                    self._add(Entry(candidate, "dir", 0, stat.S_IFDIR | 0o755))
                    current = candidate
                return posixpath.join(current, parts[-1])
            if entry.kind not in ("dir", "symlink") and index < len(parts) - 1:
                raise RootFSError(
                    f"{path}: {candidate} is a file in the base image, not a directory"
                )
            if entry.kind == "symlink":
                try:
                    candidate = resolve(self, candidate)
                except RootFSError:
                    # A dangling link: Docker creates its target; keep it simple and refuse.
                    raise RootFSError(
                        f"{path}: {candidate} is a dangling symlink in the base "
                        "image; choose another destination"
                    ) from None
            current = candidate
        return current

    def _add(self, entry: Entry) -> None:
        self.added[entry.path] = entry
        parent, _, name = entry.path.rpartition("/")
        self.added_children.setdefault(parent or "/", set()).add(name)
        if entry.kind == "dir":
            self.added_children.setdefault(entry.path, set())

    def add_file(self, dest: str, host: Path) -> str:
        target = self._place(dest)
        existing = self.lstat(target)
        if existing is not None and existing.kind == "dir":
            raise RootFSError(f"{dest}: is a directory in the base image; give a file path")
        st = os.stat(host)
        self._add(Entry(target, "file", st.st_size, stat.S_IFREG | stat.S_IMODE(st.st_mode)))
        self.host_files[target] = Path(host)
        return target

    def add_dir(self, dest: str, mode: int = 0o755) -> str:
        target = self._place(dest)
        existing = self.lstat(target)
        if existing is None:
            self._add(Entry(target, "dir", 0, stat.S_IFDIR | mode))
        elif existing.kind != "dir":
            raise RootFSError(f"{dest}: exists in the base image and is not a directory")
        return target

    def add_tree(self, dest: str, host: Path) -> None:
        """A staged directory tree (COPY of a directory): dirs first, then files, sorted."""
        for dirpath, dirnames, filenames in os.walk(host):
            dirnames.sort()
            rel = os.path.relpath(dirpath, host)
            base = dest if rel == "." else posixpath.join(dest, rel.replace(os.sep, "/"))
            self.add_dir(base, stat.S_IMODE(os.stat(dirpath).st_mode))
            for name in sorted(filenames):
                self.add_file(posixpath.join(base, name), Path(dirpath) / name)

    # -- the RootFS protocol ---------------------------------------------------------------

    def lstat(self, path: str) -> Entry | None:
        path = normalize(path)
        if path in self.added:
            return self.added[path]
        return self.base.lstat(path)

    def listdir(self, path: str) -> list[str]:
        path = normalize(path)
        names = set(self.added_children.get(path, ()))
        base = self.base.lstat(path)
        if base is not None and base.kind == "dir":
            names |= set(self.base.listdir(path))
        elif not names and path not in self.added_children:  # an added dir may be empty
            raise RootFSError(f"{path}: no such directory in the image")
        return list(names)

    def read_bytes(self, path: str) -> bytes:
        path = normalize(path)
        if path in self.host_files:
            return self.host_files[path].read_bytes()
        return self.base.read_bytes(path)

    def head(self, path: str) -> bytes:
        path = normalize(path)
        if path in self.host_files:
            with open(self.host_files[path], "rb") as handle:
                return handle.read(HEAD_SIZE)
        return self.base.head(path)

    def readable(self, path: str) -> bool:
        path = normalize(path)
        if path in self.added:
            return True
        check = getattr(self.base, "readable", None)
        return True if check is None else check(path)

    def sha256_many(self, paths: Iterable[str]) -> dict[str, str]:
        paths = [normalize(p) for p in paths]
        ours = [p for p in paths if p in self.host_files]
        theirs = [p for p in paths if p not in self.host_files]
        out = self.base.sha256_many(theirs) if theirs else {}
        if ours:
            out.update(zip(ours, self.hasher.sha256_files([self.host_files[p] for p in ours])))
        return out
