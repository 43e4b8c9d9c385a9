"""TarRootFS over a real ``docker export`` stream answers exactly like DirRootFS on the same tree
unpacked to disk: same entries, listings, symlink targets, modes and SHA-256s."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from ppml_build.image import engine
from ppml_build.image.hashing import FileHasher
from ppml_build.image.rootfs import DirRootFS, RootFSError, resolve

pytestmark = pytest.mark.docker

KEPT = "/usr/lib/os-release"


def _export_to_disk(client, image: str, dest):
    """``docker export`` of a fresh container from ``image`` unpacked into ``dest`` (as root)."""
    container = client.api.create_container(image, command=["/never-runs"], network_disabled=True)
    tar_path = dest.parent / (dest.name + ".tar")
    try:
        with open(tar_path, "wb") as out:
            for chunk in client.api.export(container["Id"]):
                out.write(chunk)
    finally:
        client.api.remove_container(container["Id"], force=True)
    dest.mkdir()
    subprocess.run(
        ["tar", "-xf", str(tar_path), "-C", str(dest), "--numeric-owner", "--same-permissions"],
        check=True,
    )
    return dest


def _walk(fs, path="/"):
    """Every in-image path below ``path`` (not following symlinks)."""
    yield path
    entry = fs.lstat(path)
    if entry is not None and entry.kind == "dir":
        for name in sorted(fs.listdir(path)):
            yield from _walk(fs, path.rstrip("/") + "/" + name)


@pytest.fixture(scope="module")
def both(docker_client, debian_base, tmp_path_factory):
    tar_fs = engine.export_image_rootfs(
        docker_client, debian_base.reference, keep=lambda p: p == KEPT
    )
    root = _export_to_disk(
        docker_client, debian_base.reference, tmp_path_factory.mktemp("x") / "root"
    )
    dir_fs = DirRootFS(root, hasher=FileHasher(use_cache=False))  # really read every file
    return tar_fs, dir_fs


def test_same_paths_kinds_modes_and_link_targets(both):
    tar_fs, dir_fs = both
    dir_paths = list(_walk(dir_fs))
    assert len(dir_paths) > 5000  # a real Debian tree, not a toy
    assert list(_walk(tar_fs)) == dir_paths
    for path in dir_paths:
        t, d = tar_fs.lstat(path), dir_fs.lstat(path)
        assert (t.kind, t.mode, t.link_target) == (d.kind, d.mode, d.link_target), path
        if t.kind != "dir":  # a directory's st_size is the host filesystem's business
            assert t.size == d.size, path
    assert tar_fs.lstat("/no/such/path") is None and dir_fs.lstat("/no/such/path") is None


def test_same_sha256_for_every_regular_file(both):
    tar_fs, dir_fs = both
    files = [p for p in _walk(dir_fs) if dir_fs.lstat(p).kind == "file"]
    assert tar_fs.sha256_many(files) == dir_fs.sha256_many(files)


def test_symlink_resolution_agrees(both):
    tar_fs, dir_fs = both
    # Debian 12 is merged-/usr: /bin -> usr/bin, and sh -> dash inside it.
    for path in (
        "/bin/sh",
        "/lib64/ld-linux-x86-64.so.2",
        "/etc/os-release",
        "/usr/bin/../lib/os-release",
    ):
        assert resolve(tar_fs, path) == resolve(dir_fs, path), path
    assert resolve(tar_fs, "/bin/sh") == "/usr/bin/dash"


def test_hard_links_carry_their_targets_content(both):
    tar_fs, dir_fs = both
    linked = list(tar_fs.hardlinks)
    assert linked, "Debian ships hard links (perl, gunzip): the export must show them"
    for path in linked:
        assert tar_fs.sha256_many([path]) == dir_fs.sha256_many([path])
        assert tar_fs.lstat(path).kind == "file"


def test_kept_file_is_readable_others_say_how_to_keep_them(both):
    tar_fs, dir_fs = both
    assert tar_fs.read_bytes(KEPT) == dir_fs.read_bytes(KEPT)
    assert hashlib.sha256(tar_fs.read_bytes(KEPT)).hexdigest() == tar_fs.sha256_many([KEPT])[KEPT]
    with pytest.raises(RootFSError, match="keep"):
        tar_fs.read_bytes("/usr/bin/dash")
    with pytest.raises(RootFSError, match="not a regular file"):
        tar_fs.sha256_many(["/usr/bin"])


def test_export_leaves_no_container_behind(docker_client, debian_base):
    before = {c["Id"] for c in docker_client.api.containers(all=True)}
    engine.export_image_rootfs(docker_client, debian_base.reference)
    assert {c["Id"] for c in docker_client.api.containers(all=True)} == before


def test_export_of_a_missing_image_is_an_image_error(docker_client):
    from ppml_build.errors import ImageError

    with pytest.raises(ImageError, match="no such image in the local Docker engine"):
        engine.export_image_rootfs(docker_client, "ppml-test/absent-image:nope")


def test_engine_placeholders_show_up_empty_in_an_export(both):
    """docker export shows the engine's init-layer files, empty; callers must skip them."""
    tar_fs, _ = both
    for path in ("/.dockerenv", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
        assert path in engine.ENGINE_MANAGED_PATHS
        entry = tar_fs.lstat(path)
        assert entry is not None and entry.kind == "file" and entry.size == 0, path
