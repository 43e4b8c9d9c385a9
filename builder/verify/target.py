"""The I/O edge of verify: read a directory (``APP.manifest.sgx``, ``APP.sig`` and the unpacked
image) or a local image (everything from ONE ``docker export`` stream) into ``Evidence``, and
hand it to ``run_checks``. The Docker SDK is imported only in image mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ImageError, PpmlError
from ..image.rootfs import DirRootFS, RootFSError, resolve
from ..limits import MAX_SMALL_FILE_BYTES
from ..progress import Say, say_nothing
from ..record import IN_IMAGE_DIR
from .checks import run_checks
from .evidence import Evidence, Expectations, load_expectations, parse_sigstruct, read_host_file
from .report import VerifyReport


def _discover_name(names: list[str], where: str, name: str | None) -> str:
    suffix = ".manifest.sgx"
    found = sorted(n[: -len(suffix)] for n in names if n.endswith(suffix) and len(n) > len(suffix))
    if name is not None:
        if name not in found:
            raise PpmlError(
                f"{where}: no {name}{suffix} (has: {', '.join(found) or 'none'}); check --name"
            )
        return name
    if len(found) != 1:
        listed = ", ".join(f"{n}{suffix}" for n in found) or f"no *{suffix}"
        raise PpmlError(
            f"{where}: expected exactly one *{suffix}, found {listed}; choose one with --name APP"
        )
    return found[0]


def verify_directory(
    directory: os.PathLike | str,
    *,
    rootfs: os.PathLike | str | None = None,
    name: str | None = None,
    libpal: os.PathLike | str | None = None,
    expect: Expectations = Expectations(),
) -> VerifyReport:
    """Directory mode: APP.manifest.sgx and APP.sig in ``directory``, the image in ``rootfs``.

    Without ``rootfs``, a directory that is itself an unpacked image (it has ppml/APP.*) is
    used as both.
    """
    from ..image.hashing import FileHasher

    directory = Path(directory)
    expected = load_expectations(expect)
    artifacts = directory
    if rootfs is None:
        if (directory / IN_IMAGE_DIR.strip("/")).is_dir() and not any(
            p.name.endswith(".manifest.sgx") for p in directory.iterdir()
        ):
            rootfs, artifacts = directory, directory / IN_IMAGE_DIR.strip("/")
        else:
            raise PpmlError(
                f"{directory}: directory mode needs --rootfs DIR, the image's "
                "filesystem unpacked on the host (e.g. docker export | tar -x), to "
                "check the trusted files against"
            )
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise PpmlError(f"--rootfs {rootfs}: not a directory (the image's unpacked filesystem)")
    app = _discover_name([p.name for p in artifacts.iterdir()], str(artifacts), name)
    manifest_sgx = read_host_file(artifacts / f"{app}.manifest.sgx", "manifest (.manifest.sgx)")
    sig_path = artifacts / f"{app}.sig"
    sig = parse_sigstruct(
        read_host_file(sig_path, "SIGSTRUCT (.sig)", MAX_SMALL_FILE_BYTES), str(sig_path)
    )
    pal = read_host_file(Path(libpal), "libpal.so (--libpal)") if libpal is not None else None
    # An auditor's check reads every byte: no hash cache.
    fs = DirRootFS(rootfs, FileHasher(use_cache=False))
    evidence = Evidence(
        target=str(directory),
        name=app,
        manifest_sgx=manifest_sgx,
        sigstruct=sig,
        fs=fs,
        libpal=pal,
        **expected,
    )
    return run_checks(evidence)


def _keep_for_verify(path: str) -> bool:
    """Hold in memory what verify reads whole: /ppml/ and the LibOS files (libpal.so)."""
    return path.startswith(IN_IMAGE_DIR + "/") or "/gramine/" in path or path.endswith("/libpal.so")


def verify_image(
    reference: str,
    *,
    name: str | None = None,
    libpal: os.PathLike | str | None = None,
    expect: Expectations = Expectations(),
    client: Any = None,
    say: Say = say_nothing,
) -> VerifyReport:
    """Image mode: everything from the local engine's image, exported in ONE stream."""
    import docker.errors

    from ..image.engine import connect, export_image_rootfs

    expected = load_expectations(expect)
    pal = read_host_file(Path(libpal), "libpal.so (--libpal)") if libpal is not None else None
    client = client or connect()
    try:
        attrs = client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"{reference}: no such image in the local Docker engine (verify does "
            f"not pull); pull it first (docker pull {reference}) or build it"
        ) from None
    except docker.errors.APIError as err:
        raise ImageError(
            f"{reference}: cannot inspect the image: {err.explanation or err}"
        ) from None
    image_id = attrs["Id"]  # labels and files from the same image, even if the tag moves
    labels = dict((attrs.get("Config") or {}).get("Labels") or {})
    say(f"exporting {reference} ({image_id[:19]}) to hash its files")
    fs = export_image_rootfs(client, image_id, keep=_keep_for_verify)
    try:
        names = fs.listdir(IN_IMAGE_DIR)
    except RootFSError:
        raise ImageError(
            f"{reference}: no {IN_IMAGE_DIR}/ directory in the image: not built "
            "by `ppml-build build`"
        ) from None
    app = _discover_name(names, f"{reference}:{IN_IMAGE_DIR}/", name)

    def image_file(file_name: str, what: str) -> bytes:
        path = f"{IN_IMAGE_DIR}/{file_name}"
        try:
            return fs.read_bytes(resolve(fs, path))
        except (OSError, KeyError) as err:
            raise ImageError(f"{reference}: cannot read {path} ({what}): {err}") from None

    manifest_sgx = image_file(f"{app}.manifest.sgx", "the manifest")
    sig = parse_sigstruct(
        image_file(f"{app}.sig", "the SIGSTRUCT"), f"{reference}:{IN_IMAGE_DIR}/{app}.sig"
    )
    copy = None
    if fs.lstat(f"{IN_IMAGE_DIR}/{app}.manifest") is not None:
        copy = image_file(f"{app}.manifest", "the manifest copy")
    evidence = Evidence(
        target=reference,
        name=app,
        manifest_sgx=manifest_sgx,
        sigstruct=sig,
        fs=fs,
        libpal=pal,
        labels=labels,
        manifest_copy=copy,
        **expected,
    )
    say("checking")
    return run_checks(evidence)


def _looks_like_path(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~")) or target in (".", "..")


def verify_target(
    target: str,
    *,
    rootfs: os.PathLike | str | None = None,
    name: str | None = None,
    libpal: os.PathLike | str | None = None,
    expect: Expectations = Expectations(),
    say: Say = say_nothing,
) -> VerifyReport:
    """An existing directory → directory mode; anything else is a local image reference."""
    if Path(target).is_dir():
        return verify_directory(target, rootfs=rootfs, name=name, libpal=libpal, expect=expect)
    if Path(target).exists():
        raise PpmlError(
            f"{target}: not a directory; give the directory holding "
            "APP.manifest.sgx and APP.sig (or an image reference)"
        )
    if _looks_like_path(target):
        raise PpmlError(
            f"{target}: no such directory (give a directory holding "
            "APP.manifest.sgx and APP.sig, or an image reference)"
        )
    if rootfs is not None:
        raise PpmlError(
            f"--rootfs is for directory mode; {target} is not a directory (an "
            "image is checked against its own filesystem)"
        )
    return verify_image(target, name=name, libpal=libpal, expect=expect, say=say)


__all__ = ["verify_directory", "verify_image", "verify_target"]
