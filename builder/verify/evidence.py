"""What verify looks at: ``Evidence``, and the inputs the user gives it, read from the host and
validated before any image is exported (the record, the policies, ``--mrsigner``,
``--signer-key``) so that bad input fails first, as one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PpmlError, SigningError
from ..image.rootfs import RootFS
from ..limits import MAX_DOCUMENT_BYTES, MAX_SMALL_FILE_BYTES, check_size, read_at_most
from ..policy.evaluate import PolicyDocument, load_policy
from ..policy.model import EnclaveValues, read_record_json, role_values
from ..record import CLUSTER_RECORD_SCHEMA, IN_IMAGE_DIR
from ..sign import keys
from ..sign.sigstruct import SIGSTRUCT_SIZE, Sigstruct

RECORD_FILE = "measurement.json"


@dataclass(frozen=True)
class SignerPin:
    """An MRSIGNER the user expects: from --mrsigner or from the key given as --signer-key."""

    option: str  # "--mrsigner" or "--signer-key key.pem", for messages
    check_name: str
    mrsigner: bytes


@dataclass
class Evidence:
    """Everything verify looks at, already read from the image or the directory."""

    target: str  # what the user named, for messages
    name: str  # APP
    manifest_sgx: bytes
    sigstruct: Sigstruct
    fs: RootFS  # the image filesystem: trusted files, libsysdb.so, libpal.so
    libpal: bytes | None = None  # --libpal; otherwise read from ``fs``
    labels: Mapping[str, str] | None = None  # image mode only
    manifest_copy: bytes | None = None  # /ppml/APP.manifest, when the image has one
    record: Mapping[str, Any] | None = None
    record_source: str = "record"
    policies: list[PolicyDocument] = field(default_factory=list)
    pins: list[SignerPin] = field(default_factory=list)  # --mrsigner / --signer-key
    allow_debug: bool = False
    allow_unpinned: bool = False  # no trust anchor, allowed files covering /
    # A cluster image's role: its labels are ppml.role.<role>.*, not ppml.mrenclave.
    role: str | None = None


def load_record_file(path: os.PathLike | str) -> tuple[dict[str, Any], str]:
    """A measurement record (or OUT/ holding measurement.json), validated; exit 2 if unusable.

    A cluster build's record (CLUSTER_RECORD_SCHEMA) is validated role by role; each role's
    entry is what that role's enclave is compared with (``record_for_enclave``)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    data = read_record_json(path)
    # The same validation `policy` applies.
    if role_values(data, str(path)) is not None:
        cluster_enclaves(data, str(path))
    else:
        EnclaveValues.from_mapping(data, str(path))
    return data, str(path)


# --- a cluster build's record: an enclave per role ---------------------------------------------

_ENCLAVE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What a role's entry adds to the label checks: the recipe name and the provenance labels.
_SHARED_RECORD_FIELDS = ("name", "base", "libos")


def is_cluster_record(record: Mapping[str, Any] | None) -> bool:
    return isinstance(record, Mapping) and record.get("schema") == CLUSTER_RECORD_SCHEMA


def enclave_stem(value: Any) -> str | None:
    """APP of a record's ``enclave`` field (``/ppml/APP`` or ``APP``); None if it names none."""
    if isinstance(value, str) and value.startswith(IN_IMAGE_DIR + "/"):
        value = value[len(IN_IMAGE_DIR) + 1 :]
    return value if isinstance(value, str) and _ENCLAVE_STEM.fullmatch(value) else None


def cluster_enclaves(record: Mapping[str, Any], source: str) -> dict[str, str]:
    """Each role's enclave (APP of /ppml/APP.manifest.sgx) in a validated cluster record."""
    enclaves = {}
    for role, entry in record["roles"].items():
        stem = enclave_stem(entry.get("enclave"))
        if stem is None:
            raise PpmlError(
                f"{source}: roles.{role}.enclave must name the role's enclave "
                f"({IN_IMAGE_DIR}/NAME-{role}), got {entry.get('enclave')!r}; pass the "
                f"{RECORD_FILE} written by `ppml-build build`"
            )
        enclaves[role] = stem
    return enclaves


def role_record(cluster: Mapping[str, Any], role: str, source: str) -> tuple[dict[str, Any], str]:
    """One role's entry of a cluster record, with the shared fields the label checks read, and
    where it came from (``<file>: roles.<role>``)."""
    shared = {key: cluster[key] for key in _SHARED_RECORD_FIELDS if key in cluster}
    return {**shared, **cluster["roles"][role]}, f"{source}: roles.{role}"


def record_for_enclave(
    record: Mapping[str, Any] | None, source: str, enclave: str
) -> tuple[Mapping[str, Any] | None, str]:
    """What enclave APP is compared with: a cluster record's entry for the role whose enclave is
    APP; any other record as it is."""
    if record is None or not is_cluster_record(record):
        return record, source
    enclaves = cluster_enclaves(record, source)
    for role, stem in enclaves.items():
        if stem == enclave:
            return role_record(record, role, source)
    listed = ", ".join(f"{role}: {stem}" for role, stem in enclaves.items())
    raise PpmlError(
        f"{source}: a cluster build's record, but no role's enclave is {enclave} (it has "
        f"{listed}); give the record of this image's build, or choose an enclave with --name"
    )


