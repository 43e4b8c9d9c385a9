"""The registry client and the base-index job against a fake distribution-v2 registry.

The fake runs on 127.0.0.1 (port 0) in a background thread and speaks the parts of the
distribution API a pull uses: ``/v2/<repo>/manifests/<tag|digest>`` (honouring ``Accept``),
``/v2/<repo>/blobs/<digest>``, Basic auth or a Bearer token service, and it drops TLS handshakes
the way a plain-HTTP registry fails them. The image it serves is built here from ``tarfile``
layers (whiteouts included), with a config whose ``rootfs.diff_ids`` are the sha256 of each
uncompressed tar and manifests that name everything by sha256 digest.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import socket
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ppml_build.image import registry as registry_module
from ppml_build.image.base_index import BaseIndexJob, index_from_registry, keep_under
from ppml_build.image.engine import ImageReference
from ppml_build.image.registry import (
    MANIFEST_LIST_V2,
    MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    RegistryReadError,
    credentials_for,
    engine_treats_insecure,
    repository_path,
)
from ppml_build.image.rootfs import RootFSError

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

USER, PASSWORD = "alice", "s3cret:pw"
REPO = "ppml/base"
INSECURE = {"InsecureRegistryCIDRs": ["127.0.0.0/8"]}
KEEP = ("/keep",)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- image content ---------------------------------------------------------------------------


def make_tar(members) -> bytes:
    """members: (name, kind, value[, mode]) with kind dir/file/symlink/hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, value, *mode in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, (mode or [0o755])[0]
                tar.addfile(info)
            elif kind == "file":
                info.size, info.mode = len(value), (mode or [0o644])[0]
                tar.addfile(info, io.BytesIO(value))
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, value, 0o777
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, value, 0o755
                tar.addfile(info)
    return buf.getvalue()


LIBPAL = b"\x7fELF" + bytes(range(256)) * 40
TOOL = b"#!/bin/sh\necho tool v1\n"
APP_OLD = b"#!/bin/sh\necho old\n"
APP_NEW = b"#!/bin/sh\necho new\n"

LAYER1 = make_tar(
    [
        ("etc", "dir", None),
        ("etc/os-release", "file", b"ID=fake\n"),
        ("keep", "dir", None),
        ("keep/app.sh", "file", APP_OLD, 0o755),
        ("keep/lib", "dir", None),
        ("keep/lib/libpal.so", "file", LIBPAL),
        ("opt", "dir", None),
        ("opt/old", "dir", None),
        ("opt/old/a.txt", "file", b"a\n"),
        ("opt/old/b.txt", "file", b"b\n"),
        ("usr", "dir", None),
        ("usr/bin", "dir", None),
        ("usr/bin/tool", "file", TOOL, 0o755),
        ("usr/bin/gone", "file", b"gone\n"),
        ("usr/bin/link", "symlink", "tool"),
        ("usr/bin/hard", "hardlink", "usr/bin/tool"),
        ("usr/share", "dir", None),
        ("usr/share/doc", "dir", None),
        ("usr/share/doc/readme", "file", b"doc\n"),
    ]
)
# Served uncompressed. c.txt comes before the opaque marker: the marker hides only lower layers.
LAYER2 = make_tar(
    [
        ("usr/bin/.wh.gone", "file", b""),
        ("opt/old", "dir", None),
        ("opt/old/c.txt", "file", b"c\n"),
        ("opt/old/.wh..wh..opq", "file", b""),
        ("keep/app.sh", "file", APP_NEW, 0o755),
    ]
)
LAYER3 = make_tar([("etc/new.conf", "file", b"x=1\n"), ("usr/.wh.share", "file", b"")])

EXPECTED_FILES = {
    "/etc/os-release": b"ID=fake\n",
    "/etc/new.conf": b"x=1\n",
    "/keep/app.sh": APP_NEW,
    "/keep/lib/libpal.so": LIBPAL,
    "/opt/old/c.txt": b"c\n",
    "/usr/bin/tool": TOOL,
    "/usr/bin/hard": TOOL,
}
EXPECTED_DIRS = {"/", "/etc", "/keep", "/keep/lib", "/opt", "/opt/old", "/usr", "/usr/bin"}
GONE = (
    "/usr/bin/gone",
    "/opt/old/a.txt",
    "/opt/old/b.txt",
    "/usr/share",
    "/usr/share/doc",
    "/usr/share/doc/readme",
)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def default_layers():
    return [(LAYER1, "gzip"), (LAYER2, "none"), (LAYER3, "gzip")]


# -- the fake registry -----------------------------------------------------------------------


