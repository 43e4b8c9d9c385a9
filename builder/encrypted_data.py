"""``ppml-build encrypt`` / ``decrypt``: files and directory trees in Gramine's encrypted-files
format, on the host, staged and renamed into place (all of a tree or nothing).

The format itself is ``gramine.protected_files``; this module walks trees, maps an in-enclave
path to the path Gramine binds into each file, and does the file I/O. Like
``gramine-sgx-pf-crypt`` (tools/common/pf_util/pf_util.c), a directory's files are bound to
``<bound path>/<relative path>``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import OutputError, PpmlError
from .gramine import protected_files as pf
from .recipe.model import EncryptedMount, Recipe


class EncryptedDataError(PpmlError):
    """Bad input to encrypt/decrypt: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class Converted:
    """One file written: where from, where to, and the path bound into the encrypted side."""

    source: Path
    dest: Path
    bound_path: str
    size: int  # plaintext bytes


# --- where a file is bound ---------------------------------------------------------------------


def mount_for(recipe: Recipe, enclave_path: str) -> EncryptedMount:
    """The recipe's encrypted mount that holds ``enclave_path`` (the longest match)."""
    want = PurePosixPath(pf.normalize_path(enclave_path))
    best: EncryptedMount | None = None
    for mount in recipe.files.encrypted:
        root = PurePosixPath(pf.normalize_path(mount.path))
        if (want == root or root in want.parents) and (
            best is None or len(root.parts) > len(PurePosixPath(best.path).parts)
        ):
            best = mount
    if best is None:
        known = ", ".join(m.path for m in recipe.files.encrypted) or "none"
        raise EncryptedDataError(
            f"--enclave-path {enclave_path}: not under any of the recipe's files.encrypted "
            f"mounts ({known}); add one, or give the path Gramine binds with --bound-path"
        )
    return best


def bound_path_for(recipe: Recipe, enclave_path: str) -> str:
    """What Gramine binds into a file the enclave sees at ``enclave_path``: the mount's URI path
    with the same relative part (libos_fs_encrypted.c binds the URI, not the in-enclave path)."""
    mount = mount_for(recipe, enclave_path)
    relative = PurePosixPath(pf.normalize_path(enclave_path)).relative_to(
        pf.normalize_path(mount.path)
    )
    uri_path = mount.uri[len("file:") :]
    return pf.normalize_path(f"{uri_path}/{relative}" if str(relative) != "." else uri_path)


# --- trees ---------------------------------------------------------------------------------------


def _walk(source: Path) -> Iterator[tuple[PurePosixPath, Path]]:
    """(relative path, file) for every regular file under ``source``, sorted; refuses what is
    neither a file nor a directory (a link's target would be bound under the link's name)."""
    info = source.lstat()
    if stat.S_ISREG(info.st_mode):
        yield PurePosixPath("."), source
        return
    if not stat.S_ISDIR(info.st_mode):
        raise EncryptedDataError(
            f"{source}: neither a regular file nor a directory; give the file it points to"
        )
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (here / d).is_symlink()]):
            path = here / name
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise EncryptedDataError(
                    f"{path}: a symbolic link or special file; only regular files can be "
                    "converted (copy the target in its place)"
                )
            yield PurePosixPath(path.relative_to(source).as_posix()), path


def _child(bound: str, relative: PurePosixPath) -> str:
    return bound if str(relative) == "." else pf.normalize_path(f"{bound}/{relative}")


def _stage_dir(dest: Path, force: bool) -> Path:
    if dest.exists() or dest.is_symlink():
        if not force:
            raise OutputError(f"{dest}: already exists; remove it or pass --force to replace it")
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{dest.name}.ppml-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
    except OSError as err:
        raise OutputError(f"{dest}: cannot write there ({err.strerror or err})") from None
    return staging


