"""The I/O edge of the recipe → plan → render stages, for every backend.

``load_and_plan`` reads, validates and plans a recipe once (the build hands the result to its
backend); ``write_manifest`` is ``ppml-build manifest``: the backend's configuration files for
an unpacked image root.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..atomic import check_writable
from ..errors import ManifestError, PpmlError, RecipeError
from ..gramine.jvm_children import jvm_children_warning, scans_app_python
from ..gramine.overrides import ManifestOptions
from ..gramine.render import write_gramine_manifest
from ..image.hashing import FileHasher
from ..image.rootfs import DirRootFS
from ..occlum.render import write_occlum_config
from ..plan import Plan, make_plan
from ..plan.roles import enclave_name
from ..recipe import Recipe, check_app_files, load_recipe

# Bounds of reading the app's Python for the JVM-children warning (read_app_python).
MAX_SCANNED_SOURCE = 1 << 20
MAX_SCANNED_FILES = 2000


def validate_recipe(path: Path) -> Recipe:
    recipe = load_recipe(path)
    check_app_files(recipe, Path(path).parent, str(path))
    return recipe


def load_and_plan(path: Path) -> tuple[Recipe, Plan]:
    recipe = validate_recipe(path)
    if recipe.cluster is not None:
        raise RecipeError(
            f"{path}: cluster: this command makes one enclave's files; a cluster's roles "
            "are planned, built and deployed by `plan`, `build` and `k8s` (Flink), and checked "
            "by `verify` and `policy`; remove cluster: for the single-enclave job"
        )
    return recipe, _plan_one(recipe, path)


def _plan_one(recipe: Recipe, path: Path) -> Plan:
    try:
        plan = make_plan(recipe)
    except PpmlError as err:
        raise type(err)(f"{path}: {err}") from None
    if scans_app_python(recipe, plan.launch):
        sources = read_app_python(recipe, Path(path).parent)
        warning = jvm_children_warning(recipe, plan.launch, sources)
        if warning:
            plan.warnings.append(warning)
    return plan


def _plan_roles(recipe: Recipe, path: Path) -> dict[str, Plan]:
    """A cluster recipe's plans: one enclave per role, each sized for that role's JVM."""
    assert recipe.cluster is not None
    try:
        return {role: make_plan(recipe, role) for role in recipe.cluster.roles}
    except PpmlError as err:
        raise type(err)(f"{path}: {err}") from None


def load_and_plan_build(path: Path) -> tuple[Recipe, Plan, dict[str, Plan]]:
    """The recipe read and checked once, and its plans: its one enclave's (roles empty) or, for
    a cluster recipe, one per role (the first role's plan stands for the app image). What
    ``build`` makes; ``plan``, ``manifest`` and ``k8s`` take the roles' plans from it too."""
    recipe = validate_recipe(path)
    if recipe.cluster is None:
        return recipe, _plan_one(recipe, path), {}
    plans = _plan_roles(recipe, path)
    return recipe, next(iter(plans.values())), plans


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


def write_manifest(
    recipe_path: Path,
    rootfs: Path,
    output_dir: Path,
    *,
    use_cache: bool = True,
    options: ManifestOptions = ManifestOptions(),
    role: str | None = None,
) -> dict:
    """``ppml-build manifest``: the backend's configuration and its file list in ``output_dir``;
    for a cluster recipe, ``role``'s (its own manifest, ``<name>-<role>.manifest``)."""
    check_writable(output_dir, "--output-dir", directory=True)  # before minutes of hashing
    recipe, plan = _plan_for_manifest(recipe_path, role)
    if not Path(rootfs).is_dir():
        raise ManifestError(
            f"--rootfs {rootfs}: not a directory; unpack the image there first "
            "(e.g. docker export | tar -x)"
        )
    hasher = FileHasher(use_cache=use_cache)
    fs = DirRootFS(rootfs, hasher)
    if recipe.libos.type == "occlum":  # Occlum.json + bom.yaml
        return write_occlum_config(recipe, plan, fs, hasher, Path(output_dir), str(recipe_path))
    return write_gramine_manifest(
        recipe,
        plan,
        fs,
        hasher,
        Path(output_dir),
        str(recipe_path),
        options=options,
        name=enclave_name(recipe, role),
    )


def _plan_for_manifest(path: Path, role: str | None) -> tuple[Recipe, Plan]:
    """The recipe's plan, or a cluster role's: each role's enclave has its own manifest."""
    recipe, plan, plans = load_and_plan_build(path)
    if recipe.cluster is None:
        if role is not None:
            raise RecipeError(
                f"--role {role}: {path} has no cluster: roles (one enclave); drop --role"
            )
        return recipe, plan
    roles = recipe.cluster.roles
    if role not in roles:
        given = f"--role {role} is not one of them" if role else "give --role ROLE"
        raise RecipeError(
            f"{path}: cluster.roles: each role ({', '.join(roles)}) has its own manifest; {given}"
        )
    if recipe.libos.type == "occlum":
        raise RecipeError(
            f"{path}: cluster: ppml-build makes cluster roles' enclaves with Gramine only; "
            "set libos.type: gramine"
        )
    return recipe, plans[role]
