"""What a built image carries and what its measurement record says: one schema for all.

The Gramine and Occlum builds write these (``pipeline/outputs.py`` fills the record and the
labels); ``verify``, ``policy``, ``trace`` and ``k8s`` read them. So the record's schema id, the
directory the final image keeps its public enclave inputs in, and the label names are defined
here once. This module imports nothing: every stage may read it.
"""

from __future__ import annotations

RECORD_SCHEMA = "ppml-build/measurement/v1"
RECORD_FILE = "measurement.json"
# A cluster build's record: its roles' identities; each role's own record (RECORD_SCHEMA) is in
# ROLES_OUTPUT_DIR/<role>/ of the output directory, with that role's policies.
CLUSTER_RECORD_SCHEMA = "ppml-build/cluster/v1"
ROLES_OUTPUT_DIR = "roles"

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


def measurement_labels(
    *, name: str, mrenclave: str, mrsigner: str, isv_prod_id: int, isv_svn: int, debug: bool
) -> dict[str, str]:
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


ROLE_LABEL_PREFIX = "ppml.role."  # a cluster image's labels: ppml.role.<role>.<key>


def role_labels(role: str, summary: dict) -> dict[str, str]:
    """A cluster image's labels for one role's enclave: ``ppml.role.<role>.mrenclave``..."""
    keys = ("mrenclave", "mrsigner", "isv_prod_id", "isv_svn")
    labels = {f"{ROLE_LABEL_PREFIX}{role}.{key}": str(summary[key]) for key in keys}
    labels[f"{ROLE_LABEL_PREFIX}{role}.debug"] = _flag(summary["debug"])
    return labels


def label_roles(labels: dict) -> list[str]:
    """The roles a cluster image's labels name (``ppml.role.<role>.mrenclave``), sorted; empty
    for a single enclave's image."""
    head, tail = ROLE_LABEL_PREFIX, ".mrenclave"
    roles = {
        key[len(head) : -len(tail)]
        for key in labels
        if isinstance(key, str) and key.startswith(head) and key.endswith(tail)
    }
    return sorted(role for role in roles if role and "." not in role)


def provenance_labels(
    *, base_digest: str | None, libos_type: str | None, libos_version: str | None
) -> dict[str, str]:
    """The labels that name what the image was built from (the record restates them)."""
    labels = {}
    if base_digest:
        labels[LABEL_BASE_DIGEST] = base_digest
        labels[OCI_BASE_DIGEST] = base_digest
    if libos_type and libos_version:
        labels[LABEL_LIBOS] = f"{libos_type} {libos_version}"
    return labels
