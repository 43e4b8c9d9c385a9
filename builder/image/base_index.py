"""A base image's filesystem index, kept between builds and keyed by the image's content id.

A base image pinned by digest never changes, and its local image id is the SHA-256 of its
config, which names every layer's content digest: an index stored under that id can never go
stale. The index holds entries, per-file SHA-256, the first bytes of every file, and the full
bytes of the LibOS files we measure; the app layer is laid over it (``ppml_build.image.overlay``).

It is made once per base, in one of two ways: from the registry's layer blobs in a thread while
the engine pulls the image (``BaseIndexJob``; nothing waits for it but the pull), or from one
``docker export`` stream of the pulled image (6–12 s for a 1 GiB Spark base, after the pull).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..atomic import write_bytes_atomic
from .caches import CacheLocations
from .engine import ImageReference
from .registry import RegistryClient, RegistryImage, credentials_for, engine_treats_insecure
from .rootfs import Entry
from .tarfs import TarRootFS, _FileData

INDEX_SCHEMA = "ppml-build/image-index/v1"
MAX_CACHED_IMAGES = 8
_IMAGE_ID_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


def index_cache_dir() -> Path:
    """The index cache of a run that was handed no ``CacheLocations``."""
    return CacheLocations.from_environment().base_indexes


def to_document(fs: TarRootFS, keep_prefixes: tuple[str, ...]) -> dict:
    return {
        "schema": INDEX_SCHEMA,
        "keep_prefixes": list(keep_prefixes),
        "entries": [[e.path, e.kind, e.size, e.mode, e.link_target] for e in fs.entries.values()],
        "files": {
            path: [
                data.sha256,
                base64.b64encode(data.head).decode(),
                None if data.content is None else base64.b64encode(data.content).decode(),
            ]
            for path, data in fs.files.items()
        },
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
        fs.files[path] = _FileData(
            sha, None if content is None else base64.b64decode(content), base64.b64decode(head)
        )
    fs.hardlinks = dict(doc.get("hardlinks", {}))
    return fs


def keep_under(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda path: any(path.startswith(prefix) for prefix in prefixes)


def _cache_file(image_id: str, cache_dir: Path | None) -> Path | None:
    match = _IMAGE_ID_RE.match(image_id)
    return (cache_dir or index_cache_dir()) / f"{match.group(1)}.json.gz" if match else None


def load_cached(
    image_id: str, keep_prefixes: tuple[str, ...], *, cache_dir: Path | None = None
) -> TarRootFS | None:
    """The stored index of ``image_id``, or None (absent, damaged, other keep set)."""
    path = _cache_file(image_id, cache_dir)
    if path is None or not path.exists():
        return None
    try:
        doc = json.loads(gzip.decompress(path.read_bytes()))
        if doc.get("schema") == INDEX_SCHEMA and tuple(doc.get("keep_prefixes", ())) == tuple(
            keep_prefixes
        ):
            os.utime(path)  # recently used: kept longest
            return from_document(doc)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a damaged entry is rebuilt by the caller
    return None


def store(
    image_id: str, fs: TarRootFS, keep_prefixes: tuple[str, ...], *, cache_dir: Path | None = None
) -> None:
    path = _cache_file(image_id, cache_dir)
    if path is None:
        return
    try:
        data = gzip.compress(
            json.dumps(to_document(fs, keep_prefixes), separators=(",", ":")).encode(),
            compresslevel=1,
            mtime=0,
        )
        write_bytes_atomic(path, data, mode=0o600)
        _prune(path.parent)
    except OSError:
        pass  # no cache is slower, never wrong


def cached_image_rootfs(
    image_id: str,
    export: Callable[[Callable[[str], bool]], TarRootFS],
    keep_prefixes: tuple[str, ...],
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
) -> tuple[TarRootFS, bool]:
    """The index of ``image_id``: from the cache, or by ``export(keep)`` then stored.

    Returns (fs, came_from_cache).
    """
    if use_cache:
        fs = load_cached(image_id, keep_prefixes, cache_dir=cache_dir)
        if fs is not None:
            return fs, True
    fs = export(keep_under(keep_prefixes))
    store(image_id, fs, keep_prefixes, cache_dir=cache_dir)
    return fs, False


def index_from_registry(
    client: RegistryClient, image: RegistryImage, keep: Callable[[str], bool]
) -> TarRootFS:
    """The image's filesystem from its layers, applied in order (each checked by digest)."""
    fs = TarRootFS.empty()
    for layer in image.layers:
        stream = client.layer_tar(image, layer)
        fs.apply_layer(stream, keep)
        stream.finish()
    return fs


