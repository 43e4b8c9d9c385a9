"""SHA-256 of many files: parallel, large reads, and a content cache for unchanged trees.

Gramine's ``gramine-manifest`` hashes one file at a time with 8 KiB reads. We hash files on a
thread pool (hashlib releases the GIL while it digests a large buffer) with 4 MiB reads, and
remember digests keyed by (device, inode, size, mtime_ns, ctime_ns) in a cache file outside the
output directory, so a rebuild of an unchanged tree reads nothing. ctime is part of the key because
no user call can set it: a rewritten file always misses the cache even if mtime was restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..atomic import write_text_atomic
from .caches import CacheLocations

CACHE_SCHEMA = "ppml-build/hash-cache/v1"
_CHUNK = 4 * 1024 * 1024  # one read and one hashlib.update per 4 MiB


def default_cache_path() -> Path:
    """The hash cache of a run that was handed no ``CacheLocations`` (``manifest``, ``verify``)."""
    return CacheLocations.from_environment().hash_cache


_thread_buffers = threading.local()


def sha256_file(path: os.PathLike | str) -> str:
    """Hex SHA-256 of one file's content: unbuffered reads of 4 MiB into a per-thread buffer
    (hashlib releases the GIL while it digests them, so threads hash in parallel)."""
    view = getattr(_thread_buffers, "view", None)
    if view is None:
        view = _thread_buffers.view = memoryview(bytearray(_CHUNK))
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(view):
            digest.update(view[:count])
    return digest.hexdigest()


def _cache_key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class FileHasher:
    """Hash files in parallel, reusing digests of files whose stat key has not changed."""

    def __init__(
        self, cache_path: Path | None = None, *, use_cache: bool = True, workers: int | None = None
    ) -> None:
        self.cache_path = cache_path or default_cache_path()
        self.use_cache = use_cache
        # One more thread than cores: a thread waiting on open()/read() leaves a core idle.
        self.workers = workers or (os.cpu_count() or 2) + 1
        self._cache: dict[str, list] | None = None
        self._lock = threading.Lock()
        self.hashed_files = 0  # how many files were actually read (cache misses)
        self.hashed_bytes = 0

    def _load_cache(self) -> dict[str, list]:
        if self._cache is None:
            self._cache = {}
            if self.use_cache:
                try:
                    data = json.loads(self.cache_path.read_text())
                    if data.get("schema") == CACHE_SCHEMA:
                        self._cache = data.get("entries", {})
                except (OSError, ValueError, AttributeError):
                    self._cache = {}  # a missing or damaged cache only costs time
        return self._cache

    def _save_cache(self) -> None:
        if not self.use_cache or self._cache is None:
            return
        try:
            write_text_atomic(
                self.cache_path,
                json.dumps({"schema": CACHE_SCHEMA, "entries": self._cache}, separators=(",", ":")),
            )
        except OSError:
            pass  # a read-only home must not fail a build

    def sha256_files(self, paths: Sequence[os.PathLike | str]) -> list[str]:
        """Digests in the order of ``paths`` (host paths of regular files)."""
        cache = self._load_cache()
        results: list[str | None] = [None] * len(paths)
        todo: list[tuple[int, str, os.stat_result]] = []
        for index, path in enumerate(paths):
            key_path = os.path.abspath(path)
            st = os.stat(key_path)
            hit = cache.get(key_path)
            if hit is not None and hit[:5] == _cache_key(st):
                results[index] = hit[5]
            else:
                todo.append((index, key_path, st))
        # Biggest first so one large jar does not finish alone at the end.
        todo.sort(key=lambda item: item[2].st_size, reverse=True)
        if todo:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                for (index, key_path, st), digest in zip(
                    todo, pool.map(lambda item: sha256_file(item[1]), todo)
                ):
                    results[index] = digest
                    with self._lock:
                        cache[key_path] = _cache_key(st) + [digest]
                        self.hashed_files += 1
                        self.hashed_bytes += st.st_size
            self._save_cache()
        return [digest for digest in results if digest is not None]


def sha256_files_reference(paths: Iterable[os.PathLike | str]) -> list[str]:
    """Gramine's way (one thread, 8 KiB reads): the baseline for benchmarks and tests."""
    out = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(128 * digest.block_size), b""):  # noqa: B023 -- called in this iteration
                digest.update(chunk)
        out.append(digest.hexdigest())
    return out
