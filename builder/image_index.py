"""A base image's filesystem index, kept between builds and keyed by the image's content id.

``docker export`` of a 1 GiB Spark image costs the engine 6–12 s, every build. But a base image
pinned by digest never changes, and its local image id is the SHA-256 of its config, which names
every layer's content digest: an index stored under that id can never go stale. So we export a
base once, keep its index (entries, per-file SHA-256, the first bytes of every file, and the full
bytes of the LibOS files we measure), and lay the app layer over it (``ppml_build.overlay``).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from pathlib import Path
from typing import Callable

from .atomic import write_bytes_atomic
from .hashing import default_cache_path
from .rootfs import Entry
from .tarfs import TarRootFS, _FileData

INDEX_SCHEMA = "ppml-build/image-index/v1"
MAX_CACHED_IMAGES = 8
_IMAGE_ID_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


def index_cache_dir() -> Path:
    return default_cache_path().parent / "images"


def to_document(fs: TarRootFS, keep_prefixes: tuple[str, ...]) -> dict:
    return {
        "schema": INDEX_SCHEMA,
        "keep_prefixes": list(keep_prefixes),
        "entries": [[e.path, e.kind, e.size, e.mode, e.link_target] for e in fs.entries.values()],
        "files": {path: [data.sha256, base64.b64encode(data.head).decode(),
                         None if data.content is None else base64.b64encode(data.content).decode()]
                  for path, data in fs.files.items()},
        "hardlinks": fs.hardlinks,
    }


def from_document(doc: dict) -> TarRootFS:
    fs = TarRootFS()
    for path, kind, size, mode, link in doc["entries"]:
        fs.entries[path] = Entry(path, kind, size, mode, link)
    for path in fs.entries:
        if path != "/":
            parent, _, name = path.rpartition("/")
            fs.children.setdefault(parent or "/", set()).add(name)
        if fs.entries[path].kind == "dir":
            fs.children.setdefault(path, set())
    for path, (sha, head, content) in doc["files"].items():
        fs.files[path] = _FileData(sha, None if content is None else base64.b64decode(content),
                                   base64.b64decode(head))
    fs.hardlinks = dict(doc.get("hardlinks", {}))
    return fs


def keep_under(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda path: any(path.startswith(prefix) for prefix in prefixes)


def cached_image_rootfs(image_id: str, export: Callable[[Callable[[str], bool]], TarRootFS],
                        keep_prefixes: tuple[str, ...], *, cache_dir: Path | None = None,
                        use_cache: bool = True) -> tuple[TarRootFS, bool]:
    """The index of ``image_id``: from the cache, or by ``export(keep)`` then stored.

    Returns (fs, came_from_cache).
    """
    match = _IMAGE_ID_RE.match(image_id)
    cache_dir = cache_dir or index_cache_dir()
    path = cache_dir / f"{match.group(1)}.json.gz" if match else None
    if use_cache and path is not None and path.exists():
        try:
            doc = json.loads(gzip.decompress(path.read_bytes()))
            if doc.get("schema") == INDEX_SCHEMA and \
                    tuple(doc.get("keep_prefixes", ())) == tuple(keep_prefixes):
                os.utime(path)  # recently used: kept longest
                return from_document(doc), True
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is rebuilt below
    fs = export(keep_under(keep_prefixes))
    if path is not None:
        try:
            data = gzip.compress(json.dumps(to_document(fs, keep_prefixes),
                                            separators=(",", ":")).encode(), compresslevel=1,
                                 mtime=0)
            write_bytes_atomic(path, data, mode=0o600)
            _prune(cache_dir)
        except OSError:
            pass  # no cache is slower, never wrong
    return fs, False


def _prune(cache_dir: Path) -> None:
    entries = sorted(cache_dir.glob("*.json.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[MAX_CACHED_IMAGES:]:
        try:
            stale.unlink()
        except OSError:
            pass
