"""Expand and hash ``sgx.trusted_files`` entries the way Gramine 1.9 does, inside an image root.

Gramine's rules (python/graminelibos/manifest.py, v1.9): an entry is ``"file:PATH"`` or
``{uri, sha256?}``; a URI ending in '/' names a directory that is expanded recursively (names
sorted per level, dotfiles included, only regular files listed, symlinked directories not
descended, unreadable and special files skipped); directory URIs take the resolved directory
path; duplicates are merged by URI, a given sha256 wins, two different ones are an error.
Unlike Gramine with ``--chroot``, every symlink (also when testing "is this a file") is resolved
inside the image, never on the host.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import InputLimitError, ManifestError
from ..image.rootfs import ENGINE_MANAGED_PATHS, Entry, RootFS, RootFSError, resolve
from ..limits import MAX_TREE_DEPTH


@dataclass(frozen=True)
class TrustedFile:
    uri: str  # "file:/in/image/path" as it appears in the manifest
    sha256: str
    size: int | None = None  # None when the sha256 came with the entry and was not re-read

    def to_manifest(self) -> dict[str, str]:
        return {"uri": self.uri, "sha256": self.sha256}


def uri_to_path(uri: str) -> str:
    if not isinstance(uri, str) or not uri.startswith("file:"):
        raise ManifestError(f"sgx.trusted_files: {uri!r} is not a file: URI; write file:/path")
    path = uri[len("file:") :]
    if not path.startswith("/"):
        raise ManifestError(f"sgx.trusted_files: {uri!r} must be an absolute path (file:/...)")
    return path


def _parse_entry(data) -> tuple[str, str | None]:
    if isinstance(data, str):
        return data, None
    if isinstance(data, dict):
        extra = set(data) - {"uri", "sha256"}
        if "uri" not in data or extra:
            raise ManifestError(
                f"sgx.trusted_files: entry {data!r} must have 'uri' and may have "
                "'sha256', nothing else"
            )
        sha = data.get("sha256")
        if sha is not None and (
            not isinstance(sha, str)
            or len(sha) != 64
            or any(c not in "0123456789abcdef" for c in sha)
        ):
            raise ManifestError(
                f"sgx.trusted_files: {data['uri']}: sha256 must be 64 lowercase hex digits"
            )
        return data["uri"], sha
    raise ManifestError(f"sgx.trusted_files: unknown entry format {data!r}")


def _followed(fs: RootFS, path: str) -> Entry | None:
    try:
        return fs.lstat(resolve(fs, path))
    except RootFSError:
        return None


def _readable(fs: RootFS, path: str) -> bool:
    check = getattr(fs, "readable", None)
    return True if check is None else check(path)


def _walk_directory(fs: RootFS, directory: str, depth: int = 0) -> Iterator[str]:
    """Regular files below an already-resolved directory, in Gramine's order."""
    if depth > MAX_TREE_DEPTH:
        raise InputLimitError(
            f"sgx.trusted_files: {directory} is more than {MAX_TREE_DEPTH} "
            "directory levels below its trusted tree; trust a shallower "
            "directory or list the files"
        )
    for child, kind in _children(fs, directory):
        if kind == "dir":
            yield from _walk_directory(fs, child, depth + 1)
        else:
            yield child


def _children(fs: RootFS, directory: str) -> Iterator[tuple[str, str]]:
    """(path, "file" or "dir") for each child of a resolved directory that Gramine's expansion
    keeps: files and links to files; directories, but never a symlinked one; no dangling links,
    fifos, sockets, devices or unreadable files."""
    for name in sorted(fs.listdir(directory)):
        child = posixpath.join(directory, name)
        if not _is_utf8_name(name):
            raise ManifestError(
                f"sgx.trusted_files: {printable_name(child)} is not a UTF-8 file "
                "name; a manifest is UTF-8 TOML and cannot name it. Rename the "
                "file or leave its directory out of the trusted trees"
            )
        if child in ENGINE_MANAGED_PATHS:
            continue  # the container engine replaces it at run time
        entry = fs.lstat(child)
        if entry is None:
            continue
        target = entry if entry.kind != "symlink" else _followed(fs, child)
        if target is None or target.kind not in ("file", "dir"):
            continue  # dangling links, fifos, sockets, devices
        if not _readable(fs, target.path):
            continue
        if target.kind == "dir":
            if entry.kind != "symlink":
                yield child, "dir"
        else:
            yield child, "file"