@dataclass
class Published:
    reference: str  # what a caller pulls (tag, or digest)
    config_digest: str
    manifest_digest: str  # of the platform manifest
    index_digest: str | None
    layer_digests: list[str]
    diff_ids: list[str]
    other_platform_digest: str | None = None


@dataclass
class FakeRegistry:
    manifests: dict = field(default_factory=dict)  # repo -> reference -> (media type, bytes)
    blobs: dict = field(default_factory=dict)  # repo -> digest -> bytes
    auth: str | None = None  # None, "basic" or "bearer"
    requests: list = field(default_factory=list)  # (path, Authorization header)
    token_requests: list = field(default_factory=list)  # (query, Authorization header)
    tokens: dict = field(default_factory=dict)  # token -> scope
    tls_attempts: int = 0
    fail_status: int | None = None
    slow: dict = field(default_factory=dict)  # digest -> (piece size, delay)
    slow_started: threading.Event = field(default_factory=threading.Event)
    slow_sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_requests(self, digests) -> list[str]:
        return [
            p for p, _ in self.requests if p.rsplit("/", 1)[-1] in set(digests) and "/blobs/" in p
        ]

    # -- content --

    def add_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        self.blobs.setdefault(repo, {})[digest] = data
        return digest

    def add_manifest(self, repo: str, media_type: str, doc: dict, tag: str | None = None) -> str:
        body = json.dumps(doc, indent=3).encode()
        digest = sha256(body)
        refs = self.manifests.setdefault(repo, {})
        refs[digest] = (media_type, body)
        if tag:
            refs[tag] = (media_type, body)
        return digest

    def publish(
        self,
        repo: str = REPO,
        tag: str = "1",
        *,
        layers=None,
        style: str = "oci-index",
        diff_ids=None,
    ) -> Published:
        """An image: style is oci-index, docker-list, oci or docker (single manifests)."""
        docker = style.startswith("docker")
        layer_descs, diff_id_list = [], []
        for tar_bytes, compression in layers or default_layers():
            if compression == "gzip":
                blob, media = gz(tar_bytes), (DOCKER_GZIP if docker else OCI_GZIP)
            elif compression == "none":
                blob, media = tar_bytes, OCI_TAR
            else:  # "zstd": only the media type matters, the client must refuse it unread
                blob, media = gz(tar_bytes), OCI_ZSTD
            layer_descs.append(
                {"mediaType": media, "digest": self.add_blob(repo, blob), "size": len(blob)}
            )
            diff_id_list.append(sha256(tar_bytes))
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": diff_id_list if diff_ids is None else diff_ids,
            },
            "config": {"Env": ["PATH=/usr/bin"]},
        }
        config_bytes = json.dumps(config).encode()
        config_digest = self.add_blob(repo, config_bytes)
        manifest_type = MANIFEST_V2 if docker else OCI_MANIFEST
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": layer_descs,
        }
        single = style in ("oci", "docker")
        manifest_digest = self.add_manifest(repo, manifest_type, manifest, tag if single else None)
        published = Published(
            tag,
            config_digest,
            manifest_digest,
            None,
            [d["digest"] for d in layer_descs],
            diff_id_list,
        )
        if single:
            return published
        # The other platform: its own config and layer, never to be read for amd64.
        arm_tar = make_tar([("arm", "file", b"arm64\n")])
        arm_layer = gz(arm_tar)
        arm_config = json.dumps(
            {
                "architecture": "arm64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [sha256(arm_tar)]},
            }
        ).encode()
        arm_manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": self.add_blob(repo, arm_config),
                "size": len(arm_config),
            },
            "layers": [
                {
                    "mediaType": DOCKER_GZIP if docker else OCI_GZIP,
                    "digest": self.add_blob(repo, arm_layer),
                    "size": len(arm_layer),
                }
            ],
        }
        arm_digest = self.add_manifest(repo, manifest_type, arm_manifest)
        index_type = MANIFEST_LIST_V2 if docker else OCI_INDEX

        def entry(digest, arch, **extra):
            body = self.manifests[repo][digest][1]
            return {
                "mediaType": manifest_type,
                "digest": digest,
                "size": len(body),
                "platform": {"os": "linux", "architecture": arch, **extra},
            }

        index = {
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [
                entry(arm_digest, "arm64", variant="v8"),
                entry(manifest_digest, "amd64"),
            ],
        }
        published.index_digest = self.add_manifest(repo, index_type, index, tag)
        published.other_platform_digest = arm_digest
        return published

    def pinned(self, published: Published, repo: str = REPO) -> str:
        digest = published.index_digest or published.manifest_digest
        return f"{self.address}/{repo}@{digest}"

    def tagged(self, published: Published, repo: str = REPO) -> str:
        return f"{self.address}/{repo}:{published.reference}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    registry: FakeRegistry

    def log_message(self, *args) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first == b"\x16":  # a TLS ClientHello: this registry speaks plain HTTP only
            self.registry.tls_attempts += 1
            return
        super().handle()

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, headers: dict | None = None) -> None:
        body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def do_GET(self) -> None:  # noqa: N802
        reg = self.registry
        url = urlsplit(self.path)
        if url.path == "/token":
            return self._token(parse_qs(url.query))
        reg.requests.append((url.path, self.headers.get("Authorization")))
        match = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", url.path)
        if not match:
            return self._error(404, "NAME_UNKNOWN")
        repo, kind, reference = match.groups()
        scope = f"repository:{repo}:pull"
        if not self._authorized(scope):
            return
        if reg.fail_status:
            return self._error(reg.fail_status, "UNKNOWN")
        if kind == "manifests":
            found = reg.manifests.get(repo, {}).get(reference)
            if found is None:
                return self._error(404, "MANIFEST_UNKNOWN")
            media_type, body = found
            accepted = [part.strip() for part in self.headers.get("Accept", "").split(",")]
            if media_type not in accepted:
                return self._error(404, "MANIFEST_UNKNOWN")  # as a registry does for other schemas
            return self._send(
                200, body, {"Content-Type": media_type, "Docker-Content-Digest": sha256(body)}
            )
        body = reg.blobs.get(repo, {}).get(reference)
        if body is None:
            return self._error(404, "BLOB_UNKNOWN")
        if reference in reg.slow:
            return self._send_slowly(body, *reg.slow[reference])
        self._send(
            200,
            body,
            {"Content-Type": "application/octet-stream", "Docker-Content-Digest": reference},
        )

    def _send_slowly(self, body: bytes, piece: int, delay: float) -> None:
        reg = self.registry
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for start in range(0, len(body), piece):
                if reg.stop.is_set():
                    break
                self.wfile.write(body[start : start + piece])
                self.wfile.flush()
                reg.slow_sent += len(body[start : start + piece])
                reg.slow_started.set()
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _authorized(self, scope: str) -> bool:
        reg = self.registry
        header = self.headers.get("Authorization") or ""
        if reg.auth == "basic":
            if header == basic(USER, PASSWORD):
                return True
            self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": 'Basic realm="x"'})
            return False
        if reg.auth == "bearer":
            token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
            if token is not None and reg.tokens.get(token) == scope:
                return True
            challenge = f'Bearer realm="http://{reg.address}/token",service="fake",scope="{scope}"'
            self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})
            return False
        return True

    def _token(self, query: dict) -> None:
        reg = self.registry
        header = self.headers.get("Authorization")
        reg.token_requests.append((query, header))
        scopes = {f"repository:{repo}:pull" for repo in reg.manifests}
        if header != basic(USER, PASSWORD):
            return self._error(401, "UNAUTHORIZED")
        if (
            query.get("service") != ["fake"]
            or len(query.get("scope", [])) != 1
            or query["scope"][0] not in scopes
        ):
            return self._error(403, "DENIED")
        token = secrets.token_hex(16)
        reg.tokens[token] = query["scope"][0]
        self._send(
            200,
            json.dumps({"token": token, "expires_in": 300}).encode(),
            {"Content-Type": "application/json"},
        )


