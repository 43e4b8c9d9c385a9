"""Stand-in Gramine binaries (libpal.so, libsysdb.so) compiled from C for tests and benchmarks.

There is no Gramine here; the measurement code only needs real-looking ELF shared objects. The
flags avoid anything host-specific (no libc, no build id, no debug info) so the output depends on
the source and the gcc/binutils version only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent

_COMMON_FLAGS = [
    "-shared",
    "-fPIC",
    "-O1",
    "-g0",
    "-nostdlib",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-Wl,-z,noexecstack",
    "-Wl,-z,relro",
    "-Wl,--build-id=none",
    "-Wl,--hash-style=gnu",
]


def _compile(source: str, output: Path, extra: list[str]) -> Path:
    gcc = shutil.which(os.environ.get("CC", "gcc"))
    if gcc is None:
        raise RuntimeError(
            "gcc is needed to build the stand-in Gramine binaries (apt-get install gcc)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        gcc,
        *_COMMON_FLAGS,
        *extra,
        f"-ffile-prefix-map={SOURCE_DIR}=.",
        "-o",
        str(output),
        str(SOURCE_DIR / source),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"building {output.name} failed:\n{' '.join(cmd)}\n{result.stderr}")
    return output


def build_libpal(dest_dir: Path) -> Path:
    """Compile the stand-in libpal.so into dest_dir (a PIE shared object, e_entry = pal_start)."""
    return _compile("libpal.c", Path(dest_dir) / "libpal.so", ["-Wl,-e,pal_start"])


def build_libsysdb(dest_dir: Path) -> Path:
    """Compile the stand-in libsysdb.so (Gramine's LibOS, the loader.entrypoint) into dest_dir."""
    return _compile("libsysdb.c", Path(dest_dir) / "libsysdb.so", ["-Wl,-e,libos_start"])
