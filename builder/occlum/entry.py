"""The Occlum entry script: the one program ``occlum run`` may start, holding the fixed command.

Occlum 0.31 takes argv from the host (``occlum run PROGRAM ARGS``, src/run/main.c) and checks
only that PROGRAM lies under one of Occlum.json's ``entry_points`` (src/libos/src/entry.rs,
validate_program_path); argv itself is not measured. What is measured is the image: every file
``copy_bom`` puts there is covered by the SEFS image MAC sealed into the signed LibOS. So the
command lives in a script in the image, alone in its entry_points directory: it refuses host
arguments and ``exec``s the command the recipe (or Spark's launcher, at build time) fixed.

It starts no process: ``[``, ``echo``, ``cd`` and ``exec`` are shell builtins, and ``exec``
replaces the shell by execve, which Occlum 0.31 has (src/libos/src/process/do_exec.rs), like
``#!`` scripts (src/libos/src/process/do_spawn/exec_loader.rs); fork it has not. Every argument
is quoted with ``shlex.quote`` (POSIX single quotes), so no recipe value is shell syntax.

Pure: argv in, script text out.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from .. import __version__
from ..errors import RecipeError
from ..plan.launch import OCCLUM_ENTRY_SCRIPT

# The interpreter of the entry script: in the image, and so in the bom.
ENTRY_SHELL = "/bin/sh"
EXIT_HOST_ARGUMENTS = 2


def entry_script(argv: Sequence[str], workdir: str) -> str:
    """The script that runs ``argv`` (argv[0] an absolute path in the image) in ``workdir``."""
    for value in (*argv, workdir):
        if "\0" in value or "\n" in value:
            raise RecipeError(
                f"app.command: {value[:60]!r} has a NUL or newline, which the Occlum entry "
                "script cannot carry as one argument; remove it"
            )
    if not argv or not argv[0].startswith("/"):
        raise RecipeError("app.command[0]: the Occlum entry script needs an absolute program path")
    command = " \\\n    ".join(shlex.quote(arg) for arg in argv)
    return f"""#!{ENTRY_SHELL}
# Written by ppml-build {__version__}: the only program in Occlum.json's entry_points. Occlum
# takes argv from the host and does not measure it; this script is in the measured image, so
# the command below is the one the enclave's MRENCLAVE stands for. Shell builtins only (Occlum
# has no fork); exec replaces the shell with the command.
if [ "$#" -ne 0 ]; then
    echo "ppml-build: this enclave's command is fixed at build time; run {OCCLUM_ENTRY_SCRIPT} with no arguments" >&2
    exit {EXIT_HOST_ARGUMENTS}
fi
cd {shlex.quote(workdir)}
exec {command}
"""
