"""Does the image agree with what ties it to a signer, and is it acceptable at all?

The record's values and the image labels against the recomputed ones, the MRSIGNER against
``--mrsigner`` / ``--signer-key``; then what is never production-safe, as failed checks: no trust
anchor (unless ``allow_unpinned``), a debug enclave (unless ``allow_debug``), and allowed files
that cover the whole file system (unless ``allow_unpinned``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..gramine.trusted import TrustedFile, trusted_list_digest
from ..gramine.uris import covers_whole_filesystem
from ..record import OCI_TITLE, measurement_labels, provenance_labels, role_labels
from ..sign.sigstruct import Sigstruct
from .evidence import SignerPin
from .report import Check, differs

# --- record and labels ------------------------------------------------------------------------


def check_record(
    record: Mapping[str, Any],
    source: str,
    *,
    mrenclave: str | None,
    sig: Sigstruct,
    trusted: list[TrustedFile],
    manifest_sgx: bytes,
) -> list[Check]:
    """The record's values against the recomputed ones (a field the record lacks is skipped)."""
    out = []

    def compare(key: str, recorded: Any, actual: Any, what: str) -> None:
        if recorded == actual:
            out.append(Check(f"record:{key}", True, f"{_show(actual)}"))
        else:
            out.append(
                Check(
                    f"record:{key}",
                    False,
                    differs(key, _show(recorded), _show(actual), source, what),
                )
            )

    if mrenclave is None:
        out.append(
            Check(
                "record:mrenclave",
                False,
                "not compared: MRENCLAVE could not be recomputed (see mrenclave)",
            )
        )
    else:
        compare("mrenclave", str(record.get("mrenclave", "")).lower(), mrenclave, "the image")
    compare(
        "mrsigner", str(record.get("mrsigner", "")).lower(), sig.mrsigner.hex(), "the SIGSTRUCT"
    )
    compare("isv_prod_id", record.get("isv_prod_id"), sig.isv_prod_id, "the SIGSTRUCT")
    compare("isv_svn", record.get("isv_svn"), sig.isv_svn, "the SIGSTRUCT")
    compare("debug", record.get("debug"), sig.debug, "the SIGSTRUCT")
    listed = record.get("trusted_files")
    if isinstance(listed, Mapping):
        count, digest = len(trusted), trusted_list_digest(trusted)
        problems = []
        if listed.get("count") != count:
            problems.append(
                f"count is {listed.get('count')} in {source} but {count} in the manifest"
            )
        if listed.get("digest") != digest:
            problems.append(
                f"digest is {listed.get('digest')} in {source} but {digest} in the manifest"
            )
        out.append(
            Check(
                "record:trusted_files",
                not problems,
                "; ".join(problems) if problems else f"{count} files, {digest}",
            )
        )
    if isinstance(record.get("manifest_sha256"), str):
        compare(
            "manifest_sha256",
            record["manifest_sha256"],
            hashlib.sha256(manifest_sgx).hexdigest(),
            "the image's .manifest.sgx",
        )
    return out


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "(missing)" if value is None else str(value)


def expected_labels(
    name: str, mrenclave: str, sig: Sigstruct, record: Mapping[str, Any] | None
) -> dict[str, str]:
    """The labels ``build`` puts on the image, from the recomputed values (and the record)."""
    labels = measurement_labels(
        name=name,
        mrenclave=mrenclave,
        mrsigner=sig.mrsigner.hex(),
        isv_prod_id=sig.isv_prod_id,
        isv_svn=sig.isv_svn,
        debug=sig.debug,
    )
    if record is not None:
        labels.update(_record_provenance_labels(record))
    return labels


def expected_role_labels(
    role: str, mrenclave: str, sig: Sigstruct, record: Mapping[str, Any] | None
) -> dict[str, str]:
    """A cluster image's labels for one role's enclave (``ppml.role.<role>.*``), from the
    recomputed values; with a record, also its title (the recipe name) and provenance."""
    labels = role_labels(
        role,
        {
            "mrenclave": mrenclave,
            "mrsigner": sig.mrsigner.hex(),
            "isv_prod_id": sig.isv_prod_id,
            "isv_svn": sig.isv_svn,
            "debug": sig.debug,
        },
    )
    if record is not None:
        name = record.get("name")
        if isinstance(name, str) and name:
            labels[OCI_TITLE] = name
        labels.update(_record_provenance_labels(record))
    return labels


