"""The canonical expected-measurement policy that every service format is serialised from.

One model, many writers: the record is validated once into :class:`EnclaveValues`, the user's
choices are checked once in :func:`make_spec`, and each ``<service>.py`` only translates a
:class:`PolicySpec` into that service's own encodings.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PpmlError
from ..limits import MAX_DOCUMENT_BYTES, load_json_document, read_at_most
from ..record import CLUSTER_RECORD_SCHEMA, RECORD_FILE, RECORD_SCHEMA, ROLES_OUTPUT_DIR

U16_MAX = 0xFFFF

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class PolicyError(PpmlError):
    """The record or the requested policy cannot produce a policy that accepts the enclave."""


class Pin(str, enum.Enum):
    """Which enclave identity the policy pins (ISVPRODID/ISVSVN are checked in every case)."""

    MRENCLAVE = "mrenclave"
    MRSIGNER = "mrsigner"
    BOTH = "both"


@dataclass(frozen=True)
class EnclaveValues:
    """The SIGSTRUCT identity of one signed enclave, as a measurement record states it."""

    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool
    # Label for formats that name the enclave (MarbleRun package name); not security relevant.
    name: str = "app"
    # The encrypted-files key the enclave asks its provisioning server for, if any.
    provisioned_key: str | None = None

    @property
    def mrenclave_hex(self) -> str:
        return self.mrenclave.hex()

    @property
    def mrsigner_hex(self) -> str:
        return self.mrsigner.hex()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "record") -> "EnclaveValues":
        """Validate a measurement record or ``sign --json`` output; unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise PolicyError(
                f"{source}: expected a JSON object with mrenclave, mrsigner, isv_prod_id, "
                f"isv_svn and debug; got {type(data).__name__}"
            )
        schema = data.get("schema")
        if schema == CLUSTER_RECORD_SCHEMA:
            roles = data.get("roles") if isinstance(data.get("roles"), Mapping) else {}
            raise PolicyError(
                f"{source}: a cluster build's record (an enclave per role): `policy` writes "
                f"a policy per role from it; here give one role's record, "
                f"{ROLES_OUTPUT_DIR}/ROLE/{RECORD_FILE} beside it (roles: "
                f"{', '.join(map(str, roles)) or 'none'})"
            )
        if schema is not None and schema != RECORD_SCHEMA:
            raise PolicyError(
                f"{source}: field 'schema' is {schema!r}, this ppml-build reads "
                f"{RECORD_SCHEMA!r}; regenerate the record with this version"
            )
        mrenclave = _hex32(data, "mrenclave", source)
        mrsigner = _hex32(data, "mrsigner", source)
        isv_prod_id = _u16(data, "isv_prod_id", source)
        isv_svn = _u16(data, "isv_svn", source)
        if "debug" not in data:
            raise PolicyError(f"{source}: missing field 'debug' (true or false); {_REGEN}")
        debug = data["debug"]
        if not isinstance(debug, bool):
            raise PolicyError(f"{source}: field 'debug' must be true or false, got {debug!r}")
        name = data.get("name")
        if not (isinstance(name, str) and _NAME.fullmatch(name)):
            name = "app"
        provisioning = data.get("secret_provisioning")
        key = provisioning.get("key") if isinstance(provisioning, Mapping) else None
        provisioned_key = key if isinstance(key, str) and _KEY_NAME.fullmatch(key) else None
        return cls(mrenclave, mrsigner, isv_prod_id, isv_svn, debug, name, provisioned_key)


_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REGEN = "pass the measurement.json written by 'ppml-build sign' (or its --json output)"


def _hex32(data: Mapping[str, Any], key: str, source: str) -> bytes:
    if key not in data:
        raise PolicyError(f"{source}: missing field '{key}' (64 hex characters); {_REGEN}")
    value = data[key]
    if value is None:
        # `sign --json` for an externally signed enclave prints mrsigner null until the
        # signature is attached.
        raise PolicyError(
            f"{source}: field '{key}' is null: the enclave is not signed yet; finish signing "
            f"(attach the external signature) and use that record"
        )
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        shown = (
            value if not isinstance(value, str) else (value[:70] + ("…" if len(value) > 70 else ""))
        )
        raise PolicyError(
            f"{source}: field '{key}' must be 64 hex characters, got {shown!r}; {_REGEN}"
        )
    return bytes.fromhex(value)


def _u16(data: Mapping[str, Any], key: str, source: str) -> int:
    if key not in data:
        raise PolicyError(f"{source}: missing field '{key}' (integer 0..65535); {_REGEN}")
    value = data[key]
    # bool is an int subclass in Python; a JSON true is not an ISV number.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U16_MAX:
        raise PolicyError(f"{source}: field '{key}' must be an integer 0..65535, got {value!r}")
    return value


