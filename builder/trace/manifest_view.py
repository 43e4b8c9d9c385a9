"""The manifest as the enclave sees it: what a Gramine 1.9 manifest trusts, allows and mounts.

Gramine never resolves host symlinks itself (the chroot FS has no follow_link; the host follows
them inside ``open``), so a file is trusted or allowed by the path the app *named*, lexically
normalised: ``sgx.trusted_files`` is an exact match, ``sgx.allowed_files`` is "equal or below".
``fs.mounts`` decide where a path really lives: a chroot mount maps the path to its host URI
(e.g. ``/lib`` is the LibOS's runtime glibc).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from ..errors import ManifestError
from ..image.rootfs import RootFSError, normalize


def is_under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it (every path is below ``/``)."""
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Mount:
    path: str
    type: str  # chroot | tmpfs | encrypted | ...
    uri_path: str | None  # host path a chroot mount maps to


@dataclass(frozen=True)
class ManifestView:
    """What a Gramine 1.9 manifest trusts and allows, in in-image paths."""

    trusted: frozenset[str]
    trusted_dirs: tuple[str, ...]  # unexpanded "file:/dir/" entries (an unsigned manifest)
    allowed: tuple[str, ...]
    mounts: tuple[Mount, ...]
    start_dir: str = "/"
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # sys.disallow_subprocesses: the LibOS fails every fork, so no child process ever runs.
    no_subprocesses: bool = False

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "ManifestView":
        sgx = manifest.get("sgx", {})
        trusted, dirs = set(), []
        for item in sgx.get("trusted_files", []):
            uri = item.get("uri") if isinstance(item, dict) else item
            if isinstance(uri, str) and uri.startswith("file:"):
                path = uri[len("file:") :]
                if path.endswith("/"):
                    dirs.append(normalize(path))
                else:
                    trusted.add(normalize(path))
        allowed = tuple(
            normalize(uri[len("file:") :])
            for uri in sgx.get("allowed_files", [])
            if isinstance(uri, str) and uri.startswith("file:")
        )
        mounts = []
        fs = manifest.get("fs", {})
        for mount in fs.get("mounts", []):
            kind = mount.get("type", "chroot")
            uri = mount.get("uri", "")
            mounts.append(
                Mount(
                    normalize(mount["path"]),
                    kind,
                    normalize(uri[len("file:") :])
                    if kind == "chroot" and uri.startswith("file:")
                    else None,
                )
            )
        loader = manifest.get("loader", {})
        env = {}
        for name, value in loader.get("env", {}).items():
            if isinstance(value, str):
                env[name] = value
            elif isinstance(value, dict) and isinstance(value.get("value"), str):
                env[name] = value["value"]
        return cls(
            frozenset(trusted),
            tuple(dirs),
            allowed,
            tuple(sorted(mounts, key=lambda m: len(m.path), reverse=True)),
            fs.get("start_dir", "/"),
            tuple(loader.get("argv", ())),
            env,
            manifest.get("sys", {}).get("disallow_subprocesses") is True,
        )

    @classmethod
    def from_text(cls, text: str, source: str) -> "ManifestView":
        try:
            return cls.from_manifest(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError, RootFSError) as err:
            raise ManifestError(f"{source}: not a readable Gramine manifest ({err})") from None

    def placement(self, path: str) -> tuple[str, str]:
        """(mount type, path on the host side) of an in-enclave path."""
        for mount in self.mounts:
            if is_under(path, mount.path):
                if mount.type == "chroot" and mount.uri_path is not None:
                    rest = path[len(mount.path.rstrip("/")) :]
                    return "chroot", normalize(mount.uri_path + "/" + rest)
                return mount.type, path
        return "root", path

    def is_trusted(self, path: str) -> bool:
        return path in self.trusted or any(is_under(path, d) for d in self.trusted_dirs)

    def is_allowed(self, path: str) -> bool:
        return any(is_under(path, prefix) for prefix in self.allowed)


__all__ = ["ManifestView", "Mount", "is_under"]
