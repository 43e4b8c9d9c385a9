"""What a built image carries and what its measurement record says: one schema for all.

The Gramine and Occlum builds write these; ``verify``, ``policy``, ``trace`` and ``k8s`` read
them. So the record's schema id, the directory the final image keeps its public enclave inputs
in, and the label names are defined here once. This module imports nothing of the pipeline:
every stage may read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ppml_build import __version__

if TYPE_CHECKING:  # annotations only: the record reads these, it does not build them
    from ppml_build.plan import Plan
    from ppml_build.recipe import Recipe

RECORD_SCHEMA = "ppml-build/measurement/v1"
RECORD_FILE = "measurement.json"

# Where the final image keeps APP.manifest.sgx, APP.sig and ppml-build's support files (Gramine),
# or Occlum.json, bom.yaml and the instance (Occlum): public inputs, kept for audits.
IN_IMAGE_DIR = "/ppml"

# Labels that restate the measurement: verify recomputes them from the image's own bytes.
LABEL_MRENCLAVE = "ppml.mrenclave"
LABEL_MRSIGNER = "ppml.mrsigner"
LABEL_ISV_PROD_ID = "ppml.isv_prod_id"
LABEL_ISV_SVN = "ppml.isv_svn"
LABEL_DEBUG = "ppml.debug"
LABEL_LIBOS = "ppml.libos"
LABEL_BASE_DIGEST = "ppml.base.digest"
LABEL_EDMM = "ppml.edmm"  # Occlum builds: the SDK metadata's EDMM mode
LABEL_OCCLUM_INSTANCE = "ppml.occlum.instance"
OCI_TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
OCI_CREATED = "org.opencontainers.image.created"
OCI_BASE_NAME = "org.opencontainers.image.base.name"
OCI_BASE_DIGEST = "org.opencontainers.image.base.digest"
OCI_VENDOR = "org.opencontainers.image.vendor"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def measurement_labels(*, name: str, mrenclave: str, mrsigner: str, isv_prod_id: int,
                       isv_svn: int, debug: bool) -> dict[str, str]:
    """The labels that follow from the SIGSTRUCT alone (what ``verify`` can recompute)."""
    return {
        LABEL_MRENCLAVE: mrenclave,
        LABEL_MRSIGNER: mrsigner,
        LABEL_ISV_PROD_ID: str(isv_prod_id),
        LABEL_ISV_SVN: str(isv_svn),
        LABEL_DEBUG: _flag(debug),
        OCI_VERSION: f"mrenclave-{mrenclave[:12]}",
        OCI_TITLE: name,
    }


def provenance_labels(*, base_digest: str | None, libos_type: str | None,
                      libos_version: str | None) -> dict[str, str]:
    """The labels that name what the image was built from (the record restates them)."""
    labels = {}
    if base_digest:
        labels[LABEL_BASE_DIGEST] = base_digest
        labels[OCI_BASE_DIGEST] = base_digest
    if libos_type and libos_version:
        labels[LABEL_LIBOS] = f"{libos_type} {libos_version}"
    return labels


def image_labels(recipe: Recipe, summary: dict, base_digest: str, created: str) -> dict[str, str]:
    """Every label a build puts on its final image (``summary``: the signed SIGSTRUCT's values)."""
    labels = measurement_labels(name=recipe.name, mrenclave=summary["mrenclave"],
                                mrsigner=summary["mrsigner"],
                                isv_prod_id=summary["isv_prod_id"], isv_svn=summary["isv_svn"],
                                debug=summary["debug"])
    labels.update({OCI_CREATED: created, OCI_BASE_NAME: recipe.base.image, OCI_VENDOR: "ppml-build"})
    labels.update(provenance_labels(base_digest=base_digest, libos_type=recipe.libos.type,
                                    libos_version=recipe.libos.version))
    return labels


def record_fields(*, recipe: Recipe, plan: Plan, summary: dict, image: str, image_id: str,
                  pushed_digest: str | None, base_digest: str, enclave_size: str | None,
                  edmm: bool, manifest_sha256: str, trusted_files: dict,
                  recipe_manifest_keys: list[str] | None = None) -> dict[str, Any]:
    """The record schema's fields, in order; each LibOS build says what it measured.

    ``recipe_manifest_keys`` (added later, so readers must not require it): the manifest keys
    the recipe's ``manifest:`` set, sorted."""
    return {
        "schema": RECORD_SCHEMA,
        "name": recipe.name,
        "image": {"reference": image, "id": image_id, "digest": pushed_digest},
        "base": {"reference": recipe.base.image, "digest": base_digest},
        "libos": {"type": recipe.libos.type, "version": recipe.libos.version},
        "mrenclave": summary["mrenclave"],
        "mrsigner": summary["mrsigner"],
        "isv_prod_id": summary["isv_prod_id"],
        "isv_svn": summary["isv_svn"],
        "debug": summary["debug"],
        "attributes": summary["attributes"],
        "misc_select": summary["misc_select"],
        "enclave_size": enclave_size,
        "max_threads": plan.max_threads,
        "edmm": edmm,
        "manifest_sha256": manifest_sha256,
        "trusted_files": trusted_files,
        "tool": {"name": "ppml-build", "version": __version__},
        "date": summary["date"],
        "recipe_manifest_keys": sorted(recipe_manifest_keys or []),
    }
