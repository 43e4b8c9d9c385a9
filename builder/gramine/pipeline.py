"""The I/O edge of the recipe → plan → manifest stages: read files, call pure cores, write outputs."""

from __future__ import annotations

import itertools
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ppml_build.atomic import check_writable, write_all_or_none
from ppml_build.errors import ManifestError, PpmlError, RecipeError
from ppml_build.image.hashing import FileHasher
from .jvm_children import jvm_children_warning, scans_app_python
from .manifest import RenderedManifest, render_manifest
from .overrides import ManifestOptions
from ppml_build.occlum.config import RenderedOcclum, render_occlum
from ppml_build.plan import Plan, make_plan
from ppml_build.recipe import Recipe, check_app_files, load_recipe
from ppml_build.image.rootfs import DirRootFS, RootFS, RootFSError
from ppml_build.units import format_gramine_size

# Bounds of reading the app's Python for the JVM-children warning (read_app_python).
MAX_SCANNED_SOURCE = 1 << 20
MAX_SCANNED_FILES = 2000


def validate_recipe(path: Path) -> Recipe:
    recipe = load_recipe(path)
    check_app_files(recipe, Path(path).parent, str(path))
    return recipe


def load_and_plan(path: Path) -> tuple[Recipe, Plan]:
    recipe = validate_recipe(path)
    try:
        plan = make_plan(recipe)
    except PpmlError as err:
        raise type(err)(f"{path}: {err}") from None
    if scans_app_python(recipe, plan.launch):
        sources = read_app_python(recipe, Path(path).parent)
        warning = jvm_children_warning(recipe, plan.launch, sources)
        if warning:
            plan.warnings.append(warning)
    return recipe, plan


def read_app_python(recipe: Recipe, recipe_dir: Path) -> dict[str, bytes]:
    """The app's Python source for jvm_children: each .py of app.files (and under its
    directories) by its recipe-relative path. Only a warning depends on it, so what would make
    reading slow or unsafe (over MAX_SCANNED_SOURCE, not a regular file, outside the recipe's
    directory, past MAX_SCANNED_FILES) is left out, not reported."""
    root = recipe_dir.resolve()
    sources: dict[str, bytes] = {}
    for path in itertools.islice(_app_python_paths(recipe, recipe_dir), MAX_SCANNED_FILES):
        try:
            real = path.resolve()
            if root not in real.parents or not stat.S_ISREG(real.stat().st_mode):
                continue
            with open(real, "rb") as handle:
                data = handle.read(MAX_SCANNED_SOURCE + 1)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Path.resolve)
            continue
        if len(data) <= MAX_SCANNED_SOURCE:
            sources[path.relative_to(recipe_dir).as_posix()] = data
    return sources


def _app_python_paths(recipe: Recipe, recipe_dir: Path) -> Iterator[Path]:
    for item in recipe.app.files:
        host = recipe_dir / item.src
        if host.is_dir():
            for parent, dirs, files in os.walk(host):  # symlinked directories are not entered
                dirs.sort()
                yield from (Path(parent, name) for name in sorted(files) if name.endswith(".py"))
        elif item.src.endswith(".py") or item.dest.endswith(".py"):
            yield host


def trusted_files_document(rendered: RenderedManifest) -> dict:
    """trusted-files.json: every trusted file with its digest and size."""
    return {"schema": "ppml-build/trusted-files/v1",
            "files": [{"path": tf.uri[len("file:"):], "sha256": tf.sha256, "size": tf.size}
                      for tf in rendered.trusted_files]}


def render_for_rootfs(recipe: Recipe, plan: Plan, fs: RootFS, source: str, *,
                      options: ManifestOptions = ManifestOptions()) -> RenderedManifest:
    if recipe.libos.type == "occlum":
        # Occlum has no Gramine manifest: its configuration is Occlum.json + bom.yaml.
        raise ManifestError(f"{source}: libos.type 'occlum' is configured by Occlum.json and "
                            "bom.yaml (render_occlum_for_rootfs), not a Gramine manifest")
    if recipe.libos.type != "gramine":
        raise ManifestError(f"{source}: libos.type {recipe.libos.type!r} is not rendered by this "
                            "command yet; use gramine")
    try:
        return render_manifest(recipe, plan, fs, options=options)
    except (ManifestError, RootFSError) as err:
        raise ManifestError(f"{source}: {err}") from None


