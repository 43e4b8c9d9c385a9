"""``ppml-build run-direct``: a built image's job under ``gramine-direct`` with its signed manifest.

gramine-direct is Gramine's LibOS on its Linux PAL: no SGX, but the same LibOS, so trusted files
and their hashes, allowed files, mounts, the fixed argv and env are enforced as in the enclave
(Gramine 1.9 checks sgx.trusted_files in libos/src/fs/chroot/trusted.c). It loads
``APP.manifest`` (tools/gramine.in, pal/src/host/linux/pal_main.c), which `build` makes a symlink
to the signed ``APP.manifest.sgx``, so the run uses exactly the measured bytes.

A diagnostic run may raise ``loader.log_level`` (``trace`` prints every syscall and every refused
file): then a copy of the signed manifest that differs in that one key is mounted next to it.

The container: no network (or host networking), hostname ``localhost`` (what the enclave's
/etc/hosts names), and seccomp unconfined, because Gramine installs its own seccomp filter to
catch the app's system calls (pal/src/host/linux/pal_exception.c).
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import tomli_w

from ..errors import ImageError
from ..image.native import run_container
from ..record import IN_IMAGE_DIR
from .schema import schema_of

LOG_LEVELS = schema_of()["loader"]["log_level"].values  # the default release's loader.log_level
DIAGNOSTIC_DIR = "/ppml-direct"  # where a log-level copy of the manifest is mounted
DIRECT_LABEL = "ppml.direct-run"


@dataclass(frozen=True)
class DirectRun:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    log_level: str | None  # None: the signed manifest as it is


def read_file_from_image(client, image: str, path: str) -> bytes:
    try:
        container = client.containers.create(
            image, entrypoint=["/ppml-never-runs"], network_mode="none"
        )
    except docker.errors.ImageNotFound:
        raise ImageError(f"{image}: no such image; build it first (ppml-build build)") from None
    except docker.errors.APIError as err:
        raise ImageError(f"{image}: cannot create a container: {err.explanation or err}") from None
    try:
        try:
            chunks, _ = container.get_archive(path)
        except docker.errors.NotFound:
            raise ImageError(
                f"{image}: no {path}; is this an image `ppml-build build` made for this recipe?"
            ) from None
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            member = archive.next()
            handle = archive.extractfile(member) if member is not None else None
            if handle is None:
                raise ImageError(f"{image}: {path} is not a regular file")
            return handle.read()
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass


def with_log_level(manifest_text: str, level: str) -> str:
    """The signed manifest with only ``loader.log_level`` changed (for diagnosis)."""
    manifest = tomllib.loads(manifest_text)
    manifest.setdefault("loader", {})["log_level"] = level
    return tomli_w.dumps(manifest)


def run_direct(
    client,
    image: str,
    name: str,
    *,
    network: str = "none",
    log_level: str | None = None,
    timeout: int = 1800,
    extra_args: dict | None = None,
) -> DirectRun:
    """Run ``gramine-direct /ppml/NAME`` in ``image``; the job's output and exit code."""
    if network not in ("none", "host"):
        raise ImageError(f"network {network!r}: only 'none' or 'host' (never the default bridge)")
    if log_level is not None and log_level not in LOG_LEVELS:
        raise ImageError(f"--log-level {log_level!r}: one of {', '.join(LOG_LEVELS)}")
    signed = read_file_from_image(client, image, f"{IN_IMAGE_DIR}/{name}.manifest.sgx")
    app = f"{IN_IMAGE_DIR}/{name}"
    extra = dict(extra_args or {})
    with tempfile.TemporaryDirectory(prefix="ppml-direct-") as scratch:
        if log_level is not None:
            text = with_log_level(signed.decode("utf-8"), log_level)
            (Path(scratch) / f"{name}.manifest").write_text(text, encoding="utf-8")
            volumes = dict(extra.pop("volumes", {}) or {})
            volumes[scratch] = {"bind": DIAGNOSTIC_DIR, "mode": "ro"}
            extra["volumes"] = volumes
            app = f"{DIAGNOSTIC_DIR}/{name}"
        security = list(extra.pop("security_opt", []) or []) + ["seccomp=unconfined"]
        run = run_container(
            client,
            image,
            what="gramine-direct run",
            timeout=timeout,
            entrypoint=["gramine-direct"],
            command=[app],
            network_mode=network,
            hostname="localhost" if network == "none" else None,
            security_opt=security,
            labels={DIRECT_LABEL: name},
            **extra,
        )
    return DirectRun(run.exit_code, run.stdout, run.stderr, run.seconds, log_level)


# --- reading what Gramine said (log level "trace" or "warning") --------------------------------

