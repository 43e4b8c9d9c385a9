"""Intel eHSM-KMS quote policy (``UploadQuotePolicy``) and its signed-request client.

eHSM renders quote measurements with ``%02x`` and compares with ``strncmp``: 64 lowercase hex
characters for both MRENCLAVE and MRSIGNER, nothing else (no ISVPRODID, ISVSVN or DEBUG check).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._http import check_url, post_json
from .model import Pin, PolicyError, PolicySpec, RenderedPolicy

FILE_NAME = "ehsm-quote-policy.json"
ACTION = "UploadQuotePolicy"
SERVICE = "eHSM-KMS"


def payload(spec: PolicySpec) -> dict[str, str]:
    if spec.pin is not Pin.BOTH:
        # UploadQuotePolicy requires both fields (exactly 64 characters each); an "any"
        # placeholder would simply never match a quote.
        raise PolicyError(
            "eHSM quote policies always pin both MRENCLAVE and MRSIGNER; use --pin both "
            "with --format ehsm / --submit ehsm"
        )
    return {"mr_enclave": spec.values.mrenclave_hex, "mr_signer": spec.values.mrsigner_hex}


def notes(spec: PolicySpec) -> list[str]:
    out = [
        f"eHSM checks only MRENCLAVE and MRSIGNER: ISVPRODID {spec.values.isv_prod_id}, "
        f"minimum ISVSVN {spec.min_svn} and the DEBUG attribute are NOT enforced by the "
        f"service; the relying party must check them itself"
    ]
    if spec.allow_debug:
        out.append("--allow-debug: nothing to relax, eHSM never checks the DEBUG attribute")
    return out


def render(spec: PolicySpec) -> RenderedPolicy:
    text = json.dumps(payload(spec), indent=2) + "\n"
    return RenderedPolicy({FILE_NAME: text}, notes(spec))


def canonical_string(params: Mapping[str, Any]) -> str:
    """eHSM's string-to-sign: ``k=v`` joined by ``&`` in key order, empty values skipped,
    nested objects flattened the same way (so ``payload=mr_enclave=…&mr_signer=…``)."""
    parts = []
    for key in sorted(params):
        value = params[key]
        if value is None or value == "":
            continue
        if isinstance(value, Mapping):
            value = canonical_string(value)
        parts.append(f"{key}={value}")
    return "&".join(parts)


def sign_request(params: Mapping[str, Any], apikey: str) -> str:
    """Standard base64 of HMAC-SHA256(key=APIKey, msg=canonical string); compared verbatim."""
    mac = hmac.new(apikey.encode("utf-8"), canonical_string(params).encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def build_request(
    body_payload: Mapping[str, Any], appid: str, apikey: str, *, now_ms: int | None = None
) -> dict[str, Any]:
    """The signed envelope ``{appid, timestamp, payload, sign}`` every eHSM action takes."""
    timestamp = str(int(time.time() * 1000) if now_ms is None else now_ms)
    envelope: dict[str, Any] = {
        "appid": appid,
        "timestamp": timestamp,
        "payload": dict(body_payload),
    }
    envelope["sign"] = sign_request(envelope, apikey)
    return envelope


def action_url(base_url: str, action: str = ACTION) -> str:
    parts = check_url(base_url, SERVICE)
    path = parts.path.rstrip("/")
    if not path.endswith("/ehsm"):
        path += "/ehsm"
    return f"{parts.scheme}://{parts.netloc}{path}?Action={action}"


def submit(
    spec: PolicySpec,
    *,
    url: str,
    appid: str,
    apikey: str,
    cacert: Path | None = None,
    now_ms: int | None = None,
) -> str:
    """Upload the quote policy; returns eHSM's policyId."""
    target = action_url(url)
    envelope = build_request(payload(spec), appid, apikey, now_ms=now_ms)
    reply = post_json(target, envelope, service=SERVICE, cacert=cacert)
    answer = reply.json()
    # eHSM answers HTTP 200 with its own {"code", "message", "result"}, errors included.
    if not isinstance(answer, dict) or "code" not in answer:
        raise PolicyError(
            f"{SERVICE} at {target} did not answer like eHSM (HTTP {reply.status}: {reply.text()})"
        )
    if answer.get("code") != 200:
        message = str(answer.get("message", ""))
        hint = {
            "sign error": "; check that --appid-file and --apikey-file belong to the same enrolment",
            "Timestamp error": "; this machine's clock must be within 10 minutes of the server's",
        }.get(message, "")
        raise PolicyError(
            f"{SERVICE} at {target} refused {ACTION}: {message} (code {answer.get('code')}){hint}"
        )
    policy_id = (answer.get("result") or {}).get("policyId")
    if not isinstance(policy_id, str) or not policy_id:
        raise PolicyError(f"{SERVICE} at {target} accepted the policy but returned no policyId")
    return policy_id
