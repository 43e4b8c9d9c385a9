"""The recipe changes a trace asks for, as ``files:`` YAML fragments with comments: the native
estimate (from the comparison) and the LibOS's real refusals (from gramine-direct's log).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..image.rootfs import normalize
from .comparison import Lookup, TraceReport
from .manifest_view import ManifestView

if TYPE_CHECKING:  # direct.py imports the Docker SDK; the pure core here never needs it
    from ..gramine.direct import LibosReport

NATIVE_ESTIMATE = "the native estimate (the app under strace, outside the LibOS)"


def suggest(
    report: TraceReport,
    recipe_trusted: Iterable[str] = (),
    *,
    title: str = "changes for the recipe's files: section",
) -> str:
    """The recipe changes the trace asks for, as a ``files:`` YAML fragment with comments."""
    add_trusted = sorted({f.path for f in report.untrusted_reads if f.in_image})
    add_allowed = sorted({f.path for f in report.untrusted_reads if not f.in_image})
    write_dirs = sorted({posixpath.dirname(f.path).rstrip("/") + "/" for f in report.bad_writes})
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
        lines.append(
            "# listed in files.trusted but never opened (drop them for a smaller manifest):"
        )
        lines += [f"#   - {path}" for path in listed]
    return "\n".join(lines) + "\n"


def _refused_change(
    path: str, view: ManifestView, lookup: Lookup, written: frozenset[str]
) -> tuple[str, str]:
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


def suggest_libos(
    libos: "LibosReport", view: ManifestView, lookup: Lookup, written: Iterable[str] = ()
) -> str:
    """The recipe changes what the LibOS refused asks for (real refusals, not an estimate).

    ``written`` are the paths the native run wrote: such a file is never trusted, even where
    the image has one (Python's __pycache__, a log the app rewrites).
    """
    written = frozenset(written)
    changes: dict[str, dict[str, None]] = {"trusted": {}, "allowed": {}, "unresolved": {}}
    for refusal in libos.refusals:
        kind, entry = _refused_change(refusal.path, view, lookup, written)
        changes[kind][entry] = None
    lines = [
        "# ppml-build trace --suggest: what the LibOS refused under gramine-direct (real refusals)"
    ]
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
        lines.append(
            "# refused, but no syscall line named the full path (look for it in the "
            "native estimate):"
        )
        lines += [f"#   - {name}" for name in sorted(changes["unresolved"])]
    if libos.hash_mismatches:
        lines.append(
            "# trusted files that differ from the signed hash: the image changed after "
            "`ppml-build build`;"
        )
        lines.append("# rebuild it rather than edit the recipe:")
        lines += [f"#   - {path}" for path in libos.hash_mismatches]
    return "\n".join(lines) + "\n"


def combined_suggestion(libos_text: str | None, native_text: str) -> str:
    """The LibOS's real refusals first, then the native estimate: two YAML documents."""
    return native_text if libos_text is None else f"{libos_text}---\n{native_text}"


__all__ = ["NATIVE_ESTIMATE", "combined_suggestion", "suggest", "suggest_libos"]