# "(fs.c:405:is_open_allowed) [P1:T1:python3.11] warning: ..." (libos/src/utils/log.c): the
# "(file:line:function) " part only at log level debug and above; "[P1::java]" while a process
# starts and has no thread yet; "[P1:libos]" for the LibOS's own worker threads, which run no
# program of the app and so name none.
_PREFIX = re.compile(
    r"(?:\([^)]*\) )?\[P(?P<process>\d+):"
    r"(?:(?:T(?P<thread>\d+))?:(?P<name>[^\]]*)|libos)\] "
)
# libos/src/fs/chroot/fs.c: is_open_allowed names the dentry (the last path component),
# is_create_allowed the host path; writing or creating a trusted file is refused as an error.
_REFUSED = re.compile(
    r"(?:warning|error): Disallowing (?:access to|creating|creating a trusted"
    r"|write/append to a trusted) file '(?P<name>[^']*)'"
)
_HASH = re.compile(r"warning: Hash of trusted file '(?P<name>[^']*)' does not match")
# Gramine 1.9's syscall trace (libos/src/libos_parser.c): "---- openat(AT_FDCWD, "/x", ...) = -13"
# once a call returns; a call that may block ("slow") is printed before, "---- clone(ARGS) ...",
# and after, from the same thread, "---- return from clone(...) = 0x2"; a call without a parser
# for its return value ends at ")". buf_write_all there hands every full 256-byte print buffer
# (PRINT_BUF_SIZE, common/include/api.h) to the log on its own: a longer message (a long path, an
# execve's argv) arrives as several lines of one thread, all but the first without "---- ".
_TRACE = "trace: "
_SYSCALL = "trace: ---- "
_PRINT_BUF_SIZE = 256
_RETURN = re.compile(r"return from (?P<call>[a-z0-9_]+)\(\.\.\.\)(?: = (?P<ret>\S+))?$")
_CALL = re.compile(
    r"(?P<call>[a-z0-9_]+)\((?P<args>.*)\)"
    r"(?: = (?P<ret>\S+)|(?P<enters> \.\.\.))?$"
)
_STRING_ARG = re.compile(r'"([^"]*)"')  # parse_string_arg prints a path as is, unescaped
# "(fs.c:405:is_open_allowed) ": how every line starts at log level debug and above.
_LINE_HEAD = re.compile(r"\([\w.-]+:\d+:\w+\) ")
_INNER_LINE = re.compile(r"\([\w.-]+:\d+:\w+\) \[P\d+:")


@dataclass(frozen=True)
class LibosRefusal:
    path: str  # the full path where the syscall trace names it, else Gramine's dentry name
    process: int
    call: str


@dataclass(frozen=True)
class LibosReport:
    refusals: list[LibosRefusal]
    hash_mismatches: list[str]
    processes: dict[int, str]  # Gramine's process number -> the program it runs last
    # New processes a JVM asked for (fork, vfork, clone without CLONE_VM or with CLONE_VFORK),
    # and how many the LibOS really started (a non-negative return).
    jvm_fork_attempts: int
    jvm_forks_started: int


def _new_process(call: str, args: str) -> bool:
    """Does the call ask the LibOS for a new process? (libos/src/sys/libos_clone.c)

    fork and vfork do, and clone without CLONE_VM; so does clone with CLONE_VFORK, which Gramine
    turns into a fork: glibc's posix_spawn, how a JVM starts a program, is
    clone(CLONE_VM|CLONE_VFORK|[SIGCHLD]). A thread (CLONE_VM|...|CLONE_THREAD) never does.
    clone3 is unsupported in Gramine 1.9 and never traced; glibc then falls back to clone.
    """
    if call in ("fork", "vfork"):
        return True
    flags = set(args.split(",", 1)[0].split("|"))
    return call == "clone" and ("CLONE_VFORK" in flags or "CLONE_VM" not in flags)


def _lexical(path: str) -> str:
    """An absolute path folded the way the LibOS looks it up (no symlinks); others as they are."""
    return posixpath.normpath("/" + path.lstrip("/")) if path.startswith("/") else path


