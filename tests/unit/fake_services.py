"""Local stand-ins for the eHSM-KMS and BigDL attestation REST services (127.0.0.1 only).

Each fake enforces the request checks the real service documents and answers in its shape, so
our clients are tested against the protocol rather than against themselves:

* eHSM: signed envelope (appid/timestamp/payload/sign), 13-digit timestamp within ±10 min, no
  replays, ``UploadQuotePolicy`` fields exactly 64 characters, HMAC recomputed with the server's
  own string-to-sign rule, every answer HTTP 200 with ``{"code", "message", "result"}``.
  ``VerifyQuote`` renders the quote's measurements with ``%02x`` like the enclave does.
* BigDL: appID/apiKey checked against ``/enroll``, ``policyType`` dispatch, answers 400 with a
  plain-text reason; ``/verifyQuote`` reads quote fields the Java way (``BigInteger.toString(16)``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# DCAP quote v3 layout: 48-byte header, then the 384-byte SGX report body.
QUOTE_MRENCLAVE = slice(112, 144)
QUOTE_MRSIGNER = slice(176, 208)
QUOTE_ISVPRODID = slice(304, 306)
QUOTE_ISVSVN = slice(306, 308)
QUOTE_ATTRIBUTES = slice(96, 112)


def make_quote(
    mrenclave: bytes, mrsigner: bytes, isv_prod_id: int, isv_svn: int, debug: bool
) -> bytes:
    """A structurally placed (unsigned) SGX quote: enough for services that slice fields out."""
    quote = bytearray(48 + 384)
    quote[0:2] = (3).to_bytes(2, "little")  # version 3
    flags = 0x05 | (0x02 if debug else 0)  # INIT | MODE64BIT (| DEBUG)
    quote[QUOTE_ATTRIBUTES] = flags.to_bytes(8, "little") + (0x3).to_bytes(8, "little")
    quote[QUOTE_MRENCLAVE] = mrenclave
    quote[QUOTE_MRSIGNER] = mrsigner
    quote[QUOTE_ISVPRODID] = isv_prod_id.to_bytes(2, "little")
    quote[QUOTE_ISVSVN] = isv_svn.to_bytes(2, "little")
    return bytes(quote)


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1:0 (optionally TLS) run in a daemon thread."""

    handler_class: type[BaseHTTPRequestHandler]

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.requests: list[tuple[str, str, bytes]] = []  # (method, path, raw body)
        handler = type("Handler", (self.handler_class,), {"service": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    service: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.service.requests.append((self.command, self.path, body))
        return body

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=UTF-8")


# --- eHSM-KMS ---------------------------------------------------------------------------------


def ehsm_sign_string(params: Mapping[str, Any]) -> str:
    """The server's rule: keys sorted, empty/null values dropped, objects flattened recursively."""
    out = []
    for key in sorted(params):
        value = params[key]
        if value is None or value == "":
            continue
        out.append(f"{key}={ehsm_sign_string(value) if isinstance(value, Mapping) else value}")
    return "&".join(out)


class FakeEhsm(_Server):
    MAX_CLOCK_SKEW_MS = 10 * 60 * 1000

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.apps: dict[str, str] = {}  # appid -> apikey
        self.policies: dict[str, dict[str, Any]] = {}
        self.seen: set[tuple[str, Any, str]] = set()  # (appid, nonce, timestamp)
        super().__init__(tls)

    def enroll(self) -> tuple[str, str]:
        appid = str(uuid.uuid4())
        apikey = secrets.token_urlsafe(24)[:32]
        self.apps[appid] = apikey
        return appid, apikey

    class handler_class(_Handler):
        def do_GET(self) -> None:
            action = parse_qs(urlsplit(self.path).query).get("Action", [""])[0]
            if urlsplit(self.path).path == "/ehsm" and action == "Enroll":
                appid, apikey = self.service.enroll()
                return self.reply(200, "successful", {"appid": appid, "apikey": apikey})
            self.send_text(404, "Not Found")

        def reply(self, code: int, message: str, result: dict | None = None) -> None:
            # eHSM reports errors in the body; the HTTP status stays 200.
            self.send_json(200, {"code": code, "message": message, "result": result or {}})

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            action = parse_qs(parts.query).get("Action", [""])[0]
            raw = self._body()
            if parts.path != "/ehsm":
                return self.send_text(404, "Not Found")
            if "application/json" not in (self.headers.get("Content-Type") or ""):
                return self.reply(400, "Missing required parameters")
            try:
                body = json.loads(raw)
            except ValueError:
                return self.reply(400, "Missing required parameters")
            appid, timestamp, sign = body.get("appid"), body.get("timestamp"), body.get("sign")
            payload, nonce = body.get("payload"), body.get("nonce")
            if not appid or not timestamp or not sign:
                return self.reply(400, "Missing required parameters")
            if (
                not isinstance(appid, str)
                or not isinstance(timestamp, str)
                or (payload is not None and not isinstance(payload, dict))
                or not isinstance(sign, str)
            ):
                return self.reply(400, "param type error")
            if len(timestamp) != 13 or not timestamp.isdigit():
                return self.reply(400, "Timestamp length error")
            if abs(time.time() * 1000 - int(timestamp)) >= FakeEhsm.MAX_CLOCK_SKEW_MS:
                return self.reply(400, "Timestamp error")
            if (appid, nonce, timestamp) in self.service.seen:
                return self.reply(400, "Timestamp can't be repeated in 20 minutes")
            self.service.seen.add((appid, nonce, timestamp))
            actions = {
                # action: (handler, required string fields with their exact lengths)
                "UploadQuotePolicy": (
                    self.upload_quote_policy,
                    (("mr_enclave", 64), ("mr_signer", 64)),
                ),
                "GetQuotePolicy": (self.get_quote_policy, (("policyId", 36),)),
                "VerifyQuote": (self.verify_quote, (("quote", None), ("nonce", None))),
            }
            if action not in actions:
                return self.reply(404, "API Unsupported")
            handler, fields = actions[action]
            # Like payload_checker.js, field checks run before the signature check.
            for key, length in fields:
                error = self._check_string(payload or {}, key, length)
                if error:
                    return self.reply(400, error)
            apikey = self.service.apps.get(appid)
            if apikey is None:
                return self.reply(400, "keyid not found")
            params = {"appid": appid, "nonce": nonce, "timestamp": timestamp, "payload": payload}
            expected = base64.b64encode(
                hmac.new(
                    apikey.encode(), ehsm_sign_string(params).encode(), hashlib.sha256
                ).digest()
            ).decode()
            if sign != expected:
                return self.reply(400, "sign error")
            handler(appid, payload or {})

        def _check_string(self, payload: dict, key: str, length: int | None = None) -> str | None:
            value = payload.get(key)
            if value is None or value == "":
                return f"Missing required parameters, The {key} cannot be empty."
            if not isinstance(value, str):
                return f"Parameter invalid, The {key} must be of string type."
            if length is not None and len(value) != length:
                return f"Parameter invalid, The {key} length error."
            return None

        def upload_quote_policy(self, appid: str, payload: dict) -> None:
            policy_id = str(uuid.uuid4())
            self.service.policies[policy_id] = {
                "appid": appid,
                "mr_enclave": payload["mr_enclave"],
                "mr_signer": payload["mr_signer"],
                "createTime": int(time.time() * 1000),
            }
            self.reply(200, "Upload quote policy success.", {"policyId": policy_id})

        def get_quote_policy(self, appid: str, payload: dict) -> None:
            policy = self.service.policies.get(payload["policyId"])
            result = {"policyId": payload["policyId"]}
            if policy and policy["appid"] == appid:
                result.update({k: policy[k] for k in ("mr_enclave", "mr_signer", "createTime")})
            self.reply(200, "Query quote policy success.", result)

        def verify_quote(self, appid: str, payload: dict) -> None:
            policy = self.service.policies.get(payload.get("policyId", ""))
            if policy is None or policy["appid"] != appid:
                return self.reply(400, "Invalid  policyId.")
            quote = base64.b64decode(payload.get("quote", ""))
            # The enclave prints with %02x and compares with strncmp: lowercase only.
            mr_enclave = "".join("%02x" % b for b in quote[QUOTE_MRENCLAVE])  # noqa: UP031 -- as the C enclave formats it
            mr_signer = "".join("%02x" % b for b in quote[QUOTE_MRSIGNER])  # noqa: UP031
            ok = mr_enclave == policy["mr_enclave"] and mr_signer == policy["mr_signer"]
            self.reply(
                200,
                "successful",
                {
                    "result": ok,
                    "nonce": payload.get("nonce"),
                    "mr_enclave": policy["mr_enclave"],
                    "mr_signer": policy["mr_signer"],
                },
            )


# --- BigDL attestation service -----------------------------------------------------------------


def java_biginteger_hex(data: bytes) -> str:
    return format(int.from_bytes(data, "big"), "x")


_BIGINT_HEX = re.compile(r"0|[1-9a-f][0-9a-f]*")


class FakeBigdl(_Server):
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.users: dict[str, str] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        super().__init__(tls)

    def enroll(self) -> tuple[str, str]:
        app_id = str(uuid.uuid4())
        api_key = "".join(
            secrets.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            for _ in range(32)
        )
        self.users[app_id] = api_key
        return app_id, api_key

    class handler_class(_Handler):
        def do_GET(self) -> None:
            if self.path == "/enroll":
                app_id, api_key = self.service.enroll()
                return self.send_json(200, {"appID": app_id, "apiKey": api_key})
            self.send_text(404, "The requested resource could not be found.")

        def do_POST(self) -> None:
            raw = self._body()
            try:
                body = json.loads(raw)
                assert isinstance(body, dict)
            except (ValueError, AssertionError):
                return self.send_text(400, "The request content was malformed.")
            app_id, api_key = body.get("appID"), body.get("apiKey")
            if not app_id or self.service.users.get(app_id) != api_key:
                return self.send_text(400, "Invalid app_id and api_key.")
            if self.path == "/registerPolicy":
                return self.register_policy(body)
            if self.path == "/verifyQuote":
                return self.verify_quote(body)
            self.send_text(404, "The requested resource could not be found.")

        def register_policy(self, body: dict) -> None:
            fields = {
                "SGXMREnclavePolicy": ("mrEnclave",),
                "SGXMRSignerPolicy": ("mrSigner", "isvProdID"),
            }.get(body.get("policyType"))
            if fields is None:
                return self.send_text(400, "Unsupported policy type.")
            for name in fields:
                value = body.get(name)
                # Values must be what BigInteger(1, bytes).toString(16) prints, or they can
                # never equal a quote's field.
                if (
                    not isinstance(value, str)
                    or not _BIGINT_HEX.fullmatch(value)
                    or len(value) > 64
                ):
                    return self.send_text(400, f"{name} is not in BigInteger hex form: {value!r}")
            policy_id = str(uuid.uuid4())
            self.service.policies[policy_id] = {
                "appID": body["appID"],
                "policyType": body["policyType"],
                **{n: body[n] for n in fields},
            }
            self.send_json(200, {"policyID": policy_id})

        def verify_quote(self, body: dict) -> None:
            quote = base64.b64decode(body.get("quote", ""))
            policy = self.service.policies.get(body.get("policyID"))
            if policy is None or policy["appID"] != body["appID"]:
                return self.send_json(400, {"result": -1})
            if policy["policyType"] == "SGXMREnclavePolicy":
                ok = java_biginteger_hex(quote[QUOTE_MRENCLAVE]) == policy["mrEnclave"]
            else:
                ok = (
                    java_biginteger_hex(quote[QUOTE_MRSIGNER]) == policy["mrSigner"]
                    and java_biginteger_hex(quote[QUOTE_ISVPRODID]) == policy["isvProdID"]
                )
            if ok:
                self.send_json(200, {"result": 0})
            else:
                self.send_json(400, {"result": -1})
