"""``ppml-build trace``: which files does the app really open, and does the manifest agree?

The recipe's command runs natively in the built image under ``strace -f`` (a throwaway image
``FROM`` it with strace added, cached by the image id). Every file the app opened or executed
is then checked the way Gramine 1.9's chroot filesystem would check it:

* Gramine never resolves host symlinks itself (the chroot FS has no follow_link; the host
  follows them inside ``open``), so a file is trusted or allowed by the path the app *named*,
  lexically normalised: ``sgx.trusted_files`` is an exact match, ``sgx.allowed_files`` is
  "equal or below". The image index is used only to tell files from directories (directories
  are always allowed) and to find sizes.
* ``fs.mounts`` decide where a path really lives: tmpfs and encrypted mounts are fine for
  reads and writes; a chroot mount maps the path to its host URI (e.g. ``/lib`` is the LibOS's
  runtime glibc).
* /proc, /sys and /dev are the LibOS's own, and the files the engine manages (/etc/hosts, ...)
  are emulated by Gramine; opens that failed (ENOENT is normal probing) read nothing.

The pure core (``parse_strace``, ``ManifestView``, ``compare``, ``suggest``) takes text and
dicts; ``run_trace`` is the Docker edge.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .errors import ImageError, ManifestError, RecipeError
from ppml_build.gramine.launch import SUPPORT_DIR
from ppml_build.image.rootfs import ENGINE_MANAGED_PATHS, RootFS, RootFSError, normalize, resolve

if TYPE_CHECKING:  # direct.py imports the Docker SDK; the pure core here never needs it
    from ppml_build.gramine.direct import LibosReport

# Paths the LibOS serves itself: never trusted-file material.
PSEUDO_FS = ("/proc", "/sys", "/dev")
TRACE_DIR = "/ppml-trace"  # where the host temp dir is mounted in the traced container
TRACE_LOG = TRACE_DIR + "/strace.log"
TRACE_IMAGE_LABEL = "ppml.trace.for"  # the image id a tracing image was made from
STRACE_ARGS = ["strace", "-f", "-qq", "-y", "-s", "4096", "-e", "trace=%file,execve,execveat",
               "-o", TRACE_LOG]

_OPEN_CALLS = {"open", "openat", "openat2", "creat"}
_EXEC_CALLS = {"execve", "execveat"}
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")

_LINE_RE = re.compile(r"^(?:\[pid\s+)?(?P<pid>\d+)\]?\s+(?P<rest>.*)$")
_RESUMED_RE = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_CALL_RE = re.compile(r"^(?P<name>\w+)\((?P<body>.*)$")
_RESULT_RE = re.compile(r"^\s*=\s*(?P<ret>-?\d+|\?)(?:<(?P<fdpath>.*?)>)?"
                        r"(?:\s+(?P<errno>E[A-Z0-9]+)\b)?")


# --- parsing strace output -------------------------------------------------------------------

@dataclass(frozen=True)
class FileAccess:
    """One open or exec the app made, with the path as the app named it."""

    pid: int
    syscall: str
    path: str  # absolute, lexically normalised (what Gramine would check)
    ok: bool
    write: bool = False
    directory: bool = False  # opened with O_DIRECTORY
    path_only: bool = False  # O_PATH: a handle, no content read
    errno: str | None = None
    kernel_path: str | None = None  # where the kernel says the fd points (symlinks resolved)

    @property
    def is_exec(self) -> bool:
        return self.syscall in _EXEC_CALLS


def _split_args(body: str) -> tuple[list[str], str]:
    """Top-level arguments of ``name(body`` and the text after the closing parenthesis."""
    args: list[str] = []
    depth = 0
    current: list[str] = []
    i = 0
    in_string = False
    while i < len(body):
        ch = body[i]
        if in_string:
            current.append(ch)
            if ch == "\\" and i + 1 < len(body):
                current.append(body[i + 1])
                i += 2
                continue
            if ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            current.append(ch)
        elif ch in "[{(<":
            depth += 1
            current.append(ch)
        elif ch in "]}>" and depth > 0:
            depth -= 1
            current.append(ch)
        elif ch == ")":
            if depth == 0:
                args.append("".join(current).strip())
                return [a for a in args if a], body[i + 1:]
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    args.append("".join(current).strip())
    return [a for a in args if a], ""


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "\\": "\\", '"': '"',
            "a": "\a", "b": "\b"}


def _c_string(arg: str) -> str | None:
    """The value of a strace string literal (``"..."``, C escapes); None if not a string."""
    if not arg.startswith('"'):
        return None
    out = bytearray()
    i = 1
    while i < len(arg):
        ch = arg[i]
        if ch == '"':
            break
        if ch == "\\" and i + 1 < len(arg):
            nxt = arg[i + 1]
            if nxt == "x" and re.match(r"[0-9a-fA-F]{2}", arg[i + 2:i + 4]):
                out.append(int(arg[i + 2:i + 4], 16))
                i += 4
                continue
            octal = re.match(r"[0-7]{1,3}", arg[i + 1:i + 4])
            if octal:
                out.append(int(octal.group(0), 8) & 0xFF)
                i += 1 + len(octal.group(0))
                continue
            out += _ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += ch.encode()
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _decoration(arg: str) -> str | None:
    """The ``</path>`` strace -y adds after a descriptor (``AT_FDCWD</app>``, ``3</x>``)."""
    match = re.match(r"^(?:AT_FDCWD|-?\d+)<(.*)>$", arg)
    return match.group(1) if match else None


def _lexical(path: str, base: str | None) -> str | None:
    if path.startswith("/"):
        return normalize(path)
    if base is None or not base.startswith("/"):
        return None
    return normalize(posixpath.join(base, path))


def parse_strace(text: str, cwd: str = "/") -> list[FileAccess]:
    """Every open/creat/exec in an ``strace -f -y`` log, unfinished/resumed pairs joined.

    ``cwd`` is the working directory the traced command started in: relative paths of calls
    without a ``-y`` directory are resolved against each process's last known directory.
    """
    pending: dict[int, str] = {}  # pid -> "name(args" of an <unfinished ...> call
    cwds: dict[int, str] = {}
    out: list[FileAccess] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        match = _LINE_RE.match(line)
        pid, rest = (int(match.group("pid")), match.group("rest")) if match else (0, line)
        if rest.startswith(("---", "+++")) or not rest:
            continue
        resumed = _RESUMED_RE.match(rest)
        if resumed:
            head = pending.pop(pid, None)
            if head is None and resumed.group("name") in _EXEC_CALLS:
                # A thread's execve finishes under the thread group leader's pid.
                for other, text_head in list(pending.items())[::-1]:
                    if text_head.startswith(resumed.group("name") + "("):
                        head = pending.pop(other)
                        break
            if head is None:
                continue
            rest = head + resumed.group("tail")
        elif rest.endswith("<unfinished ...>"):
            pending[pid] = rest[:-len("<unfinished ...>")].rstrip()
            continue
        access = _parse_call(pid, rest, cwds, cwd)
        if access is not None:
            out.append(access)
    return out


def _parse_call(pid: int, text: str, cwds: dict[int, str], start_cwd: str) -> FileAccess | None:
    call = _CALL_RE.match(text)
    if not call:
        return None
    name = call.group("name")
    args, after = _split_args(call.group("body"))
    result = _RESULT_RE.match(after)
    if not result:
        return None
    ret = result.group("ret")
    ok = ret != "?" and int(ret) >= 0
    for arg in args[:1]:
        where = _decoration(arg) if arg.startswith("AT_FDCWD") else None
        if where:
            cwds[pid] = where  # -y shows the caller's working directory
    if name == "chdir" and ok and args:
        target = _c_string(args[0])
        if target is not None:
            new = _lexical(target, cwds.get(pid, start_cwd))
            if new:
                cwds[pid] = new
        return None
    if name not in _OPEN_CALLS and name not in _EXEC_CALLS:
        return None

    flags = ""
    if name in ("open", "creat", "execve"):
        path_arg, base = (args[0] if args else ""), cwds.get(pid, start_cwd)
        if name == "open" and len(args) > 1:
            flags = args[1]
    else:  # openat, openat2, execveat: (dirfd, path, ...)
        if len(args) < 2:
            return None
        dirfd, path_arg = args[0], args[1]
        base = _decoration(dirfd) or (cwds.get(pid, start_cwd) if dirfd.startswith("AT_FDCWD")
                                      else None)
        if name == "openat" and len(args) > 2:
            flags = args[2]
        elif name == "openat2" and len(args) > 2:
            found = re.search(r"flags=([A-Z0-9_|]+)", args[2])
            flags = found.group(1) if found else ""
    path = _c_string(path_arg)
    if path is None or path == "":
        return None  # AT_EMPTY_PATH or an unreadable address
    lexical = _lexical(path, base)
    if lexical is None:
        return None
    names = set(flags.split("|"))
    write = name == "creat" or any(flag in names for flag in _WRITE_FLAGS)
    return FileAccess(pid=pid, syscall=name, path=lexical, ok=ok, write=write,
                      directory="O_DIRECTORY" in names, path_only="O_PATH" in names,
                      errno=result.group("errno"),
                      kernel_path=result.group("fdpath"))


# --- the manifest as the enclave sees it -----------------------------------------------------

def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Mount:
    path: str
    type: str  # chroot | tmpfs | encrypted | ...
    uri_path: str | None  # host path a chroot mount maps to


@dataclass(frozen=True)
class ManifestView:
    """What a Gramine 1.9 manifest trusts and allows, in in-image paths."""

    trusted: frozenset[str]
    trusted_dirs: tuple[str, ...]  # unexpanded "file:/dir/" entries (an unsigned manifest)
    allowed: tuple[str, ...]
    mounts: tuple[Mount, ...]
    start_dir: str = "/"
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # sys.disallow_subprocesses: the LibOS fails every fork, so no child process ever runs.
    no_subprocesses: bool = False

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "ManifestView":
        sgx = manifest.get("sgx", {})
        trusted, dirs = set(), []
        for item in sgx.get("trusted_files", []):
            uri = item.get("uri") if isinstance(item, dict) else item
            if isinstance(uri, str) and uri.startswith("file:"):
                path = uri[len("file:"):]
                if path.endswith("/"):
                    dirs.append(normalize(path))
                else:
                    trusted.add(normalize(path))
        allowed = tuple(normalize(uri[len("file:"):]) for uri in sgx.get("allowed_files", [])
                        if isinstance(uri, str) and uri.startswith("file:"))
        mounts = []
        fs = manifest.get("fs", {})
        for mount in fs.get("mounts", []):
            kind = mount.get("type", "chroot")
            uri = mount.get("uri", "")
            mounts.append(Mount(normalize(mount["path"]), kind,
                                normalize(uri[len("file:"):]) if kind == "chroot" and
                                uri.startswith("file:") else None))
        loader = manifest.get("loader", {})
        env = {}
        for name, value in loader.get("env", {}).items():
            if isinstance(value, str):
                env[name] = value
            elif isinstance(value, dict) and isinstance(value.get("value"), str):
                env[name] = value["value"]
        return cls(frozenset(trusted), tuple(dirs), allowed,
                   tuple(sorted(mounts, key=lambda m: len(m.path), reverse=True)),
                   fs.get("start_dir", "/"), tuple(loader.get("argv", ())), env,
                   manifest.get("sys", {}).get("disallow_subprocesses") is True)

    @classmethod
    def from_text(cls, text: str, source: str) -> "ManifestView":
        try:
            return cls.from_manifest(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError,
                RootFSError) as err:
            raise ManifestError(f"{source}: not a readable Gramine manifest ({err})") from None

    def placement(self, path: str) -> tuple[str, str]:
        """(mount type, path on the host side) of an in-enclave path."""
        for mount in self.mounts:
            if _under(path, mount.path):
                if mount.type == "chroot" and mount.uri_path is not None:
                    rest = path[len(mount.path.rstrip("/")):]
                    return "chroot", normalize(mount.uri_path + "/" + rest)
                return mount.type, path
        return "root", path

    def is_trusted(self, path: str) -> bool:
        return path in self.trusted or any(_under(path, d) for d in self.trusted_dirs)

    def is_allowed(self, path: str) -> bool:
        return any(_under(path, prefix) for prefix in self.allowed)


# --- comparison ------------------------------------------------------------------------------

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
    return any(_under(path, root) for root in PSEUDO_FS) or path in ENGINE_MANAGED_PATHS


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
        accesses=len(accesses), files_read=len(read_paths),
        untrusted_reads=sorted(untrusted.values(), key=lambda f: f.path),
        bad_writes=sorted(writes.values(), key=lambda f: f.path),
        unused_trusted=unused, trusted_read=trusted_read, allowed_read=allowed_read,
        ignored=ignored, refused_starts=refused_starts)


# --- manifest size: as shipped vs. hashing the whole image (GSC's way) ------------------------

# GSC's finalize_manifest.py skips these (regexes there; prefixes here).
GSC_EXCLUDED = ("/boot", "/dev", "/proc", "/sys", "/var", "/etc/security", "/.dockerenv",
                "/.dockerinit", "/etc/mtab", "/etc/.pwd.lock")
_GSC_EXCLUDED_RE = re.compile(r"^/etc/(shadow|gshadow|rc.\.d/)")


def hash_everything_size(fs: RootFS, *, skip: Iterable[str] = ()) -> tuple[int, int]:
    """(entries, bytes) of a manifest that trusts every readable file of the image.

    Walks like GSC (os.walk(followlinks=True)): symlinked directories are descended, so a
    merged-/usr Debian lists /lib/... as well as /usr/lib/...; a loop back into an ancestor is
    not followed again (GSC itself would recurse until the path is too long).
    """
    skip = tuple(skip)
    entries = size = 0
    stack: list[tuple[str, tuple[str, ...]]] = [("/", ("/",))]
    while stack:
        directory, ancestors = stack.pop()
        real_dir = resolve(fs, directory)
        for name in sorted(fs.listdir(real_dir)):
            path = posixpath.join(directory, name)
            if any(_under(path, p) for p in GSC_EXCLUDED + skip) or _GSC_EXCLUDED_RE.match(path):
                continue
            try:
                real = resolve(fs, path)
            except RootFSError:
                continue  # dangling link
            entry = fs.lstat(real)
            if entry is None:
                continue
            if entry.kind == "dir":
                if real not in ancestors:
                    stack.append((path, ancestors + (real,)))
            elif entry.kind == "file":
                entries += 1
                size += entry.size
    return entries, size


def shipped_size(view: ManifestView, lookup: Lookup) -> tuple[int, int]:
    total = 0
    for path in view.trusted:
        found = lookup(path)
        total += found[1] if found else 0
    return len(view.trusted), total


# --- suggestions -----------------------------------------------------------------------------

NATIVE_ESTIMATE = "the native estimate (the app under strace, outside the LibOS)"


def suggest(report: TraceReport, recipe_trusted: Iterable[str] = (), *,
            title: str = "changes for the recipe's files: section") -> str:
    """The recipe changes the trace asks for, as a ``files:`` YAML fragment with comments."""
    add_trusted = sorted({f.path for f in report.untrusted_reads if f.in_image})
    add_allowed = sorted({f.path for f in report.untrusted_reads if not f.in_image})
    write_dirs = sorted({posixpath.dirname(f.path).rstrip("/") + "/"
                         for f in report.bad_writes})
    read_paths = {f.path for f in report.unused_trusted}
    listed = [p for p in recipe_trusted if not p.endswith("/") and p in read_paths]
    lines = [f"# ppml-build trace --suggest: {title}"]
    if not (add_trusted or add_allowed or write_dirs or listed):
        lines.append("# nothing to change: every file the app opened is trusted or allowed")
        return "\n".join(lines) + "\n"
    lines.append("files:")
    if add_trusted:
        lines.append("  trusted:    # read by the app, in the image, not trusted: add (hashed)")
        lines += [f"    - {path}" for path in add_trusted]
    if add_allowed or write_dirs:
        lines.append("  allowed:    # not in the image or written at run time: allow, or mount")
        lines.append("              # them as tmpfs (scratch) or encrypted (data that matters)")
        lines += [f"    - {path}" for path in add_allowed + write_dirs]
    if listed:
        lines.append("# listed in files.trusted but never opened (drop them for a smaller "
                     "manifest):")
        lines += [f"#   - {path}" for path in listed]
    return "\n".join(lines) + "\n"


def group_by_directory(findings: Iterable[Finding], depth: int = 3) -> list[tuple[str, int, int]]:
    """(directory prefix, files, bytes) for a readable summary of many findings."""
    groups: dict[str, list[int]] = {}
    for finding in findings:
        parts = finding.path.strip("/").split("/")
        key = "/" + "/".join(parts[:min(depth, len(parts) - 1)])
        key = key.rstrip("/") + "/"
        slot = groups.setdefault(key, [0, 0])
        slot[0] += 1
        slot[1] += finding.size
    return sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda g: (-g[2], g[0]))


def report_document(report: TraceReport, *, recipe: str, image: str, exit_code: int,
                    shipped: tuple[int, int], everything: tuple[int, int],
                    seconds: float) -> dict[str, Any]:
    def rows(findings: list[Finding]) -> list[dict[str, Any]]:
        return [{"path": f.path, "host_path": f.host_path, "syscall": f.syscall,
                 "in_image": f.in_image, "size": f.size} for f in findings]

    return {
        "schema": "ppml-build/trace/v1",
        "recipe": recipe,
        "image": image,
        "app_exit_code": exit_code,
        "clean": report.clean and exit_code == 0,
        "accesses": report.accesses,
        "files_read": report.files_read,
        "trusted_read": report.trusted_read,
        "allowed_read": report.allowed_read,
        "untrusted_reads": rows(report.untrusted_reads),
        "bad_writes": rows(report.bad_writes),
        "refused_process_starts": report.refused_starts,
        "unused_trusted": {"count": len(report.unused_trusted),
                           "bytes": sum(f.size for f in report.unused_trusted),
                           "by_directory": [{"directory": d, "files": n, "bytes": b}
                                            for d, n, b in
                                            group_by_directory(report.unused_trusted)[:20]]},
        "manifest_size": {
            "shipped": {"trusted_entries": shipped[0], "bytes_hashed": shipped[1]},
            "hash_everything": {"trusted_entries": everything[0], "bytes_hashed": everything[1]},
            "needed": {"trusted_entries": report.trusted_read,
                       "bytes_hashed": shipped[1] - sum(f.size for f in report.unused_trusted)},
        },
        "seconds": round(seconds, 1),
    }


# --- what the LibOS itself refused (gramine-direct with the signed manifest) -------------------

LIBOS_PROGRAM = "gramine-direct"
DEFAULT_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def libos_document(libos: "LibosReport", *, exit_code: int, seconds: float) -> dict[str, Any]:
    """The document's ``"libos"`` part: Gramine's own refusals and its process census."""
    return {
        "refused": [{"path": r.path, "process": r.process,
                     "program": libos.processes.get(r.process, ""), "call": r.call}
                    for r in libos.refusals],
        "hash_mismatches": list(libos.hash_mismatches),
        # JSON names are strings: the part reads the same before and after a JSON round trip.
        "processes": {str(number): program
                      for number, program in sorted(libos.processes.items())},
        "jvm_fork_attempts": libos.jvm_fork_attempts,
        "jvm_forks_started": libos.jvm_forks_started,
        "exit_code": exit_code,
        "seconds": round(seconds, 1),
    }


def merge_libos(document: dict[str, Any], libos: "LibosReport | None", *, exit_code: int = 0,
                seconds: float = 0.0) -> dict[str, Any]:
    """The trace document with the LibOS run in it (``"libos": None`` when it was skipped).

    Clean then also means the LibOS refused nothing, every trusted file's hash matched and the
    job exited 0 there: those are the enclave's real answers, the native run only estimates them.
    """
    if libos is None:
        return document | {"libos": None}
    part = libos_document(libos, exit_code=exit_code, seconds=seconds)
    clean = (document["clean"] and not part["refused"] and not part["hash_mismatches"]
             and exit_code == 0)
    return document | {"libos": part, "clean": clean}


def libos_lines(part: dict[str, Any] | None, output_tail: Iterable[str] = ()) -> list[str]:
    """The text report's LibOS section, from the document's ``"libos"`` part."""
    if part is None:
        return ["under the LibOS: not run (--no-libos); the findings above are the native "
                "estimate only"]
    lines = [f"under the LibOS ({LIBOS_PROGRAM}, the signed manifest at loader.log_level = "
             f"trace): job exited {part['exit_code']} in {part['seconds']} s"]
    if part["exit_code"] != 0:
        lines.append("  the job failed under the LibOS; its last lines:")
        lines += [f"    {line}" for line in output_tail]
    lines.append(f"refused by the LibOS (real refusals): {len(part['refused'])}")
    lines += [f"  {r['path']} [{r['call']}, P{r['process']} {r['program'] or '?'}]"
              for r in part["refused"]]
    lines.append(f"trusted files whose hash does not match the manifest: "
                 f"{len(part['hash_mismatches'])}")
    lines += [f"  {path}" for path in part["hash_mismatches"]]
    census = ", ".join(f"P{number} {program}" for number, program in part["processes"].items())
    lines.append(f"LibOS processes: {len(part['processes'])}" + (f" ({census})" if census else ""))
    attempts, started = part["jvm_fork_attempts"], part["jvm_forks_started"]
    refused = (f" ({attempts - started} refused, e.g. by sys.disallow_subprocesses)"
               if attempts > started else "")
    lines.append(f"new processes a running JVM asked for: {attempts}, started: {started}{refused}")
    return lines


# Gramine's own lines: "(file.c:N:function) " at debug and above, then "[P1:T1:java] " or, while
# the LibOS starts, no prefix at all (libos/src/utils/log.c).
_GRAMINE_LINE = re.compile(r"^(?:\([\w.-]+:\d+:\w+\) |\[P?\d*:)")


def libos_output_tail(text: str, count: int = 5) -> list[str]:
    """The job's own last lines in a gramine-direct log (Gramine's lines left out)."""
    lines = [line for line in text.splitlines() if line.strip() and not _GRAMINE_LINE.match(line)]
    return lines[-count:]


def _refused_change(path: str, view: ManifestView, lookup: Lookup,
                    written: frozenset[str]) -> tuple[str, str]:
    """("trusted" | "allowed" | "unresolved", the entry) for one path the LibOS refused.

    Gramine checks only files that exist when they are opened (fs.c is_open_allowed) or
    created: a refused file the image does not have was made at run time (or came in with a
    volume), so its directory is what to allow. A trusted file refused means it was written.
    """
    if not path.startswith("/"):
        return "unresolved", path  # the dentry name or a relative path: no directory to look in
    path = normalize(path)
    host = view.placement(path)[1]
    found = lookup(host)
    if path in written or view.is_trusted(host) or found is None or found[0] != "file":
        directory = posixpath.dirname(path)
        return "allowed", path if directory == "/" else directory + "/"
    return "trusted", path


def suggest_libos(libos: "LibosReport", view: ManifestView, lookup: Lookup,
                  written: Iterable[str] = ()) -> str:
    """The recipe changes what the LibOS refused asks for (real refusals, not an estimate).

    ``written`` are the paths the native run wrote: such a file is never trusted, even where
    the image has one (Python's __pycache__, a log the app rewrites).
    """
    written = frozenset(written)
    changes: dict[str, dict[str, None]] = {"trusted": {}, "allowed": {}, "unresolved": {}}
    for refusal in libos.refusals:
        kind, entry = _refused_change(refusal.path, view, lookup, written)
        changes[kind][entry] = None
    lines = ["# ppml-build trace --suggest: what the LibOS refused under gramine-direct "
             "(real refusals)"]
    if not (libos.refusals or libos.hash_mismatches):
        lines.append("# nothing to change: the LibOS refused no file")
        return "\n".join(lines) + "\n"
    if changes["trusted"] or changes["allowed"]:
        lines.append("files:")
    if changes["trusted"]:
        lines.append("  trusted:    # in the image, opened by the app, refused: add (hashed)")
        lines += [f"    - {path}" for path in sorted(changes["trusted"])]
    if changes["allowed"]:
        lines.append("  allowed:    # written or created at run time, or not from the image:")
        lines.append("              # allow the directory, or list it under files.scratch")
        lines.append("              # (encrypted, keyed afresh per run) or files.tmpfs (memory)")
        lines += [f"    - {path}" for path in sorted(changes["allowed"])]
    if changes["unresolved"]:
        lines.append("# refused, but no syscall line named the full path (look for it in the "
                     "native estimate):")
        lines += [f"#   - {name}" for name in sorted(changes["unresolved"])]
    if libos.hash_mismatches:
        lines.append("# trusted files that differ from the signed hash: the image changed after "
                     "`ppml-build build`;")
        lines.append("# rebuild it rather than edit the recipe:")
        lines += [f"#   - {path}" for path in libos.hash_mismatches]
    return "\n".join(lines) + "\n"


def combined_suggestion(libos_text: str | None, native_text: str) -> str:
    """The LibOS's real refusals first, then the native estimate: two YAML documents."""
    return native_text if libos_text is None else f"{libos_text}---\n{native_text}"


def libos_run_problem(lookup: Lookup, name: str, search_path: str) -> str | None:
    """Why the image cannot run its job under gramine-direct, or None.

    The LibOS run loads the image's own signed manifest (direct.py), whatever --manifest says.
    """
    manifest = f"{IN_IMAGE_DIR}/{name}.manifest.sgx"
    if lookup(manifest) is None:
        return f"it has no {manifest} for gramine-direct to load"
    for directory in (search_path or DEFAULT_SEARCH_PATH).split(":"):
        found = lookup(posixpath.join(directory or "/", LIBOS_PROGRAM))
        if found is not None and found[0] == "file":
            return None
    return f"it has no {LIBOS_PROGRAM} on its PATH"


# --- the Docker edge -------------------------------------------------------------------------

IN_IMAGE_DIR = SUPPORT_DIR  # /ppml: where `build` puts APP.manifest.sgx and APP.sig


@dataclass
class TraceResult:
    report: TraceReport
    document: dict[str, Any]
    suggestion: str
    stdout: str
    stderr: str
    exit_code: int
    libos_output_tail: list[str] = field(default_factory=list)  # the job's last lines there


Say = Callable[[str], None]


def tracing_dockerfile(image_id: str, user: str | None) -> str:
    """The app image plus strace; nothing else changes (strace's own libraries are loaded
    before tracing starts, so they never show up in the trace)."""
    lines = [f"FROM {image_id}", "USER root",
             'RUN ["/bin/sh", "-ec", "apt-get update; DEBIAN_FRONTEND=noninteractive apt-get '
             'install -y --no-install-recommends strace; rm -rf /var/lib/apt/lists/*"]']
    if user:
        lines.append(f"USER {user}")
    return "\n".join(lines) + "\n"


def tracing_image(client, image_id: str, *, say: Say = lambda line: None) -> str:
    """An image FROM ``image_id`` with strace, built once per image id (found by its label)."""
    from ppml_build.image.docker_build import build_image

    found = client.images.list(filters={"label": f"{TRACE_IMAGE_LABEL}={image_id}"})
    if found:
        return found[0].id
    user = (client.images.get(image_id).attrs.get("Config") or {}).get("User") or None
    say("building a tracing image (the app image plus strace), once per image")
    with tempfile.TemporaryDirectory(prefix="ppml-tracer-") as scratch:
        (Path(scratch) / "Dockerfile").write_text(tracing_dockerfile(image_id, user))
        try:
            return build_image(client, Path(scratch), tag=None,
                               labels={TRACE_IMAGE_LABEL: image_id, "ppml.stage": "trace"},
                               say=say)
        except ImageError as err:
            raise ImageError(f"cannot add strace to {image_id[:19]}: {err}; the image needs "
                             "apt-get (Debian/Ubuntu) and a package mirror it can reach") from None


def _read_manifest_option(manifest: Path) -> tuple[str, str]:
    try:
        return manifest.read_text(encoding="utf-8"), str(manifest)
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not UTF-8 text"
        raise ManifestError(f"--manifest {manifest}: cannot read it: {reason}") from None


def _manifest_text(fs: RootFS, name: str) -> tuple[str, str]:
    in_image = f"{IN_IMAGE_DIR}/{name}.manifest.sgx"
    try:
        return fs.read_bytes(in_image).decode("utf-8"), f"image:{in_image}"
    except (OSError, KeyError, ValueError):
        pass
    local = Path("ppml-out") / name / f"{name}.manifest.sgx"
    if local.is_file():
        return local.read_text(encoding="utf-8"), str(local)
    raise ManifestError(f"no manifest: the image has no {in_image} and there is no {local}; "
                        "trace the image `ppml-build build` made, or pass --manifest FILE")


def _search_path(image_attrs: dict[str, Any]) -> str:
    """The image's PATH (what Docker searches for the entrypoint), or "" when it sets none."""
    for item in (image_attrs.get("Config") or {}).get("Env") or []:
        if item.startswith("PATH="):
            return item[len("PATH="):]
    return ""


def trace_under_libos(client, image: str, name: str, *, timeout: int,
                      say: Say) -> "tuple[LibosReport, Any]":
    """The job under gramine-direct at log level trace: (what Gramine said, the DirectRun)."""
    from ppml_build.gramine.direct import read_libos_log, run_direct

    say(f"running the job under {LIBOS_PROGRAM} (the signed manifest at loader.log_level = "
        "trace, no network)")
    # The native run mounts only the directory strace writes its log to, which the job never
    # reads: the LibOS run needs no volume.
    run = run_direct(client, image, name, network="none", log_level="trace", timeout=timeout)
    # On the Linux PAL the app's console is host fd 1 (pal/src/host/linux/pal_console.c) and
    # Gramine's log fd 2 (PAL_LOG_DEFAULT_FD, pal_streams.c): read both streams together.
    return read_libos_log(run.stdout + "\n" + run.stderr), run


def _native_file_mounts(view: ManifestView, fs: RootFS, into: Path) -> dict[str, dict]:
    """The manifest's mounts of ppml-build's own files over image paths (the spark-submit
    wrapper, /etc/hosts), as bind mounts for the native run, so it starts the JVM the way the
    enclave does instead of through Spark's bash scripts."""
    volumes: dict[str, dict] = {}
    for index, mount in enumerate(view.mounts):
        source = mount.uri_path
        if mount.type != "chroot" or not source or not source.startswith(IN_IMAGE_DIR + "/"):
            continue
        try:
            data = fs.read_bytes(resolve(fs, source))
        except (OSError, KeyError, ValueError, RootFSError):
            continue  # a directory, or not kept whole: the native run goes without it
        into.mkdir(parents=True, exist_ok=True)
        host = into / str(index)
        host.write_bytes(data)
        host.chmod(0o755)
        volumes[str(host)] = {"bind": mount.path, "mode": "ro"}
    return volumes


def run_trace(recipe_path: Path, *, image: str | None = None, manifest: Path | None = None,
              timeout: int = 1800, libos: bool = True,
              say: Say = lambda line: None) -> TraceResult:
    """Trace the recipe's command in ``image`` (default ppml/<name>:latest) and compare; with
    ``libos``, also run the job under gramine-direct and report what the LibOS refused."""
    import docker.errors

    from ppml_build.image.engine import connect, export_image_rootfs
    from ppml_build.image.base_index import cached_image_rootfs
    from ppml_build.image.native import run_native
    from ppml_build.gramine.pipeline import validate_recipe

    started = time.perf_counter()
    recipe = validate_recipe(recipe_path)
    if recipe.libos.type != "gramine":
        raise RecipeError(f"{recipe_path}: libos.type {recipe.libos.type!r}: trace compares "
                          "with a Gramine manifest; Occlum images carry no file lists to check")
    image = image or f"ppml/{recipe.name}:latest"
    given = _read_manifest_option(manifest) if manifest is not None else None
    client = connect()
    try:
        found_image = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ImageError(f"{image}: no such image; build it first (ppml-build build "
                         f"{recipe_path}) or name it with --image") from None
    except docker.errors.APIError as err:
        raise ImageError(f"{image}: {err.explanation or err}") from None
    image_id = found_image.id

    def export(keep):
        say(f"indexing {image} (one export stream, cached by image id)")
        return export_image_rootfs(client, image_id, keep=keep)

    fs, _ = cached_image_rootfs(image_id, export, (IN_IMAGE_DIR + "/",))
    text, source = given or _manifest_text(fs, recipe.name)
    view = ManifestView.from_text(text, source)
    lookup = image_lookup(fs)
    if libos:  # before the long native run: say at once when the LibOS run cannot happen
        problem = libos_run_problem(lookup, recipe.name, _search_path(found_image.attrs))
        if problem:
            raise ImageError(f"{image}: {problem}; trace with --no-libos for the native "
                             "run only")
    argv = list(view.argv) or list(recipe.app.command)
    tracer = tracing_image(client, image_id, say=say)

    with tempfile.TemporaryDirectory(prefix="ppml-trace-") as scratch:
        os.chmod(scratch, 0o777)  # the app may run as a non-root user
        traced = recipe.model_copy(update={"app": recipe.app.model_copy(
            update={"command": STRACE_ARGS + argv, "workdir": view.start_dir})})
        volumes = {scratch: {"bind": TRACE_DIR, "mode": "rw"}}
        volumes.update(_native_file_mounts(view, fs, Path(scratch) / "mounts"))
        say(f"running {' '.join(argv)} under strace (no network)")
        run = run_native(client, tracer, traced, timeout=timeout, extra_args={
            "cap_add": ["SYS_PTRACE"], "security_opt": ["seccomp=unconfined"],
            # The manifest's environment, so the app searches the same library paths it will
            # search in the enclave.
            "environment": dict(view.env), "volumes": volumes})
        log_path = Path(scratch) / Path(TRACE_LOG).name
        if not log_path.is_file():
            raise ImageError(f"{image}: strace wrote no log (exit {run.exit_code}): "
                             f"{(run.stderr.strip().splitlines() or ['no output'])[-1]}")
        log = log_path.read_text(encoding="utf-8", errors="surrogateescape")

    accesses = parse_strace(log, cwd=view.start_dir)
    report = compare(accesses, view, lookup)
    native = suggest(report, recipe.files.trusted, title=NATIVE_ESTIMATE)
    libos_report, direct = (trace_under_libos(client, image, recipe.name, timeout=timeout, say=say)
                            if libos else (None, None))
    document = report_document(
        report, recipe=recipe.name, image=image, exit_code=run.exit_code,
        shipped=shipped_size(view, lookup), everything=hash_everything_size(fs),
        seconds=time.perf_counter() - started)
    if direct is None:
        return TraceResult(report, merge_libos(document, None), native, run.stdout, run.stderr,
                           run.exit_code)
    document = merge_libos(document, libos_report, exit_code=direct.exit_code,
                           seconds=direct.seconds)
    written = {access.path for access in accesses if access.write}
    suggestion = combined_suggestion(suggest_libos(libos_report, view, lookup, written), native)
    return TraceResult(report, document, suggestion, run.stdout, run.stderr, run.exit_code,
                       libos_output_tail(direct.stdout + "\n" + direct.stderr))


__all__ = ["FileAccess", "Finding", "ManifestView", "NATIVE_ESTIMATE", "TraceReport",
           "TraceResult", "combined_suggestion", "compare", "hash_everything_size",
           "image_lookup", "libos_document", "libos_lines", "libos_output_tail",
           "libos_run_problem", "merge_libos", "parse_strace", "report_document", "run_trace",
           "shipped_size", "suggest", "suggest_libos", "trace_under_libos", "tracing_dockerfile",
           "tracing_image"]
