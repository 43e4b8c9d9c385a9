"""`covers_whole_filesystem`: which sgx.allowed_files entries let the host supply any file.

The normalisation is Gramine 1.9's `get_norm_path`; its cases are Gramine's own
(pal/regression/normalize_path.c).
"""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppml_build.gramine.uris import covers_whole_filesystem, gramine_norm_path

GRAMINE_NORM_PATH_CASES = [
    ("/", "/"),
    ("/a/b/c", "/a/b/c"),
    ("/a/../b", "/b"),
    ("/../a", "/a"),
    ("/../../../../../a", "/a"),
    ("/../a/../../b", "/b"),
    ("/../..a/b", "/..a/b"),
    ("/a/..", "/"),
    ("/a/.", "/a"),
    ("/.//a//./b", "/a/b"),
    ("///////.////////////./", "/"),
    ("/...././a/../././.../b/.....", "/..../.../b/....."),
    ("a/b/c", "a/b/c"),
    ("a/../b", "b"),
    ("../a", "../a"),
    ("../../../../../a", "../../../../../a"),
    ("../a/../../b", "../../b"),
    ("../..a/b", "../..a/b"),
    ("a/..", ""),
    ("a/.", "a"),
]


@pytest.mark.parametrize("path,normalised", GRAMINE_NORM_PATH_CASES)
def test_normalisation_matches_gramine(path, normalised):
    assert gramine_norm_path(path) == normalised


@pytest.mark.parametrize(
    "uri",
    [
        "file:/",
        "file://",
        "file:///",
        "file:/.",
        "file:/./",
        "file:/..",
        "file:/../..",
        "file:/tmp/..",
        "file:/a/b/../../",
        "dev:/",
        "dev://.",
        "file:",
        "file:.",
        "file:./",
        "file:..",
        "file:../..",
        "file:a/../..",
    ],
)
def test_whole_filesystem(uri):
    assert covers_whole_filesystem(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "file:/tmp/",
        "file:/tmp",
        "file:/..a",
        "file:/.../",
        "file:/app/../tmp/",
        "file:data/",
        "file:../data",
        "dev:tty",
        "dev:/dev/null",
        "/",
        "File:/",
        "tcp:/",
        "file :/",  # not an allowed URI: Gramine refuses to start
    ],
)
def test_not_the_whole_filesystem(uri):
    assert not covers_whole_filesystem(uri)


# Paths made of separators, ".", ".." and ordinary names.
_TOKENS = st.sampled_from(["", ".", "..", "a", "tmp", "..a", "..."])
_PATHS = st.lists(_TOKENS, max_size=8).map("/".join)


@given(_PATHS)
def test_absolute_paths_normalise_like_posix(path):
    """For an absolute path Gramine agrees with POSIX once leading slashes are one."""
    absolute = "/" + path
    assert gramine_norm_path(absolute) == posixpath.normpath("/" + absolute.lstrip("/"))


@given(_PATHS, st.sampled_from(["file:", "dev:"]))
def test_an_absolute_entry_covers_everything_exactly_when_it_normalises_to_root(path, scheme):
    absolute = "/" + path
    expected = posixpath.normpath("/" + absolute.lstrip("/")) == "/"
    assert covers_whole_filesystem(scheme + absolute) is expected
