"""The pure core of verify: every check, in the report's order, over already-read ``Evidence``.

It takes bytes, parsed documents and a ``RootFS``, never raises for a mismatch (a mismatch is a
failed ``Check``) and touches neither the host's files nor Docker.
"""

from __future__ import annotations

from pathlib import Path

from ..policy.evaluate import QuoteValues
from ..sign import keys
from .anchors import (
    check_allowed_files,
    check_debug_mode,
    check_labels,
    check_record,
    check_signer_pins,
    check_trust_anchor,
    expected_labels,
    expected_role_labels,
)
from .consistency import (
    check_libos_entrypoint,
    check_measurement,
    check_signature,
    check_sigstruct_fields,
    check_trusted_files,
    libpal_path,
    manifest_trusted_files,
    parse_manifest,
    read_libpal,
)
from .evidence import Evidence
from .policies import evaluate_policy, policy_pins
from .report import Check, VerifyReport


def run_checks(ev: Evidence) -> VerifyReport:
    """Every check over already-read evidence; never raises for a mismatch."""
    sig = ev.sigstruct
    checks: list[Check] = []
    manifest_source = f"{ev.target}: {ev.name}.manifest.sgx"
    manifest, parsed = parse_manifest(ev.manifest_sgx, manifest_source)
    checks.append(parsed)
    if ev.manifest_copy is not None:
        same = ev.manifest_copy == ev.manifest_sgx
        checks.append(
            Check(
                "manifest_copy",
                same,
                f"{ev.name}.manifest equals {ev.name}.manifest.sgx"
                if same
                else f"{ev.name}.manifest differs from {ev.name}.manifest.sgx (the "
                "enclave loads .manifest.sgx; the copy misleads readers)",
            )
        )
    checks += check_signature(sig)

    mrenclave = None
    if manifest is not None:
        libpal, problem = ev.libpal, ""
        if libpal is None:
            libpal, problem = read_libpal(ev.fs, libpal_path(manifest))
        mrenclave, measured = check_measurement(
            ev.manifest_sgx, libpal, problem, sig, manifest_source
        )
        checks.append(measured)
        checks += check_sigstruct_fields(manifest, sig)
        checks.append(check_libos_entrypoint(manifest, ev.fs))
        trusted = manifest_trusted_files(manifest)
        checks += check_trusted_files(trusted, ev.fs)
    else:
        checks.append(Check("mrenclave", False, "not recomputed: the manifest does not parse"))
        trusted = []

    if ev.record is not None:
        checks += check_record(
            ev.record,
            ev.record_source,
            mrenclave=mrenclave,
            sig=sig,
            trusted=trusted,
            manifest_sgx=ev.manifest_sgx,
        )
    if ev.labels is not None:
        shown = mrenclave or sig.enclave_hash.hex()
        if ev.role is not None:
            wanted = expected_role_labels(ev.role, shown, sig, ev.record)
        else:
            wanted = expected_labels(ev.name, shown, sig, ev.record)
        checks += check_labels(ev.labels, wanted)
    anchors = [f"record {ev.record_source} (MRENCLAVE, MRSIGNER)"] if ev.record is not None else []
    anchors += [pin.option for pin in ev.pins]
    checks += check_signer_pins(ev.pins, sig)
    unpinning_policies = []
    for doc in ev.policies:
        # The SIGSTRUCT's MRENCLAVE is enough to see what a policy pins, not to evaluate it.
        quote = QuoteValues(
            mrenclave or sig.enclave_hash.hex(),
            sig.mrsigner.hex(),
            sig.isv_prod_id,
            sig.isv_svn,
            sig.debug,
            sig.attribute_flags,
            sig.attribute_xfrm,
            ev.name,
        )
        pinned = policy_pins(doc, quote)
        if sig.mrsigner == keys.SAMPLE_KEY_MRSIGNER:  # anyone can sign with that key
            pinned = [value for value in pinned if value != "MRSIGNER"]
        if pinned:
            anchors.append(f"policy {Path(doc.path).name} ({', '.join(pinned)})")
        else:
            unpinning_policies.append(Path(doc.path).name)
        if mrenclave is None:
            checks.append(
                Check(
                    f"policy:{doc.format}",
                    False,
                    "not evaluated: MRENCLAVE could not be recomputed",
                )
            )
            continue
        checks.append(evaluate_policy(doc, quote))

    checks.append(check_trust_anchor(anchors, unpinning_policies, ev.allow_unpinned))
    checks.append(check_debug_mode(manifest, sig, ev.allow_debug))
    if manifest is not None:
        checks.append(check_allowed_files(manifest, ev.allow_unpinned))
    return VerifyReport(
        ev.target,
        ev.name,
        checks,
        mrenclave,
        sig.mrsigner.hex(),
        sig.isv_prod_id,
        sig.isv_svn,
        sig.debug,
        pinned_by=anchors,
    )


__all__ = ["run_checks"]
