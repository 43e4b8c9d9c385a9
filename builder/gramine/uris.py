"""Gramine URIs as the LibOS reads them: the rule for an allowed tree that covers everything.

Gramine 1.9 (``libos/src/fs/chroot/allowed.c``) takes an ``sgx.allowed_files`` entry that starts
with ``file:`` or ``dev:``, normalises the rest lexically (``common/src/path_utils.c``
``get_norm_path``: ``//`` and ``.`` dropped, ``/..`` is ``/``) and then allows every host path
equal to it or below it. Pure functions, no I/O, so recipe validation can share them.
"""

from __future__ import annotations

ALLOWED_URI_PREFIXES = ("file:", "dev:")


def gramine_norm_path(path: str) -> str:
    """``get_norm_path``: lexical only; '..' above the root stays at the root, and a relative
    path keeps the leading '..' it cannot eat."""
    absolute = path.startswith("/")
    parts: list[str] = []
    for token in path.split("/"):
        if token in ("", "."):
            continue
        if token == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not absolute:
                parts.append("..")
            continue  # "/.." is "/"
        parts.append(token)
    text = "/".join(parts)
    return "/" + text if absolute else text


def covers_whole_filesystem(uri: str) -> bool:
    """Would Gramine, given ``uri`` in ``sgx.allowed_files``, let the host supply any file?

    True for ``file:/`` and everything that normalises to it (``file://``, ``file:/.``,
    ``file:/..``, ``dev:/``), and for an empty or dot-only relative path (``file:``,
    ``file:.``): Gramine's prefix match then takes every absolute host path (an empty prefix
    is followed by the path's own leading '/'), and a relative one is anchored at a working
    directory the host picks, so '..'-only paths count too.
    """
    prefix = next((p for p in ALLOWED_URI_PREFIXES if uri.startswith(p)), None)
    if prefix is None:
        return False  # Gramine refuses to start with such an entry
    normalised = gramine_norm_path(uri[len(prefix) :])
    return normalised in ("/", "") or set(normalised.split("/")) == {".."}


__all__ = ["ALLOWED_URI_PREFIXES", "covers_whole_filesystem", "gramine_norm_path"]
