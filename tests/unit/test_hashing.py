"""Parallel hashing with a content cache: same digests as the reference, re-reads only changes."""

from __future__ import annotations

import hashlib
import os

from ppml_build.image.hashing import FileHasher, sha256_files_reference


def make_tree(root, count=20):
    paths = []
    for index in range(count):
        path = root / f"f{index:02d}.bin"
        path.write_bytes(os.urandom(index * 7919))  # includes an empty file
        paths.append(path)
    big = root / "big.bin"
    big.write_bytes(os.urandom(40 * 1024 * 1024 + 13))  # spans several 16 MiB slices
    return paths + [big]


def test_digests_match_reference_and_hashlib(tmp_path):
    paths = make_tree(tmp_path)
    ours = FileHasher(use_cache=False, workers=3).sha256_files(paths)
    assert ours == sha256_files_reference(paths)
    assert ours[0] == hashlib.sha256(b"").hexdigest()
    assert ours[-1] == hashlib.sha256(paths[-1].read_bytes()).hexdigest()


def test_unchanged_tree_is_not_read_again(tmp_path):
    (tmp_path / "tree").mkdir()
    paths = make_tree(tmp_path / "tree")
    cache = tmp_path / "cache" / "hash-cache.json"
    first = FileHasher(cache_path=cache)
    digests = first.sha256_files(paths)
    assert first.hashed_files == len(paths) and cache.exists()
    second = FileHasher(cache_path=cache)
    assert second.sha256_files(paths) == digests
    assert second.hashed_files == 0 and second.hashed_bytes == 0


def test_changed_file_is_rehashed_even_with_restored_mtime(tmp_path):
    (tmp_path / "tree").mkdir()
    paths = make_tree(tmp_path / "tree", count=5)
    cache = tmp_path / "hash-cache.json"
    FileHasher(cache_path=cache).sha256_files(paths)
    target = paths[3]
    st = target.stat()
    target.write_bytes(b"x" * st.st_size)  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only ctime moved
    again = FileHasher(cache_path=cache)
    digests = again.sha256_files(paths)
    assert again.hashed_files == 1
    assert digests[3] == hashlib.sha256(b"x" * st.st_size).hexdigest()


def test_damaged_cache_only_costs_time(tmp_path):
    (tmp_path / "tree").mkdir()
    paths = make_tree(tmp_path / "tree", count=3)
    cache = tmp_path / "hash-cache.json"
    cache.write_text("{not json")
    hasher = FileHasher(cache_path=cache)
    assert hasher.sha256_files(paths) == sha256_files_reference(paths)
    assert hasher.hashed_files == len(paths)


def test_cache_location_follows_environment(tmp_path, monkeypatch):
    from ppml_build.image.hashing import default_cache_path

    monkeypatch.setenv("PPML_BUILD_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_path() == tmp_path / "c" / "hash-cache.json"
    monkeypatch.delenv("PPML_BUILD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_path() == tmp_path / "x" / "ppml-build" / "hash-cache.json"