def _commit(staging: Path, dest: Path, single_file: bool, private: bool) -> None:
    """Put the finished tree (or file) in place; an old ``dest`` goes only after that worked.
    A ``private`` (decrypted) tree stays readable by its owner only."""
    source = staging / "file" if single_file else staging
    old: Path | None = None
    try:
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f".{dest.name}.ppml-old-{secrets.token_hex(4)}"
            os.rename(dest, old)
        os.rename(source, dest)
        if not single_file and not private:
            os.chmod(dest, 0o755)
    except OSError as err:
        if old is not None and not dest.exists():
            os.rename(old, dest)
        raise OutputError(f"{dest}: cannot put it in place ({err.strerror or err})") from None
    finally:
        if single_file:
            shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _refuse_overlap(source: Path, dest: Path) -> None:
    """DEST inside SOURCE would convert its own staging tree; SOURCE inside DEST would be
    deleted by ``--force``."""
    src, dst = source.resolve(), dest.resolve()
    if src == dst or src in dst.parents or dst in src.parents:
        raise EncryptedDataError(
            f"{dest}: overlaps the source {source}; write the result outside the source tree"
        )


def _convert_tree(
    source: Path, dest: Path, force: bool, convert_one, *, private: bool = False
) -> list[Converted]:
    if not source.exists() and not source.is_symlink():
        raise EncryptedDataError(f"{source}: no such file or directory")
    _refuse_overlap(source, dest)
    files = list(_walk(source))
    single = source.is_file() and not source.is_symlink()
    staging = _stage_dir(dest, force)
    done: list[Converted] = []
    try:
        if not single:  # empty directories are kept, as the enclave may expect them
            for dirpath, dirnames, _ in os.walk(source):
                for name in dirnames:
                    rel = (Path(dirpath) / name).relative_to(source)
                    (staging / rel).mkdir(parents=True, exist_ok=True)
        for relative, path in files:
            target = staging / "file" if single else staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            done.append(convert_one(relative, path, target))
            if private:
                os.chmod(target, 0o600)
        _commit(staging, dest, single, private)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [
        Converted(
            c.source, dest if single else dest / c.dest.relative_to(staging), c.bound_path, c.size
        )
        for c in done
    ]


def encrypt_tree(
    source: Path, dest: Path, bound_path: str, key: bytes, *, force: bool = False
) -> list[Converted]:
    """Encrypt a file (to the file ``dest``) or a tree (to the directory ``dest``); each file is
    bound to ``bound_path`` plus its path relative to ``source``."""
    pf.check_key(key)
    pf.check_bound_path(bound_path)

    def one(relative: PurePosixPath, path: Path, target: Path) -> Converted:
        bound = _child(bound_path, relative)
        with open(path, "rb") as plain, open(target, "wb") as out:
            size = os.fstat(plain.fileno()).st_size
            try:
                pf.encrypt(
                    lambda offset, n: os.pread(plain.fileno(), n, offset),
                    size,
                    lambda offset, data: _pwrite_all(out.fileno(), data, offset),
                    key,
                    bound,
                )
            except pf.ProtectedFileError as err:
                raise EncryptedDataError(f"{path}: {err}") from None
            os.fsync(out.fileno())
        return Converted(path, target, bound, size)

    return _convert_tree(source, dest, force, one)


def decrypt_tree(
    source: Path, dest: Path, bound_path: str | None, key: bytes, *, force: bool = False
) -> list[Converted]:
    """Check and decrypt a file or a tree; with ``bound_path`` every file must be bound to it
    plus its relative path (a renamed file is refused), as Gramine checks on open."""
    pf.check_key(key)

    def one(relative: PurePosixPath, path: Path, target: Path) -> Converted:
        expected = None if bound_path is None else _child(bound_path, relative)
        with open(path, "rb") as sealed, open(target, "wb") as out:
            stored = os.fstat(sealed.fileno()).st_size
            try:
                header = pf.decrypt(
                    lambda first, count: os.pread(
                        sealed.fileno(), count * pf.NODE_SIZE, first * pf.NODE_SIZE
                    ),
                    stored,
                    out.write,
                    key,
                    expected,
                )
            except pf.ProtectedFileError as err:
                raise EncryptedDataError(f"{path}: {err}") from None
            out.flush()
            os.fsync(out.fileno())
        return Converted(path, target, header.bound_path, header.size)

    # plaintext out of the enclave's format: owner-only, like the key files
    return _convert_tree(source, dest, force, one, private=True)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
