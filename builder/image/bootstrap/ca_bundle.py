"""The CA bundle pip trusts inside a build (a TLS-inspecting proxy's): found in ``$PIP_CERT`` or
given as ``--ca-bundle``, checked to be PEM before any build starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ...errors import ImageError


def default_ca_bundle(environ: Mapping[str, str] | None = None) -> tuple[Path, str] | None:
    """The CA bundle host pip is told to trust ($PIP_CERT), to hand to pip inside the build."""
    environ = os.environ if environ is None else environ
    value = environ.get("PIP_CERT")
    if value and Path(value).is_file():
        return Path(value), "PIP_CERT"
    return None


def check_ca_bundle(path: Path) -> Path:
    try:
        head = path.read_bytes()[: 1 << 16]
    except OSError as err:
        raise ImageError(f"--ca-bundle {path}: cannot read it: {err.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise ImageError(
            f"--ca-bundle {path}: not a PEM certificate bundle (no BEGIN CERTIFICATE line)"
        )
    return path


__all__ = ["check_ca_bundle", "default_ca_bundle"]
