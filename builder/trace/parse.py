"""What the logs say: the opens and execs in an ``strace -f -y`` log, and the job's own lines in
a gramine-direct log. Text in, values out; nothing here knows about the manifest.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ..image.rootfs import normalize

_OPEN_CALLS = {"open", "openat", "openat2", "creat"}
_EXEC_CALLS = {"execve", "execveat"}
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")

_LINE_RE = re.compile(r"^(?:\[pid\s+)?(?P<pid>\d+)\]?\s+(?P<rest>.*)$")
_RESUMED_RE = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_CALL_RE = re.compile(r"^(?P<name>\w+)\((?P<body>.*)$")
_RESULT_RE = re.compile(
    r"^\s*=\s*(?P<ret>-?\d+|\?)(?:<(?P<fdpath>.*?)>)?"
    r"(?:\s+(?P<errno>E[A-Z0-9]+)\b)?"
)


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
                return [a for a in args if a], body[i + 1 :]
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


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "v": "\v",
    "f": "\f",
    "\\": "\\",
    '"': '"',
    "a": "\a",
    "b": "\b",
}


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
            if nxt == "x" and re.match(r"[0-9a-fA-F]{2}", arg[i + 2 : i + 4]):
                out.append(int(arg[i + 2 : i + 4], 16))
                i += 4
                continue
            octal = re.match(r"[0-7]{1,3}", arg[i + 1 : i + 4])
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
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
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
        base = _decoration(dirfd) or (
            cwds.get(pid, start_cwd) if dirfd.startswith("AT_FDCWD") else None
        )
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
    return FileAccess(
        pid=pid,
        syscall=name,
        path=lexical,
        ok=ok,
        write=write,
        directory="O_DIRECTORY" in names,
        path_only="O_PATH" in names,
        errno=result.group("errno"),
        kernel_path=result.group("fdpath"),
    )


# --- the job's own lines in a gramine-direct log ---------------------------------------------

# Gramine's own lines: "(file.c:N:function) " at debug and above, then "[P1:T1:java] " or, while
# the LibOS starts, no prefix at all (libos/src/utils/log.c).
_GRAMINE_LINE = re.compile(r"^(?:\([\w.-]+:\d+:\w+\) |\[P?\d*:)")


def libos_output_tail(text: str, count: int = 5) -> list[str]:
    """The job's own last lines in a gramine-direct log (Gramine's lines left out)."""
    lines = [line for line in text.splitlines() if line.strip() and not _GRAMINE_LINE.match(line)]
    return lines[-count:]


__all__ = ["FileAccess", "libos_output_tail", "parse_strace"]
