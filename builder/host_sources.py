"""The recipe's host files (app.files, build.sources): walked, checked and staged, links included.

Nothing outside the recipe's directory may reach a build context. The ``src`` a recipe names is
resolved on the host (a link there is the user's own choice of file); below a directory every
entry is looked at without following links, and each link is decided on its own:

- it leads outside the recipe's directory, dangles or loops: refused (one line, naming it);
- it leads to a regular file and resolves *inside the copied tree* by relative steps alone:
  copied as a link, so the image resolves it exactly as the host does;
- it leads to a regular file elsewhere in the recipe's directory (or by an absolute path): the
  file's bytes are copied in its place, since the same link text would mean something else in
  the image;
- it leads to a directory: refused for app.files (Gramine's trusted-file expansion never
  descends a linked directory, so the files behind it would be in the image yet untrusted),
  kept as a link for build.sources when it stays inside the copied tree.

FIFOs, sockets and devices are refused: copying one would block or copy nothing useful.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import RecipeError
from .image.rootfs import MAX_SYMLINK_HOPS

EntryKind = Literal["dir", "file", "link"]


@dataclass(frozen=True)
class SourceEntry:
    """One thing to put at ``rel`` (posix, relative to the staged target; "" is the target)."""

    rel: str
    kind: EntryKind
    host: Path  # dir: the directory (for its mode); file: whose bytes to copy; link: the link
    link_text: str | None = None  # a kept link's target, verbatim
    leads_to: Path | None = None  # a kept link's final target on the host (a real path)


@dataclass(frozen=True)
class SourceTree:
    """A checked ``src``: where it really is on the host and what staging it puts down."""

    host: Path  # the resolved src (what the app layer's file view hashes)
    entries: list[SourceEntry]

    @property
    def is_dir(self) -> bool:
        return bool(self.entries) and self.entries[0].kind == "dir"


def read_source(recipe_dir: Path, src: str, *, where: str, linked_dirs: bool = False) -> SourceTree:
    """Check ``src`` (relative to ``recipe_dir``) and everything below it; RecipeError if not ok.

    ``where`` starts every message (``recipe.yaml: app.files[0].src: ``). ``linked_dirs``
    keeps a link to a directory inside the copied tree (build stages; never the trusted image).
    """
    root = Path(os.path.realpath(recipe_dir))
    given = Path(recipe_dir) / src
    if not os.path.lexists(given):
        raise RecipeError(f"{where}{src!r} does not exist (looked in {recipe_dir})")
    try:
        real = Path(os.path.realpath(given, strict=True))
    except OSError as err:
        raise RecipeError(f"{where}{src!r} {_broken_link(err)}") from None
    if not _inside(real, root):
        raise RecipeError(
            f"{where}{src!r} leaves the recipe's directory (it leads to "
            f"'{real}'); move the file next to the recipe"
        )
    mode = _lstat(real, where, src).st_mode
    if stat.S_ISREG(mode):
        return SourceTree(real, [SourceEntry("", "file", real)])
    if not stat.S_ISDIR(mode):
        raise RecipeError(
            f"{where}{src!r} is {_special_kind(mode)}, not a file or directory; "
            "name a file or directory"
        )
    walker = _Walker(root, real, src, where, linked_dirs)
    return SourceTree(real, walker.walk())


@dataclass
class _Walker:
    root: Path  # the recipe's directory, real
    tree: Path  # the src directory, real
    src: str
    where: str
    linked_dirs: bool
    entries: list[SourceEntry] = field(default_factory=list)

    def shown(self, rel: str) -> str:
        return posixpath.normpath(posixpath.join(self.src, rel)) if rel else self.src

    def refuse(self, rel: str, text: str | None, problem: str) -> RecipeError:
        link = f"a link {self.shown(rel)!r}" + (f" (-> {text!r})" if text is not None else "")
        return RecipeError(f"{self.where}{self.src!r} holds {link} {problem}")

    def walk(self) -> list[SourceEntry]:
        """Every entry, each directory before what it holds, names sorted (a stack, not
        recursion: a deep tree must not hit Python's recursion limit)."""
        self.entries.append(SourceEntry("", "dir", self.tree))
        pending = [""]
        while pending:
            rel = pending.pop()
            subdirs = []
            for child_rel, path in self._children(rel):
                mode = _lstat(path, self.where, self.shown(child_rel)).st_mode
                if stat.S_ISLNK(mode):
                    self._link(child_rel, path)
                elif stat.S_ISDIR(mode):
                    subdirs.append(child_rel)
                elif stat.S_ISREG(mode):
                    self.entries.append(SourceEntry(child_rel, "file", path))
                else:
                    raise RecipeError(
                        f"{self.where}{self.src!r} holds "
                        f"{self.shown(child_rel)!r}, {_special_kind(mode)}, not "
                        "a file, directory or link; remove it"
                    )
            for child_rel in subdirs:
                self.entries.append(SourceEntry(child_rel, "dir", self.tree / child_rel))
            pending.extend(reversed(subdirs))
        return self.entries

    def _children(self, rel: str) -> list[tuple[str, Path]]:
        directory = self.tree / rel if rel else self.tree
        try:
            with os.scandir(directory) as listing:
                names = sorted(item.name for item in listing)
        except OSError as err:
            raise RecipeError(
                f"{self.where}cannot read {self.shown(rel)!r}: {err.strerror}"
            ) from None
        return [(posixpath.join(rel, name) if rel else name, directory / name) for name in names]

    def _link(self, rel: str, path: Path) -> None:
        text = os.readlink(path)
        try:
            real = Path(os.path.realpath(path, strict=True))
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise self.refuse(rel, text, "that loops; remove it") from None
            raise self.refuse(
                rel, text, "that dangles (nothing is there); remove it or copy the file in"
            ) from None
        if not _inside(real, self.root):
            problem = f"to '{real}'" if text == str(real) else f"that leads to '{real}'"
            what = "directory" if real.is_dir() else "file"
            raise self.refuse(
                rel,
                text if text != str(real) else None,
                f"{problem}, outside the recipe's directory; copy the {what} in instead",
            )
        mode = os.stat(real).st_mode
        # Kept as a link only if the image, holding just this tree, resolves it the same way.
        in_tree = resolve_in_tree(self.tree, rel)
        kept = in_tree is not None and self.tree / in_tree == real
        if stat.S_ISDIR(mode):
            if self.linked_dirs and kept:
                self.entries.append(SourceEntry(rel, "link", path, text, real))
                return
            if self.linked_dirs:
                raise self.refuse(
                    rel,
                    text,
                    "to a directory that the copied tree would not "
                    f"resolve to (the link is absolute or leaves {self.src!r}); "
                    "make it a relative link inside it, or copy the directory in "
                    "instead",
                )
            raise self.refuse(
                rel,
                text,
                "to a directory; Gramine never trusts files reached "
                "through a linked directory, so they could not be read in the "
                "enclave: replace the link by the directory itself",
            )
        if not stat.S_ISREG(mode):
            raise self.refuse(rel, text, f"to {_special_kind(mode)}; remove it")
        if kept:
            self.entries.append(SourceEntry(rel, "link", path, text, real))
        else:  # the same link text would name something else in the image: copy the bytes
            self.entries.append(SourceEntry(rel, "file", real))


def resolve_in_tree(tree: Path, rel: str) -> str | None:
    """Where the link at ``rel`` ends, relative to ``tree``, resolving by relative steps that
    never leave the tree (as it will be once copied elsewhere); None if it cannot."""
    pending = [part for part in rel.split("/") if part not in ("", ".")]
    pending.reverse()  # a stack: the next component is at the end
    current: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if not current:
                return None  # climbs above the tree
            current.pop()
            continue
        candidate = tree.joinpath(*current, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            target = os.readlink(candidate)
            if hops > MAX_SYMLINK_HOPS or target.startswith("/"):
                return None  # a loop, or a host path that means nothing in the image
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            return None
        current.append(part)
    return "/".join(current)


# --- staging ----------------------------------------------------------------------------------


@dataclass
class Staged:
    """What staging put where: each staged regular file's host source, and the kept links."""

    origins: dict[str, Path] = field(default_factory=dict)  # staged real path -> host file
    links: dict[Path, tuple[str, Path]] = field(default_factory=dict)  # staged -> shown, leads_to

    def link_mismatches(self) -> list[str]:
        """Shown names of kept links whose staged target is no longer the host file they lead
        to (a later entry was copied over it): image and file view would disagree there."""
        out = []
        for staged, (shown, leads_to) in self.links.items():
            if self.origins.get(os.path.realpath(staged)) != leads_to:
                out.append(shown)
        return out


class StagingConflict(Exception):
    """An entry would go where an earlier one put something of another kind."""


def stage_tree(
    tree: SourceTree, target: Path, staged: Staged, *, shown: str, normalise_file_mode: bool = False
) -> None:
    """Copy ``tree`` to ``target``: directories, regular files (never through a link on either
    side) and kept links as links, with their modes and times. A file or link replaces an
    earlier file or link at its path; anything else in the way is a StagingConflict."""
    directories: list[tuple[Path, os.stat_result]] = []
    for entry in tree.entries:
        path = target / entry.rel if entry.rel else target
        name = posixpath.join(shown, entry.rel) if entry.rel else shown
        try:
            if entry.kind == "dir":
                if os.path.islink(path) or (os.path.lexists(path) and not path.is_dir()):
                    raise StagingConflict(f"{name!r} goes where an earlier entry put a file")
                path.mkdir(parents=True, exist_ok=True)
                directories.append((path, os.stat(entry.host)))
            elif entry.kind == "link":
                _clear_for_file(path, name, staged)
                os.symlink(entry.link_text, path)
                st = os.lstat(entry.host)
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
                staged.links[path] = (name, entry.leads_to)
            else:
                _clear_for_file(path, name, staged)
                st = _copy_regular(entry.host, path, name)
                mode = stat.S_IMODE(st.st_mode)
                if normalise_file_mode:
                    mode = 0o755 if mode & stat.S_IXUSR else 0o644
                os.chmod(path, mode)
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                staged.origins[os.path.realpath(path)] = entry.host
        except OSError as err:
            raise StagingConflict(
                f"{name!r} cannot be staged ({err.strerror}); does an "
                "earlier entry put a file where it needs a directory?"
            ) from None
    for path, st in reversed(directories):  # last: adding children changed mode and mtime
        # u+w kept so a read-only directory's staged copy can still be cleaned up
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IWUSR | stat.S_IXUSR)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _clear_for_file(path: Path, name: str, staged: Staged) -> None:
    if os.path.islink(path):
        staged.links.pop(path, None)
        path.unlink()  # replaced, never written through (the write would follow the link)
    elif path.is_file():
        staged.origins.pop(os.path.realpath(path), None)
        path.unlink()
    elif os.path.lexists(path):
        raise StagingConflict(f"{name!r} goes where an earlier entry put a directory")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)


def _copy_regular(host: Path, target: Path, name: str) -> os.stat_result:
    """Copy one regular file, refusing it if it became a link or a special file since the
    walk; returns its stat."""
    try:
        source = os.open(host, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise StagingConflict(
            f"{name!r} cannot be read ({err.strerror}); was it changed during the build?"
        ) from None
    with open(source, "rb") as reader:
        st = os.fstat(reader.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StagingConflict(
                f"{name!r} is no longer a regular file; was it changed during the build?"
            )
        with open(target, "xb") as writer:
            shutil.copyfileobj(reader, writer, 4 * 1024 * 1024)
    return st


# --- small helpers ----------------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _lstat(path: Path, where: str, shown: str) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as err:
        raise RecipeError(f"{where}cannot read {shown!r}: {err.strerror}") from None


def _broken_link(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "is a link that loops; point it at a file inside the recipe's directory"
    return (
        "is a link that dangles (nothing is there); point it at a file inside the "
        "recipe's directory"
    )


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
