"""A build's outputs: the record's fields and the image's labels, filled in one way for every
backend, and the files on the host (the backend's, the policies, the record), all or none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import write_all_or_none
from ..plan import Plan
from ..policy import render
from ..recipe import Recipe
from ..record import (
    OCI_BASE_NAME,
    OCI_CREATED,
    OCI_TITLE,
    OCI_VENDOR,
    RECORD_FILE,
    RECORD_SCHEMA,
    measurement_labels,
    provenance_labels,
    role_labels,
)


def write_build_outputs(
    output_dir: Path,
    files: dict[str, str | bytes],
    record: dict,
    policies: tuple[str, ...] | list[str],
    source: str,
    *,
    role_records: dict[str, dict] | None = None,
) -> list[Path]:
    """A backend's ``files``, the policies and the record, all or none; the record is renamed
    last, so a record in OUTPUT_DIR means the files beside it are from its build. Returns the
    policy files' paths. A cluster build gives ``role_records`` (subdirectory → one enclave's
    record): each gets its record and policies there, and ``record`` lists the roles."""
    outputs: dict[Path, str | bytes] = {output_dir / name: data for name, data in files.items()}
    policy_paths: list[Path] = []
    enclaves = role_records if role_records is not None else {"": record}
    for subdir, enclave_record in enclaves.items():
        where = output_dir / subdir
        for fmt in dict.fromkeys(policies):  # --policy maa --policy maa: once
            for name, text in render(enclave_record, fmt, source=source).files.items():
                outputs[where / name] = text
                policy_paths.append(where / name)
        if subdir:
            outputs[where / RECORD_FILE] = json.dumps(enclave_record, indent=2) + "\n"
    outputs[output_dir / RECORD_FILE] = json.dumps(record, indent=2) + "\n"
    write_all_or_none(outputs, option="--output-dir")
    return policy_paths


def image_labels(
    recipe: Recipe,
    summary: dict | None,
    base_digest: str,
    created: str,
    role_summaries: dict[str, dict] | None = None,
) -> dict[str, str]:
    """Every label a build puts on its final image (``summary``: the signed SIGSTRUCT's values).
    A cluster image gives ``role_summaries`` instead: each role's identity under its own labels
    (record.role_labels), and no single ``ppml.mrenclave``, which would misstate the others."""
    if summary is not None:
        labels = measurement_labels(
            name=recipe.name,
            mrenclave=summary["mrenclave"],
            mrsigner=summary["mrsigner"],
            isv_prod_id=summary["isv_prod_id"],
            isv_svn=summary["isv_svn"],
            debug=summary["debug"],
        )
    else:
        labels = {OCI_TITLE: recipe.name}
    for role, role_summary in (role_summaries or {}).items():
        labels.update(role_labels(role, role_summary))
    labels.update(
        {OCI_CREATED: created, OCI_BASE_NAME: recipe.base.image, OCI_VENDOR: "ppml-build"}
    )
    labels.update(
        provenance_labels(
            base_digest=base_digest,
            libos_type=recipe.libos.type,
            libos_version=recipe.libos.version,
        )
    )
    return labels


def record_fields(
    *,
    recipe: Recipe,
    plan: Plan,
    summary: dict,
    image: str,
    image_id: str,
    pushed_digest: str | None,
    base_digest: str,
    enclave_size: str | None,
    edmm: bool,
    manifest_sha256: str,
    trusted_files: dict,
    recipe_manifest_keys: list[str] | None = None,
) -> dict[str, Any]:
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
        # Names and sources only, never key material (added later: readers must not require it).
        "encryption_keys": {name: key.source for name, key in sorted(recipe.files.keys.items())},
        "secret_provisioning": _secret_provisioning(recipe),
    }


def _secret_provisioning(recipe: Recipe) -> dict[str, Any] | None:
    config, key = recipe.secret_provisioning, recipe.files.provisioned_key
    if config is None or key is None:
        return None
    return {
        "key": key,
        "servers": config.servers,  # None: the host sets SECRET_PROVISION_SERVERS
        "ca_chain": config.ca_chain,
    }
