"""The I/O edge of the recipe → plan → manifest stages: read files, call pure cores, write outputs."""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_text_atomic
from .errors import ManifestError, PpmlError
from .hashing import FileHasher
from .manifest import RenderedManifest, render_manifest
from .plan import Plan, make_plan
from .recipe import Recipe, check_app_files, load_recipe
from .rootfs import DirRootFS, RootFS, RootFSError


def validate_recipe(path: Path) -> Recipe:
    recipe = load_recipe(path)
    check_app_files(recipe, Path(path).parent, str(path))
    return recipe


def load_and_plan(path: Path) -> tuple[Recipe, Plan]:
    recipe = validate_recipe(path)
    try:
        return recipe, make_plan(recipe)
    except PpmlError as err:
        raise type(err)(f"{path}: {err}") from None


def trusted_files_document(rendered: RenderedManifest) -> dict:
    """trusted-files.json: every trusted file with its digest and size."""
    return {"schema": "ppml-build/trusted-files/v1",
            "files": [{"path": tf.uri[len("file:"):], "sha256": tf.sha256, "size": tf.size}
                      for tf in rendered.trusted_files]}


def render_for_rootfs(recipe: Recipe, plan: Plan, fs: RootFS, source: str) -> RenderedManifest:
    if recipe.libos.type != "gramine":
        raise ManifestError(f"{source}: libos.type {recipe.libos.type!r} is not rendered by this "
                            "command yet; use gramine")
    try:
        return render_manifest(recipe, plan, fs)
    except (ManifestError, RootFSError) as err:
        raise ManifestError(f"{source}: {err}") from None


def write_manifest(recipe_path: Path, rootfs: Path, output_dir: Path, *,
                   use_cache: bool = True) -> dict:
    """``ppml-build manifest``: APP.manifest and trusted-files.json in ``output_dir``."""
    recipe, plan = load_and_plan(recipe_path)
    if not Path(rootfs).is_dir():
        raise ManifestError(f"--rootfs {rootfs}: not a directory; unpack the image there first "
                            "(e.g. docker export | tar -x)")
    hasher = FileHasher(use_cache=use_cache)
    rendered = render_for_rootfs(recipe, plan, DirRootFS(rootfs, hasher), str(recipe_path))
    output_dir = Path(output_dir)
    manifest_path = output_dir / f"{recipe.name}.manifest"
    list_path = output_dir / "trusted-files.json"
    # Both files are complete before either is renamed into place.
    write_text_atomic(list_path, json.dumps(trusted_files_document(rendered), indent=2) + "\n")
    write_text_atomic(manifest_path, rendered.text)
    return {
        "manifest": str(manifest_path),
        "trusted_files_list": str(list_path),
        "trusted_file_count": len(rendered.trusted_files),
        "trusted_bytes": sum(tf.size or 0 for tf in rendered.trusted_files),
        "hashed_files": hasher.hashed_files,
        "enclave_size": plan.enclave_size_text,
        "max_threads": plan.max_threads,
        "libpal": rendered.libpal_path,
        "warnings": plan.warnings,
    }
