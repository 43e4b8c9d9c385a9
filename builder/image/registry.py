"""Read an image straight from its registry (distribution v2 / OCI distribution API).

Used to index a base image's filesystem from its layer blobs *while* the engine pulls the same
image, so a cold build does not wait for a ``docker export`` afterwards. Everything read is
checked against content digests: the manifest against a pinned digest, the config against its
digest (which is the engine's image id), each blob against its digest and each uncompressed
layer against the config's ``rootfs.diff_ids``. An index built here is therefore of exactly the
image the engine holds once the caller has checked the pulled image id equals ``config_digest``.

Only what a pull needs: manifest or index (picking the engine's platform), config, gzip or
uncompressed layer blobs; Basic and Bearer-token auth; HTTPS, or plain HTTP for a registry the
engine itself treats as insecure (its ``InsecureRegistryCIDRs`` / ``IndexConfigs``, 127.0.0.0/8
by default). Anything else raises ``RegistryReadError`` and the caller exports from the engine.

Longer than most: one module for one protocol (the distribution API: token challenges,
manifests and indexes, blobs).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import socket
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.auth
import requests

from .engine import ImageReference

_CHUNK = 1 << 20
_TIMEOUT = (10, 30)  # connect, and between bytes: a stalled registry fails the read, not the build

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST_V2 = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_ACCEPT = ", ".join((MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX))
_GZIP_LAYERS = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
}
_PLAIN_LAYERS = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
}
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryReadError(Exception):
    """The registry could not give us the image (or gave something we do not read)."""


class Cancelled(RegistryReadError):
    """The caller stopped the read (the build failed or no longer needs it)."""


@dataclass(frozen=True)
class Layer:
    digest: str  # of the blob as stored (compressed)
    media_type: str
    size: int
    diff_id: str  # of the uncompressed tar (from the config)


@dataclass(frozen=True)
class RegistryImage:
    repository: str  # name inside the registry, e.g. "ppml/spark-base" or "library/debian"
    manifest_digest: str
    config_digest: str  # == the engine's image id once pulled
    layers: tuple[Layer, ...]


_DOCKER_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def api_host(registry: str) -> str:
    return "registry-1.docker.io" if registry in _DOCKER_HUB_NAMES else registry


def repository_path(ref: ImageReference) -> str:
    """The repository's name inside its registry (Docker Hub's single names live in library/)."""
    registry = ref.registry
    name = (
        ref.repository[len(registry) + 1 :]
        if ref.repository.startswith(registry + "/")
        else ref.repository
    )
    if registry in _DOCKER_HUB_NAMES:
        if "/" not in name:
            name = "library/" + name
    return name


def engine_treats_insecure(registry: str, registry_config: Mapping[str, Any] | None) -> bool:
    """Whether the engine would talk plain HTTP to ``registry`` (as dockerd decides it)."""
    config = registry_config or {}
    index = (config.get("IndexConfigs") or {}).get(registry)
    if isinstance(index, dict) and "Secure" in index:
        return not index["Secure"]
    if registry.startswith("["):  # [IPv6]:port
        host = registry[1 : registry.find("]")] if "]" in registry else registry[1:]
    elif registry.count(":") == 1:
        host = registry.rsplit(":", 1)[0]
    else:
        host = registry
    cidrs = []
    for text in config.get("InsecureRegistryCIDRs") or ():
        try:
            cidrs.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {
                ipaddress.ip_address(info[4][0].split("%")[0])
                for info in socket.getaddrinfo(host, None)
            }
        except (OSError, ValueError):
            return False
    # As dockerd: insecure as soon as one of the name's addresses is in an insecure range.
    return any(a in net for a in addresses for net in cidrs)


def credentials_for(registry: str, auth: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(user, password) from ``--registry-auth`` or else the Docker config (as the SDK does)."""
    if auth is None:
        try:
            auth = docker.auth.load_config().resolve_authconfig(registry)
        except Exception:  # an unreadable config or a failing helper: read anonymously
            auth = None
    if not auth:
        return None
    user = auth.get("username") or auth.get("Username")
    password = auth.get("password") or auth.get("Password")
    if user and password is not None:
        return str(user), str(password)
    return None


