"""``ppml-build k8s``'s I/O edge: load and plan the recipe (each role's, for a cluster
recipe), render its files (k8s.py, k8s_roles.py) and write them all or none."""

from __future__ import annotations

from pathlib import Path

from .atomic import Output, check_writable, write_all_or_none
from .errors import PlanError, PpmlError, RecipeError
from .k8s import DEFAULT_FLINK_VERSION, _check_flink_version, parse_image, render_k8s
from .k8s_roles import render_cluster_k8s
from .pipeline.stages import load_and_plan_build
from .recipe import Recipe
from .units import human

MAX_REPLICAS = 1000  # executors or TaskManagers a cluster's files start


def default_output_dir(recipe: Recipe) -> Path:
    return Path("ppml-out") / recipe.name / "k8s"


def write_k8s(
    recipe_path: Path,
    image: str,
    output_dir: Path | None = None,
    *,
    allow_tag: bool = False,
    flink_version: str | None = None,
    secret_prov_servers: str | None = None,
    replicas: int | None = None,
) -> dict:
    """``ppml-build k8s``: render every file first, then write them all or none. A cluster
    recipe gets its roles' files (k8s_roles.py)."""
    ref = parse_image(image, allow_tag=allow_tag)
    flink_version = flink_version or DEFAULT_FLINK_VERSION
    _check_flink_version(flink_version)
    if replicas is not None and not 1 <= replicas <= MAX_REPLICAS:
        raise PpmlError(f"--replicas {replicas}: give 1 to {MAX_REPLICAS} executors/TaskManagers")
    recipe, plan, plans = load_and_plan_build(recipe_path)
    cluster = bool(plans)
    if not cluster and replicas is not None:
        raise PpmlError(
            "--replicas is for cluster recipes (cluster: roles), whose executors or "
            "TaskManagers run in pods of their own; drop it"
        )
    directory = Path(output_dir) if output_dir is not None else default_output_dir(recipe)
    check_writable(directory, "--output-dir", directory=True)
    try:
        if cluster:
            bundle = render_cluster_k8s(
                recipe,
                plans,
                ref,
                flink_version=flink_version,
                replicas=replicas,
                secret_prov_servers=secret_prov_servers,
            )
        else:
            bundle = render_k8s(
                recipe,
                plan,
                ref,
                flink_version=flink_version,
                secret_prov_servers=secret_prov_servers,
            )
    except (PlanError, RecipeError) as err:
        raise type(err)(f"{recipe_path}: {err}") from None
    written = [
        str(path)
        for path in write_all_or_none(
            {
                directory / name: Output(text, mode=bundle.mode(name))
                for name, text in bundle.files.items()
            },
            option="--output-dir",
        )
    ]
    return {
        "output_dir": str(directory),
        "files": written,
        "image": bundle.image,
        "enclave_size": human(bundle.sizing.enclave_size)
        if recipe.libos.type == "occlum"
        else plan.enclave_size_text,
        **bundle.sizing.as_dict(),
        # The script finds the templates beside itself ($HERE); JSON readers get real paths.
        "spark_conf": {
            key: value.replace("$HERE", str(directory.resolve()))
            for key, value in bundle.spark_conf.items()
        },
        "warnings": bundle.warnings,
    }
