"""The tarballs a from-source Gramine base is built from (``--gramine-source DIR``), checked
against their SHA256SUMS before any build starts."""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import ImageError
from ...versions import DEFAULT_GRAMINE_VERSION
from ..hashing import sha256_file

GRAMINE_VERSION = DEFAULT_GRAMINE_VERSION  # the release whose source tarballs we build
# The tarballs a from-source Gramine build needs (gramine-1.9.tar.gz and what its meson wraps
# name, subprojects/*.wrap at v1.9), listed with their digests in SHA256SUMS.
GRAMINE_SOURCE_MAIN = f"gramine-{GRAMINE_VERSION}.tar.gz"
GRAMINE_SOURCE_SUMS = "SHA256SUMS"


def gramine_source_files(directory: Path) -> dict[str, Path]:
    """The tarballs of a ``--gramine-source`` directory, checked against its SHA256SUMS.

    Every file SHA256SUMS names must be there with that digest, and gramine-1.9.tar.gz among
    them; the Dockerfile checks the sums again inside the build. The directory may be
    read-only (an air-gapped mirror): the files are copied into the build context.
    """
    directory = Path(directory)
    where = f"--gramine-source {directory}"
    sums = directory / GRAMINE_SOURCE_SUMS
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ImageError(
            f"{where}: no {GRAMINE_SOURCE_SUMS} there; the directory must hold "
            f"{GRAMINE_SOURCE_MAIN}, the tarballs its meson wraps name, and "
            f"their {GRAMINE_SOURCE_SUMS}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ImageError(
            f"{where}: cannot read {GRAMINE_SOURCE_SUMS}: {getattr(err, 'strerror', None) or err}"
        ) from None
    files: dict[str, Path] = {GRAMINE_SOURCE_SUMS: sums}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-f]{64}) [ *]([A-Za-z0-9._+-]+)", line.strip())
        if match is None:
            raise ImageError(
                f"{sums}:{number}: expected '<sha256>  <file name>' (sha256sum's format)"
            )
        digest, name = match.groups()
        path = directory / name
        if not path.is_file():
            raise ImageError(f"{where}: {name} is listed in {GRAMINE_SOURCE_SUMS} but missing")
        if sha256_file(path) != digest:
            raise ImageError(
                f"{where}: {name} does not match its sha256 in {GRAMINE_SOURCE_SUMS}; copy it again"
            )
        files[name] = path
    if GRAMINE_SOURCE_MAIN not in files:
        raise ImageError(
            f"{where}: {GRAMINE_SOURCE_MAIN} is not listed in "
            f"{GRAMINE_SOURCE_SUMS}; this base builds Gramine {GRAMINE_VERSION}"
        )
    return files


__all__ = ["GRAMINE_SOURCE_MAIN", "GRAMINE_SOURCE_SUMS", "GRAMINE_VERSION", "gramine_source_files"]
