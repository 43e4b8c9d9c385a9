"""MarbleRun manifest ``Packages`` entry (Coordinator side of Edgeless MarbleRun).

MarbleRun accepts *either* ``UniqueID`` *or* the triple ``SignerID``+``ProductID``+
``SecurityVersion`` in one package, and ``Debug`` must *equal* the enclave's debug flag.
"""

from __future__ import annotations

import json
from typing import Any

from .model import PolicySpec, RenderedPolicy

FILE_NAME = "marblerun-packages.json"


def package(spec: PolicySpec) -> tuple[dict[str, Any], list[str]]:
    v = spec.values
    notes: list[str] = []
    if spec.pins_mrenclave:
        entry: dict[str, Any] = {"UniqueID": v.mrenclave_hex}
        if spec.pins_mrsigner:
            notes.append(
                "MarbleRun cannot combine UniqueID with SignerID in one package: the package "
                "pins MRENCLAVE (UniqueID) only; use --pin mrsigner for the "
                "SignerID/ProductID/SecurityVersion form"
            )
        notes.append(
            f"a UniqueID package checks neither ProductID {v.isv_prod_id} nor SecurityVersion "
            f"{spec.min_svn} (MRENCLAVE already fixes the code)"
        )
    else:
        entry = {
            "SignerID": v.mrsigner_hex,
            "ProductID": v.isv_prod_id,
            # MarbleRun treats SecurityVersion as a minimum.
            "SecurityVersion": spec.min_svn,
        }
    # Debug is an equality test in MarbleRun: false rejects debug enclaves, true rejects
    # release ones. Under --allow-debug follow the record so the package accepts its enclave.
    entry["Debug"] = bool(spec.allow_debug and v.debug)
    if spec.allow_debug:
        if v.debug:
            notes.append(
                '--allow-debug: "Debug": true accepts this DEBUG enclave (and rejects release '
                "builds of it); never use it in production"
            )
        else:
            notes.append(
                "--allow-debug has no effect for MarbleRun: Debug must equal the enclave's flag, "
                'so "Debug": false is kept for this release enclave'
            )
    return entry, notes


def render(spec: PolicySpec) -> RenderedPolicy:
    entry, notes = package(spec)
    document = {"Packages": {spec.values.name: entry}}
    notes.append(
        f'merge the "Packages" entry into your manifest and reference it from a Marble '
        f'("Package": "{spec.values.name}")'
    )
    return RenderedPolicy({FILE_NAME: json.dumps(document, indent=2) + "\n"}, notes)
