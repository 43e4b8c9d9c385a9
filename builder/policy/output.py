"""Where rendered policy files go: one --output path, a directory, or next to a record."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import check_writable, write_all_or_none
from .model import PolicyError


def output_paths(names: list[str], output: Path) -> list[Path]:
    """Map rendered file names onto paths.

    A directory gets every file under its default name. Otherwise the first (primary) file goes
    to ``output`` and each further file sits beside it with the primary's stem swapped for the
    chosen one (``maa-policy.jwt`` next to ``--output prod.txt`` becomes ``prod.jwt``).
    """
    if output.is_dir():
        return [output / name for name in names]
    primary_stem = names[0].split(".", 1)[0]
    out_stem = output.name.split(".", 1)[0] if not output.name.startswith(".") else output.name
    paths = [output]
    for name in names[1:]:
        if name.startswith(primary_stem):
            paths.append(output.with_name(out_stem + name[len(primary_stem) :]))
        else:
            paths.append(output.with_name(name))
    try:
        distinct = len({p.resolve() for p in paths})
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Path.resolve)
        raise PolicyError(
            f"--output {output}: cannot follow its links (a loop?); give a plain "
            "path or a directory"
        ) from None
    if distinct != len(paths):
        raise PolicyError(
            f"--output {output}: the policy's {len(names)} files would overwrite each other; "
            f"give a name with the usual extension (e.g. {names[0]}) or a directory"
        )
    return paths


def write_policy_files(files: dict[str, str], output: os.PathLike | str) -> list[Path]:
    """Write every file, all or none; returns the paths written, primary first."""
    paths = output_paths(list(files), Path(output))
    for path in paths:  # never a rename over /dev/null or a fifo: a regular file or nothing
        check_writable(path, "--output")
    return write_all_or_none(dict(zip(paths, files.values())), option="--output")
