"""Where ppml-build keeps what it may reuse between runs: file digests and base-image indexes.

Read from the environment once (``PPML_BUILD_CACHE_DIR``, else ``$XDG_CACHE_HOME/ppml-build``)
into a frozen value that the build passes down; no stage reads the variables again or sets
them (``build --verify-reproducible`` hands each of its builds a fresh ``CacheLocations``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR_ENV = "PPML_BUILD_CACHE_DIR"


@dataclass(frozen=True)
class CacheLocations:
    root: Path

    @property
    def hash_cache(self) -> Path:
        """The file-digest cache (``FileHasher``), keyed by each file's stat."""
        return self.root / "hash-cache.json"

    @property
    def base_indexes(self) -> Path:
        """Base-image filesystem indexes (``base_index``), keyed by image id."""
        return self.root / "images"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "CacheLocations":
        env = os.environ if environ is None else environ
        base = env.get(CACHE_DIR_ENV)
        if base:
            return cls(Path(base))
        xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return cls(Path(xdg) / "ppml-build")
