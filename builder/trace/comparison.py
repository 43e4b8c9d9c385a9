"""Every open and exec the app made, checked against the manifest the way Gramine 1.9 would.

* A file is trusted or allowed by the path the app named (``manifest_view``). The image index
  is used only to tell files from directories (directories are always allowed) and to find
  sizes.
* tmpfs and encrypted mounts are fine for reads and writes.
* /proc, /sys and /dev are the LibOS's own, and the files the engine manages (/etc/hosts, ...)
  are emulated by Gramine; opens that failed (ENOENT is normal probing) read nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..image.rootfs import ENGINE_MANAGED_PATHS, RootFS, RootFSError, resolve
from .manifest_view import ManifestView, is_under
from .parse import FileAccess

# Paths the LibOS serves itself: never trusted-file material.
PSEUDO_FS = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Finding:
    path: str  # in-enclave path as the app named it
    host_path: str  # where Gramine would look (after fs.mounts)
    syscall: str
    in_image: bool  # the file exists in the image (so it could be hashed)
    size: int = 0


@dataclass
class TraceReport:
    accesses: int  # opens and execs seen
    files_read: int  # distinct files read or executed that the enclave would check
    untrusted_reads: list[Finding]  # neither trusted nor allowed: the enclave refuses them
    bad_writes: list[Finding]  # written outside allowed files and tmpfs/encrypted mounts
    unused_trusted: list[Finding]  # trusted but never opened: candidates to drop
    trusted_read: int = 0
    allowed_read: int = 0
    ignored: int = 0  # /proc, /sys, /dev, engine files, tmpfs, directories, failed opens
    # Programs the native run started that the LibOS would never start (the manifest's
    # sys.disallow_subprocesses): their files are not the enclave's to trust.
    refused_starts: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.untrusted_reads and not self.bad_writes


Lookup = Callable[[str], "tuple[str, int] | None"]  # path -> (kind, size) after symlinks


def image_lookup(fs: RootFS) -> Lookup:
    """``(kind, size)`` of what a path names in the image, following symlinks; None if absent."""
    cache: dict[str, tuple[str, int] | None] = {}

    def lookup(path: str) -> tuple[str, int] | None:
        if path not in cache:
            try:
                entry = fs.lstat(resolve(fs, path))
            except RootFSError:
                entry = None
            cache[path] = None if entry is None else (entry.kind, entry.size)
        return cache[path]

    return lookup


def _ignored(path: str) -> bool:
    return any(is_under(path, root) for root in PSEUDO_FS) or path in ENGINE_MANAGED_PATHS


def _refused_children(accesses: list[FileAccess]) -> tuple[set[int], list[str]]:
    """Processes the app started, and their programs, when the LibOS would refuse the fork.

    The first execve is the app itself (and a process that execs again stays itself); any
    other process that execs is a child. Under sys.disallow_subprocesses its fork fails in the
    LibOS (libos/src/sys/libos_clone.c), so nothing it opened, before or after its execve,
    would ever be asked of the enclave."""
    root = next((a.pid for a in accesses if a.syscall == "execve"), None)
    last_program: dict[int, str] = {}  # the JDK execs jspawnhelper first, then the program
    for access in accesses:
        if access.syscall == "execve" and access.pid != root:
            last_program[access.pid] = access.path
    return set(last_program), sorted(set(last_program.values()))


def compare(accesses: Iterable[FileAccess], view: ManifestView, lookup: Lookup) -> TraceReport:
    """Check every successful open/exec against the manifest, Gramine's way."""
    accesses = list(accesses)
    refused_starts: list[str] = []
    if view.no_subprocesses:
        children, refused_starts = _refused_children(accesses)
        accesses = [a for a in accesses if a.pid not in children]
    untrusted: dict[str, Finding] = {}
    writes: dict[str, Finding] = {}
    read_paths: set[str] = set()
    trusted_read = allowed_read = ignored = 0
    for access in accesses:
        path = access.path
        if not access.ok or access.path_only or _ignored(path):
            ignored += 1
            continue
        kind, host = view.placement(path)
        if kind in ("tmpfs", "encrypted"):
            ignored += 1
            continue
        found = lookup(host)
        if access.directory or (found is not None and found[0] == "dir"):
            ignored += 1  # Gramine always allows directories
            continue
        size = found[1] if found else 0
        if access.write:
            if not view.is_allowed(host) and host not in writes:
                writes[host] = Finding(path, host, access.syscall, found is not None, size)
            continue
        if host in read_paths:
            continue
        read_paths.add(host)
        if view.is_trusted(host):
            trusted_read += 1
        elif view.is_allowed(host):
            allowed_read += 1
        else:
            untrusted[host] = Finding(path, host, access.syscall, found is not None, size)
    unused = []
    for path in sorted(view.trusted - read_paths):
        found = lookup(path)
        unused.append(Finding(path, path, "", found is not None, found[1] if found else 0))
    return TraceReport(
        accesses=len(accesses),
        files_read=len(read_paths),
        untrusted_reads=sorted(untrusted.values(), key=lambda f: f.path),
        bad_writes=sorted(writes.values(), key=lambda f: f.path),
        unused_trusted=unused,
        trusted_read=trusted_read,
        allowed_read=allowed_read,
        ignored=ignored,
        refused_starts=refused_starts,
    )


__all__ = ["Finding", "Lookup", "PSEUDO_FS", "TraceReport", "compare", "image_lookup"]
