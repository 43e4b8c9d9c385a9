"""The trace document (``ppml-build/trace/v1``) and the text report's LibOS section.

The document says what the native run found, what the manifest costs (as shipped, against
hashing the whole image the way GSC does) and, merged in, what the LibOS itself refused.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..image.rootfs import RootFS, RootFSError, resolve
from .comparison import Finding, Lookup, TraceReport
from .manifest_view import ManifestView, is_under

if TYPE_CHECKING:  # direct.py imports the Docker SDK; the pure core here never needs it
    from ..gramine.direct import LibosReport


# --- manifest size: as shipped vs. hashing the whole image (GSC's way) ------------------------

# GSC's finalize_manifest.py skips these (regexes there; prefixes here).
GSC_EXCLUDED = (
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/var",
    "/etc/security",
    "/.dockerenv",
    "/.dockerinit",
    "/etc/mtab",
    "/etc/.pwd.lock",
)
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
            if any(is_under(path, p) for p in GSC_EXCLUDED + skip) or _GSC_EXCLUDED_RE.match(path):
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


# --- the document ----------------------------------------------------------------------------


def group_by_directory(findings: Iterable[Finding], depth: int = 3) -> list[tuple[str, int, int]]:
    """(directory prefix, files, bytes) for a readable summary of many findings."""
    groups: dict[str, list[int]] = {}
    for finding in findings:
        parts = finding.path.strip("/").split("/")
        key = "/" + "/".join(parts[: min(depth, len(parts) - 1)])
        key = key.rstrip("/") + "/"
        slot = groups.setdefault(key, [0, 0])
        slot[0] += 1
        slot[1] += finding.size
    return sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda g: (-g[2], g[0]))


def report_document(
    report: TraceReport,
    *,
    recipe: str,
    image: str,
    exit_code: int,
    shipped: tuple[int, int],
    everything: tuple[int, int],
    seconds: float,
) -> dict[str, Any]:
    def rows(findings: list[Finding]) -> list[dict[str, Any]]:
        return [
            {
                "path": f.path,
                "host_path": f.host_path,
                "syscall": f.syscall,
                "in_image": f.in_image,
                "size": f.size,
            }
            for f in findings
        ]

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
        "unused_trusted": {
            "count": len(report.unused_trusted),
            "bytes": sum(f.size for f in report.unused_trusted),
            "by_directory": [
                {"directory": d, "files": n, "bytes": b}
                for d, n, b in group_by_directory(report.unused_trusted)[:20]
            ],
        },
        "manifest_size": {
            "shipped": {"trusted_entries": shipped[0], "bytes_hashed": shipped[1]},
            "hash_everything": {"trusted_entries": everything[0], "bytes_hashed": everything[1]},
            "needed": {
                "trusted_entries": report.trusted_read,
                "bytes_hashed": shipped[1] - sum(f.size for f in report.unused_trusted),
            },
        },
        "seconds": round(seconds, 1),
    }


# --- what the LibOS itself refused (gramine-direct with the signed manifest) -------------------

LIBOS_PROGRAM = "gramine-direct"


def libos_document(libos: "LibosReport", *, exit_code: int, seconds: float) -> dict[str, Any]:
    """The document's ``"libos"`` part: Gramine's own refusals and its process census."""
    return {
        "refused": [
            {
                "path": r.path,
                "process": r.process,
                "program": libos.processes.get(r.process, ""),
                "call": r.call,
            }
            for r in libos.refusals
        ],
        "hash_mismatches": list(libos.hash_mismatches),
        # JSON names are strings: the part reads the same before and after a JSON round trip.
        "processes": {str(number): program for number, program in sorted(libos.processes.items())},
        "jvm_fork_attempts": libos.jvm_fork_attempts,
        "jvm_forks_started": libos.jvm_forks_started,
        "exit_code": exit_code,
        "seconds": round(seconds, 1),
    }


def merge_libos(
    document: dict[str, Any],
    libos: "LibosReport | None",
    *,
    exit_code: int = 0,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """The trace document with the LibOS run in it (``"libos": None`` when it was skipped).

    Clean then also means the LibOS refused nothing, every trusted file's hash matched and the
    job exited 0 there: those are the enclave's real answers, the native run only estimates them.
    """
    if libos is None:
        return document | {"libos": None}
    part = libos_document(libos, exit_code=exit_code, seconds=seconds)
    clean = (
        document["clean"] and not part["refused"] and not part["hash_mismatches"] and exit_code == 0
    )
    return document | {"libos": part, "clean": clean}


def libos_lines(part: dict[str, Any] | None, output_tail: Iterable[str] = ()) -> list[str]:
    """The text report's LibOS section, from the document's ``"libos"`` part."""
    if part is None:
        return [
            "under the LibOS: not run (--no-libos); the findings above are the native estimate only"
        ]
    lines = [
        f"under the LibOS ({LIBOS_PROGRAM}, the signed manifest at loader.log_level = "
        f"trace): job exited {part['exit_code']} in {part['seconds']} s"
    ]
    if part["exit_code"] != 0:
        lines.append("  the job failed under the LibOS; its last lines:")
        lines += [f"    {line}" for line in output_tail]
    lines.append(f"refused by the LibOS (real refusals): {len(part['refused'])}")
    lines += [
        f"  {r['path']} [{r['call']}, P{r['process']} {r['program'] or '?'}]"
        for r in part["refused"]
    ]
    lines.append(
        f"trusted files whose hash does not match the manifest: {len(part['hash_mismatches'])}"
    )
    lines += [f"  {path}" for path in part["hash_mismatches"]]
    census = ", ".join(f"P{number} {program}" for number, program in part["processes"].items())
    lines.append(f"LibOS processes: {len(part['processes'])}" + (f" ({census})" if census else ""))
    attempts, started = part["jvm_fork_attempts"], part["jvm_forks_started"]
    refused = (
        f" ({attempts - started} refused, e.g. by sys.disallow_subprocesses)"
        if attempts > started
        else ""
    )
    lines.append(f"new processes a running JVM asked for: {attempts}, started: {started}{refused}")
    return lines


__all__ = [
    "GSC_EXCLUDED",
    "LIBOS_PROGRAM",
    "group_by_directory",
    "hash_everything_size",
    "libos_document",
    "libos_lines",
    "merge_libos",
    "report_document",
    "shipped_size",
]
