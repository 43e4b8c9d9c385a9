"""Microsoft Azure Attestation SGX policy: version 1.0 text and its unsigned JWS for upload."""

from __future__ import annotations

import base64
import json

from .model import PolicySpec, RenderedPolicy

TEXT_NAME = "maa-policy.txt"
JWS_NAME = "maa-policy.jwt"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def policy_text(spec: PolicySpec) -> str:
    v = spec.values
    conditions = []
    if not spec.allow_debug:
        conditions.append('[ type=="x-ms-sgx-is-debuggable", value==false ]')
    if spec.pins_mrenclave:
        conditions.append(f'[ type=="x-ms-sgx-mrenclave", value=="{v.mrenclave_hex}" ]')
    if spec.pins_mrsigner:
        conditions.append(f'[ type=="x-ms-sgx-mrsigner", value=="{v.mrsigner_hex}" ]')
    conditions.append(f'[ type=="x-ms-sgx-product-id", value=={v.isv_prod_id} ]')
    conditions.append(f'[ type=="x-ms-sgx-svn", value>={spec.min_svn} ]')
    # Echo the identity into the token so relying parties can see what was admitted.
    issued = [
        ("x-ms-sgx-is-debuggable", "is-debuggable"),
        ("x-ms-sgx-mrenclave", "sgx-mrenclave"),
        ("x-ms-sgx-mrsigner", "sgx-mrsigner"),
        ("x-ms-sgx-product-id", "product-id"),
        ("x-ms-sgx-svn", "svn"),
    ]
    lines = ["version=1.0;", "authorizationrules", "{"]
    lines.append("    " + "\n    && ".join(conditions))
    lines += ["    => permit();", "};", "issuancerules", "{"]
    lines += [
        f'    c:[type=="{src}"] => issue(type="{dst}", value=c.value);' for src, dst in issued
    ]
    lines += ["};"]
    return "\n".join(lines) + "\n"


def unsigned_jws(text: str) -> str:
    """The JWS MAA takes for an unsigned policy: alg none, AttestationPolicy, empty signature."""
    header = _b64url(json.dumps({"alg": "none"}, separators=(",", ":")).encode())
    body = {"AttestationPolicy": _b64url(text.encode("utf-8"))}
    payload = _b64url(json.dumps(body, separators=(",", ":")).encode())
    return f"{header}.{payload}."


def render(spec: PolicySpec) -> RenderedPolicy:
    text = policy_text(spec)
    notes = [
        f"MAA: x-ms-sgx-svn is a minimum (>= {spec.min_svn}); upload with "
        f"'az attestation policy set … --attestation-type SgxEnclave "
        f"--new-attestation-policy-file {JWS_NAME} --policy-format JWT' "
        f"(or the text file with --policy-format Text)"
    ]
    if spec.allow_debug:
        notes.append(
            "--allow-debug: the MAA policy does NOT check x-ms-sgx-is-debuggable, so DEBUG "
            "enclaves are accepted; the token's is-debuggable claim says which one attested"
        )
    # No trailing newline: the file is the token itself, uploaded byte for byte.
    return RenderedPolicy({TEXT_NAME: text, JWS_NAME: unsigned_jws(text)}, notes)
