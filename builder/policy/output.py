"""Where rendered policy files go: one --output path, a directory, or next to a record."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import write_text_atomic
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
            paths.append(output.with_name(out_stem + name[len(primary_stem):]))
        else:
            paths.append(output.with_name(name))
    if len({p.resolve() for p in paths}) != len(paths):
        raise PolicyError(
            f"--output {output}: the policy's {len(names)} files would overwrite each other; "
            f"give a name with the usual extension (e.g. {names[0]}) or a directory"
        )
    return paths


def write_policy_files(files: dict[str, str], output: os.PathLike | str) -> list[Path]:
    """Write every file atomically; returns the paths written, primary first."""
    paths = output_paths(list(files), Path(output))
    for path, text in zip(paths, files.values()):
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise PolicyError(f"cannot write {path}: {exc.strerror or exc}") from None
    return paths