def tree_entries_without(fs: RootFS, directory: str, left_out: Iterable[str]) -> list[str]:
    """Manifest entries that trust what ``"file:DIRECTORY/"`` trusts, except the named
    subdirectories: its files one by one and its other subdirectories as trees. Expanded, they
    are the same files the whole tree gives, less those below ``left_out``. [] when the
    directory is not in the image."""
    entry = _followed(fs, directory)
    if entry is None or entry.kind != "dir":
        return []
    skip = set(left_out)
    return [
        f"file:{child}/" if kind == "dir" else f"file:{child}"
        for child, kind in _children(fs, entry.path)
        if posixpath.basename(child) not in skip
    ]


def _is_utf8_name(name: str) -> bool:
    # Host file systems hand undecodable bytes to Python as lone surrogates (surrogateescape).
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(path: str) -> str:
    """A path as its bytes would be shown: undecodable bytes as \\xNN."""
    return repr(path.encode("utf-8", "surrogateescape"))[2:-1]


def _expand_entry(fs: RootFS, data) -> Iterator[tuple[str, str | None, str]]:
    """(uri, sha256 or None, resolved in-image path) for one manifest entry."""
    uri, sha = _parse_entry(data)
    path = uri_to_path(uri)
    if path.rstrip("/") in ENGINE_MANAGED_PATHS:
        raise ManifestError(
            f"sgx.trusted_files: {uri} is replaced by the container engine at run "
            "time, so no hash of it can hold; drop it (the manifest mounts "
            "ppml-build's own trusted /etc/hosts, and Gramine 1.9 emulates "
            "/etc/resolv.conf with sys.enable_extra_runtime_domain_names_conf)"
        )
    try:
        real = resolve(fs, path)
    except RootFSError as err:
        raise ManifestError(
            f"sgx.trusted_files: {uri}: {err}; fix the path or drop the entry from files.trusted"
        ) from None
    entry = fs.lstat(real)
    if uri.endswith("/"):
        if entry is None or entry.kind != "dir":
            raise ManifestError(f"sgx.trusted_files: {uri} ends with '/' but is not a directory")
        if sha is not None:
            raise ManifestError(f"sgx.trusted_files: directory {uri} cannot carry a sha256")
        for child in _walk_directory(fs, real):
            yield f"file:{child}", None, resolve(fs, child)
        return
    if entry is not None and entry.kind == "dir":
        raise ManifestError(
            f"sgx.trusted_files: {uri} is a directory; write it with a trailing "
            "'/' to trust everything below it"
        )
    if entry is None or entry.kind != "file":
        raise ManifestError(f"sgx.trusted_files: {uri} is not a regular file")
    yield uri, sha, real


def expand_trusted_file_list(entries: list, fs: RootFS) -> list[TrustedFile]:
    """Expand directories, merge duplicates and hash what has no sha256 (in parallel)."""
    merged: dict[str, tuple[str | None, str]] = {}
    for data in entries:
        for uri, sha, real in _expand_entry(fs, data):
            if uri in merged:
                old_sha, _ = merged[uri]
                if old_sha is not None and sha is not None and old_sha != sha:
                    raise ManifestError(
                        f"sgx.trusted_files: {uri} is listed with two different "
                        "sha256 values; keep one"
                    )
                if old_sha is None and sha is not None:
                    merged[uri] = (sha, real)
                continue
            merged[uri] = (sha, real)
    to_hash = sorted({real for sha, real in merged.values() if sha is None})
    digests = fs.sha256_many(to_hash) if to_hash else {}
    out = []
    for uri, (sha, real) in merged.items():
        if sha is None:
            entry = fs.lstat(real)
            out.append(TrustedFile(uri, digests[real], entry.size if entry else None))
        else:
            out.append(TrustedFile(uri, sha))
    return out


def expand_trusted_files(entries: list, fs: RootFS) -> list[dict[str, str]]:
    """Manifest form ``[{"uri", "sha256"}, ...]`` of :func:`expand_trusted_file_list`."""
    return [tf.to_manifest() for tf in expand_trusted_file_list(entries, fs)]


def trusted_list_digest(files: list[TrustedFile]) -> str:
    """One digest over the (uri, sha256) list, for records: equal lists give equal digests."""
    canonical = json.dumps([[tf.uri, tf.sha256] for tf in files], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
