"""Session fixtures for tests that need a real Docker engine and a real registry.

- ``docker_client``: the engine; runs scripts/docker-up.sh when none answers and FAILS (never
  skips) if it still cannot start, so a broken machine shows up red.
- ``registry``: Debian's distribution v2 ``docker-registry`` on 127.0.0.1:<free port> with
  htpasswd (bcrypt) auth and temporary storage.
- ``debian_base`` / ``spark_base`` / ``flink_base`` / ``standin_base``: base images made by
  ``ppml_build.bootstrap``, cached across runs by their input hash (the first run is slow: it
  debootstraps and pip-downloads Spark/Flink; later runs reuse the images in seconds).
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

from ppml_build import bootstrap, engine
from ppml_build.errors import ImageError

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
            pytest.fail(f"docker-registry exited ({proc.returncode}):\n{log.read_text()}", pytrace=False)
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError as err:  # 401 without credentials: it is up
            if err.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"docker-registry did not answer on {url} within {timeout:.0f}s:\n{log.read_text()}", pytrace=False)


@pytest.fixture(scope="session")
def registry(docker_client, tmp_path_factory):
    binary = shutil.which("docker-registry")
    htpasswd = shutil.which("htpasswd")
    if binary is None or htpasswd is None:
        pytest.fail("docker-registry / htpasswd missing: run scripts/docker-up.sh", pytrace=False)
    workdir = tmp_path_factory.mktemp("registry")
    username, password = "ppml-ci", "pw-" + workdir.name
    entry = subprocess.run([htpasswd, "-Bbn", username, password], capture_output=True, text=True, check=True)
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
            [binary, "serve", str(workdir / "config.yml")], stdout=log_handle, stderr=subprocess.STDOUT
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


@pytest.fixture(scope="session")
def pushed_bases(docker_client, registry, debian_base):
    """The Spark and Flink stand-in-Gramine bases, pushed to the auth registry."""
    options = bootstrap.BootstrapOptions(
        only=("spark-standin", "flink-standin"),
        ca_bundle=(bootstrap.default_ca_bundle() or (None,))[0])
    results = {r.name: r for r in bootstrap.bootstrap_bases(docker_client, options)}
    pushed = {}
    for name, result in results.items():
        local = result.reference
        remote = f"{registry.address}/{local.split('/', 1)[1] if '/' in local else local}"
        docker_client.images.get(local).tag(remote)
        digest = engine.push_image(docker_client, remote, auth=registry.auth)
        pushed[name.replace("-standin", "")] = (remote, digest)
    return pushed