def _record_provenance_labels(record: Mapping[str, Any]) -> dict[str, str]:
    base, libos = record.get("base"), record.get("libos")
    digest = base.get("digest") if isinstance(base, Mapping) else None
    libos_type = libos.get("type") if isinstance(libos, Mapping) else None
    libos_version = libos.get("version") if isinstance(libos, Mapping) else None
    return provenance_labels(
        base_digest=digest if isinstance(digest, str) else None,
        libos_type=libos_type or None,
        libos_version=libos_version or None,
    )


def check_labels(labels: Mapping[str, str], expected: Mapping[str, str]) -> list[Check]:
    out = []
    for key, want in expected.items():
        got = labels.get(key)
        if got is None:
            out.append(
                Check(
                    f"label:{key}",
                    False,
                    f"missing (expected {want}); not built by ppml-build, or relabelled",
                )
            )
        elif got != want:
            out.append(
                Check(
                    f"label:{key}",
                    False,
                    f"the image says {got} but the recomputed value is {want}",
                )
            )
        else:
            out.append(Check(f"label:{key}", True, got))
    return out


# --- is it acceptable: anchored, not debug, no unverified file system -------------------------


def check_signer_pins(pins: Sequence[SignerPin], sig: Sigstruct) -> list[Check]:
    actual = sig.mrsigner
    return [
        Check(pin.check_name, True, f"MRSIGNER {actual.hex()} (= {pin.option})")
        if pin.mrsigner == actual
        else Check(
            pin.check_name,
            False,
            f"MRSIGNER is {pin.mrsigner.hex()} from {pin.option} but {actual.hex()} in the "
            "SIGSTRUCT (signed by another key)",
        )
        for pin in pins
    ]


def check_trust_anchor(
    anchors: Sequence[str], unpinning_policies: Sequence[str], allow_unpinned: bool
) -> Check:
    if anchors:
        return Check("trust_anchor", True, "pinned by " + ", ".join(anchors))
    why = "no --record, --mrsigner or --signer-key, and no --policy that pins MRENCLAVE or MRSIGNER"
    if unpinning_policies:
        why += f" ({', '.join(unpinning_policies)} pins neither)"
    if allow_unpinned:
        return Check("trust_anchor", True, f"none, accepted by --allow-unpinned: {why}")
    return Check(
        "trust_anchor",
        False,
        f"{why}: anyone could have re-signed this image; pin "
        "the signer, or pass --allow-unpinned to accept a "
        "self-consistency check",
    )


def check_debug_mode(
    manifest: Mapping[str, Any] | None, sig: Sigstruct, allow_debug: bool
) -> Check:
    """A debug enclave's memory is open to the host: never production-safe, anchored or not."""
    sgx = (manifest or {}).get("sgx") or {}
    why = [
        text
        for text, on in (
            ("the SIGSTRUCT's ATTRIBUTES.DEBUG is set", sig.debug),
            ("the manifest says sgx.debug = true", sgx.get("debug") is True),
        )
        if on
    ]
    if not why:
        return Check(
            "debug_mode", True, "release enclave (ATTRIBUTES.DEBUG clear, sgx.debug false)"
        )
    what = f"a debug enclave ({'; '.join(why)}): the host can read and change its memory"
    if allow_debug:
        return Check("debug_mode", True, f"{what}; accepted by --allow-debug")
    return Check(
        "debug_mode",
        False,
        f"{what}, so it proves nothing in production; pass --allow-debug to accept it (tests only)",
    )


def check_allowed_files(manifest: Mapping[str, Any], allow_unpinned: bool) -> Check:
    """Allowed files are not hashed: one that covers / makes every trusted-file check moot."""
    sgx = manifest.get("sgx") or {}
    allowed = sgx.get("allowed_files") or []
    allowed = allowed if isinstance(allowed, list) else []
    whole = [
        f"sgx.allowed_files entry {uri!r} covers the whole file system"
        for uri in allowed
        if isinstance(uri, str) and covers_whole_filesystem(uri)
    ]
    if sgx.get("file_check_policy") == "allow_all_but_log":
        whole.append('sgx.file_check_policy = "allow_all_but_log" lets the enclave open any file')
    if not whole:
        return Check(
            "allowed_files",
            True,
            f"{len(allowed)} allowed entries, none covers the whole file system",
        )
    what = "; ".join(whole) + ": the host can supply any file unverified"
    if allow_unpinned:
        return Check("allowed_files", True, f"{what}; accepted by --allow-unpinned")
    return Check(
        "allowed_files",
        False,
        f"{what}; allow single files or directories, or pass --allow-unpinned to accept it",
    )


__all__ = [
    "check_allowed_files",
    "check_debug_mode",
    "check_labels",
    "check_record",
    "check_signer_pins",
    "check_trust_anchor",
    "expected_labels",
    "expected_role_labels",
]
