"""Shared fixtures. ``tests/`` is on sys.path (pytest rootdir conftest), so helpers import plainly."""

from __future__ import annotations

from pathlib import Path

import pytest
from real_vectors import vector


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The real SGX vectors (../shared/vectors or $PPML_VECTORS_DIR); skips when absent."""
    return vector("", "real-SGX-vector cross-check")


@pytest.fixture(scope="session")
def standin_libpal(tmp_path_factory) -> Path:
    """A stand-in Gramine libpal.so compiled from C: treated exactly like the real one."""
    import standin

    return standin.build_libpal(tmp_path_factory.mktemp("libpal"))


@pytest.fixture(scope="session")
def standin_libsysdb(tmp_path_factory) -> Path:
    import standin

    return standin.build_libsysdb(tmp_path_factory.mktemp("libsysdb"))
