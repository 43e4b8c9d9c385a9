"""Tiny JSON-over-HTTP(S) client for the --submit commands (stdlib only, no secrets in errors)."""

from __future__ import annotations

import ipaddress
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..limits import MAX_SMALL_FILE_BYTES, read_at_most
from .model import PolicyError

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes

    def text(self, limit: int = 200) -> str:
        """The body as one short line, for error messages."""
        text = self.body.decode("utf-8", "replace").strip().replace("\n", " ")
        return text[:limit] + ("…" if len(text) > limit else "")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


def check_url(url: str, service: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyError(
            f"--url {url!r} is not an http(s) URL; give the {service} address, "
            f"e.g. https://host:port"
        )
    if parts.query or parts.fragment:
        raise PolicyError(f"--url {url!r}: give the {service} base URL without '?…' or '#…'")
    return parts


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_cleartext(parts: urllib.parse.SplitResult, what: str) -> None:
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        print(
            f"ppml-build: warning: {parts.hostname} is reached over plain http: {what}",
            file=sys.stderr,
        )


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    service: str,
    cacert: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> HttpReply:
    """POST ``body`` as JSON; HTTP error statuses are returned, not raised (services use 400)."""
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    context = None
    if url.startswith("https:"):
        try:
            context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
        except (OSError, ssl.SSLError) as exc:
            raise PolicyError(f"--cacert {cacert}: cannot load CA certificates: {exc}") from None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return HttpReply(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, exc.read())
    except urllib.error.URLError as exc:
        reason = exc.reason
        hint = ""
        if isinstance(reason, ssl.SSLCertVerificationError):
            hint = "; pass the service's CA certificate with --cacert FILE"
        raise PolicyError(f"cannot reach {service} at {url}: {reason}{hint}") from None
    except (TimeoutError, OSError) as exc:
        raise PolicyError(f"cannot reach {service} at {url}: {exc}") from None


def read_secret(path: Path | None, option: str) -> str:
    """Read a credential from a file (never argv); the value itself never enters a message."""
    if path is None:
        raise PolicyError(
            f"{option} FILE is required with --submit (credentials are read from files only)"
        )
    try:
        raw = read_at_most(path, MAX_SMALL_FILE_BYTES)  # bounded: the path may be /dev/zero
        if len(raw) > MAX_SMALL_FILE_BYTES:
            raise PolicyError(
                f"{option} {path}: larger than {MAX_SMALL_FILE_BYTES:,} bytes; "
                "it should hold one credential"
            )
        value = raw.decode("utf-8").strip()
    except FileNotFoundError:
        raise PolicyError(f"{option} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise PolicyError(f"{option} {path}: cannot read: {reason}") from None
    if not value:
        raise PolicyError(f"{option} {path}: the file is empty")
    if "\n" in value:
        raise PolicyError(f"{option} {path}: expected one line holding only the credential")
    return value