class BaseIndexJob:
    """Index a base image from its registry in a background thread, while the engine pulls it.

    A cold build would otherwise wait for a ``docker export`` of the whole base after the
    pull. The thread reads the same layers (the registry serves both readers) and checks
    each against the config's diff_ids; ``result(image_id)`` hands the index over only if the
    engine pulled that very config (image id == config digest). On any failure it returns
    None with ``failure`` set, and the caller exports from the engine as before.
    """

    def __init__(
        self,
        reference: str,
        *,
        auth: Mapping | None,
        registry_config: Mapping | None,
        keep_prefixes: tuple[str, ...],
        use_cache: bool,
        architecture: str = "amd64",
        cache_dir: Path | None = None,
    ) -> None:
        self.reference = ImageReference.parse(reference)
        self._auth = auth
        self._registry_config = registry_config
        self._keep_prefixes = keep_prefixes
        self._use_cache = use_cache
        self._architecture = architecture
        self._cache_dir = cache_dir
        self._cancel = threading.Event()
        self._client: RegistryClient | None = None
        self._thread = threading.Thread(target=self._run, name="ppml-base-index", daemon=True)
        self.fs: TarRootFS | None = None
        self.config_digest: str | None = None
        self.source: str | None = None  # "cache" or "registry"
        self.failure: str | None = None
        self.seconds = 0.0

    def start(self) -> "BaseIndexJob":
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            # Yield the CPU to the engine's pull it runs alongside: the pull is what the build
            # waits for, and this thread usually has time to spare until it ends.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        try:
            registry = self.reference.registry
            client = RegistryClient(
                registry,
                credentials=credentials_for(registry, self._auth),
                insecure=engine_treats_insecure(registry, self._registry_config),
                cancel=self._cancel,
            )
            self._client = client
            image = client.image(self.reference, architecture=self._architecture)
            self.config_digest = image.config_digest
            if self._use_cache:
                cached = load_cached(
                    image.config_digest, self._keep_prefixes, cache_dir=self._cache_dir
                )
                if cached is not None:
                    self.fs, self.source = cached, "cache"
                    return
            fs = index_from_registry(client, image, keep_under(self._keep_prefixes))
            store(image.config_digest, fs, self._keep_prefixes, cache_dir=self._cache_dir)
            self.fs, self.source = fs, "registry"
        except Exception as err:  # noqa: BLE001 -- any failure means: export instead
            self.failure = f"{type(err).__name__}: {err}"[:300]
        finally:
            self.seconds = time.perf_counter() - started

    def result(self, image_id: str) -> TarRootFS | None:
        """Wait for the index; None (see ``failure``) unless it is of ``image_id``."""
        self._thread.join()
        if self.fs is None:
            return None
        if self.config_digest != image_id:
            self.failure = (
                f"the registry's config {self.config_digest} is not the pulled image "
                f"{image_id} (the tag moved during the pull?)"
            )
            return None
        return self.fs

    def cancel(self) -> None:
        """Stop reading (the build failed); waits briefly for the thread to notice."""
        self._cancel.set()
        if self._client is not None:
            self._client.abort()  # unblock a read waiting on the network
        self._thread.join(timeout=10)


def _prune(cache_dir: Path) -> None:
    entries = sorted(cache_dir.glob("*.json.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[MAX_CACHED_IMAGES:]:
        try:
            stale.unlink()
        except OSError:
            pass
