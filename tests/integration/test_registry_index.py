"""A base image indexed from its registry layers equals the same image exported by the engine.

The image is built here on the Debian base with layers that delete a directory, delete files and
re-create a deleted directory, so its layer blobs carry real whiteouts written by the engine
(``.wh.NAME`` and the opaque ``.wh..wh..opq``); it is pushed to the auth registry.
"""

from __future__ import annotations

import pytest

from ppml_build.image import engine
from ppml_build.image.base_index import BaseIndexJob, index_from_registry, keep_under
from ppml_build.image.registry import RegistryClient, credentials_for
from ppml_build.image.rootfs import ENGINE_MANAGED_PATHS
from ppml_build.image.tarstream import TarReader

pytestmark = pytest.mark.docker

KEEP = ("/opt/app",)
DOCKERFILE = """\
FROM {base}
RUN mkdir -p /opt/app/sub && echo old > /opt/app/sub/old && echo keep > /opt/app/keep \\
 && echo gone > /opt/gone && mkdir -p /srv/tree/a && echo t > /srv/tree/a/t
RUN rm -rf /usr/share/doc /opt/gone /opt/app /srv/tree/a \\
 && mkdir -p /opt/app/sub && echo new > /opt/app/sub/new \\
 && ln -s sub/new /opt/app/link && ln /opt/app/sub/new /opt/app/hard
"""


@pytest.fixture(scope="module")
def whiteout_image(docker_client, debian_base, registry, tmp_path_factory):
    context = tmp_path_factory.mktemp("whiteouts")
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=debian_base.reference))
    image, _ = docker_client.images.build(path=str(context), network_mode="host", rm=True)
    remote = f"{registry.address}/ppml-test/whiteouts:it"
    image.tag(remote)
    engine.push_image(docker_client, remote, auth=registry.auth)
    return remote, image.id


def _client(registry, docker_client, password=None):
    auth = dict(registry.auth)
    if password is not None:
        auth["password"] = password
    return RegistryClient(
        registry.address, credentials=credentials_for(registry.address, auth), insecure=True
    )


def _view(fs):
    entries = {
        p: (e.kind, e.mode, e.size, e.link_target)
        for p, e in fs.entries.items()
        if p not in ENGINE_MANAGED_PATHS and p != "/"
    }
    files = {p: d.sha256 for p, d in fs.files.items() if p not in ENGINE_MANAGED_PATHS}
    return entries, files


def test_the_layers_really_carry_whiteouts(whiteout_image, registry, docker_client):
    remote, _ = whiteout_image
    client = _client(registry, docker_client)
    image = client.image(engine.ImageReference.parse(remote))
    names = []
    for layer in image.layers[-2:]:
        stream = client.layer_tar(image, layer)
        names += [m.name for m in TarReader(stream)]
        stream.finish()
    assert any(n.endswith("/.wh..wh..opq") for n in names), names
    assert any("/.wh." in n and not n.endswith(".wh..wh..opq") for n in names), names


def test_registry_index_equals_the_engine_export(whiteout_image, registry, docker_client):
    remote, image_id = whiteout_image
    client = _client(registry, docker_client)
    image = client.image(engine.ImageReference.parse(remote))
    assert image.config_digest == image_id  # the engine's image id is the config digest
    from_registry = index_from_registry(client, image, keep_under(KEEP))
    exported = engine.export_image_rootfs(docker_client, image_id, keep=keep_under(KEEP))

    assert _view(from_registry) == _view(exported)
    assert len(from_registry.entries) > 3000  # a whole Debian tree
    for gone in ("/usr/share/doc", "/opt/gone", "/opt/app/keep", "/opt/app/sub/old", "/srv/tree/a"):
        assert from_registry.lstat(gone) is None, gone
    assert sorted(from_registry.listdir("/opt/app")) == ["hard", "link", "sub"]
    assert from_registry.listdir("/srv/tree") == []
    assert (
        from_registry.read_bytes("/opt/app/hard")
        == b"new\n"
        == exported.read_bytes("/opt/app/hard")
    )
    assert from_registry.lstat("/").mode == exported.lstat("/").mode


def test_job_hands_over_only_the_pulled_image(whiteout_image, registry, docker_client, tmp_path):
    remote, image_id = whiteout_image
    config = docker_client.info()["RegistryConfig"]
    job = BaseIndexJob(
        remote,
        auth=registry.auth,
        registry_config=config,
        keep_prefixes=KEEP,
        use_cache=True,
        cache_dir=tmp_path,
    ).start()
    assert job.result(image_id) is not None and job.source == "registry"
    again = BaseIndexJob(
        remote,
        auth=registry.auth,
        registry_config=config,
        keep_prefixes=KEEP,
        use_cache=True,
        cache_dir=tmp_path,
    ).start()
    assert again.result(image_id) is not None and again.source == "cache"
    other = BaseIndexJob(
        remote,
        auth=registry.auth,
        registry_config=config,
        keep_prefixes=KEEP,
        use_cache=True,
        cache_dir=tmp_path,
    ).start()
    assert other.result("sha256:" + "1" * 64) is None
    assert "not the pulled image" in other.failure


def test_wrong_password_fails_the_job_not_the_build(
    whiteout_image, registry, docker_client, tmp_path
):
    remote, image_id = whiteout_image
    auth = dict(registry.auth, password="wrong")
    job = BaseIndexJob(
        remote,
        auth=auth,
        registry_config=docker_client.info()["RegistryConfig"],
        keep_prefixes=KEEP,
        use_cache=False,
        cache_dir=tmp_path,
    ).start()
    assert job.result(image_id) is None
    assert "401" in job.failure or "credentials" in job.failure
