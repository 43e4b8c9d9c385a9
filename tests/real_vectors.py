"""Where the real SGX test vectors are, and the one-line skip when they are not there.

The vectors are other projects' files (Intel's Launch Enclave SIGSTRUCT, fortanix/rust-sgx's
sig1 set, an SDK-signed enclave that has no licence), kept beside the repository in
``../shared/vectors`` and never copied into it; ``$PPML_VECTORS_DIR`` points elsewhere (a
path that does not exist hides them). A test that needs one skips, naming what is missing, and
an in-repo test covers the same code path without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VECTORS_ENV = "PPML_VECTORS_DIR"


def vectors_root() -> Path:
    given = os.environ.get(VECTORS_ENV)
    return Path(given) if given else PROJECT_ROOT.parent / "shared" / "vectors"


def _shown(relative: str) -> str:
    """The path as a reader knows it: ../shared/vectors/... unless $PPML_VECTORS_DIR moved it."""
    base = os.environ.get(VECTORS_ENV) or "../shared/vectors"
    return f"{base.rstrip('/')}/{relative}" if relative else base


def vector(relative: str, skipped: str) -> Path:
    """``relative`` under the vectors directory, or skip the test in one line naming the first
    missing part of it: "../shared/vectors/fortanix-sig1 not here: <skipped> skipped"."""
    parts = relative.split("/") if relative else []
    for count in range(len(parts) + 1):
        missing = "/".join(parts[:count])
        if not (vectors_root() / missing).exists():
            pytest.skip(f"{_shown(missing)} not here: {skipped} skipped")
    return vectors_root() / relative