@pytest.fixture
def fake_registry():
    reg = FakeRegistry()
    handler = type("Handler", (_Handler,), {"registry": reg})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    reg.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield reg
    finally:
        reg.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def client_for(reg: FakeRegistry, credentials=None, insecure=True) -> RegistryClient:
    return RegistryClient(reg.address, credentials=credentials, insecure=insecure)


def assert_expected_fs(fs) -> None:
    files = {path: data.sha256 for path, data in fs.files.items()}
    assert files == {
        path: hashlib.sha256(content).hexdigest() for path, content in EXPECTED_FILES.items()
    }
    dirs = {path for path, entry in fs.entries.items() if entry.kind == "dir"}
    assert dirs == EXPECTED_DIRS
    link = fs.lstat("/usr/bin/link")
    assert (link.kind, link.link_target) == ("symlink", "tool")
    assert set(fs.entries) == set(EXPECTED_FILES) | EXPECTED_DIRS | {"/usr/bin/link"}
    for gone in GONE:
        assert fs.lstat(gone) is None, gone
    assert not any(".wh." in path for path in fs.entries)
    assert sorted(fs.listdir("/opt/old")) == ["c.txt"]
    assert sorted(fs.listdir("/usr")) == ["bin"]
    assert fs.lstat("/usr/bin/tool").mode & 0o777 == 0o755
    # Kept content: only under KEEP.
    assert fs.read_bytes("/keep/app.sh") == APP_NEW
    assert fs.read_bytes("/keep/lib/libpal.so") == LIBPAL
    assert fs.head("/usr/bin/tool") == TOOL
    with pytest.raises(RootFSError, match="not kept"):
        fs.read_bytes("/usr/bin/tool")


