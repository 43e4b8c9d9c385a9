"""`ppml-build build` and links under app.files.

A link that leads out of the recipe's directory (a host secret, the signing key as PEM or DER, a
host directory) is refused before the build talks to anything: the Docker engine and the
registry below are a unix socket and a TCP port served here, and neither is ever connected to.
Links that stay inside the copied tree reach the image as links, and the trusted list the build
wrote is the one a real export of the built image gives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ppml_build.cli import main
from ppml_build.image import engine
from ppml_build.image.tarfs import keep_paths

PROJECT = Path(__file__).resolve().parents[2]
SPARK_RECIPE = PROJECT / "recipes/spark/pyspark-sql-agg"
LIBPAL = "/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so"
CONF_ENTRY = "    - src: conf/\n      dest: /app/conf/\n"


def recipe_with_conf(target: Path, base_image: str) -> Path:
    """The bundled PySpark recipe, on ``base_image``, with a conf/ directory in app.files."""
    shutil.copytree(SPARK_RECIPE, target)
    recipe = target / "recipe.yaml"
    text = re.sub(r"(?m)^  image: .*$", f"  image: {base_image}", recipe.read_text())
    text = text.replace("      dest: /app/job.py\n", "      dest: /app/job.py\n" + CONF_ENTRY, 1)
    recipe.write_text(text)
    (target / "conf").mkdir()
    (target / "conf" / "app.conf").write_text("threads=2\n")
    return recipe


class Listener:
    """A socket nobody should ever connect to: records every connection, answers nothing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.connections = sock, []
        sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            conn.settimeout(2)
            try:
                self.connections.append(conn.recv(4096))
            except OSError:
                self.connections.append(b"")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def watched(tmp_path, monkeypatch):
    """DOCKER_HOST at a unix socket and a 'registry' port, both watched."""
    engine_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    engine_sock.bind(str(tmp_path / "engine.sock"))
    registry_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    registry_sock.bind(("127.0.0.1", 0))
    engine_listener, registry_listener = Listener(engine_sock), Listener(registry_sock)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'engine.sock'}")
    monkeypatch.delenv("PPML_KEY_PASSPHRASE", raising=False)
    yield {
        "engine": engine_listener,
        "registry": registry_listener,
        "base": f"127.0.0.1:{registry_sock.getsockname()[1]}/ppml/spark-gramine:1",
    }
    engine_listener.close()
    registry_listener.close()


def build_refused(recipe: Path, key: Path, out: Path, capsys) -> str:
    capsys.readouterr()
    code = main(["build", str(recipe), "--key", str(key), "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert not out.exists()
    return err[0]


def test_links_out_of_the_recipe_are_refused_before_the_engine_is_asked(
    key, tmp_path, capsys, watched
):
    """conf/ links to a host secret, the signing key (PEM and DER) and a host directory: each
    is refused in turn (names are walked in sorted order), and nothing reaches the engine or
    the registry."""
    host = tmp_path / "host"
    (host / ".ssh").mkdir(parents=True)
    (host / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (host / "passphrase.txt").write_text("hunter2\n")
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    (host / "enclave-key.der").write_bytes(
        private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    recipe = recipe_with_conf(tmp_path / "recipe", watched["base"])
    conf = recipe.parent / "conf"
    links = {
        "a-passphrase": host / "passphrase.txt",
        "b-key.pem": key,
        "c-key.der": host / "enclave-key.der",
        "d-ssh": host / ".ssh",
    }
    for name, target in links.items():
        (conf / name).symlink_to(target)
    # A `..` chain to the key is refused just the same.
    relative = os.path.relpath(key, conf)
    (conf / "e-relative.pem").symlink_to(relative)

    expected = {
        "a-passphrase": f"to '{host}/passphrase.txt', outside the recipe's directory; copy "
        "the file in instead",
        "b-key.pem": f"to '{key}', outside the recipe's directory; copy the file in instead",
        "c-key.der": f"to '{host}/enclave-key.der', outside the recipe's directory; copy the "
        "file in instead",
        "d-ssh": f"to '{host}/.ssh', outside the recipe's directory; copy the directory in instead",
        "e-relative.pem": f"(-> '{relative}') that leads to '{key}', outside the recipe's "
        "directory; copy the file in instead",
    }
    for name, tail in expected.items():
        line = build_refused(recipe, key, tmp_path / "out", capsys)
        assert line == (
            f"ppml-build: error: {recipe}: app.files[1].src: 'conf/' holds a link "
            f"'conf/{name}' {tail}"
        )
        (conf / name).unlink()
        # `validate` says the same, so CI catches it before anyone builds
        assert main(["validate", str(recipe)]) == (2 if name != "e-relative.pem" else 0)
        capsys.readouterr()
    assert watched["engine"].connections == [] and watched["registry"].connections == []


# --- with a real engine: links that stay inside reach the image as links --------------------


@pytest.mark.docker
def test_links_inside_the_tree_are_links_in_the_image_and_trusted_as_it_has_them(
    pushed_bases, key, registry, docker_client, tmp_path, capsys
):
    remote, _ = pushed_bases["spark"]
    recipe = recipe_with_conf(tmp_path / "recipe", remote)
    conf = recipe.parent / "conf"
    (conf / "sub").mkdir()
    (conf / "current.conf").symlink_to("app.conf")
    (conf / "sub" / "up.conf").symlink_to("../app.conf")
    (recipe.parent / "shared.conf").write_text("shared=1\n")
    (conf / "shared.conf").symlink_to("../shared.conf")  # leaves conf/: its bytes are copied
    out = tmp_path / "out"
    image = "ppml-test/links:it"
    capsys.readouterr()
    code = main(
        [
            "build",
            str(recipe),
            "--key",
            str(key),
            "--registry-auth",
            str(registry.auth_file),
            "--output-dir",
            str(out),
            "--tag",
            image,
            "--date",
            "2026-11-01",
        ]
    )
    assert code == 0, capsys.readouterr().err

    container = docker_client.containers.create(
        image, entrypoint=["/nonexistent"], network_mode="none"
    )
    try:
        chunks, _ = container.get_archive("/app/conf")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            members = {member.name: member for member in archive.getmembers()}
    finally:
        container.remove(force=True)
    assert members["conf/current.conf"].issym()
    assert members["conf/current.conf"].linkname == "app.conf"
    assert members["conf/sub/up.conf"].issym()
    assert members["conf/sub/up.conf"].linkname == "../app.conf"
    assert members["conf/shared.conf"].isreg()

    listed = {
        item["path"]: item["sha256"]
        for item in json.loads((out / "trusted-files.json").read_text())["files"]
        if item["path"].startswith("/app/conf/")
    }
    app_conf = hashlib.sha256(b"threads=2\n").hexdigest()
    assert listed == {
        "/app/conf/app.conf": app_conf,
        "/app/conf/current.conf": app_conf,
        "/app/conf/sub/up.conf": app_conf,
        "/app/conf/shared.conf": hashlib.sha256(b"shared=1\n").hexdigest(),
    }

    # And the whole manifest, rendered from a real export of the built image, is the same.
    from ppml_build.gramine.render import render_for_rootfs
    from ppml_build.pipeline.stages import load_and_plan

    parsed, plan = load_and_plan(recipe)
    fs = engine.export_image_rootfs(
        docker_client,
        image,
        keep=lambda path: keep_paths(LIBPAL)(path) or path.startswith("/ppml/launch/"),
    )
    rendered = render_for_rootfs(parsed, plan, fs, "export")
    assert rendered.data == (out / "pyspark-sql-agg.manifest.sgx").read_bytes()
