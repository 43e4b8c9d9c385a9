"""TarRootFS.apply_layer: OCI/Docker layer diffs laid one over another, with whiteouts.

The rules (image-spec layer.md): ``dir/.wh.NAME`` removes NAME (and what is under it) of the
layers below; ``dir/.wh..wh..opq`` removes everything the layers below have under dir; neither
touches what the same layer adds, whatever the order of the members in the tar; a whiteout is
never an entry itself. Hand-made layers check each rule; a hypothesis test compares stacks of
random layers with a small independent model."""

from __future__ import annotations

import hashlib
import io
import posixpath
import stat
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppml_build.image.rootfs import RootFSError
from ppml_build.image.tarfs import TarRootFS, keep_paths

OPQ = ".wh..wh..opq"


# -- helpers --------------------------------------------------------------------------------


def _layer(members) -> bytes:
    """A layer tar. Members: (name, kind, payload, mode); kind "whiteout" writes an empty
    regular file, as docker and containerd do."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, mode in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind in ("file", "whiteout"):
                payload = payload or b""
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
            else:
                raise AssertionError(kind)
    return out.getvalue()


def D(name, mode=0o755):
    return (name, "dir", None, mode)


def F(name, content=b"", mode=0o644):
    return (name, "file", content, mode)


def L(name, target):
    return (name, "symlink", target, 0o777)


def H(name, target):
    return (name, "hardlink", target, 0o644)


def W(name):
    return (name, "whiteout", b"", 0o000)


def _stack(*layers, keep=None) -> TarRootFS:
    fs = TarRootFS.empty()
    for i, members in enumerate(layers):
        data = _layer(members)
        step = 311 + 200 * i  # odd chunk sizes, different per layer
        fs.apply_layer((data[j : j + step] for j in range(0, len(data), step)), keep)
        _assert_consistent(fs)
    return fs


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _paths(fs: TarRootFS) -> list[str]:
    return [e.path for e in fs.walk()]


def _assert_consistent(fs: TarRootFS) -> None:
    """The index agrees with itself: every entry is listed by its parent directory, every
    listed name is an entry, files have data, and no whiteout ever became an entry."""
    assert fs.lstat("/").kind == "dir"
    for entry in fs.walk():
        name = posixpath.basename(entry.path)
        assert not name.startswith(".wh."), entry.path
        if entry.path != "/":
            parent = posixpath.dirname(entry.path)
            assert fs.lstat(parent).kind == "dir", entry.path
            assert name in fs.listdir(parent), entry.path
        if entry.kind == "dir":
            names = fs.listdir(entry.path)
            assert len(names) == len(set(names))
            for child in names:
                assert fs.lstat(posixpath.join(entry.path, child)) is not None, (entry.path, child)
        if entry.kind == "file":
            assert entry.path in fs.sha256_many([entry.path])


# -- file and directory whiteouts -----------------------------------------------------------


LOWER = [
    D("etc/"),
    F("etc/keep.conf", b"keep"),
    F("etc/gone.conf", b"gone"),
    D("d/"),
    F("d/a", b"a"),
    D("d/sub/"),
    F("d/sub/old", b"old"),
    L("d/link", "a"),
    F("top", b"top"),
]


def test_file_whiteout_removes_a_lower_file():
    fs = _stack(LOWER, [D("etc/"), W("etc/.wh.gone.conf"), W(".wh.top")])
    assert fs.lstat("/etc/gone.conf") is None and fs.lstat("/top") is None
    assert fs.listdir("/etc") == ["keep.conf"]
    assert "top" not in fs.listdir("/")
    with pytest.raises(RootFSError, match="no such file"):
        fs.sha256_many(["/etc/gone.conf"])
    assert fs.sha256_many(["/etc/keep.conf"]) == {"/etc/keep.conf": _sha(b"keep")}


def test_whiteout_of_a_lower_directory_removes_its_subtree():
    fs = _stack(LOWER, [W(".wh.d")])
    for path in ("/d", "/d/a", "/d/sub", "/d/sub/old", "/d/link"):
        assert fs.lstat(path) is None, path
    assert sorted(fs.listdir("/")) == ["etc", "top"]
    assert _paths(fs) == ["/", "/etc", "/etc/gone.conf", "/etc/keep.conf", "/top"]
    # A later layer that makes d again gets a fresh, empty d: nothing of the old one survives.
    fs2 = _stack(LOWER, [W(".wh.d")], [D("d/", 0o700), F("d/new", b"n")])
    assert fs2.listdir("/d") == ["new"] and fs2.lstat("/d").mode == stat.S_IFDIR | 0o700
    assert fs2.lstat("/d/sub/old") is None


def test_whiteout_of_a_missing_name_changes_nothing():
    before = _stack(LOWER)
    after = _stack(
        LOWER, [D("etc/"), W("etc/.wh.never-there"), W("nowhere/.wh.x"), W("nowhere/" + OPQ)]
    )
    assert list(after.walk()) == list(before.walk())


@pytest.mark.parametrize("order", ["whiteout-first", "whiteout-last"])
def test_whiteout_of_a_name_the_same_layer_adds_does_not_remove_it(order):
    members = [F("top", b"new top", 0o600), L("etc/keep.conf", "/elsewhere")]
    whiteouts = [W(".wh.top"), W("etc/.wh.keep.conf")]
    first, second = (whiteouts, members) if order == "whiteout-first" else (members, whiteouts)
    layer = [D("etc/")] + first + second
    fs = _stack(LOWER, layer)
    assert fs.lstat("/top").mode == stat.S_IFREG | 0o600
    assert fs.sha256_many(["/top"]) == {"/top": _sha(b"new top")}
    assert fs.lstat("/etc/keep.conf").kind == "symlink"
    assert fs.lstat("/etc/keep.conf").link_target == "/elsewhere"
    assert sorted(fs.listdir("/etc")) == ["gone.conf", "keep.conf"]


def test_whiteouts_never_appear_as_entries():
    fs = _stack(
        LOWER,
        [
            D("d/"),
            W("d/" + OPQ),
            W("d/.wh.a"),
            D("fresh/"),
            W("fresh/" + OPQ),
            W(".wh.nothing"),
            W("fresh/.wh.nothing"),
        ],
        [W(".wh..wh..opq-lookalike"), D("e/"), W("e/.wh.x")],
    )
    assert all(".wh." not in e.path for e in fs.walk())
    assert fs.listdir("/fresh") == [] and fs.listdir("/d") == []
    assert fs.lstat("/d/" + OPQ) is None and fs.lstat("/fresh/" + OPQ) is None


# -- opaque directories ---------------------------------------------------------------------

OPAQUE_UPPER = [
    D("d/", 0o750),
    F("d/before", b"b"),
    W("d/" + OPQ),
    F("d/after", b"a"),
    D("d/sub/"),
    F("d/sub/new", b"n"),
]


@pytest.mark.parametrize("position", range(1, len(OPAQUE_UPPER) + 1))
def test_opaque_directory_hides_lower_children_only(position):
    """The opaque marker at every position in the layer: same result each time."""
    members = [m for m in OPAQUE_UPPER if m[0] != "d/" + OPQ]
    members.insert(position, W("d/" + OPQ))
    fs = _stack(LOWER, members)
    assert sorted(fs.listdir("/d")) == ["after", "before", "sub"]
    assert fs.listdir("/d/sub") == ["new"]
    for gone in ("/d/a", "/d/link", "/d/sub/old"):
        assert fs.lstat(gone) is None, gone
    assert fs.lstat("/d").mode == stat.S_IFDIR | 0o750
    assert fs.sha256_many(["/d/before", "/d/after", "/d/sub/new"]) == {
        "/d/before": _sha(b"b"),
        "/d/after": _sha(b"a"),
        "/d/sub/new": _sha(b"n"),
    }
    # Outside d nothing moved.
    assert sorted(fs.listdir("/")) == ["d", "etc", "top"]
    assert sorted(fs.listdir("/etc")) == ["gone.conf", "keep.conf"]


def test_opaque_marker_before_its_directory_member():
    fs = _stack(LOWER, [W("d/" + OPQ), D("d/", 0o700), F("d/x", b"x")])
    assert fs.listdir("/d") == ["x"] and fs.lstat("/d").mode == stat.S_IFDIR | 0o700


def test_opaque_root_hides_every_lower_entry():
    fs = _stack(LOWER, [F("new", b"n"), W(OPQ)])
    assert _paths(fs) == ["/", "/new"]


def test_opaque_only_reaches_the_layers_below_not_later_ones():
    fs = _stack(LOWER, [D("d/"), W("d/" + OPQ)], [D("d/"), F("d/later", b"l")])
    assert fs.listdir("/d") == ["later"]


@pytest.mark.parametrize(
    "order",
    [
        "opaque-first",
        "opaque-last",
    ],
)
def test_opaque_keeps_the_layers_own_files_under_implied_directories(order):
    members = [D("d/"), F("d/sub/new", b"n")]  # no d/sub/ member: d/sub is implied
    members.insert(1 if order == "opaque-first" else 2, W("d/" + OPQ))
    fs = _stack(LOWER, members)
    assert fs.lstat("/d/sub/old") is None and fs.lstat("/d/a") is None
    assert fs.listdir("/d/sub") == ["new"]
    assert fs.sha256_many(["/d/sub/new"]) == {"/d/sub/new": _sha(b"n")}


@pytest.mark.parametrize(
    "order",
    [
        "whiteout-first",
        "whiteout-last",
    ],
)
def test_file_whiteout_keeps_the_layers_own_files_under_an_implied_directory(order):
    members = [F("d/new", b"n")]
    members.insert(0 if order == "whiteout-first" else 1, W(".wh.d"))
    fs = _stack(LOWER, members)
    assert fs.lstat("/d/new") is not None
    assert fs.listdir("/d") == ["new"]  # the lower d/a, d/sub, d/link are gone either way


@pytest.mark.parametrize(
    "order",
    [
        "whiteout-first",
        "whiteout-last",
    ],
)
def test_whiteout_of_a_directory_the_layer_also_lists_removes_the_lower_children(order):
    members = [D("d/", 0o700), F("d/new", b"n")]
    members.insert(0 if order == "whiteout-first" else 2, W(".wh.d"))
    fs = _stack(LOWER, members)
    assert fs.lstat("/d").mode == stat.S_IFDIR | 0o700
    assert fs.listdir("/d") == ["new"]


# -- replacement and re-listing -------------------------------------------------------------


@pytest.mark.parametrize("replacement", [F("d", b"now a file"), L("d", "/etc")])
def test_a_non_directory_replacing_a_lower_directory_drops_its_subtree(replacement):
    fs = _stack(LOWER, [replacement])
    assert fs.lstat("/d").kind == replacement[1]
    for path in ("/d/a", "/d/sub", "/d/sub/old", "/d/link"):
        assert fs.lstat(path) is None, path
    assert sorted(fs.listdir("/")) == ["d", "etc", "top"]
    with pytest.raises(RootFSError, match="not a directory"):
        fs.listdir("/d")
    # Making d a directory again later does not bring the old children back.
    fs3 = _stack(LOWER, [replacement], [D("d/")])
    assert fs3.listdir("/d") == []


def test_a_directory_replacing_a_lower_file():
    fs = _stack(LOWER, [D("top/", 0o711), F("top/inner", b"i")])
    assert fs.lstat("/top").mode == stat.S_IFDIR | 0o711
    assert fs.listdir("/top") == ["inner"]
    with pytest.raises(RootFSError, match="not a regular file"):
        fs.sha256_many(["/top"])


def test_a_relisted_directory_keeps_lower_children_and_takes_the_new_mode():
    fs = _stack(
        [D("d/", 0o700), F("d/f", b"f"), D("d/sub/", 0o700), F("d/sub/g", b"g")],
        [D("d/", 0o751), D("d/sub/", 0o555)],
    )
    assert fs.lstat("/d").mode == stat.S_IFDIR | 0o751
    assert fs.lstat("/d/sub").mode == stat.S_IFDIR | 0o555
    assert sorted(fs.listdir("/d")) == ["f", "sub"] and fs.listdir("/d/sub") == ["g"]


def test_a_layers_root_member_does_not_change_the_root():
    fs = _stack([("./", "dir", None, 0o700), F("./x", b"x")])
    assert fs.lstat("/").mode == stat.S_IFDIR | 0o755
    assert fs.listdir("/") == ["x"]


# -- contents: sha256, keep, hard links -----------------------------------------------------


def test_sha256_of_files_from_every_layer():
    big = bytes(range(256)) * 5000  # > 1 MiB: several chunks
    fs = _stack(
        [D("bin/"), F("bin/a", b"a1"), F("bin/b", b"b1"), F("bin/empty", b"")],
        [D("bin/"), F("bin/b", b"b2"), F("bin/c", big)],
        [F("bin/d", b"d3"), H("bin/c-link", "bin/c"), H("bin/a-link", "bin/a")],
    )
    want = {
        "/bin/a": b"a1",
        "/bin/b": b"b2",
        "/bin/c": big,
        "/bin/d": b"d3",
        "/bin/empty": b"",
        "/bin/c-link": big,
        "/bin/a-link": b"a1",
    }
    assert fs.sha256_many(want) == {p: _sha(c) for p, c in want.items()}
    assert {p: fs.lstat(p).size for p in want} == {p: len(c) for p, c in want.items()}
    assert fs.head("/bin/c") == big[:256]


def test_keep_predicate_holds_content_from_each_layer():
    keep = keep_paths("/etc/app.conf", "/opt/lib.so", "/opt/later.so")
    fs = _stack(
        [
            D("etc/"),
            F("etc/app.conf", b"v1"),
            D("opt/"),
            F("opt/lib.so", b"lib"),
            F("opt/other", b"not kept"),
        ],
        [D("etc/"), F("etc/app.conf", b"v2"), D("opt/"), F("opt/later.so", b"later")],
        keep=keep,
    )
    assert fs.read_bytes("/etc/app.conf") == b"v2"  # the upper layer's content
    assert fs.read_bytes("/opt/lib.so") == b"lib"  # kept by the lower layer, untouched above
    assert fs.read_bytes("/opt/later.so") == b"later"
    with pytest.raises(RootFSError, match="keep"):
        fs.read_bytes("/opt/other")
    assert fs.head("/opt/other") == b"not kept"


def test_keep_is_asked_per_layer():
    data1, data2 = _layer([F("a", b"one")]), _layer([F("a", b"two")])
    fs = TarRootFS.empty()
    fs.apply_layer([data1], keep_paths("/a"))
    assert fs.read_bytes("/a") == b"one"
    fs.apply_layer([data2])  # replaced by a layer that keeps nothing
    with pytest.raises(RootFSError, match="keep"):
        fs.read_bytes("/a")
    assert fs.sha256_many(["/a"]) == {"/a": _sha(b"two")}


def test_a_whited_out_file_takes_its_kept_content_with_it():
    fs = _stack([F("a", b"secret")], [W(".wh.a")], keep=keep_paths("/a"))
    with pytest.raises(RootFSError, match="no such file"):
        fs.read_bytes("/a")


def test_a_broken_layer_is_a_rootfs_error():
    fs = TarRootFS.empty()
    with pytest.raises(RootFSError, match="not a readable tar"):
        fs.apply_layer([b"not a tar" * 100])


# -- stacks of random layers against a model ------------------------------------------------

# A small universe of paths, so layers collide often. Any may be a file, a symlink or a dir.
UNIVERSE = ["a", "a/b", "a/b/f", "a/b/g", "a/h", "c", "c/i", "c/j", "top"]
_CONTENTS = [b"", b"x", b"y" * 513, bytes(range(256)) * 3]
_MODES = [0o755, 0o700, 0o750, 0o644, 0o600, 0o4755]


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@st.composite
def _layers(draw):
    """A layer as docker writes one: every member's parent directories are members too, and
    come before it; whiteouts may sit anywhere. A whiteout never names a directory the same
    layer lists (that combination has its own tests above)."""
    kinds = draw(
        st.dictionaries(
            st.sampled_from(UNIVERSE),
            st.sampled_from(["file", "file", "symlink", "dir"]),
            max_size=6,
        )
    )
    opaques = draw(st.sets(st.sampled_from(["", "a", "a/b", "c"]), max_size=2))
    whiteouts = draw(st.sets(st.sampled_from(UNIVERSE), max_size=3))
    dirs = {p for p, k in kinds.items() if k == "dir"}
    dirs |= {a for p in kinds for a in _ancestors(p)}
    dirs |= {o for o in opaques if o} | {a for o in opaques for a in _ancestors(o)}
    dirs |= {a for w in whiteouts for a in _ancestors(w)}
    for d in dirs:
        kinds[d] = "dir"
    whiteouts = {w for w in whiteouts if w not in dirs}

    members = {}
    for path, kind in kinds.items():
        mode = draw(st.sampled_from(_MODES))
        if kind == "dir":
            members[path] = D(path + "/", mode)
        elif kind == "file":
            members[path] = F(path, draw(st.sampled_from(_CONTENTS)), mode)
        else:
            members[path] = L(path, draw(st.sampled_from(["/top", "b/f", "../c", "x" * 120])))
    order = draw(st.permutations(sorted(members)))
    order = sorted(order, key=lambda p: p.count("/"))  # parents first, random otherwise
    tar_members = [members[p] for p in order]
    markers = [W((o + "/" if o else "") + OPQ) for o in sorted(opaques)]
    markers += [
        W(posixpath.join(posixpath.dirname(w), ".wh." + posixpath.basename(w)))
        for w in sorted(whiteouts)
    ]
    for marker in markers:
        tar_members.insert(draw(st.integers(0, len(tar_members))), marker)
    return tar_members


def _model_apply(state: dict, members: list) -> None:
    """The spec, order-free: whiteouts first (on the lower state), then the members in order."""

    def drop(path):
        for p in [p for p in state if p == path or p.startswith(path + "/")]:
            del state[p]

    for name, kind, _payload, _mode in members:
        if kind != "whiteout":
            continue
        parent, base = posixpath.split(name)
        if base == OPQ:
            for p in [p for p in state if p.startswith(parent + "/") or (not parent and p)]:
                del state[p]
        else:
            drop(posixpath.join(parent, base[len(".wh.") :]))
    for name, kind, payload, mode in members:
        path = name.rstrip("/")
        if kind == "dir":
            if state.get(path, ("",))[0] == "dir":
                state[path] = ("dir", stat.S_IFDIR | mode, None)
                continue
            drop(path)
            state[path] = ("dir", stat.S_IFDIR | mode, None)
        elif kind == "file":
            drop(path)
            state[path] = ("file", stat.S_IFREG | mode, _sha(payload))
        elif kind == "symlink":
            drop(path)
            state[path] = ("symlink", stat.S_IFLNK | 0o777, payload)


def _observed(fs: TarRootFS) -> dict:
    out = {}
    for e in fs.walk():
        if e.path == "/":
            continue
        detail = (
            fs.sha256_many([e.path])[e.path]
            if e.kind == "file"
            else e.link_target
            if e.kind == "symlink"
            else None
        )
        out[e.path[1:]] = (e.kind, e.mode, detail)
    return out


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(_layers(), min_size=2, max_size=4))
def test_random_layer_stacks_match_the_model(layers):
    fs = TarRootFS.empty()
    state: dict = {}
    for members in layers:
        data = _layer(members)
        fs.apply_layer([data[i : i + 700] for i in range(0, len(data), 700)])
        _model_apply(state, members)
        assert _observed(fs) == state, members
        _assert_consistent(fs)
        for path, (kind, _, _) in state.items():
            if kind == "dir":
                children = {p[len(path) + 1 :] for p in state if posixpath.dirname(p) == path}
                assert set(fs.listdir("/" + path)) == children
        assert set(fs.listdir("/")) == {p for p in state if "/" not in p}
