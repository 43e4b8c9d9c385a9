"""The Docker engine and registry edge: connect, credentials, pull, push, export a rootfs.

A thin layer over the ``docker`` SDK whose one job beyond the calls themselves is to turn the
engine's and the registry's failures into one-line ``ImageError``s a user can act on. Passwords
never appear in messages, reprs or logs.

Longer than most: every call to the Docker engine goes through this module, each error turned
into one line, so that no other module talks to the engine directly.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ..errors import ImageError
from .rootfs import ENGINE_MANAGED_PATHS  # noqa: F401  (re-exported)
from .tarfs import KeepPredicate, TarRootFS

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# A ping that cannot connect should fail fast; builds and pushes stream for many minutes.
PING_TIMEOUT = 15
STREAM_TIMEOUT = 3600

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_STREAM_DIGEST_RE = re.compile(r"Digest: (sha256:[0-9a-f]{64})")


# -- connection -------------------------------------------------------------------------------


def engine_address() -> str:
    """Where the SDK will look for the engine, for messages."""
    host = os.environ.get("DOCKER_HOST")
    return f"DOCKER_HOST={host}" if host else f"{DEFAULT_SOCKET} (DOCKER_HOST is not set)"


def connect(*, timeout: int = STREAM_TIMEOUT) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (default socket otherwise), known to answer."""
    try:
        client = docker.from_env(timeout=PING_TIMEOUT)
        client.ping()
    except (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        OSError,
        ValueError,
    ) as err:
        raise ImageError(
            f"cannot reach the Docker engine at {engine_address()}: {_short_reason(err)}; "
            "start one with scripts/docker-up.sh or point DOCKER_HOST at a running engine"
        ) from None
    client.api.timeout = timeout  # later calls stream builds and pushes: allow long reads
    return client