# -- names and settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference, path",
    [
        ("debian:12", "library/debian"),
        ("debian", "library/debian"),
        ("docker.io/debian:12", "library/debian"),
        ("docker.io/library/debian@sha256:" + "a" * 64, "library/debian"),
        ("intelanalytics/bigdl-ppml:2.4", "intelanalytics/bigdl-ppml"),
        ("127.0.0.1:5000/ppml/x", "ppml/x"),
        ("127.0.0.1:5000/x:1", "x"),  # only Docker Hub has library/
        ("localhost:5000/a/b/c:1", "a/b/c"),
        ("registry.example.com/team/img@sha256:" + "b" * 64, "team/img"),
    ],
)
def test_repository_path(reference, path):
    assert repository_path(ImageReference.parse(reference)) == path


def test_repository_path_of_the_legacy_docker_hub_name():
    assert repository_path(ImageReference.parse("index.docker.io/debian:12")) == "library/debian"


@pytest.fixture
def no_dns(monkeypatch):
    """Name lookups fail loudly: an answer must not depend on this machine's resolver."""
    calls = []

    def refuse(host, *args, **kwargs):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "no DNS in this test")

    monkeypatch.setattr(registry_module.socket, "getaddrinfo", refuse)
    return calls


def resolve_to(monkeypatch, table):
    def lookup(host, *args, **kwargs):
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, 0) if ":" not in a else (a, 0, 0, 0),
            )
            for a in table[host]
        ]

    monkeypatch.setattr(registry_module.socket, "getaddrinfo", lookup)


def test_loopback_registry_is_insecure_by_the_default_cidrs(no_dns):
    assert engine_treats_insecure("127.0.0.1:5000", INSECURE) is True
    assert engine_treats_insecure("127.0.0.1", INSECURE) is True
    assert engine_treats_insecure("127.9.8.7:443", INSECURE) is True
    assert no_dns == []  # IP literals need no lookup


def test_without_the_engine_config_only_https_is_used(no_dns):
    assert engine_treats_insecure("127.0.0.1:5000", None) is False
    assert engine_treats_insecure("127.0.0.1:5000", {}) is False


def test_index_config_secure_wins_over_the_cidrs(no_dns):
    config = {
        **INSECURE,
        "IndexConfigs": {
            "127.0.0.1:5000": {"Name": "127.0.0.1:5000", "Secure": True},
            "203.0.113.5:5000": {"Name": "203.0.113.5:5000", "Secure": False},
            "docker.io": {"Name": "docker.io", "Secure": True, "Official": True},
        },
    }
    assert engine_treats_insecure("127.0.0.1:5000", config) is False
    assert engine_treats_insecure("203.0.113.5:5000", config) is True
    assert engine_treats_insecure("127.0.0.1:5001", config) is True  # no entry: the CIDRs decide
    assert engine_treats_insecure("docker.io", config) is False


def test_a_public_registry_is_secure(no_dns):
    assert engine_treats_insecure("203.0.113.5:5000", INSECURE) is False
    assert engine_treats_insecure("203.0.113.5", INSECURE) is False
    # A name that cannot be resolved: HTTPS only (and no exception).
    assert engine_treats_insecure("registry.example.com", INSECURE) is False
    assert engine_treats_insecure("registry.example.com:5000", INSECURE) is False
    assert set(no_dns) == {"registry.example.com"}  # looked up, never the IP literals


def test_a_name_is_judged_by_its_addresses(monkeypatch):
    resolve_to(
        monkeypatch, {"reg.internal": ["127.0.0.2"], "registry.example.com": ["203.0.113.5"]}
    )
    assert engine_treats_insecure("reg.internal:5000", INSECURE) is True
    assert engine_treats_insecure("registry.example.com", INSECURE) is False
    assert (
        engine_treats_insecure(
            "registry.example.com", {"InsecureRegistryCIDRs": ["203.0.113.0/24"]}
        )
        is True
    )
    # A malformed CIDR in the engine's config is skipped, not fatal.
    assert engine_treats_insecure(
        "reg.internal", {"InsecureRegistryCIDRs": ["nonsense", "127.0.0.0/8"]}
    )