def write_manifest(recipe_path: Path, rootfs: Path, output_dir: Path, *,
                   use_cache: bool = True,
                   options: ManifestOptions = ManifestOptions()) -> dict:
    """``ppml-build manifest``: APP.manifest and trusted-files.json in ``output_dir``."""
    check_writable(output_dir, "--output-dir", directory=True)  # before minutes of hashing
    recipe, plan = load_and_plan(recipe_path)
    if not Path(rootfs).is_dir():
        raise ManifestError(f"--rootfs {rootfs}: not a directory; unpack the image there first "
                            "(e.g. docker export | tar -x)")
    hasher = FileHasher(use_cache=use_cache)
    if recipe.libos.type == "occlum":  # Occlum.json + bom.yaml: see the Occlum section below
        return _write_occlum_config(recipe, plan, DirRootFS(rootfs, hasher), hasher,
                                    Path(output_dir), str(recipe_path))
    rendered = render_for_rootfs(recipe, plan, DirRootFS(rootfs, hasher), str(recipe_path),
                                 options=options)
    output_dir = Path(output_dir)
    manifest_path = output_dir / f"{recipe.name}.manifest"
    list_path = output_dir / "trusted-files.json"
    # The manifest last: it is what `sign` reads next.
    write_all_or_none({list_path: json.dumps(trusted_files_document(rendered), indent=2) + "\n",
                       manifest_path: rendered.text}, option="--output-dir")
    return {
        "manifest": str(manifest_path),
        "trusted_files_list": str(list_path),
        "trusted_file_count": len(rendered.trusted_files),
        "trusted_bytes": sum(tf.size or 0 for tf in rendered.trusted_files),
        "hashed_files": hasher.hashed_files,
        "enclave_size": plan.enclave_size_text,
        "max_threads": plan.max_threads,
        "libpal": rendered.libpal_path,
        "recipe_manifest_keys": list(rendered.recipe_keys),
        "warnings": plan.warnings + list(rendered.warnings),
    }


# --- Occlum (libos.type: occlum): Occlum.json + bom.yaml (owned with builder/occlum.py) ---

def render_occlum_for_rootfs(recipe: Recipe, plan: Plan, fs: RootFS,
                             source: str) -> RenderedOcclum:
    try:
        return render_occlum(recipe, plan, fs)
    except (ManifestError, RecipeError) as err:
        raise type(err)(f"{source}: {err}") from None
    except RootFSError as err:
        raise ManifestError(f"{source}: image filesystem: {err}") from None


def _write_occlum_config(recipe: Recipe, plan: Plan, fs: RootFS, hasher: FileHasher,
                         output_dir: Path, source: str) -> dict:
    """``ppml-build manifest`` for Occlum: OUT/Occlum.json and OUT/bom.yaml."""
    rendered = render_occlum_for_rootfs(recipe, plan, fs, source)
    json_path = output_dir / "Occlum.json"
    bom_path = output_dir / "bom.yaml"
    write_all_or_none({json_path: rendered.occlum_json_text, bom_path: rendered.bom_text},
                      option="--output-dir")
    sizing = rendered.sizing
    return {
        "libos": "occlum",
        # The keys the Gramine summary has, where they mean something for Occlum: the
        # configuration, and the list of files that go into the integrity-protected image.
        "manifest": str(json_path),
        "trusted_files_list": str(bom_path),
        "trusted_file_count": rendered.image_file_count,
        "trusted_bytes": rendered.image_bytes,
        "hashed_files": hasher.hashed_files,
        "enclave_size": format_gramine_size(sizing.enclave_size_estimate),
        "max_threads": sizing.max_num_of_threads,
        "user_space_size": rendered.occlum_json["resource_limits"]["user_space_size"],
        "kernel_space_heap_size":
            rendered.occlum_json["resource_limits"]["kernel_space_heap_size"],
        "warnings": plan.warnings + rendered.warnings,
    }
