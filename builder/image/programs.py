"""Finding the app's program inside an image: PATH lookup and '#!' interpreters.

Shared by the Gramine and Occlum renderers; everything is resolved inside the image root.
"""

from __future__ import annotations

import posixpath

from ..errors import ManifestError
from ..recipe import Recipe
from .rootfs import RootFS, RootFSError, resolve, stat_followed

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def path_env(recipe: Recipe) -> str:
    """PATH inside the enclave: the recipe's own, or the kind's runtimes plus the usual dirs."""
    runtime = recipe.runtime
    parts = []
    if recipe.kind in ("java", "spark", "flink"):
        parts.append(f"{runtime.java_home}/bin")
    if recipe.kind == "spark":
        parts.append(f"{runtime.spark_home}/bin")
    if recipe.kind == "flink":
        parts.append(f"{runtime.flink_home}/bin")
    return recipe.app.env.get("PATH") or ":".join(parts + [DEFAULT_PATH])


def find_program(fs: RootFS, program: str, search_path: str, where: str) -> str:
    """argv[0] as the image's PATH finds it (the path as found, symlinks not resolved)."""
    candidates = (
        [program]
        if "/" in program
        else [
            posixpath.join(directory, program) for directory in search_path.split(":") if directory
        ]
    )
    for candidate in candidates:
        if not candidate.startswith("/"):
            continue
        entry = stat_followed(fs, candidate)
        if entry is not None and entry.kind == "file":
            return posixpath.normpath(candidate)
    raise ManifestError(
        f"{where}: {program!r} is not an executable file in the image "
        f"(searched {', '.join(candidates)}); fix app.command[0] or the base "
        "image"
    )


def script_interpreters(fs: RootFS, program: str) -> list[str]:
    """The '#!' interpreter of a script and, for '#!/usr/bin/env NAME', NAME too."""
    try:
        head = fs.head(resolve(fs, program))
    except (OSError, RootFSError):
        return []
    if not head.startswith(b"#!"):
        return []
    words = [w.decode("utf-8", "replace") for w in head[2:].split(b"\n", 1)[0].split()]
    if len(words) >= 2 and posixpath.basename(words[0]) == "env" and not words[1].startswith("-"):
        return words[:2]
    return words[:1]
