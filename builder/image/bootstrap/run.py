"""``bootstrap_bases``: make (or reuse) the selected base images, parents first.

A target whose tagged image already carries its input hash, locally or in the registry, is
reused or pulled; otherwise it is built (``debootstrap`` or ``dockerfile_build``) and, with a
registry, pushed unless the registry already has that digest.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import docker
import docker.errors

from ...errors import ImageError
from .. import engine
from .cache_key import INPUT_HASH_LABEL, input_hash
from .debootstrap import import_debootstrap_base
from .dockerfile_build import build_from_dockerfile
from .reporter import Reporter, SilentReporter
from .targets import (
    Action,
    BootstrapOptions,
    TargetResult,
    TargetSpec,
    select_targets,
    target_specs,
    validate_registry,
)


def bootstrap_bases(
    client: docker.DockerClient,
    options: BootstrapOptions,
    reporter: Reporter | None = None,
) -> list[TargetResult]:
    """Make (or reuse) the selected base images, parents first; push them if a registry is set."""
    reporter = reporter or SilentReporter()
    if options.registry:
        validate_registry(options.registry)
    names = select_targets(options.only)
    with tempfile.TemporaryDirectory(prefix="ppml-standin-") as scratch:
        standin_dir = None
        if any(n.endswith("standin") for n in names):
            standin_dir = build_standin_binaries(options.project_root, Path(scratch))
        specs = target_specs(options, standin_dir)
        hashes: dict[str, str] = {}
        results: list[TargetResult] = []
        for name in names:
            spec = specs[name]
            hashes[name] = input_hash(spec, hashes.get(spec.parent) if spec.parent else None)
            result = _make_target(client, spec, hashes[name], specs, options, reporter)
            reporter.end(result)
            results.append(result)
        return results


def build_standin_binaries(project_root: Path, dest: Path) -> Path:
    """Compile the stand-in libpal.so and libsysdb.so (tests/standin) into ``dest``."""
    init = project_root / "tests" / "standin" / "__init__.py"
    if not init.is_file():
        raise ImageError(
            f"{init}: not found; the stand-in Gramine images need a source checkout of ppml-build "
            "(or leave them out with --only debian,spark,flink)"
        )
    spec = importlib.util.spec_from_file_location("_ppml_standin", init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        module.build_libpal(dest)
        module.build_libsysdb(dest)
    except RuntimeError as err:
        raise ImageError(
            f"compiling the stand-in Gramine binaries failed: {str(err).splitlines()[0]}"
        ) from None
    return dest


def _local_image(client: docker.DockerClient, reference: str):
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def _label(image, key: str) -> str | None:
    return ((image.attrs.get("Config") or {}).get("Labels") or {}).get(key)


def _make_target(
    client: docker.DockerClient,
    spec: TargetSpec,
    digest: str,
    specs: Mapping[str, TargetSpec],
    options: BootstrapOptions,
    reporter: Reporter,
) -> TargetResult:
    started = time.monotonic()
    registry_ref = spec.registry_reference(options.registry) if options.registry else None
    action: Action

    image = _local_image(client, spec.reference)
    if image is not None and _label(image, INPUT_HASH_LABEL) == digest:
        action = "reused"
    else:
        image = None
        if registry_ref is not None:
            image = _pull_if_current(client, spec, registry_ref, digest, options, reporter)
        if image is not None:
            action = "pulled"
        else:
            reporter.begin(spec.name, f"building {spec.reference}")
            if spec.dockerfile is None:
                import_debootstrap_base(client, spec, digest, options, reporter)
            else:
                parent = specs[spec.parent].reference if spec.parent else None
                build_from_dockerfile(client, spec, digest, parent, options, reporter)
            image = client.images.get(spec.reference)
            action = "built"

    result = TargetResult(
        name=spec.name,
        reference=spec.reference,
        input_hash=digest,
        action=action,
        image_id=image.id,
        seconds=0.0,
        registry_reference=registry_ref,
    )
    if registry_ref is not None:
        client.api.tag(image.id, *registry_ref.rsplit(":", 1))
        image = client.images.get(image.id)
        have = engine.registry_digest(client, registry_ref, auth=options.auth)
        local_digests = {
            d.partition("@")[2]
            for d in image.attrs.get("RepoDigests") or ()
            if d.partition("@")[0] == registry_ref.rsplit(":", 1)[0]
        }
        if have is not None and have in local_digests:
            result.repo_digest, result.pushed = have, False
        else:
            reporter.progress(spec.name, f"pushing {registry_ref}")
            result.repo_digest = engine.push_image(client, registry_ref, auth=options.auth)
            result.pushed = True
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _pull_if_current(
    client, spec: TargetSpec, registry_ref: str, digest: str, options: BootstrapOptions, reporter
):
    """The registry's image if it carries this input hash (then also tagged locally), else None."""
    if engine.registry_digest(client, registry_ref, auth=options.auth) is None:
        return None
    reporter.progress(spec.name, f"pulling {registry_ref}")
    pulled = engine.pull_image(client, registry_ref, auth=options.auth)
    image = client.images.get(pulled.image_id)
    if _label(image, INPUT_HASH_LABEL) != digest:
        return None
    client.api.tag(image.id, spec.repository, spec.tag)
    return image


__all__ = ["bootstrap_bases", "build_standin_binaries"]