def record_role(record: Mapping[str, Any], enclaves: Mapping[str, str]) -> str | None:
    """The role a role's own record (``roles/<role>/measurement.json``) is of: the
    role whose enclave its ``enclave`` field names; None for a record of no role here."""
    stem = enclave_stem(record.get("enclave"))
    return next((role for role, name in enclaves.items() if name == stem), None)


def policy_role(policy_name: str, roles: Sequence[str]) -> str | None:
    """The role a policy file is for when its name starts with ``<role>-`` (``policy`` on a
    cluster record writes ``driver-ra-tls.env``...); None: a policy for every role."""
    matching = [role for role in roles if policy_name.startswith(f"{role}-")]
    return max(matching, key=len, default=None)


def parse_sigstruct(data: bytes, source: str) -> Sigstruct:
    if len(data) != SIGSTRUCT_SIZE:
        raise SigningError(
            f"{source}: {len(data)} bytes, not a {SIGSTRUCT_SIZE}-byte SIGSTRUCT "
            "(.sig); truncated or the wrong file"
        )
    return Sigstruct.from_bytes(data, source=source)


def read_host_file(path: Path, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """A host file, at most ``limit`` bytes (the path may be /dev/zero)."""
    try:
        data = read_at_most(path, limit)
        check_size(data, limit, str(path), f"the {what}")
        return data
    except FileNotFoundError:
        raise PpmlError(f"{path}: {what} not found") from None
    except OSError as err:
        raise PpmlError(f"{path}: cannot read the {what} ({err.strerror or err})") from None


_MRSIGNER_HEX = re.compile(r"[0-9a-fA-F]{64}")


def _refuse_sample_key(mrsigner: bytes, option: str) -> None:
    if mrsigner == keys.SAMPLE_KEY_MRSIGNER:
        raise PpmlError(
            f"{option}: this is the public Intel SGX SDK sample key (MRSIGNER "
            f"{mrsigner.hex()}); anyone can sign with it, so it pins nothing; give "
            "the MRSIGNER or the public key of the real signing key"
        )


def parse_mrsigner_option(text: str) -> SignerPin:
    value = text.strip().lower()
    if not _MRSIGNER_HEX.fullmatch(value):
        raise PpmlError(
            f"--mrsigner {text!r}: expected 64 hex digits, the SHA-256 of the "
            "signing key's modulus (mrsigner in measurement.json, or `ppml-build "
            "sigstruct-view APP.sig`)"
        )
    mrsigner = bytes.fromhex(value)
    _refuse_sample_key(mrsigner, "--mrsigner")
    return SignerPin("--mrsigner", "pin:mrsigner", mrsigner)


def load_signer_key(path: os.PathLike | str) -> SignerPin:
    """--signer-key: a PEM public key, or the private key itself (only its public half is used)."""
    path = Path(path)
    option = f"--signer-key {path}"
    pem = read_host_file(path, "signer key (--signer-key)", MAX_SMALL_FILE_BYTES)
    if b"PRIVATE KEY" in pem:
        if b"ENCRYPTED" in pem:
            raise PpmlError(
                f"{option}: an encrypted private key; give its public half instead "
                "(openssl rsa -in KEY -pubout -out key.pub)"
            )
        public = keys.load_private_key(pem, source=option, allow_sample_key=True).public_key()
    else:
        public = keys.load_public_key(pem, source=option, allow_sample_key=True)
    mrsigner = keys.mrsigner_of(public)
    _refuse_sample_key(mrsigner, option)
    return SignerPin(option, "pin:signer_key", mrsigner)


def signer_pins(
    mrsigner: str | None = None, signer_key: os.PathLike | str | None = None
) -> list[SignerPin]:
    pins = [parse_mrsigner_option(mrsigner)] if mrsigner is not None else []
    return pins + ([load_signer_key(signer_key)] if signer_key is not None else [])


@dataclass(frozen=True)
class Expectations:
    """What the user gave verify to compare the image with, and what they accept."""

    record: os.PathLike | str | None = None
    policies: Sequence[os.PathLike | str] = ()
    mrsigner: str | None = None  # --mrsigner HEX
    signer_key: os.PathLike | str | None = None  # --signer-key PEM
    allow_debug: bool = False
    allow_unpinned: bool = False


def load_expectations(expect: Expectations) -> dict[str, Any]:
    """The Evidence fields the user supplied, read first: bad input fails before any export."""
    data, source = (
        load_record_file(expect.record) if expect.record is not None else (None, "record")
    )
    return {
        "record": data,
        "record_source": source,
        "policies": [load_policy(p) for p in expect.policies],
        "pins": signer_pins(expect.mrsigner, expect.signer_key),
        "allow_debug": expect.allow_debug,
        "allow_unpinned": expect.allow_unpinned,
    }


__all__ = [
    "Evidence",
    "Expectations",
    "RECORD_FILE",
    "SignerPin",
    "cluster_enclaves",
    "enclave_stem",
    "is_cluster_record",
    "load_expectations",
    "load_record_file",
    "load_signer_key",
    "parse_mrsigner_option",
    "parse_sigstruct",
    "policy_role",
    "read_host_file",
    "record_for_enclave",
    "record_role",
    "role_record",
    "signer_pins",
]
