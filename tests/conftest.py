"""Shared fixtures. ``tests/`` is on sys.path (pytest rootdir conftest), so helpers import plainly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Real SGX artifacts from other projects, kept beside the repo (never copied into it).
VECTORS = PROJECT_ROOT.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    if not VECTORS.is_dir():
        pytest.fail(f"test vectors missing: {VECTORS} (clone the project beside shared/)")
    return VECTORS


@pytest.fixture(scope="session")
def standin_libpal(tmp_path_factory) -> Path:
    """A stand-in Gramine libpal.so compiled from C: treated exactly like the real one."""
    import standin

    return standin.build_libpal(tmp_path_factory.mktemp("libpal"))


@pytest.fixture(scope="session")
def standin_libsysdb(tmp_path_factory) -> Path:
    import standin

    return standin.build_libsysdb(tmp_path_factory.mktemp("libsysdb"))
