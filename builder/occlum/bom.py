"""The Occlum 0.31 backend's ``bom.yaml``: what ``copy_bom`` copies into the instance's image.

``copy_bom -f bom.yaml --root image --include-dir /opt/occlum/etc/template`` copies from the
build container into the instance's ``image/``: the JDK, the Spark/Flink distribution, the app
files (pinned by SHA-256) and the glibc pieces Occlum does not ship in a new instance.
``copy_bom`` resolves ELF dependencies itself. Every file of ``image/`` is integrity-protected by
the SEFS image MAC, so the bom is this backend's trusted-file list.

Pure: the image filesystem in, a data structure out, serialised by ``yaml`` (nothing a recipe
contains can break its syntax).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import ManifestError
from ..image.rootfs import MAX_SYMLINK_HOPS, RootFS, RootFSError, resolve, stat_followed
from ..recipe import Recipe
from ..versions import OCCLUM_VERSION

# Where the build container has Occlum's glibc; NSS modules are dlopen'ed, so autodep misses them.
# DNS (a Kubernetes service name, a key server's host name) needs libnss_dns and libresolv too,
# as Occlum 0.31's demos/flink/flink.yaml copies them and docs/readthedocs/.../qa.md explains.
OCCLUM_GLIBC_LIB = "/opt/occlum/glibc/lib"
NSS_LIBRARIES = ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2")
ETC_FILES = ("/etc/group", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd")


@dataclass
class ImageSelection:
    """What the bom copies, keyed by destination; plus counts for the summary."""

    dirs: dict[str, str] = field(default_factory=dict)  # in-image dir → field that wants it
    files: dict[str, str] = field(default_factory=dict)  # in-image file → field that wants it
    links: dict[str, str] = field(default_factory=dict)  # in-image symlink → its target text
    external_files: list[str] = field(default_factory=list)  # from Occlum's install, not rootfs
    mkdirs: set[str] = field(default_factory=set)
    excludes: set[str] = field(default_factory=set)
    file_count: int = 0
    byte_count: int = 0
    warnings: list[str] = field(default_factory=list)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _is_unsafe_link(depth: int, target: str) -> bool:
    """rsync's --copy-unsafe-links test: absolute, or climbing above the copied tree's top
    (``depth`` = directories between the top and the link)."""
    if target.startswith("/"):
        return True
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _walk_copied_dir(fs: RootFS, given: str, selection: ImageSelection) -> None:
    """Count what ``rsync -ar --copy-unsafe-links GIVEN/ image/GIVEN`` copies, and exclude the
    dangling unsafe links that would make rsync (and so copy_bom) fail."""
    seen: set[str] = set()
    # (real dir to list, path relative to the copied top, depth below the top)
    stack: list[tuple[str, str, int]] = [(resolve(fs, given), "", 0)]
    while stack:
        real, rel, depth = stack.pop()
        if real in seen:
            continue
        seen.add(real)
        for name in sorted(fs.listdir(real), reverse=True):
            path = posixpath.join(real, name)
            entry = fs.lstat(path)
            rel_path = posixpath.join(rel, name)
            if entry is None:
                continue
            if entry.kind == "dir":
                stack.append((path, rel_path, depth + 1))
            elif entry.kind == "file":
                selection.file_count += 1
                selection.byte_count += entry.size
            elif entry.kind == "symlink" and _is_unsafe_link(depth, entry.link_target or ""):
                # rsync copies what an unsafe link points to (e.g. the JDK's conf/ → /etc/…).
                referent = stat_followed(fs, path)
                if referent is None:
                    selection.excludes.add(f"/{rel_path}")
                    selection.warnings.append(
                        f"{posixpath.join(given, rel_path)} -> {entry.link_target} points "
                        "nowhere in the image; left out of the Occlum image"
                    )
                elif referent.kind == "dir":
                    stack.append((resolve(fs, path), rel_path, depth + 1))
                elif referent.kind == "file":
                    selection.file_count += 1
                    selection.byte_count += referent.size


def _python_dirs(fs: RootFS) -> list[str]:
    """The stdlib and dist-packages directories present in the image."""
    found = []
    for base in ("/usr/lib", "/usr/local/lib"):
        try:
            names = sorted(fs.listdir(resolve(fs, base)))
        except (OSError, KeyError):
            continue
        for name in names:
            if name.startswith("python3"):
                entry = stat_followed(fs, posixpath.join(base, name))
                if entry is not None and entry.kind == "dir":
                    found.append(posixpath.join(base, name))
    return found


def select_image_content(
    recipe: Recipe,
    fs: RootFS,
    program: str,
    mount_targets: list[str],
    launch_files: Sequence[str] = (),
) -> ImageSelection:
    """What the bom copies for ``recipe`` (``program`` being app.command[0] in the image, and
    ``launch_files`` what starting it needs: the entry script's shell, ppml-build's jars), and
    the directories it creates: ``mount_targets`` (Occlum.json's mounts) and the workdir."""
    selection = ImageSelection()
    runtime = recipe.runtime

    def want_dir(path: str, field_name: str, required: bool = True) -> None:
        path = path.rstrip("/") or "/"
        entry = stat_followed(fs, path)
        if entry is None or entry.kind != "dir":
            if required:
                raise ManifestError(
                    f"{field_name}: {path} is not a directory in the image; "
                    f"fix {field_name} or the base image"
                )
            return
        selection.dirs.setdefault(path, field_name)

    def want_file(path: str, field_name: str, required: bool = True) -> None:
        """The file at ``path``; a symlink is recreated as a link (the java launcher finds its
        JDK through /proc/self/exe) and what it names is wanted in turn."""
        links: dict[str, str] = {}
        current = path
        while True:
            if current in links or len(links) > MAX_SYMLINK_HOPS:
                raise ManifestError(f"{field_name}: {path}: too many levels of symbolic links")
            try:
                parent = resolve(fs, posixpath.dirname(current))
                entry = fs.lstat(posixpath.join(parent, posixpath.basename(current)))
            except RootFSError:
                entry = None
            if entry is not None and entry.kind == "symlink":
                text = entry.link_target or ""
                links[current] = text
                current = (
                    text
                    if text.startswith("/")
                    else posixpath.normpath(posixpath.join(posixpath.dirname(current), text))
                )
                continue
            if entry is None or entry.kind != "file":
                if required:
                    raise ManifestError(
                        f"{field_name}: {path} is not a file in the image; "
                        f"fix {field_name} or the base image"
                    )
                return
            selection.links.update(links)
            selection.files.setdefault(current, field_name)
            return

    if recipe.kind in ("java", "spark", "flink"):
        want_dir(runtime.java_home, "runtime.java_home")
    if recipe.kind == "spark":
        want_dir(runtime.spark_home, "runtime.spark_home")
    if recipe.kind == "flink":
        want_dir(runtime.flink_home, "runtime.flink_home")
    if recipe.uses_python:
        want_file(runtime.python, "runtime.python")
        for directory in _python_dirs(fs):
            want_dir(directory, "runtime.python")
    want_file(program, "app.command[0]")
    for path in launch_files:
        want_file(path, "the launch (ppml-build plan)")
    for index, path in enumerate(recipe.files.trusted):
        if path.endswith("/"):
            want_dir(path, f"files.trusted[{index}]")
        else:
            want_file(path, f"files.trusted[{index}]")
    for index, item in enumerate(recipe.app.files):
        want_file(item.dest, f"app.files[{index}].dest")
    for path in ETC_FILES:
        want_file(path, path, required=False)
    selection.external_files = [posixpath.join(OCCLUM_GLIBC_LIB, name) for name in NSS_LIBRARIES]

    # Drop what a copied directory already brings. Paths as configured, not resolved: the bom
    # copies a directory's content to the path it was asked for.
    top_dirs = [
        path
        for path in selection.dirs
        if not any(other != path and _inside(path, other) for other in selection.dirs)
    ]
    selection.dirs = {path: selection.dirs[path] for path in top_dirs}
    selection.files = {
        path: name
        for path, name in selection.files.items()
        if not any(_inside(path, d) for d in top_dirs)
    }
    selection.links = {
        path: text
        for path, text in selection.links.items()
        if not any(_inside(path, d) for d in top_dirs)
    }
    for path in sorted(selection.dirs):
        _walk_copied_dir(fs, path, selection)
    for path in selection.files:
        selection.file_count += 1
        selection.byte_count += stat_followed(fs, path).size  # type: ignore[union-attr]

    # Mount points and the working directory must exist in the image to be used.
    selection.mkdirs.update(mount_targets)
    selection.mkdirs.add(recipe.app.workdir)
    selection.mkdirs.discard("/")
    return selection


def _add_file(target: dict[str, Any], entry: str | dict[str, Any]) -> None:
    copy = target.setdefault("copy", [])
    if not copy or "files" not in copy[-1]:
        copy.append({"files": []})
    copy[-1]["files"].append(entry)


def build_bom(selection: ImageSelection, digests: dict[str, str]) -> dict[str, Any]:
    """copy_bom's document: one target per destination directory, sorted."""
    targets: dict[str, dict[str, Any]] = {}

    def target(path: str) -> dict[str, Any]:
        return targets.setdefault(path, {"target": path})

    for path in sorted(selection.dirs):
        # "DIR/" copies the contents into image/DIR: symlinks on the way (/opt/spark →
        # spark-3.5.3) are followed, so the app finds the tree at the path it was configured.
        target(path).setdefault("copy", [{"dirs": []}])[0]["dirs"].append(path + "/")
    for path in sorted(selection.files):
        # copy_bom aborts if the build container's file differs from the one checked here.
        _add_file(target(posixpath.dirname(path)), {"name": path, "hash": digests[path].upper()})
    for path in selection.external_files:
        _add_file(target(posixpath.dirname(path)), path)
    for path in sorted(selection.links):
        target(posixpath.dirname(path)).setdefault("createlinks", []).append(
            {"src": selection.links[path], "linkname": posixpath.basename(path)}
        )
    root = target("/")
    if selection.mkdirs:
        root["mkdirs"] = sorted(path.lstrip("/") for path in selection.mkdirs)

    bom: dict[str, Any] = {"includes": ["base.yaml"]}  # Occlum's basic directory layout
    if selection.excludes:
        bom["excludes"] = sorted(selection.excludes)
    ordered = []
    for path in sorted(targets):
        item = targets[path]
        ordered.append(
            {key: item[key] for key in ("target", "mkdirs", "createlinks", "copy") if key in item}
        )
    bom["targets"] = ordered
    return bom


def dumps_bom(bom: dict[str, Any], recipe: Recipe) -> str:
    header = (
        f"# copy_bom file for {recipe.name} (Occlum {OCCLUM_VERSION}), written by "
        "ppml-build.\n# copy_bom -f bom.yaml --root image --include-dir "
        "/opt/occlum/etc/template\n"
    )
    return header + yaml.safe_dump(
        bom, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )
