"""No engine at DOCKER_HOST: one line naming where we looked and how to start one.

These need no running engine at all (they point DOCKER_HOST at a dead socket), so they are not
marked ``docker``.
"""

from __future__ import annotations

import socket

import pytest

from ppml_build.cli import main
from ppml_build.errors import ImageError
from ppml_build.image import engine


@pytest.fixture
def dead_socket(tmp_path, monkeypatch):
    """A unix socket file nobody listens on (bound, then closed)."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    return path


def test_connect_to_a_dead_socket_is_an_image_error(dead_socket):
    with pytest.raises(ImageError) as info:
        engine.connect()
    text = str(info.value)
    assert "\n" not in text
    assert f"DOCKER_HOST=unix://{dead_socket}" in text
    assert "connection refused" in text
    assert "scripts/docker-up.sh" in text


def test_connect_to_a_missing_socket(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    with pytest.raises(ImageError, match="no such socket"):
        engine.connect()


def test_cli_reports_engine_down_in_one_line_without_traceback(dead_socket, capsys):
    code = main(["base", "bootstrap", "--only", "debian"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(
        "ppml-build: error: cannot reach the Docker engine"
    )
    assert "Traceback" not in captured.err