class RegistryClient:
    """A read-only distribution v2 client for one registry."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: tuple[str, str] | None,
        insecure: bool,
        cancel: threading.Event | None = None,
    ) -> None:
        self.registry = registry
        self._credentials = credentials
        self._insecure = insecure
        self._session = requests.Session()
        self._session.trust_env = False  # a registry on 127.0.0.1 must not go through a proxy
        certs = Path("/etc/docker/certs.d") / registry / "ca.crt"
        self._verify: bool | str = str(certs) if certs.is_file() else True  # as dockerd trusts it
        self._base: str | None = None
        self._authorization: str | None = None
        self._cancel = cancel or threading.Event()
        self._streaming: requests.Response | None = None

    def abort(self) -> None:
        """Stop a layer read blocked on the network (from another thread)."""
        self._cancel.set()
        response = self._streaming
        if response is None:
            return
        # Closing a socket does not wake a thread blocked in recv() on it; shutting it down does.
        raw = response.raw
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        if sock is None:
            sock = getattr(
                getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None
            )
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            raw.close()
        except Exception:  # noqa: BLE001 -- best effort: the read timeout still bounds the wait
            pass

    # -- HTTP ---------------------------------------------------------------------------------

    def _schemes(self) -> list[str]:
        if self._base is not None:
            return [self._base]
        return ["https", "http"] if self._insecure else ["https"]

    def _get(
        self, path: str, *, scope: str, accept: str | None = None, stream: bool = False
    ) -> requests.Response:
        last: Exception | None = None
        for scheme in self._schemes():
            url = f"{scheme}://{api_host(self.registry)}{path}"
            try:
                response = self._send(
                    url,
                    scope,
                    accept,
                    stream,
                    verify=self._verify if scheme == "https" and not self._insecure else False,
                )
            except requests.exceptions.RequestException as err:
                last = err
                continue
            self._base = scheme
            return response
        raise RegistryReadError(f"cannot reach registry {self.registry}: {type(last).__name__}")

    def _send(
        self, url: str, scope: str, accept: str | None, stream: bool, verify
    ) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        for attempt in range(2):
            if self._authorization:
                headers["Authorization"] = self._authorization
            response = self._session.get(
                url,
                headers=headers,
                stream=stream,
                timeout=_TIMEOUT,
                verify=verify,
                allow_redirects=True,
            )
            if response.status_code == 401 and attempt == 0:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self._authorize(challenge, scope, verify)
                continue
            if response.status_code != 200:
                response.close()
                raise RegistryReadError(
                    f"registry {self.registry} answered {response.status_code} "
                    f"for {url.split('/v2/', 1)[-1]}"
                )
            return response
        raise RegistryReadError(f"registry {self.registry} refused our credentials (401)")

    def _authorize(self, challenge: str, scope: str, verify) -> None:
        scheme, _, params_text = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', params_text))
        if scheme.lower() == "basic":
            if self._credentials is None:
                raise RegistryReadError(f"registry {self.registry} needs credentials")
            user, password = self._credentials
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._authorization = f"Basic {token}"
            return
        if scheme.lower() != "bearer" or "realm" not in params:
            raise RegistryReadError(f"registry {self.registry}: unsupported auth challenge")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            response = self._session.get(
                params["realm"],
                params=query,
                auth=self._credentials,
                timeout=_TIMEOUT,
                verify=verify,
            )
        except requests.exceptions.RequestException as err:
            raise RegistryReadError(
                f"registry {self.registry}: token service unreachable: {type(err).__name__}"
            ) from None
        if response.status_code != 200:
            raise RegistryReadError(
                f"registry {self.registry}: token service answered {response.status_code}"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise RegistryReadError(f"registry {self.registry}: token service gave no token")
        self._authorization = f"Bearer {token}"

    # -- image ---------------------------------------------------------------------------------

    def image(
        self, ref: ImageReference, *, os_name: str = "linux", architecture: str = "amd64"
    ) -> RegistryImage:
        """Resolve ``ref`` to one platform's manifest and its config."""
        repository = repository_path(ref)
        scope = f"repository:{repository}:pull"
        wanted = ref.digest or ref.tag or "latest"
        manifest, digest = self._manifest(repository, wanted, scope)
        if ref.digest and digest != ref.digest:
            raise RegistryReadError(f"{ref}: the registry served manifest {digest}")
        if manifest.get("mediaType") in (MANIFEST_LIST_V2, OCI_INDEX) or "manifests" in manifest:
            choice = None
            for entry in manifest.get("manifests") or ():
                platform = entry.get("platform") or {}
                if platform.get("os") == os_name and platform.get("architecture") == architecture:
                    choice = entry.get("digest")
                    break
            if choice is None:
                raise RegistryReadError(f"{ref}: no {os_name}/{architecture} image in its index")
            manifest, digest = self._manifest(repository, choice, scope)
            if digest != choice:
                raise RegistryReadError(
                    f"{ref}: the registry served manifest {digest} for {choice}"
                )
        config_desc = manifest.get("config") or {}
        config_digest = config_desc.get("digest", "")
        if not _DIGEST_RE.match(config_digest):
            raise RegistryReadError(f"{ref}: manifest without a sha256 config digest")
        config_bytes = self._blob_bytes(repository, config_digest, scope)
        config = json.loads(config_bytes)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or ())
        layer_descs = list(manifest.get("layers") or ())
        if len(diff_ids) != len(layer_descs):
            raise RegistryReadError(
                f"{ref}: {len(layer_descs)} layers but {len(diff_ids)} diff_ids"
            )
        layers = []
        for desc, diff_id in zip(layer_descs, diff_ids):
            media_type = desc.get("mediaType", "")
            if media_type not in _GZIP_LAYERS | _PLAIN_LAYERS:
                raise RegistryReadError(f"{ref}: layer media type {media_type} is not read here")
            if not (_DIGEST_RE.match(desc.get("digest", "")) and _DIGEST_RE.match(diff_id)):
                raise RegistryReadError(f"{ref}: a layer without sha256 digests")
            layers.append(Layer(desc["digest"], media_type, int(desc.get("size", 0)), diff_id))
        return RegistryImage(repository, digest, config_digest, tuple(layers))

    def _manifest(self, repository: str, reference: str, scope: str) -> tuple[dict, str]:
        response = self._get(f"/v2/{repository}/manifests/{reference}", scope=scope, accept=_ACCEPT)
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        try:
            return json.loads(body), digest
        except ValueError:
            raise RegistryReadError(f"{repository}:{reference}: the manifest is not JSON") from None

    def _blob_bytes(self, repository: str, digest: str, scope: str) -> bytes:
        body = self._get(f"/v2/{repository}/blobs/{digest}", scope=scope).content
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryReadError(f"{repository}: blob {digest} does not match its digest")
        return body

    def layer_tar(self, image: RegistryImage, layer: Layer) -> "LayerStream":
        """The uncompressed tar of one layer, streamed and checked against both digests."""
        response = self._get(
            f"/v2/{image.repository}/blobs/{layer.digest}",
            scope=f"repository:{image.repository}:pull",
            stream=True,
        )
        self._streaming = response
        return LayerStream(response, layer, self._cancel)


