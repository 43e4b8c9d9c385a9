"""Session fixtures for tests that need a real Docker engine and a real registry.

- ``docker_client``: the engine; runs scripts/docker-up.sh when none answers and FAILS (never
  skips) if it still cannot start, so a broken machine shows up red.
- ``registry``: Debian's distribution v2 ``docker-registry`` on 127.0.0.1:<free port> with
  htpasswd (bcrypt) auth and temporary storage.
- ``debian_base`` / ``spark_base`` / ``flink_base`` / ``standin_base``: base images made by
  ``ppml_build.image.bootstrap``, cached across runs by their input hash (the first run is slow: it
  debootstraps and pip-downloads Spark/Flink; later runs reuse the images in seconds).
- ``gramine_bases`` / ``pushed_bases``: Spark and Flink on real Gramine 1.9 built from the
  source tarballs in ../shared/gramine (or $PPML_GRAMINE_SOURCE; Gramine's apt repository
  without them; skipped with one line when neither works), the bases every build test uses.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from ppml_build.errors import ImageError
from ppml_build.image import bootstrap, engine

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKER_UP = PROJECT_ROOT / "scripts" / "docker-up.sh"


@pytest.fixture(scope="session")
def docker_client():
    try:
        return engine.connect()
    except ImageError as first:
        result = subprocess.run(
            ["bash", str(DOCKER_UP)], capture_output=True, text=True, timeout=600, check=False
        )
        try:
            return engine.connect()
        except ImageError as second:
            pytest.fail(
                f"no Docker engine: {first}\nscripts/docker-up.sh exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\nstill: {second}",
                pytrace=False,
            )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Registry:
    address: str  # HOST:PORT, as used in image references
    username: str
    password: str
    auth_file: Path  # {"username", "password"} JSON, the --registry-auth form

    @property
    def auth(self) -> dict:
        return {"username": self.username, "password": self.password}


def _wait_for_registry(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"docker-registry exited ({proc.returncode}):\n{log.read_text()}", pytrace=False
            )
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError as err:  # 401 without credentials: it is up
            if err.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"docker-registry did not answer on {url} within {timeout:.0f}s:\n{log.read_text()}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def registry(docker_client, tmp_path_factory):
    binary = shutil.which("docker-registry")
    htpasswd = shutil.which("htpasswd")
    if binary is None or htpasswd is None:
        pytest.fail("docker-registry / htpasswd missing: run scripts/docker-up.sh", pytrace=False)
    workdir = tmp_path_factory.mktemp("registry")
    username, password = "ppml-ci", "pw-" + workdir.name
    entry = subprocess.run(
        [htpasswd, "-Bbn", username, password], capture_output=True, text=True, check=True
    )
    (workdir / "htpasswd").write_text(entry.stdout)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    (workdir / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n  secret: ppml-test-secret\n"
        f"auth:\n  htpasswd:\n    realm: ppml-test\n    path: {workdir / 'htpasswd'}\n"
    )
    auth_file = workdir / "auth.json"
    auth_file.write_text(json.dumps({"username": username, "password": password}))
    log = workdir / "registry.log"
    with open(log, "wb") as log_handle:
        proc = subprocess.Popen(
            [binary, "serve", str(workdir / "config.yml")],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_registry(f"http://{address}/v2/", proc, log)
        yield Registry(address, username, password, auth_file)
    finally:
        # Untag what tests tagged for this registry (the images stay under their ppml/ names).
        for image in docker_client.images.list():
            for tag in image.tags:
                if tag.startswith(address + "/"):
                    try:
                        docker_client.api.remove_image(tag)
                    except Exception:
                        pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bootstrap(client, only: tuple[str, ...]) -> dict[str, bootstrap.TargetResult]:
    found = bootstrap.default_ca_bundle()
    options = bootstrap.BootstrapOptions(only=only, ca_bundle=found[0] if found else None)
    return {r.name: r for r in bootstrap.bootstrap_bases(client, options)}


@pytest.fixture(scope="session")
def debian_base(docker_client) -> bootstrap.TargetResult:
    """ppml/debian-base:bookworm, debootstrapped once per machine (input-hash cache)."""
    return _bootstrap(docker_client, ("debian",))["debian"]


@pytest.fixture(scope="session")
def spark_base(docker_client, debian_base) -> bootstrap.TargetResult:
    return _bootstrap(docker_client, ("spark",))["spark"]


@pytest.fixture(scope="session")
def flink_base(docker_client, debian_base) -> bootstrap.TargetResult:
    return _bootstrap(docker_client, ("flink",))["flink"]


@pytest.fixture(scope="session")
def standin_base(docker_client, debian_base) -> bootstrap.TargetResult:
    """Debian + the stand-in Gramine files at the Debian package paths (labelled standin)."""
    return _bootstrap(docker_client, ("standin",))["standin"]


# --- shared by the build, verify and recipe tests (session-scoped: built and pushed once) ------


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Our hash and image-index caches in a temp dir, not the developer's home."""
    import os

    old = os.environ.get("PPML_BUILD_CACHE_DIR")
    os.environ["PPML_BUILD_CACHE_DIR"] = str(tmp_path_factory.mktemp("ppml-cache"))
    yield
    if old is None:
        os.environ.pop("PPML_BUILD_CACHE_DIR", None)
    else:
        os.environ["PPML_BUILD_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def key(tmp_path_factory) -> Path:
    """A fresh enclave signing key (RSA-3072, e=3)."""
    from ppml_build.cli import main

    path = tmp_path_factory.mktemp("key") / "enclave-key.pem"
    assert main(["keygen", "--output", str(path)]) == 0
    return path


def gramine_source() -> Path | None:
    """Gramine's source tarballs: $PPML_GRAMINE_SOURCE, or ../shared/gramine beside the
    checkout; None means Gramine's own apt repository (which needs that network)."""
    import os

    given = os.environ.get("PPML_GRAMINE_SOURCE")
    if given:
        return Path(given)
    beside = PROJECT_ROOT.parent / "shared" / "gramine"
    return beside if (beside / "SHA256SUMS").is_file() else None


@pytest.fixture(scope="session")
def gramine_bases(docker_client, debian_base) -> dict[str, bootstrap.TargetResult]:
    """Spark and Flink on real Gramine 1.9, built from its source tarballs (or installed from
    Gramine's apt repository when there are none), cached by the hash of their inputs."""
    source = gramine_source()
    options = bootstrap.BootstrapOptions(
        only=("spark-gramine", "flink-gramine"),
        gramine_source=source,
        ca_bundle=(bootstrap.default_ca_bundle() or (None,))[0],
    )
    try:
        return {r.name: r for r in bootstrap.bootstrap_bases(docker_client, options)}
    except ImageError as err:
        where = source or "packages.gramineproject.io (no ../shared/gramine)"
        pytest.skip(f"no real Gramine 1.9 base from {where}: {str(err).splitlines()[0]}")


@pytest.fixture(scope="session")
def pushed_bases(docker_client, registry, gramine_bases):
    """The Spark and Flink bases on real Gramine 1.9, pushed to the auth registry."""
    pushed = {}
    for name, result in gramine_bases.items():
        if name not in ("spark-gramine", "flink-gramine"):
            continue
        local = result.reference
        remote = f"{registry.address}/{local.split('/', 1)[1] if '/' in local else local}"
        docker_client.images.get(local).tag(remote)
        digest = engine.push_image(docker_client, remote, auth=registry.auth)
        pushed[name.replace("-gramine", "")] = (remote, digest)
    return pushed


@pytest.fixture(scope="session")
def builds(pushed_bases, key, registry, tmp_path_factory):
    """Every bundled recipe built once per run, on demand (test_recipes.Builds)."""
    from test_recipes import Builds

    return Builds(pushed_bases, key, registry, tmp_path_factory.mktemp("recipes"))