def _refused_path(name: str, args: str | None) -> str:
    """The syscall's path argument that ends in the refused component (the path the app named,
    folded: ".../bin/../lib/libnet.so" is ".../lib/libnet.so"), else what Gramine printed
    (the dentry name, or the host path of a creation, printed as "//usr/...")."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    for arg in _STRING_ARG.findall(args or ""):
        if arg.rstrip("/").rsplit("/", 1)[-1] == last:
            return _lexical(arg)
    return _lexical(name)


_ThreadKey = tuple[int, str]  # (Gramine's process number, thread number)


def _mended_lines(text: str) -> Iterator[str]:
    """Gramine's log lines, put back together where two threads' lines got mixed.

    libos_log (libos/src/utils/log.c) hands a line longer than its 256-byte print buffer to the
    host in several writes, and another thread's whole line can land in between: the first part
    then runs into that line, and the rest arrives later as a line of its own, with no prefix.
    """
    broken: list[str] = []  # first parts still waiting for their rest, oldest first
    for line in text.splitlines():
        if _PREFIX.match(line) is None:
            if broken and not _LINE_HEAD.match(line):
                yield broken.pop(0) + line
            continue
        while (inner := _INNER_LINE.search(line, 1)) is not None:
            broken.append(line[: inner.start()])
            line = line[inner.start() :]
        yield line
    yield from broken


def _log_events(text: str) -> Iterator[tuple[_ThreadKey, str, str, str]]:
    """(thread, program, what, text) for each refusal, hash mismatch and syscall line, in order;
    ``what`` is "refused", "hash" or "syscall" (its text without "---- "), split lines joined."""
    held: dict[_ThreadKey, str] = {}  # thread -> a split syscall message so far
    for line in _mended_lines(text):
        head = _PREFIX.match(line)
        if head is None:
            continue
        thread = (int(head.group("process")), head.group("thread") or "")
        program = head.group("name") or ""
        rest = line[head.end() :]
        if thread in held:
            if rest.startswith(_TRACE) and not rest.startswith(_SYSCALL):
                chunk = rest[len(_TRACE) :]
                held[thread] += chunk
                if len(chunk) < _PRINT_BUF_SIZE:
                    yield thread, program, "syscall", held.pop(thread)
                continue
            yield thread, program, "syscall", held.pop(thread)  # exactly one full buffer
        if rest.startswith(_SYSCALL):
            if len(rest) - len(_TRACE) == _PRINT_BUF_SIZE:
                held[thread] = rest[len(_SYSCALL) :]
            else:
                yield thread, program, "syscall", rest[len(_SYSCALL) :]
        elif match := _REFUSED.match(rest):
            yield thread, program, "refused", match.group("name")
        elif match := _HASH.match(rest):
            yield thread, program, "hash", match.group("name")
        elif program:
            yield thread, program, "other", ""  # still names the program the process runs
    for thread, body in held.items():
        yield thread, "", "syscall", body


def read_libos_log(text: str) -> LibosReport:
    """Refused files, hash mismatches and the process census from Gramine's own log lines.

    A refusal is logged inside the system call that caused it, so the same thread's next
    finished call names the full path; the lines of other threads may come in between.
    """
    refusals: list[LibosRefusal] = []
    hashes: dict[str, None] = {}
    processes: dict[int, str] = {}
    refused: dict[_ThreadKey, list[str]] = {}  # thread -> names refused in its current call
    entered: dict[_ThreadKey, tuple[str, str]] = {}  # thread -> (call, args) not returned yet
    attempts = started = 0

    def finished(thread: _ThreadKey, call: str, args: str | None, ret: str | None) -> None:
        nonlocal attempts, started
        if processes.get(thread[0]) == "java" and args is not None and _new_process(call, args):
            attempts += 1
            started += ret is not None and not ret.startswith("-")
        for name in refused.pop(thread, []):
            refusals.append(LibosRefusal(_refused_path(name, args), thread[0], call))

    for thread, program, what, body in _log_events(text):
        if program:
            # The name follows execve: python3.11 that execs java becomes "java".
            processes[thread[0]] = program
        if what == "refused":
            refused.setdefault(thread, []).append(body)
        elif what == "hash":
            hashes[body] = None
        elif what == "syscall" and (match := _RETURN.match(body)):
            call, args = entered.pop(thread, (match.group("call"), None))
            finished(thread, call, args, match.group("ret"))
        elif what == "syscall" and (match := _CALL.match(body)):
            if match.group("enters"):
                entered[thread] = (match.group("call"), match.group("args"))
            else:
                finished(thread, match.group("call"), match.group("args"), match.group("ret"))
    for (process, _), names in refused.items():
        refusals += [LibosRefusal(_refused_path(name, None), process, "?") for name in names]
    seen: set[str] = set()
    unique = [r for r in refusals if not (r.path in seen or seen.add(r.path))]
    return LibosReport(unique, list(hashes), processes, attempts, started)


# What a failed run's diagnosis shows: Gramine's own lines about files it refused.
_DIAGNOSIS = re.compile(
    r"(Disallowing (?:access to|creating|write/append to) |Hash of trusted file "
    r"|Writing to a trusted file|error: )"
)


def refusal_lines(text: str) -> list[str]:
    """Gramine's lines that say what the LibOS refused (distinct, in order)."""
    seen: set[str] = set()
    lines = []
    for line in text.splitlines():
        head = _PREFIX.match(line)
        if head is None or not _DIAGNOSIS.search(line[head.end() :]):
            continue
        shown = line[line.index("[") :] if line.startswith("(") else line
        if shown not in seen:
            seen.add(shown)
            lines.append(shown)
    return lines


__all__ = [
    "DirectRun",
    "LOG_LEVELS",
    "LibosRefusal",
    "LibosReport",
    "read_file_from_image",
    "read_libos_log",
    "refusal_lines",
    "run_direct",
    "with_log_level",
]
