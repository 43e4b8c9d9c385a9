"""Occlum's configuration I/O edge: render Occlum.json + bom.yaml against an image filesystem."""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_all_or_none
from ..errors import ManifestError, RecipeError
from ..image.hashing import FileHasher
from ..image.rootfs import RootFS, RootFSError
from ..plan import Plan
from ..recipe import Recipe
from ..units import format_gramine_size
from .config import RenderedOcclum, render_occlum


def render_occlum_for_rootfs(recipe: Recipe, plan: Plan, fs: RootFS, source: str) -> RenderedOcclum:
    try:
        return render_occlum(recipe, plan, fs)
    except (ManifestError, RecipeError) as err:
        raise type(err)(f"{source}: {err}") from None
    except RootFSError as err:
        raise ManifestError(f"{source}: image filesystem: {err}") from None


def write_occlum_config(
    recipe: Recipe, plan: Plan, fs: RootFS, hasher: FileHasher, output_dir: Path, source: str
) -> dict:
    """``ppml-build manifest`` for Occlum: OUT/Occlum.json and OUT/bom.yaml."""
    rendered = render_occlum_for_rootfs(recipe, plan, fs, source)
    json_path = output_dir / "Occlum.json"
    bom_path = output_dir / "bom.yaml"
    write_all_or_none(
        {json_path: rendered.occlum_json_text, bom_path: rendered.bom_text}, option="--output-dir"
    )
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
        "kernel_space_heap_size": rendered.occlum_json["resource_limits"]["kernel_space_heap_size"],
        "warnings": plan.warnings + rendered.warnings,
    }
