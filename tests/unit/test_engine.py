"""Registry credentials files and image references (no engine needed)."""

from __future__ import annotations

import base64
import json

import pytest

from ppml_build.errors import ImageError
from ppml_build.image.engine import ImageReference, load_registry_auth


def _write(tmp_path, data, name="auth.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_username_password_file(tmp_path):
    auth = load_registry_auth(_write(tmp_path, {"username": "u", "password": "hunter2"}))
    assert dict(auth) == {"username": "u", "password": "hunter2"}
    assert "hunter2" not in repr(auth) and "hunter2" not in str(auth)


def test_docker_config_auths_with_one_entry(tmp_path):
    token = base64.b64encode(b"alice:pa:ss").decode()  # a colon inside the password survives
    path = _write(tmp_path, {"auths": {"https://127.0.0.1:5000/v2/": {"auth": token}}})
    auth = load_registry_auth(path)
    assert (auth["username"], auth["password"], auth["serveraddress"]) == (
        "alice",
        "pa:ss",
        "127.0.0.1:5000",
    )


def test_docker_config_picks_the_named_registry(tmp_path):
    auths = {
        "reg.example:5000": {"username": "a", "password": "1"},
        "127.0.0.1:5001": {"auth": base64.b64encode(b"b:2").decode()},
    }
    path = _write(tmp_path, {"auths": auths})
    assert load_registry_auth(path, registry="127.0.0.1:5001")["username"] == "b"
    with pytest.raises(ImageError, match="several registries"):
        load_registry_auth(path)
    with pytest.raises(ImageError, match="no entry for registry other:1"):
        load_registry_auth(path, registry="other:1")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"username": "u"}, "password must be a string"),
        ({"username": "", "password": "p"}, "username must be a non-empty string"),
        ({"auths": {}}, "no credentials found"),
        ({"credsStore": "desktop"}, "credential helper"),
        ({"auths": {"r:1": {"auth": "!!notbase64"}}}, "not base64"),
        ({"auths": {"r:1": {"auth": base64.b64encode(b"nocolon").decode()}}}, "not base64 of"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(ImageError, match=message) as info:
        load_registry_auth(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read the registry credentials file"):
        load_registry_auth(tmp_path / "absent.json")


def test_password_never_in_error_messages(tmp_path):
    path = _write(tmp_path, {"auths": {"a:1": {"username": "u", "password": "s3cr3t"}, "b:2": {}}})
    with pytest.raises(ImageError) as info:
        load_registry_auth(path)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    "text, repository, tag, digest, registry",
    [
        ("debian", "debian", None, None, "docker.io"),
        ("debian:bookworm", "debian", "bookworm", None, "docker.io"),
        (
            "127.0.0.1:5000/ppml/spark-base:4.3.0",
            "127.0.0.1:5000/ppml/spark-base",
            "4.3.0",
            None,
            "127.0.0.1:5000",
        ),
        (
            "localhost:5000/x@sha256:" + "a" * 64,
            "localhost:5000/x",
            None,
            "sha256:" + "a" * 64,
            "localhost:5000",
        ),
        ("reg.io/a/b:t@sha256:" + "b" * 64, "reg.io/a/b", "t", "sha256:" + "b" * 64, "reg.io"),
        ("ppml/debian-base:bookworm", "ppml/debian-base", "bookworm", None, "docker.io"),
    ],
)
def test_image_reference_parsing(text, repository, tag, digest, registry):
    ref = ImageReference.parse(text)
    assert (ref.repository, ref.tag, ref.digest, ref.registry) == (
        repository,
        tag,
        digest,
        registry,
    )
    assert str(ref) == text


@pytest.mark.parametrize("text", ["", "a b", "x@sha256:short", "x:", "x@md5:" + "0" * 32])
def test_bad_references(text):
    with pytest.raises(ImageError):
        ImageReference.parse(text)