def test_localhost_with_an_ipv6_address_too_is_insecure_as_dockerd_decides(monkeypatch):
    resolve_to(monkeypatch, {"localhost": ["127.0.0.1", "::1"]})
    assert engine_treats_insecure("localhost:5000", INSECURE) is True


def test_an_ipv6_literal_registry_with_a_port(no_dns):
    assert engine_treats_insecure("[::1]:5000", {"InsecureRegistryCIDRs": ["::1/128"]}) is True


def test_credentials_for(tmp_path, monkeypatch):
    assert credentials_for("r", {"username": "u", "password": "p"}) == ("u", "p")
    assert credentials_for("r", {"Username": "u", "Password": ""}) == ("u", "")
    assert credentials_for("r", {"username": "u"}) is None
    assert credentials_for("r", {}) is None
    # auth=None: the Docker config, as the SDK reads it.
    token = base64.b64encode(b"bob:pa:ss").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"127.0.0.1:5000": {"auth": token}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert credentials_for("127.0.0.1:5000", None) == ("bob", "pa:ss")
    assert credentials_for("127.0.0.1:5001", None) is None


# -- resolving the image ---------------------------------------------------------------------


@pytest.mark.parametrize("style", ["oci-index", "docker-list"])
def test_an_index_resolves_to_the_amd64_image(fake_registry, style):
    reg = fake_registry
    pub = reg.publish(style=style)
    image = client_for(reg).image(ImageReference.parse(reg.tagged(pub)))
    assert image.repository == REPO
    assert image.manifest_digest == pub.manifest_digest
    assert image.config_digest == pub.config_digest
    assert [(layer.digest, layer.diff_id) for layer in image.layers] == list(
        zip(pub.layer_digests, pub.diff_ids)
    )
    expected_types = (
        [DOCKER_GZIP, OCI_TAR, DOCKER_GZIP]
        if style == "docker-list"
        else [OCI_GZIP, OCI_TAR, OCI_GZIP]
    )
    assert [layer.media_type for layer in image.layers] == expected_types
    assert all(layer.size == len(reg.blobs[REPO][layer.digest]) for layer in image.layers)
    paths = [p for p, _ in reg.requests]
    assert not any(pub.other_platform_digest in p for p in paths)  # arm64 never read
    # Nothing but manifests and the config: layers are read only when asked for.
    assert not reg.blob_requests(pub.layer_digests)


