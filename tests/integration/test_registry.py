"""Push to and pull from a real registry with htpasswd auth; every failure is one clear line."""

from __future__ import annotations

import uuid

import pytest

from ppml_build.errors import ImageError
from ppml_build.image import engine

pytestmark = pytest.mark.docker


def _one_line(err: ImageError) -> str:
    text = str(err)
    assert "\n" not in text and text.strip() == text
    return text


@pytest.fixture(scope="module")
def pushed(docker_client, registry, debian_base):
    """The Debian base pushed to the test registry under a fresh tag; (reference, digest)."""
    reference = f"{registry.address}/ppml-test/debian:{uuid.uuid4().hex[:12]}"
    repository, tag = reference.rsplit(":", 1)
    docker_client.api.tag(debian_base.image_id, repository, tag)
    digest = engine.push_image(docker_client, reference, auth=registry.auth)
    yield reference, digest
    for name in (reference, f"{repository}@{digest}"):
        try:  # untag only; the image itself is the cached Debian base
            docker_client.api.remove_image(name)
        except Exception:
            pass


def test_push_then_pull_records_the_registry_digest(docker_client, registry, debian_base, pushed):
    reference, digest = pushed
    assert digest.startswith("sha256:") and len(digest) == 71
    docker_client.api.remove_image(reference)  # make the pull really fetch the manifest

    pulled = engine.pull_image(docker_client, reference, auth=registry.auth, expected_digest=digest)

    assert pulled.repo_digest == digest
    assert pulled.image_id == debian_base.image_id
    assert pulled.reference == reference
    by_digest = engine.pull_image(
        docker_client, f"{reference.rsplit(':', 1)[0]}@{digest}", auth=registry.auth
    )
    assert by_digest.repo_digest == digest and by_digest.image_id == debian_base.image_id


def test_auth_file_forms_both_work_against_the_registry(docker_client, registry, pushed, tmp_path):
    import base64
    import json

    reference, digest = pushed
    config = tmp_path / "config.json"
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{registry.address}/v2/": {"auth": token}}}))
    for source in (registry.auth_file, config):
        auth = engine.load_registry_auth(source, registry=registry.address)
        assert registry.password not in repr(auth)
        assert engine.pull_image(docker_client, reference, auth=auth).repo_digest == digest


def test_wrong_password_is_one_line_and_never_shows_the_password(docker_client, registry, pushed):
    reference, _ = pushed
    wrong = {"username": registry.username, "password": "not-the-password-9f3a"}
    with pytest.raises(ImageError) as info:
        engine.pull_image(docker_client, reference, auth=wrong)
    text = _one_line(info.value)
    assert "refused the credentials" in text and "401" in text and registry.address in text
    assert "not-the-password-9f3a" not in text

    with pytest.raises(ImageError) as info:
        engine.push_image(docker_client, reference, auth=wrong)
    assert "refused the credentials" in _one_line(info.value)


def test_no_credentials_says_to_pass_registry_auth(docker_client, registry, pushed):
    reference, _ = pushed
    with pytest.raises(ImageError) as info:
        engine.pull_image(docker_client, reference)
    assert "--registry-auth" in _one_line(info.value)


def test_missing_tag_and_missing_repository(docker_client, registry, pushed):
    reference, _ = pushed
    repository = reference.rsplit(":", 1)[0]
    for missing in (f"{repository}:no-such-tag", f"{registry.address}/ppml-test/no-such-repo:1"):
        with pytest.raises(ImageError) as info:
            engine.pull_image(docker_client, missing, auth=registry.auth)
        text = _one_line(info.value)
        assert "no such image" in text and missing in text


def test_digest_differing_from_the_pin_is_refused(docker_client, registry, pushed):
    reference, digest = pushed
    pin = "sha256:" + "0" * 64
    with pytest.raises(ImageError) as info:
        engine.pull_image(docker_client, reference, auth=registry.auth, expected_digest=pin)
    text = _one_line(info.value)
    assert digest in text and pin in text and "pin" in text


def test_registry_digest_reports_presence(docker_client, registry, pushed):
    reference, digest = pushed
    assert engine.registry_digest(docker_client, reference, auth=registry.auth) == digest
    assert engine.registry_digest(docker_client, reference + "-absent", auth=registry.auth) is None


def test_unreachable_registry(docker_client, registry):
    with pytest.raises(ImageError) as info:
        # A port nothing listens on: grab one, close it, use it.
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        engine.pull_image(docker_client, f"127.0.0.1:{port}/ppml-test/x:1", auth=registry.auth)
    assert "cannot reach registry" in _one_line(info.value)
