"""Write outputs so that a reader never sees half a file, and a command that writes several
files writes them all or none.

``write_bytes_atomic`` is the single-file primitive (temp file in the same directory, fsync,
rename; raises ``OSError``), for caches that ignore failures. Commands write their outputs with
``write_all_or_none`` and check at their start, with ``check_writable``, that the outputs can be
written at all; both turn a file-system refusal into one ``OutputError`` line (exit 2).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError


@dataclass(frozen=True)
class Output:
    """One file to write: its content, file mode and the CLI option that named its path."""

    data: bytes | str
    mode: int = 0o644
    option: str | None = None

    @property
    def content(self) -> bytes:
        return self.data.encode("utf-8") if isinstance(self.data, str) else self.data


# --- single file (raises OSError) -----------------------------------------------------------


def write_bytes_atomic(path: os.PathLike | str, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically with the given file mode; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        write_and_sync(fd, data, mode)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def write_text_atomic(path: os.PathLike | str, text: str, mode: int = 0o644) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


# --- checks before any work -----------------------------------------------------------------


def check_writable(path: os.PathLike | str, option: str, *, directory: bool = False) -> None:
    """Raise ``OutputError`` unless files can be written at ``path`` (a file, or with
    ``directory`` a directory to write into): the directories exist or can be created, and the
    nearest existing one takes new files. Called at a command's start, so a bad ``--output``
    fails before minutes of work; nothing is left behind (the probe is removed)."""
    path = Path(path)
    where = f"{option} {path}"
    try:
        problem = _unwritable(path, option, directory)
    except OSError as err:  # e.g. a directory on the way that may not be searched
        problem = f"cannot check it ({_explain(err)[0]}); choose a writable {option}"
    if problem:
        raise OutputError(f"{where}: {problem}")


def _unwritable(path: Path, option: str, directory: bool) -> str | None:
    """What stops files being written at ``path``, or None."""
    if directory:
        if path.exists() and not path.is_dir():
            return f"exists and is not a directory; choose another {option}"
        target_dir = path
    else:
        if path.is_dir():
            return f"is a directory; give a file path for {option}"
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            return f"exists and is not a regular file; choose another {option}"
        target_dir = path.parent
    existing = _nearest_existing(target_dir)
    if not existing.is_dir():
        return f"{existing} is a file, not a directory; choose another {option}"
    try:
        # A real probe, not os.access: root passes access() on most refusals except EROFS,
        # and ACLs or quotas answer only to an attempt.
        os.rmdir(tempfile.mkdtemp(prefix=".ppml-build-probe-", dir=existing))
    except OSError as err:
        return f"cannot create files in {existing} ({_explain(err)[0]}); choose a writable {option}"
    return None


def _nearest_existing(directory: Path) -> Path:
    for candidate in (directory, *directory.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


# --- several files, all or none -------------------------------------------------------------


@dataclass
class _Staged:
    dest: Path
    tmp: str
    backup: str | None = None  # a second name for the old output while renames are under way
    replaced: bool = False


def write_all_or_none(
    files: Mapping[os.PathLike | str, Output | bytes | str], *, option: str | None = None
) -> list[Path]:
    """Write every file, or on any failure none: the old outputs stay as they were.

    Each file is first written completely to a temp file beside its destination (same file
    system) and fsynced; only then are they renamed into place, in the order given. Renames of
    several files cannot be one atomic step, so the window is kept to the renames alone and
    the last file given is renamed last: callers put there the file a reader takes as "this
    set is complete" (measurement.json, the .sig), so a reader who finds that file finds the
    others of the same run beside it. Should a rename fail, the ones already done are undone
    from a hard link (or copy) of each old output made before the first rename.

    ``option`` (e.g. ``--output-dir``) names the CLI option in error messages, unless an
    ``Output`` names its own. A file-system error becomes one ``OutputError`` line.
    """
    outputs = [
        (Path(path), item if isinstance(item, Output) else Output(item))
        for path, item in files.items()
    ]
    seen: dict[str, Path] = {}
    for dest, _ in outputs:
        real = os.path.realpath(dest)
        if real in seen:
            raise OutputError(
                f"{dest}: written twice in one command (also as {seen[real]}); give different paths"
            )
        seen[real] = dest
    staged: list[_Staged] = []
    created: list[Path] = []
    current: tuple[Path, Output] | None = None
    try:
        for current in outputs:
            dest, output = current
            if dest.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(dest))
            if dest.exists() and not stat.S_ISREG(dest.stat().st_mode):
                # A rename would replace /dev/null or a fifo with a file (as root, for good).
                raise OutputError(
                    f"{output.option or option or 'output'} {dest}: exists and "
                    "is not a regular file; choose another path"
                )
            _make_parents(dest.parent, created)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            staged.append(_Staged(dest, tmp))
            write_and_sync(fd, output.content, output.mode)
        # ``current`` stays the file an error is about.
        for item, current in zip(staged, outputs):  # noqa: B007 -- read by the except below
            if os.path.lexists(item.dest):
                item.backup = _keep_old(item.dest)
        for item, current in zip(staged, outputs):  # noqa: B007 -- read by the except below
            os.replace(item.tmp, item.dest)
            item.replaced = True
    except BaseException as err:
        rolled_back = _roll_back(staged, created)
        if isinstance(err, OSError):
            dest, output = current if current is not None else (None, Output(b""))
            raise _write_error(err, dest, output.option or option, rolled_back) from None
        raise
    for item in staged:
        if item.backup is not None:
            _unlink_quietly(item.backup)
    for directory in dict.fromkeys(item.dest.parent for item in staged):
        _fsync_dir(directory)  # the renames themselves survive a crash
    return [item.dest for item in staged]


def write_and_sync(fd: int, data: bytes, mode: int) -> None:
    """Mode first (a key is never readable by others, even briefly), then every byte, fsync."""
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_parents(directory: Path, created: list[Path]) -> None:
    missing = []
    for candidate in (directory, *directory.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            candidate.mkdir()
        except FileExistsError:
            if not candidate.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(candidate)
                ) from None
            continue  # made by someone else meanwhile: not ours to remove
        created.append(candidate)


def _keep_old(dest: Path) -> str:
    """A second name for the current ``dest`` (the link itself if it is a symlink)."""
    for _ in range(8):
        backup = str(dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.old"))
        try:
            os.link(dest, backup, follow_symlinks=False)
            return backup
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some network or FUSE file systems): copy
            shutil.copy2(dest, backup, follow_symlinks=False)
            return backup
    raise FileExistsError(errno.EEXIST, "no free backup name", str(dest))


def _roll_back(staged: list[_Staged], created: list[Path]) -> bool:
    """Undo what was done; False if an old output could not be put back."""
    complete = True
    for item in reversed(staged):
        try:
            if item.replaced:
                if item.backup is not None:
                    os.rename(item.backup, item.dest)  # rename(2), like os.replace
                    item.backup = None
                else:
                    os.unlink(item.dest)
            else:
                os.unlink(item.tmp)
        except OSError:
            complete = complete and not item.replaced
        if item.backup is not None:
            _unlink_quietly(item.backup)
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty: someone else's file arrived meanwhile
    return complete


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the data itself is synced
    finally:
        os.close(fd)


_REASONS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "choose a writable location"),
    errno.EPERM: ("operation not permitted", "choose a writable location"),
    errno.EISDIR: ("is a directory", "give a file path"),
    errno.ENOTDIR: ("a parent is a file, not a directory", "choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}


def _explain(err: OSError) -> tuple[str, str]:
    reason = err.strerror or str(err)
    return _REASONS.get(err.errno, (reason[:1].lower() + reason[1:], "check the path"))


def _write_error(
    err: OSError, dest: Path | None, option: str | None, rolled_back: bool
) -> OutputError:
    reason, fix = _explain(err)
    if err.errno == errno.ENOTDIR and err.filename and str(err.filename) != str(dest):
        reason = f"{err.filename} is a file, not a directory"
    prefix = f"{option}: " if option else ""
    outcome = (
        "nothing was written"
        if rolled_back
        else "some outputs could not be restored; run the command again"
    )
    return OutputError(f"{prefix}cannot write {dest} ({reason}); {fix}; {outcome}")
