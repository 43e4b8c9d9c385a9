"""TarRootFS on hand-made tar streams: the corner cases a docker export can contain."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile

import pytest

from ppml_build.image.rootfs import RootFSError, resolve, stat_followed
from ppml_build.image.tarfs import TarRootFS, keep_paths


class OneWay(io.RawIOBase):
    """A stream that cannot seek: proves the index is built in one forward pass."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:
        chunk = self._buf.read(min(len(b), 777))  # odd sizes: exercise partial reads
        b[: len(chunk)] = chunk
        return len(chunk)


def _tar(members) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    return out.getvalue()


BIG = bytes(range(256)) * 9000  # > 2 MiB: several hashing chunks

TREE = [
    ("etc/", "dir", None, 0o755),
    ("etc/app.conf", "file", b"x=1\n", 0o640),
    ("usr/", "dir", None, 0o755),
    ("usr/lib/", "dir", None, 0o755),
    ("usr/lib/libpal.so", "file", BIG, 0o755),
    ("usr/lib/alias.so", "hardlink", "usr/lib/libpal.so", 0o755),
    ("lib", "symlink", "usr/lib", 0o777),
    ("opt/deep/nested/file.txt", "file", b"implied parents", 0o600),  # no dir members for opt/
    ("run/pipe", "fifo", None, 0o644),
    ("../../escape.txt", "file", b"stays inside", 0o644),
]


@pytest.fixture
def fs() -> TarRootFS:
    reader = io.BufferedReader(OneWay(_tar(TREE)))
    return TarRootFS.from_fileobj(reader, keep=keep_paths("/usr/lib/libpal.so", "/etc/app.conf"))


def test_index_kinds_modes_and_sizes(fs):
    assert fs.lstat("/etc/app.conf").kind == "file"
    assert fs.lstat("/etc/app.conf").mode == stat.S_IFREG | 0o640
    assert fs.lstat("/usr/lib/libpal.so").size == len(BIG)
    link = fs.lstat("/lib")
    assert (link.kind, link.link_target, link.mode) == ("symlink", "usr/lib", stat.S_IFLNK | 0o777)
    assert fs.lstat("/run/pipe").kind == "other" and stat.S_ISFIFO(fs.lstat("/run/pipe").mode)
    assert fs.lstat("/nope") is None


def test_implied_parent_directories_are_listable(fs):
    assert fs.lstat("/opt").kind == "dir" and fs.lstat("/opt/deep/nested").kind == "dir"
    assert fs.listdir("/opt/deep") == ["nested"]
    assert sorted(fs.listdir("/")) == ["escape.txt", "etc", "lib", "opt", "run", "usr"]


def test_dotdot_in_member_names_cannot_leave_the_root(fs):
    assert fs.lstat("/escape.txt").kind == "file"


def test_sha256_is_a_lookup_and_matches_the_content(fs):
    digests = fs.sha256_many(["/usr/lib/libpal.so", "/etc/app.conf", "/opt/deep/nested/file.txt"])
    assert digests["/usr/lib/libpal.so"] == hashlib.sha256(BIG).hexdigest()
    assert digests["/opt/deep/nested/file.txt"] == hashlib.sha256(b"implied parents").hexdigest()


def test_hard_link_has_its_targets_content_and_metadata(fs):
    alias = fs.lstat("/usr/lib/alias.so")
    assert (alias.kind, alias.size, alias.mode) == ("file", len(BIG), stat.S_IFREG | 0o755)
    assert (
        fs.sha256_many(["/usr/lib/alias.so"])["/usr/lib/alias.so"]
        == hashlib.sha256(BIG).hexdigest()
    )
    assert fs.read_bytes("/usr/lib/alias.so") == BIG  # the target was kept


def test_kept_bytes_and_the_error_for_files_not_kept(fs):
    assert fs.read_bytes("/lib/../usr/lib/libpal.so") == BIG
    with pytest.raises(RootFSError, match="keep"):
        fs.read_bytes("/opt/deep/nested/file.txt")
    with pytest.raises(RootFSError, match="not a regular file"):
        fs.read_bytes("/etc")
    with pytest.raises(RootFSError, match="no such file"):
        fs.sha256_many(["/etc/missing"])
    with pytest.raises(RootFSError, match="not a directory"):
        fs.listdir("/etc/app.conf")


def test_symlinks_resolve_through_the_shared_resolver(fs):
    assert resolve(fs, "/lib/libpal.so") == "/usr/lib/libpal.so"
    assert stat_followed(fs, "/lib").kind == "dir"


def test_later_member_replaces_earlier_and_a_repeated_dir_keeps_children():
    data = _tar(
        [
            ("a/", "dir", None, 0o700),
            ("a/x", "file", b"old", 0o644),
            ("a/", "dir", None, 0o755),  # listed again: children stay, mode updates
            ("a/x", "file", b"new", 0o600),
            ("b/c", "file", b"c", 0o644),
            ("b", "symlink", "a", 0o777),  # a directory replaced by a symlink drops its subtree
        ]
    )
    fs = TarRootFS.from_chunks([data[i : i + 1000] for i in range(0, len(data), 1000)])
    assert fs.lstat("/a").mode == stat.S_IFDIR | 0o755
    assert fs.listdir("/a") == ["x"]
    assert fs.sha256_many(["/a/x"])["/a/x"] == hashlib.sha256(b"new").hexdigest()
    assert fs.lstat("/a/x").mode == stat.S_IFREG | 0o600
    assert fs.lstat("/b").kind == "symlink" and fs.lstat("/b/c") is None


def test_garbage_is_a_clear_error():
    with pytest.raises(RootFSError, match="not a readable tar"):
        TarRootFS.from_chunks([b"this is not a tar archive" * 40])
