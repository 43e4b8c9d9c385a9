"""The Gramine manifest's I/O edge: render against an image filesystem, write APP.manifest."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_all_or_none
from ..errors import ManifestError
from ..image.hashing import FileHasher
from ..image.rootfs import RootFS, RootFSError
from ..plan import Plan
from ..recipe import Recipe
from .manifest import RenderedManifest, render_manifest
from .overrides import ManifestOptions

TRUSTED_FILES_SCHEMA = "ppml-build/trusted-files/v1"


def trusted_files_document(rendered: RenderedManifest) -> dict:
    """trusted-files.json: every trusted file with its digest and size."""
    return {
        "schema": TRUSTED_FILES_SCHEMA,
        "files": [
            {"path": tf.uri[len("file:") :], "sha256": tf.sha256, "size": tf.size}
            for tf in rendered.trusted_files
        ],
    }


def render_for_rootfs(
    recipe: Recipe,
    plan: Plan,
    fs: RootFS,
    source: str,
    *,
    options: ManifestOptions = ManifestOptions(),
) -> RenderedManifest:
    if recipe.libos.type == "occlum":
        # Occlum has no Gramine manifest: its configuration is Occlum.json + bom.yaml.
        raise ManifestError(
            f"{source}: libos.type 'occlum' is configured by Occlum.json and "
            "bom.yaml (render_occlum_for_rootfs), not a Gramine manifest"
        )
    if recipe.libos.type != "gramine":
        raise ManifestError(
            f"{source}: libos.type {recipe.libos.type!r} is not rendered by this "
            "command yet; use gramine"
        )
    try:
        return render_manifest(recipe, plan, fs, options=options)
    except (ManifestError, RootFSError) as err:
        raise ManifestError(f"{source}: {err}") from None


def write_gramine_manifest(
    recipe: Recipe,
    plan: Plan,
    fs: RootFS,
    hasher: FileHasher,
    output_dir: Path,
    source: str,
    *,
    options: ManifestOptions = ManifestOptions(),
    name: str | None = None,
) -> dict:
    """``ppml-build manifest`` for Gramine: OUT/APP.manifest and OUT/trusted-files.json (APP:
    ``name``, a cluster role's enclave, else the recipe's)."""
    rendered = render_for_rootfs(recipe, plan, fs, source, options=options)
    output_dir = Path(output_dir)
    manifest_path = output_dir / f"{name or recipe.name}.manifest"
    list_path = output_dir / "trusted-files.json"
    # The manifest last: it is what `sign` reads next.
    write_all_or_none(
        {
            list_path: json.dumps(trusted_files_document(rendered), indent=2) + "\n",
            manifest_path: rendered.text,
        },
        option="--output-dir",
    )
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