class LayerStream:
    """Iterate to get the layer tar's bytes; ``finish()`` drains the rest and checks its digest.

    Only the uncompressed tar is hashed: its diff_id is what the config (whose digest is the
    image id) names, so it alone binds the content; a damaged blob fails it or the inflate.
    """

    def __init__(self, response: requests.Response, layer: Layer, cancel: threading.Event) -> None:
        self._response = response
        self._layer = layer
        self._cancel = cancel
        self._tar_hash = hashlib.sha256()
        self._inflate = zlib.decompressobj(wbits=31) if layer.media_type in _GZIP_LAYERS else None
        self._chunks = self._generate()

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def _inflate_chunk(self, data: bytes) -> bytes:
        """Inflate, going on into the next member of a multi-member gzip (as Go's reader does)."""
        out = [self._inflate.decompress(data)]
        while self._inflate.eof and self._inflate.unused_data:
            rest = self._inflate.unused_data
            self._inflate = zlib.decompressobj(wbits=31)
            out.append(self._inflate.decompress(rest))
        return b"".join(out)

    def _generate(self) -> Iterator[bytes]:
        try:
            for blob_chunk in self._response.iter_content(_CHUNK):
                if self._cancel.is_set():
                    raise Cancelled("cancelled")
                data = self._inflate_chunk(blob_chunk) if self._inflate else blob_chunk
                if data:
                    self._tar_hash.update(data)
                    yield data
            if self._cancel.is_set():
                raise Cancelled("cancelled")
            if self._inflate is not None:
                tail = self._inflate.flush()
                if tail:
                    self._tar_hash.update(tail)
                    yield tail
                if not self._inflate.eof:
                    raise RegistryReadError(
                        f"layer {self._layer.digest[:19]}: the gzip stream is truncated"
                    )
        except (requests.exceptions.RequestException, zlib.error, OSError, ValueError) as err:
            if self._cancel.is_set():
                raise Cancelled("cancelled") from None
            raise RegistryReadError(
                f"layer {self._layer.digest[:19]}: {type(err).__name__}: {str(err)[:120]}"
            ) from None
        finally:
            self._response.close()

    def finish(self) -> None:
        for _ in self._chunks:
            pass
        if "sha256:" + self._tar_hash.hexdigest() != self._layer.diff_id:
            raise RegistryReadError(
                f"layer {self._layer.digest}: the uncompressed tar does not "
                f"match diff_id {self._layer.diff_id}"
            )


__all__ = [
    "RegistryClient",
    "RegistryImage",
    "Layer",
    "LayerStream",
    "RegistryReadError",
    "Cancelled",
    "credentials_for",
    "engine_treats_insecure",
    "repository_path",
]