def test_the_arm64_image_when_asked(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    image = client_for(reg).image(ImageReference.parse(reg.tagged(pub)), architecture="arm64")
    assert image.manifest_digest == pub.other_platform_digest
    with pytest.raises(RegistryReadError, match="no linux/s390x"):
        client_for(reg).image(ImageReference.parse(reg.tagged(pub)), architecture="s390x")


@pytest.mark.parametrize("style", ["oci", "docker"])
def test_a_single_manifest_pinned_by_digest(fake_registry, style):
    reg = fake_registry
    pub = reg.publish(style=style)
    image = client_for(reg).image(ImageReference.parse(reg.pinned(pub)))
    assert (image.manifest_digest, image.config_digest) == (pub.manifest_digest, pub.config_digest)
    assert [layer.diff_id for layer in image.layers] == pub.diff_ids


def test_an_index_pinned_by_digest(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    ref = ImageReference.parse(f"{reg.address}/{REPO}:ignored@{pub.index_digest}")
    image = client_for(reg).image(ref)
    assert image.config_digest == pub.config_digest
    assert not any(p.endswith("/manifests/ignored") for p, _ in reg.requests)  # the digest wins


def test_a_manifest_whose_bytes_do_not_match_the_pinned_digest(fake_registry):
    reg = fake_registry
    pub = reg.publish(style="oci")
    media_type, body = reg.manifests[REPO][pub.manifest_digest]
    reg.manifests[REPO][pub.manifest_digest] = (media_type, body.replace(b"   ", b" "))
    with pytest.raises(RegistryReadError, match="served manifest"):
        client_for(reg).image(ImageReference.parse(reg.pinned(pub)))


def test_an_index_entry_whose_manifest_bytes_differ(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    media_type, body = reg.manifests[REPO][pub.manifest_digest]
    reg.manifests[REPO][pub.manifest_digest] = (media_type, json.dumps(json.loads(body)).encode())
    with pytest.raises(RegistryReadError, match=f"for {pub.manifest_digest}"):
        client_for(reg).image(ImageReference.parse(reg.tagged(pub)))


def test_a_config_that_does_not_match_its_digest(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    config = reg.blobs[REPO][pub.config_digest]
    reg.blobs[REPO][pub.config_digest] = config.replace(b"amd64", b"arm64")
    with pytest.raises(RegistryReadError, match="does not match its digest"):
        client_for(reg).image(ImageReference.parse(reg.tagged(pub)))


def test_a_zstd_layer_is_refused(fake_registry):
    reg = fake_registry
    pub = reg.publish(layers=[(LAYER1, "gzip"), (LAYER2, "zstd")])
    with pytest.raises(RegistryReadError, match=re.escape(OCI_ZSTD)):
        client_for(reg).image(ImageReference.parse(reg.tagged(pub)))


def test_a_config_with_fewer_diff_ids_than_layers(fake_registry):
    reg = fake_registry
    pub = reg.publish(diff_ids=[sha256(LAYER1), sha256(LAYER2)])
    with pytest.raises(RegistryReadError, match="3 layers but 2 diff_ids"):
        client_for(reg).image(ImageReference.parse(reg.tagged(pub)))


def test_an_unknown_tag(fake_registry):
    reg = fake_registry
    reg.publish()
    with pytest.raises(RegistryReadError, match="404"):
        client_for(reg).image(ImageReference.parse(f"{reg.address}/{REPO}:nope"))


# -- auth --------------------------------------------------------------------------------------


def test_basic_auth_with_the_right_credentials(fake_registry):
    reg = fake_registry
    reg.auth = "basic"
    pub = reg.publish()
    client = client_for(reg, (USER, PASSWORD))
    image = client.image(ImageReference.parse(reg.tagged(pub)))
    assert image.config_digest == pub.config_digest
    fs = index_from_registry(client, image, keep_under(KEEP))
    assert_expected_fs(fs)
    # One challenge, then every request carries the credentials.
    unauthenticated = [p for p, header in reg.requests if header is None]
    assert len(unauthenticated) == 1
    assert all(h == basic(USER, PASSWORD) for _, h in reg.requests if h is not None)


@pytest.mark.parametrize("credentials", [None, (USER, "wrong"), ("mallory", PASSWORD)])
def test_basic_auth_refused(fake_registry, credentials):
    reg = fake_registry
    reg.auth = "basic"
    pub = reg.publish()
    with pytest.raises(RegistryReadError, match=re.escape(reg.address)) as err:
        client_for(reg, credentials).image(ImageReference.parse(reg.tagged(pub)))
    assert "401" in str(err.value) or "needs credentials" in str(err.value)
    assert PASSWORD not in str(err.value)


def test_bearer_auth_with_the_right_credentials(fake_registry):
    reg = fake_registry
    reg.auth = "bearer"
    pub = reg.publish()
    client = client_for(reg, (USER, PASSWORD))
    image = client.image(ImageReference.parse(reg.tagged(pub)))
    fs = index_from_registry(client, image, keep_under(KEEP))
    assert_expected_fs(fs)
    assert len(reg.token_requests) == 1
    query, header = reg.token_requests[0]
    assert query == {"service": ["fake"], "scope": [f"repository:{REPO}:pull"]}
    assert header == basic(USER, PASSWORD)
    tokens = {h for _, h in reg.requests if h is not None}
    assert len(tokens) == 1 and tokens.pop().startswith("Bearer ")


@pytest.mark.parametrize("credentials", [None, (USER, "wrong")])
def test_bearer_auth_refused(fake_registry, credentials):
    reg = fake_registry
    reg.auth = "bearer"
    pub = reg.publish()
    with pytest.raises(RegistryReadError, match="token service answered 401"):
        client_for(reg, credentials).image(ImageReference.parse(reg.tagged(pub)))
    assert not reg.tokens


def test_a_token_the_registry_then_rejects(fake_registry, monkeypatch):
    reg = fake_registry
    reg.auth = "bearer"
    pub = reg.publish()
    real_token = _Handler._token

    def other_scope(self, query):  # the token service hands out a token for another scope
        real_token(self, query)
        for token in list(self.registry.tokens):
            self.registry.tokens[token] = "repository:other:pull"

    monkeypatch.setattr(_Handler, "_token", other_scope)
    with pytest.raises(RegistryReadError, match="answered 401"):
        client_for(reg, (USER, PASSWORD)).image(ImageReference.parse(reg.tagged(pub)))
    assert len(reg.token_requests) == 1  # asked once, not in a loop


# -- transport ---------------------------------------------------------------------------------


def test_insecure_registry_falls_back_to_plain_http(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    client = client_for(reg, insecure=True)
    image = client.image(ImageReference.parse(reg.tagged(pub)))
    assert image.config_digest == pub.config_digest
    assert reg.tls_attempts == 1  # HTTPS first, then plain HTTP for good
    index_from_registry(client, image, keep_under(KEEP))
    assert reg.tls_attempts == 1


def test_a_secure_registry_is_never_read_over_plain_http(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    with pytest.raises(RegistryReadError, match=f"cannot reach registry {re.escape(reg.address)}"):
        client_for(reg, insecure=False).image(ImageReference.parse(reg.tagged(pub)))
    assert reg.tls_attempts >= 1
    assert reg.requests == []  # not one plain-HTTP request


def test_an_unreachable_registry(fake_registry):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RegistryClient(f"127.0.0.1:{port}", credentials=None, insecure=True)
    with pytest.raises(RegistryReadError, match=f"cannot reach registry 127.0.0.1:{port}"):
        client.image(ImageReference.parse(f"127.0.0.1:{port}/x:1"))


# -- indexing the layers -----------------------------------------------------------------------


def test_index_from_registry_applies_layers_and_whiteouts(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    client = client_for(reg)
    image = client.image(ImageReference.parse(reg.pinned(pub)))
    fs = index_from_registry(client, image, keep_under(KEEP))
    assert_expected_fs(fs)
    assert len(reg.blob_requests(pub.layer_digests)) == 3


def test_a_layer_that_does_not_match_its_diff_id(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    # A well-formed tar, served at layer 1's digest: only the diff_id can tell.
    other = make_tar([("etc", "dir", None), ("etc/os-release", "file", b"ID=evil\n")])
    reg.blobs[REPO][pub.layer_digests[0]] = gz(other)
    client = client_for(reg)
    image = client.image(ImageReference.parse(reg.tagged(pub)))
    with pytest.raises(RegistryReadError, match="diff_id") as err:
        index_from_registry(client, image, keep_under(KEEP))
    assert pub.diff_ids[0] in str(err.value)


def test_an_uncompressed_layer_that_does_not_match_its_diff_id(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    reg.blobs[REPO][pub.layer_digests[1]] = LAYER2 + bytes(512)  # one more zero block
    client = client_for(reg)
    image = client.image(ImageReference.parse(reg.tagged(pub)))
    with pytest.raises(RegistryReadError, match="diff_id"):
        index_from_registry(client, image, keep_under(KEEP))


def test_a_damaged_gzip_layer_fails(fake_registry):
    reg = fake_registry
    pub = reg.publish()
    blob = bytearray(reg.blobs[REPO][pub.layer_digests[0]])
    blob[-6] ^= 0xFF  # the gzip trailer's CRC
    reg.blobs[REPO][pub.layer_digests[0]] = bytes(blob)
    client = client_for(reg)
    image = client.image(ImageReference.parse(reg.tagged(pub)))
    with pytest.raises(RegistryReadError):
        index_from_registry(client, image, keep_under(KEEP))


def test_a_multi_member_gzip_layer(fake_registry):
    reg = fake_registry
    pub = reg.publish(layers=[(LAYER1, "gzip")])
    half = len(LAYER1) // 2
    reg.blobs[REPO][pub.layer_digests[0]] = gz(LAYER1[:half]) + gz(LAYER1[half:])
    client = client_for(reg)
    image = client.image(ImageReference.parse(reg.tagged(pub)))
    fs = index_from_registry(client, image, keep_under(KEEP))
    assert fs.files["/usr/bin/tool"].sha256 == hashlib.sha256(TOOL).hexdigest()


# -- the background job ------------------------------------------------------------------------


def job_for(reg: FakeRegistry, reference: str, tmp_path, *, use_cache: bool, auth=None):
    return BaseIndexJob(
        reference,
        auth=auth if auth is not None else {"username": USER, "password": PASSWORD},
        registry_config=INSECURE,
        keep_prefixes=KEEP,
        use_cache=use_cache,
        cache_dir=tmp_path,
    ).start()


def test_job_reads_the_image_then_reuses_the_cache(fake_registry, tmp_path):
    reg = fake_registry
    reg.auth = "bearer"
    pub = reg.publish()
    job = job_for(reg, reg.pinned(pub), tmp_path, use_cache=False)
    fs = job.result(pub.config_digest)
    assert job.failure is None and fs is not None
    assert job.source == "registry" and job.config_digest == pub.config_digest
    assert_expected_fs(fs)
    assert len(reg.blob_requests(pub.layer_digests)) == 3
    assert list(tmp_path.glob("*.json.gz"))  # stored under the config digest

    reg.requests.clear()
    again = job_for(reg, reg.pinned(pub), tmp_path, use_cache=True)
    cached = again.result(pub.config_digest)
    assert again.failure is None and again.source == "cache"
    assert reg.blob_requests(pub.layer_digests) == []  # no layer read the second time
    assert_expected_fs(cached)
    assert {p: d.sha256 for p, d in cached.files.items()} == {
        p: d.sha256 for p, d in fs.files.items()
    }
    assert cached.entries == fs.entries


def test_job_without_the_cache_reads_the_layers_again(fake_registry, tmp_path):
    reg = fake_registry
    pub = reg.publish()
    job_for(reg, reg.tagged(pub), tmp_path, use_cache=False).result(pub.config_digest)
    reg.requests.clear()
    job = job_for(reg, reg.tagged(pub), tmp_path, use_cache=False)
    assert job.result(pub.config_digest) is not None and job.source == "registry"
    assert len(reg.blob_requests(pub.layer_digests)) == 3


def test_job_result_for_another_image_id(fake_registry, tmp_path):
    reg = fake_registry
    pub = reg.publish()
    job = job_for(reg, reg.tagged(pub), tmp_path, use_cache=False)
    other = "sha256:" + "0" * 64
    assert job.result(other) is None
    assert "pulled image" in job.failure and other in job.failure
    assert pub.config_digest in job.failure


def test_job_with_a_failing_registry(fake_registry, tmp_path):
    reg = fake_registry
    reg.fail_status = 500
    pub = reg.publish()
    job = job_for(reg, reg.tagged(pub), tmp_path, use_cache=True)
    assert job.result(pub.config_digest) is None
    assert job.failure and "500" in job.failure and "RegistryReadError" in job.failure
    assert not list(tmp_path.glob("*.json.gz"))


def test_job_with_wrong_credentials(fake_registry, tmp_path):
    reg = fake_registry
    reg.auth = "basic"
    pub = reg.publish()
    job = job_for(
        reg,
        reg.tagged(pub),
        tmp_path,
        use_cache=False,
        auth={"username": USER, "password": "wrong"},
    )
    assert job.result(pub.config_digest) is None
    assert "401" in job.failure and "wrong" not in job.failure


@pytest.mark.parametrize(
    "blob",
    [gz(b"this is not a tar archive" * 100), gz(LAYER1)[:-600]],
    ids=["not-a-tar", "truncated-gzip"],
)
def test_job_with_a_damaged_layer(fake_registry, tmp_path, blob):
    reg = fake_registry
    pub = reg.publish()
    reg.blobs[REPO][pub.layer_digests[0]] = blob
    job = job_for(reg, reg.tagged(pub), tmp_path, use_cache=False)
    assert job.result(pub.config_digest) is None and job.failure
    assert not list(tmp_path.glob("*.json.gz"))


def test_cancel_during_a_slow_layer(fake_registry, tmp_path):
    reg = fake_registry
    big = os.urandom(12 << 20)  # incompressible; read in full it takes ~10 s at this pace
    pub = reg.publish(layers=[(LAYER1, "gzip"), (make_tar([("big", "file", big)]), "none")])
    reg.slow[pub.layer_digests[1]] = (64 << 10, 0.05)
    job = job_for(reg, reg.tagged(pub), tmp_path, use_cache=False)
    assert reg.slow_started.wait(10), "the job never started reading the slow layer"
    time.sleep(0.2)
    started = time.monotonic()
    job.cancel()
    assert job.result(pub.config_digest) is None  # waits for the job's thread to end
    waited = time.monotonic() - started
    assert waited < 3, f"the job ran on for {waited:.1f} s after cancel()"
    assert job.failure and "Cancelled" in job.failure
    assert reg.slow_sent < len(big) // 2


def test_cancel_while_the_registry_stalls_mid_blob(fake_registry, tmp_path):
    """A registry that stops sending: cancel() must not wait for the read timeout."""
    reg = fake_registry
    big = os.urandom(4 << 20)
    pub = reg.publish(layers=[(make_tar([("big", "file", big)]), "none")])
    reg.slow[pub.layer_digests[0]] = (256 << 10, 20.0)  # one piece, then silence
    job = job_for(reg, reg.tagged(pub), tmp_path, use_cache=False)
    assert reg.slow_started.wait(10), "the job never started reading the layer"
    time.sleep(0.3)
    started = time.monotonic()
    job.cancel()
    assert job.result(pub.config_digest) is None
    waited = time.monotonic() - started
    assert waited < 3, f"the job ran on for {waited:.1f} s after cancel()"
    assert job.failure and "Cancelled" in job.failure