def read_record_json(path: os.PathLike | str) -> Any:
    """The JSON of a record file, read within limits.py's bounds; one PolicyError line on any
    failure (exit 2)."""
    path = Path(path)
    try:
        raw = read_at_most(path, MAX_DOCUMENT_BYTES)  # the path may be /dev/zero
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such record file; {_REGEN}") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read record: {exc.strerror or exc}") from None
    try:
        return load_json_document(raw, str(path), "record")
    except PpmlError as exc:
        raise PolicyError(f"{exc}; {_REGEN}") from None


def load_record(path: os.PathLike | str) -> EnclaveValues:
    """Read and validate a record file; every failure is one PolicyError line naming the file."""
    return EnclaveValues.from_mapping(read_record_json(path), str(path))


_ROLE = re.compile(r"[a-z][a-z0-9-]{0,31}")


def role_values(data: Any, source: str) -> dict[str, EnclaveValues] | None:
    """A cluster build's record (CLUSTER_RECORD_SCHEMA): every role's enclave identity, as the
    record lists it; None for any other record."""
    if not isinstance(data, Mapping) or data.get("schema") != CLUSTER_RECORD_SCHEMA:
        return None
    roles = data.get("roles")
    if not isinstance(roles, Mapping) or not roles:
        raise PolicyError(f"{source}: field 'roles' must name each role's enclave; {_REGEN}")
    values = {}
    for role, entry in roles.items():
        if not (isinstance(role, str) and _ROLE.fullmatch(role)):
            raise PolicyError(f"{source}: roles: {role!r} is not a role name; {_REGEN}")
        if not isinstance(entry, Mapping):
            raise PolicyError(f"{source}: roles.{role} must be an object; {_REGEN}")
        named = {**entry, "name": entry.get("enclave")}
        values[role] = EnclaveValues.from_mapping(named, f"{source}: roles.{role}")
    return values


def load_policy_record(path: os.PathLike | str) -> EnclaveValues | dict[str, EnclaveValues]:
    """A record for ``policy``: one enclave's values, or a cluster's, by role."""
    data = read_record_json(path)
    return role_values(data, str(path)) or EnclaveValues.from_mapping(data, str(path))


@dataclass(frozen=True)
class PolicySpec:
    """What the emitted policy must accept: this identity, SVN >= min_svn, debug only if allowed."""

    values: EnclaveValues
    pin: Pin
    min_svn: int
    allow_debug: bool

    @property
    def pins_mrenclave(self) -> bool:
        return self.pin in (Pin.MRENCLAVE, Pin.BOTH)

    @property
    def pins_mrsigner(self) -> bool:
        return self.pin in (Pin.MRSIGNER, Pin.BOTH)


def make_spec(
    values: EnclaveValues,
    *,
    pin: Pin | str = Pin.BOTH,
    min_svn: int | None = None,
    allow_debug: bool = False,
    source: str = "record",
) -> PolicySpec:
    """Check the user's choices against the record: a policy must accept its own enclave."""
    try:
        pin = Pin(pin)
    except ValueError:
        raise PolicyError(f"--pin must be one of mrenclave, mrsigner, both (got {pin!r})") from None
    if min_svn is None:
        min_svn = values.isv_svn
    if isinstance(min_svn, bool) or not isinstance(min_svn, int) or not 0 <= min_svn <= U16_MAX:
        raise PolicyError(f"--min-svn must be an integer 0..65535 (got {min_svn!r})")
    if min_svn > values.isv_svn:
        raise PolicyError(
            f"--min-svn {min_svn} is above the enclave's isv_svn {values.isv_svn} in {source}: "
            f"the policy would reject its own enclave; use --min-svn {values.isv_svn} or lower"
        )
    if values.debug and not allow_debug:
        raise PolicyError(
            f"{source}: field 'debug' is true, so a policy that rejects debug enclaves would "
            f"never accept this enclave; sign a release build (sgx.debug = false) or pass "
            f"--allow-debug for a test-only policy"
        )
    return PolicySpec(values, pin, min_svn, allow_debug)


@dataclass
class RenderedPolicy:
    """Files (name → text, primary first) plus notes for stderr that the format cannot hold."""

    files: dict[str, str]
    notes: list[str] = field(default_factory=list)


# Shared encodings -------------------------------------------------------------------------


def le_hex_u16(value: int) -> str:
    """Hex of the two little-endian bytes, as quote parsers that dump raw fields print them."""
    return value.to_bytes(2, "little").hex()
