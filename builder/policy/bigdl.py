"""BigDL PPML Remote Attestation Service ``/registerPolicy`` bodies and client.

The service reads quote fields with Java ``new BigInteger(1, bytes).toString(16)`` and compares
strings, so every value is lowercase hex *without leading zeros*, and ISVPRODID's little-endian
bytes are read as if big-endian (ISVPRODID 1 → bytes 01 00 → "100").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._http import check_url, post_json, warn_if_cleartext
from .model import PolicyError, PolicySpec, RenderedPolicy

FILE_NAME = "bigdl-policies.json"
SERVICE = "BigDL attestation service"
MRENCLAVE_POLICY = "SGXMREnclavePolicy"
MRSIGNER_POLICY = "SGXMRSignerPolicy"


def biginteger_hex(data: bytes) -> str:
    """Java ``BigInteger(1, data).toString(16)``: lowercase, leading zeros dropped, "0" for 0."""
    return format(int.from_bytes(data, "big"), "x")


def isv_prod_id_string(isv_prod_id: int) -> str:
    return biginteger_hex(isv_prod_id.to_bytes(2, "little"))


def bodies(spec: PolicySpec) -> list[dict[str, Any]]:
    """One registerPolicy body per pinned identity (the service cannot pin both in one)."""
    v = spec.values
    out: list[dict[str, Any]] = []
    if spec.pins_mrenclave:
        out.append({"policyType": MRENCLAVE_POLICY, "mrEnclave": biginteger_hex(v.mrenclave)})
    if spec.pins_mrsigner:
        out.append(
            {
                "policyType": MRSIGNER_POLICY,
                "mrSigner": biginteger_hex(v.mrsigner),
                "isvProdID": isv_prod_id_string(v.isv_prod_id),
            }
        )
    return out


def notes(spec: PolicySpec) -> list[str]:
    out = [
        f"BigDL checks no ISVSVN and no DEBUG attribute: minimum ISVSVN {spec.min_svn} and "
        f"'reject debug' are NOT enforced by the service; the relying party must check them",
    ]
    if not spec.pins_mrsigner:
        out.append(f"with --pin mrenclave BigDL does not check ISVPRODID {spec.values.isv_prod_id}")
    elif spec.pins_mrenclave:
        out.append(
            "BigDL cannot pin MRENCLAVE and MRSIGNER in one policy: two policies are "
            "registered, verify each quote against both policy IDs"
        )
    if spec.allow_debug:
        out.append("--allow-debug: nothing to relax, BigDL never checks the DEBUG attribute")
    return out


def render(spec: PolicySpec) -> RenderedPolicy:
    text = json.dumps(bodies(spec), indent=2) + "\n"
    extra = [
        "each body needs the appID and apiKey from GET /enroll added before "
        "POST /registerPolicy (or use --submit bigdl)"
    ]
    return RenderedPolicy({FILE_NAME: text}, notes(spec) + extra)


def register_url(base_url: str) -> str:
    parts = check_url(base_url, SERVICE)
    warn_if_cleartext(parts, "BigDL sends the apiKey in the request body")
    path = parts.path.rstrip("/")
    if not path.endswith("/registerPolicy"):
        path += "/registerPolicy"
    return f"{parts.scheme}://{parts.netloc}{path}"


def submit(
    spec: PolicySpec,
    *,
    url: str,
    app_id: str,
    api_key: str,
    cacert: Path | None = None,
) -> list[tuple[str, str]]:
    """Register every body; returns ``(policyType, policyID)`` pairs in order."""
    target = register_url(url)
    registered: list[tuple[str, str]] = []
    for body in bodies(spec):
        request = {"appID": app_id, "apiKey": api_key, **body}
        reply = post_json(target, request, service=SERVICE, cacert=cacert)
        answer = reply.json()
        if reply.status != 200:
            hint = ""
            if "app_id" in reply.text():
                hint = "; check --appid-file and --apikey-file (values from GET /enroll)"
            done = (
                f" (already registered: {', '.join(i for _, i in registered)})"
                if registered
                else ""
            )
            raise PolicyError(
                f"{SERVICE} at {target} refused {body['policyType']}: "
                f"HTTP {reply.status} {reply.text()}{hint}{done}"
            )
        policy_id = answer.get("policyID") if isinstance(answer, dict) else None
        if not isinstance(policy_id, str) or not policy_id:
            raise PolicyError(f"{SERVICE} at {target} answered without a policyID: {reply.text()}")
        registered.append((body["policyType"], policy_id))
    return registered