def _short_reason(err: BaseException) -> str:
    """The most telling cause of a connection failure, in a few words."""
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, FileNotFoundError):
            return "no such socket"
        if isinstance(cur, ConnectionRefusedError):
            return "connection refused (nothing listens there)"
        if isinstance(cur, PermissionError):
            return "permission denied on the socket"
        if isinstance(cur, TimeoutError):
            return "timed out"
        stack.extend(a for a in (cur.__cause__, cur.__context__) if a is not None)
        stack.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
    text = str(err)
    for needle, reason in (
        ("No such file or directory", "no such socket"),
        ("Connection refused", "connection refused (nothing listens there)"),
        ("Permission denied", "permission denied on the socket"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return reason
    return text.splitlines()[0][:160] if text else type(err).__name__


# -- references -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageReference:
    """``[registry/]repository[:tag][@digest]`` split into parts."""

    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, reference: str) -> "ImageReference":
        ref = reference.strip()
        if not ref or any(c.isspace() for c in ref):
            raise ImageError(
                f"{reference!r} is not an image reference (expected NAME[:TAG][@sha256:DIGEST])"
            )
        name, _, digest = ref.partition("@")
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        if digest and not _DIGEST_RE.match(digest):
            raise ImageError(
                f"{reference}: the digest must be sha256: followed by 64 lowercase hex digits"
            )
        if not name or (tag is not None and not tag):
            raise ImageError(
                f"{reference!r} is not an image reference (expected NAME[:TAG][@sha256:DIGEST])"
            )
        return cls(name, tag, digest or None)

    @property
    def registry(self) -> str:
        first = self.repository.split("/", 1)[0]
        if "/" in self.repository and ("." in first or ":" in first or first == "localhost"):
            return first
        return "docker.io"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


# -- credentials ------------------------------------------------------------------------------


class RegistryAuth(dict):
    """A docker SDK ``auth_config`` whose repr never shows the password."""

    def __repr__(self) -> str:
        shown = {k: ("***" if k in ("password", "identitytoken") else v) for k, v in self.items()}
        return f"RegistryAuth({shown!r})"

    __str__ = __repr__


def _normalize_registry_key(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key.strip())
    key = re.sub(r"/(v1|v2)/?$", "", key).rstrip("/")
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


def load_registry_auth(path: os.PathLike | str, registry: str | None = None) -> dict:
    """Credentials for pull/push from a JSON file.

    Two forms are accepted: ``{"username": ..., "password": ...}`` (optionally ``"registry"``),
    or a Docker ``config.json`` with an ``auths`` table (``auth`` = base64 "user:password", or
    ``username``/``password``). With several ``auths`` entries, ``registry`` picks one.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ImageError(
            f"{path}: cannot read the registry credentials file: {err.strerror or err}"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ImageError(
            f'{path}: not valid JSON ({err}); write {{"username": ..., "password": ...}} '
            'or a Docker config.json with "auths"'
        ) from None
    if not isinstance(data, dict):
        raise ImageError(f"{path}: expected a JSON object with username/password or auths")

    if "username" in data or "password" in data:
        return _user_password(path, "", data, data.get("registry") or data.get("serveraddress"))

    auths = data.get("auths")
    if not isinstance(auths, dict) or not auths:
        if data.get("credsStore") or data.get("credHelpers"):
            raise ImageError(
                f"{path}: uses a Docker credential helper, which ppml-build does not call; "
                'write {"username": ..., "password": ...} to a file of its own instead'
            )
        raise ImageError(
            f'{path}: no credentials found; expected username/password or a non-empty "auths" table'
        )

    entries = {_normalize_registry_key(k): (k, v) for k, v in auths.items()}
    if registry is not None:
        wanted = _normalize_registry_key(registry)
        if wanted not in entries:
            raise ImageError(
                f"{path}: no entry for registry {registry} in auths (has: {', '.join(sorted(entries))})"
            )
        host = wanted
    elif len(entries) == 1:
        host = next(iter(entries))
    else:
        raise ImageError(
            f"{path}: auths lists several registries ({', '.join(sorted(entries))}); "
            "name the one to use (--registry) or keep one entry"
        )
    key, entry = entries[host]
    if not isinstance(entry, dict):
        raise ImageError(f"{path}: auths[{key!r}] must be an object")
    if "auth" in entry:
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise ImageError(f'{path}: auths[{key!r}].auth is not base64 of "user:password"')
        return RegistryAuth(username=user, password=password, serveraddress=host)
    return _user_password(path, f"auths[{key!r}].", entry, host)


def _user_password(
    path: Path, where: str, data: Mapping[str, Any], host: str | None
) -> RegistryAuth:
    user, password = data.get("username"), data.get("password")
    if not isinstance(user, str) or not user:
        raise ImageError(f"{path}: {where}username must be a non-empty string")
    if not isinstance(password, str):
        raise ImageError(f"{path}: {where}password must be a string")
    auth = RegistryAuth(username=user, password=password)
    if host:
        auth["serveraddress"] = _normalize_registry_key(str(host))
    return auth


# -- registry errors --------------------------------------------------------------------------


def _registry_error(
    action: str, ref: ImageReference, message: str, auth: Mapping | None
) -> ImageError:
    """One line naming the registry problem and its fix."""
    low = message.lower()
    registry = ref.registry
    if "no basic auth credentials" in low or ("unauthorized" in low and not auth):
        return ImageError(
            f"{action} {ref}: registry {registry} requires credentials; pass --registry-auth FILE"
        )
    if (
        "unauthorized" in low
        or "authentication required" in low
        or "denied" in low
        or " 401" in low
    ):
        return ImageError(
            f"{action} {ref}: registry {registry} refused the credentials (401 unauthorized); "
            "check the username and password in the --registry-auth file"
        )
    if (
        "manifest unknown" in low
        or "not found" in low
        or "does not exist" in low
        or "name unknown" in low
    ):
        if action == "push":
            return ImageError(
                f"push {ref}: no such image in the local engine; build or tag it first"
            )
        return ImageError(
            f"pull {ref}: no such image in registry {registry} (manifest unknown); "
            "check the repository name and tag, or push the image first"
        )
    if "connection refused" in low or "no such host" in low or "i/o timeout" in low:
        return ImageError(
            f"{action} {ref}: cannot reach registry {registry}; is it running and is the address right?"
        )
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return ImageError(f"{action} {ref}: {first[:300]}")


def _api_message(err: docker.errors.APIError) -> str:
    return str(err.explanation or err)


# -- pull / push ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PulledImage:
    reference: str  # as asked
    repo_digest: str  # "sha256:…" of the manifest the registry served
    image_id: str  # the local engine's image id ("sha256:…")


def pull_image(
    client: docker.DockerClient,
    reference: str,
    *,
    auth: Mapping | None = None,
    expected_digest: str | None = None,
) -> PulledImage:
    """Pull ``reference``; with ``expected_digest`` refuse an image whose digest differs."""
    ref = ImageReference.parse(reference)
    if expected_digest is not None and not _DIGEST_RE.match(expected_digest):
        raise ImageError(
            f"{reference}: pinned digest {expected_digest!r} is not sha256: followed by 64 lowercase hex digits"
        )
    if ref.digest and expected_digest and ref.digest != expected_digest:
        raise ImageError(
            f"{reference}: the reference names digest {ref.digest} but the pin is {expected_digest}; make them agree"
        )
    # With a digest in the reference the engine pulls by digest (the tag is then only a name).
    tag = ref.digest or ref.tag or "latest"
    stream_digest = None
    try:
        for event in client.api.pull(
            ref.repository, tag, stream=True, decode=True, auth_config=auth
        ):
            if "error" in event:
                raise _registry_error("pull", ref, str(event.get("error")), auth)
            match = _STREAM_DIGEST_RE.search(str(event.get("status", "")))
            if match:
                stream_digest = match.group(1)
    except docker.errors.APIError as err:
        raise _registry_error("pull", ref, _api_message(err), auth) from None
    except requests.exceptions.RequestException as err:
        raise ImageError(
            f"pull {ref}: lost the connection to the Docker engine ({_short_reason(err)})"
        ) from None

    local_name = f"{ref.repository}@{ref.digest}" if ref.digest else f"{ref.repository}:{tag}"
    try:
        image = client.images.get(local_name)
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"pull {ref}: the engine reported success but has no image {local_name}"
        ) from None
    repo_digest = stream_digest or ref.digest or _repo_digest_of(image.attrs, ref.repository)
    if repo_digest is None:
        raise ImageError(f"pull {ref}: the engine did not report a registry digest for the image")
    if expected_digest is not None and repo_digest != expected_digest:
        raise ImageError(
            f"pull {ref}: registry {ref.registry} serves {repo_digest} but the pin is {expected_digest}; "
            "the image changed since it was pinned (re-pin only if you trust the new image)"
        )
    return PulledImage(reference=reference, repo_digest=repo_digest, image_id=image.id)


def _repo_digest_of(attrs: Mapping[str, Any], repository: str) -> str | None:
    for entry in attrs.get("RepoDigests") or ():
        repo, _, digest = entry.partition("@")
        if repo == repository or repo.endswith("/" + repository):
            return digest
    return None


def push_image(client: docker.DockerClient, reference: str, *, auth: Mapping | None = None) -> str:
    """Push a local image to its registry; returns the manifest digest the registry stored."""
    ref = ImageReference.parse(reference)
    if ref.digest:
        raise ImageError(f"push {reference}: push a tag, not a digest")
    tag = ref.tag or "latest"
    digest = None
    try:
        for event in client.api.push(
            ref.repository, tag, stream=True, decode=True, auth_config=auth
        ):
            if "error" in event:
                raise _registry_error("push", ref, str(event.get("error")), auth)
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
    except docker.errors.APIError as err:
        raise _registry_error("push", ref, _api_message(err), auth) from None
    except requests.exceptions.RequestException as err:
        raise ImageError(
            f"push {ref}: lost the connection to the Docker engine ({_short_reason(err)})"
        ) from None
    if digest is None:
        raise ImageError(f"push {ref}: the registry did not report a digest")
    return digest


def registry_digest(
    client: docker.DockerClient, reference: str, *, auth: Mapping | None = None
) -> str | None:
    """The manifest digest the registry holds for ``reference``; None if it has no such tag."""
    ref = ImageReference.parse(reference)
    try:
        info = client.api.inspect_distribution(str(ref), auth_config=auth)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as err:
        message = _api_message(err)
        if "manifest unknown" in message.lower() or "name unknown" in message.lower():
            return None
        raise _registry_error("pull", ref, message, auth) from None
    return (info.get("Descriptor") or {}).get("digest")


# -- export -----------------------------------------------------------------------------------


def export_image_rootfs(
    client: docker.DockerClient,
    image: str,
    *,
    keep: KeepPredicate | None = None,
) -> TarRootFS:
    """The image's flattened filesystem, indexed from one ``docker export`` stream.

    A container is created (never started) only because the engine exports containers, not
    images; it is removed again whatever happens.
    """
    try:
        # The command is never run; it only satisfies images without CMD/ENTRYPOINT.
        container = client.api.create_container(
            image,
            command=["/ppml-export-never-runs"],
            network_disabled=True,
            labels={"ppml.export": "1"},
        )
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"{image}: no such image in the local Docker engine; pull or build it first"
        ) from None
    except docker.errors.APIError as err:
        raise ImageError(
            f"{image}: cannot create a container to export it: {_api_message(err)}"
        ) from None
    container_id = container["Id"]
    try:
        chunks: Iterable[bytes] = client.api.export(container_id, chunk_size=1 << 20)
        return TarRootFS.from_chunks(chunks, keep=keep)
    except docker.errors.APIError as err:
        raise ImageError(f"{image}: exporting its filesystem failed: {_api_message(err)}") from None
    finally:
        try:
            client.api.remove_container(container_id, force=True)
        except docker.errors.APIError:
            pass  # already gone; nothing a user can act on


__all__ = [
    "ENGINE_MANAGED_PATHS",
    "ImageReference",
    "PulledImage",
    "RegistryAuth",
    "connect",
    "engine_address",
    "export_image_rootfs",
    "load_registry_auth",
    "pull_image",
    "push_image",
    "registry_digest",
]
