"""TarReader against Python's tarfile: random archives in ustar, GNU and PAX form, fed in
random chunk sizes, must read member for member and byte for byte as tarfile reads them; broken
streams must raise TarFormatError instead of ending quietly or reading garbage."""

from __future__ import annotations

import gzip
import io
import random
import signal
import tarfile
from contextlib import contextmanager
from itertools import cycle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppml_build.image.tarstream import (
    BLOCK,
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Member,
    TarFormatError,
    TarReader,
)

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}

# tarfile's type bytes -> TarReader's type strings ('\0' and '7' are plain files to both).
_TYPE = {
    tarfile.REGTYPE: REGULAR,
    tarfile.AREGTYPE: REGULAR,
    tarfile.CONTTYPE: REGULAR,
    tarfile.LNKTYPE: HARDLINK,
    tarfile.SYMTYPE: SYMLINK,
    tarfile.CHRTYPE: CHARDEV,
    tarfile.BLKTYPE: BLOCKDEV,
    tarfile.DIRTYPE: DIRECTORY,
    tarfile.FIFOTYPE: FIFO,
}

_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


# -- helpers --------------------------------------------------------------------------------


def _content(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _chunks(data: bytes, sizes) -> list[bytes]:
    """``data`` cut in pieces whose sizes cycle through ``sizes`` (0 gives an empty chunk)."""
    assert any(sizes)
    out, pos = [], 0
    for size in cycle(sizes):
        if pos >= len(data):
            return out
        out.append(data[pos : pos + size])
        pos += size


@contextmanager
def _time_limit(seconds: float):
    """Fail instead of hanging (a reader that loops forever on a bad stream is a bug too)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read_all(chunks, *, plan=None) -> list[tuple]:
    """Every member as (name, type, mode, size, linkname, content) as TarReader gives them.

    ``plan[i]`` says what the consumer does with member i's data: "all" reads it, "first" reads
    one piece and drops the rest, "none" never calls data(). Content is then the bytes read."""
    reader = TarReader(chunks)
    out = []
    for i, m in enumerate(reader):
        assert isinstance(m, Member)
        action = plan[i % len(plan)] if plan else "all"
        if action == "all":
            pieces = []
            for piece in reader.data():
                assert isinstance(piece, memoryview)
                pieces.append(bytes(piece))  # copy before the next chunk is pulled
            content = b"".join(pieces)
        elif action == "first":
            content = next((bytes(p) for p in reader.data()), b"")
        else:
            content = None
        out.append((m.name, m.type, m.mode, m.size, m.linkname, content))
    return out


def _tarfile_view(data: bytes) -> list[tuple]:
    """The same tuples as tarfile reads them (names of dirs lose their trailing '/')."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for ti in tar:
            content = tar.extractfile(ti).read() if ti.isreg() else b""
            out.append(
                (
                    ti.name,
                    _TYPE[ti.type],
                    ti.mode,
                    ti.size if ti.isreg() else 0,
                    ti.linkname,
                    content,
                )
            )
    return out


def _comparable(ours: list[tuple]) -> list[tuple]:
    return [
        ((name.rstrip("/") if kind == DIRECTORY else name), kind, mode, size, link, content)
        for name, kind, mode, size, link, content in ours
    ]


def _info(name, kind, mode=0o644, size=0, linkname="") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = _KINDS[kind]
    info.mode = mode
    info.size = size if kind == "file" else 0
    info.linkname = linkname
    info.mtime = 1_700_000_000
    if kind in ("chr", "blk"):
        info.devmajor, info.devminor = 8, 1
    return info


def _archive(specs, fmt, **open_kw) -> tuple[bytes, list[tuple]]:
    """Write ``specs`` (name, kind, mode, size, seed, linkname) with tarfile in format ``fmt``.

    Members the format cannot hold (a ustar name that does not split, a ustar link > 100
    bytes) are left out. Returns the bytes and the (name, kind, ...) actually written."""
    out = io.BytesIO()
    written = []
    with tarfile.open(fileobj=out, mode="w", format=fmt, **open_kw) as tar:
        for name, kind, mode, size, seed, linkname in specs:
            info = _info(name, kind, mode, size, linkname)
            try:
                info.tobuf(fmt, tar.encoding, tar.errors)
            except ValueError:
                continue
            payload = _content(info.size, seed)
            tar.addfile(info, io.BytesIO(payload) if kind == "file" else None)
            written.append((name, kind, mode, info.size, linkname, payload))
    return out.getvalue(), written


def _fix_checksum(header: bytes | bytearray) -> bytes:
    header = bytearray(header)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


# -- strategies -----------------------------------------------------------------------------

# Non-ASCII letters of 2, 3 and 4 UTF-8 bytes, a byte that is not UTF-8 (surrogateescape'd),
# and characters that mean something elsewhere (space and '=' in PAX records, newline).
_ALPHABET = "abcxyz0189_-.é日ß🙂\udcff =\n"
_component = st.text(alphabet=_ALPHABET, min_size=1, max_size=40).filter(
    lambda s: s not in (".", "..")
)


def _padded(parts: list[str], target: int) -> str:
    """Join ``parts`` and add components until the name is exactly ``target`` characters."""
    name = "/".join(parts)
    need = target - len(name)
    while need >= 2:
        k = min(60, need - 1)
        name += "/" + "L" * k
        need -= k + 1
    if need == 1:
        name += "M"
    return name


_names = st.builds(
    _padded,
    st.lists(_component, min_size=1, max_size=6),
    st.sampled_from([0, 0, 0, 99, 100, 101, 155, 156, 254, 255, 256, 257, 400]),
)
_sizes = st.one_of(
    st.sampled_from([0, 1, 511, 512, 513, 1023, 1024, 1025, 10240]),
    st.integers(0, 3000),
    st.sampled_from([200 * 1024 + 1, 300 * 1024 + 13]),
)
_modes = st.one_of(
    st.sampled_from([0o644, 0o755, 0o600, 0o4755, 0o2750, 0o1777, 0]), st.integers(0, 0o7777)
)


@st.composite
def _specs(draw):
    specs = []
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(
            st.sampled_from(
                ["file", "file", "file", "dir", "symlink", "hardlink", "fifo", "chr", "blk"]
            )
        )
        name = draw(_names)
        linkname = ""
        if kind == "symlink":
            linkname = draw(_names)
        elif kind == "hardlink":
            earlier = [s[0] for s in specs if s[1] == "file"]
            linkname = draw(st.sampled_from(earlier)) if earlier else draw(_names)
        size = draw(_sizes) if kind == "file" else 0
        specs.append((name, kind, draw(_modes), size, draw(st.integers(0, 2**32)), linkname))
    return specs


_chunk_sizes = st.one_of(
    st.sampled_from([[1], [2], [3], [7], [511], [512], [513], [1, 1023], [0, 5, 1], [65536]]),
    st.lists(st.integers(0, 5000), min_size=1, max_size=8).filter(any),
)
_plans = st.lists(st.sampled_from(["all", "first", "none"]), min_size=1, max_size=9)

_SETTINGS = settings(
    max_examples=35,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _bounded(sizes: list[int], total: int) -> list[int]:
    # 1-byte chunks over a few hundred KiB is just slow: add one big chunk to the cycle.
    return sizes + [65536] if total > 100_000 and max(sizes) < 4096 else sizes


# -- agreement with tarfile -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@_SETTINGS
@given(specs=_specs(), sizes=_chunk_sizes)
def test_members_and_contents_match_tarfile(fmt, specs, sizes):
    data, written = _archive(specs, fmt)
    ours = _read_all(_chunks(data, _bounded(sizes, len(data))))
    assert _comparable(ours) == _tarfile_view(data)
    # ... and what was written, with the name exactly as stored (a dir keeps its '/').
    assert [
        (name, kind, mode, size, link, content) for name, kind, mode, size, link, content in ours
    ] == [
        (name + "/" if kind == "dir" else name, _TYPE[_KINDS[kind]], mode, size, link, content)
        for name, kind, mode, size, link, content in written
    ]


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@_SETTINGS
@given(specs=_specs(), sizes=_chunk_sizes, plan=_plans)
def test_skipping_data_does_not_derail_the_next_members(fmt, specs, sizes, plan):
    data, _ = _archive(specs, fmt)
    expected = _tarfile_view(data)
    ours = _comparable(_read_all(_chunks(data, _bounded(sizes, len(data))), plan=plan))
    assert len(ours) == len(expected)
    for i, (got, want) in enumerate(zip(ours, expected)):
        assert got[:5] == want[:5]
        action = plan[i % len(plan)]
        if action == "all":
            assert got[5] == want[5]
        elif action == "first":
            assert want[5].startswith(got[5]) and (got[5] or not want[5])


ALL_KINDS = [
    ("etc/", "dir", 0o755, 0, 0, ""),
    ("etc/empty", "file", 0o600, 0, 1, ""),
    ("etc/" + "é" * 100 + "/" + "n" * 90 + ".conf", "file", 0o640, 511, 2, ""),  # 300 bytes
    ("usr/lib/" + "x" * 95, "file", 0o755, 512, 3, ""),  # > 100: ustar prefix / GNU 'L'
    ("usr/lib/big.so", "file", 0o755, 300 * 1024 + 13, 4, ""),
    ("usr/lib/odd", "file", 0o644, 513, 5, ""),
    ("usr/lib/alias.so", "hardlink", 0o755, 0, 0, "usr/lib/big.so"),
    ("lib", "symlink", 0o777, 0, 0, "usr/lib"),
    ("long-link", "symlink", 0o777, 0, 0, "/" + "/".join(["target"] * 30)),  # 210 chars
    ("run/pipe", "fifo", 0o644, 0, 0, ""),
    ("dev/sda1", "blk", 0o660, 0, 0, ""),
    ("dev/tty0", "chr", 0o620, 0, 0, ""),
]


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_one_byte_chunks(fmt):
    data, written = _archive(ALL_KINDS, fmt)
    dropped = {spec[0] for spec in ALL_KINDS} - {w[0] for w in written}
    # ustar holds neither a 300-byte name nor a 210-byte link; GNU and PAX hold everything.
    assert dropped == ({ALL_KINDS[2][0], "long-link"} if fmt == tarfile.USTAR_FORMAT else set())
    assert _comparable(_read_all(bytes([b]) for b in data)) == _tarfile_view(data)


def test_ustar_prefix_field_is_joined_to_the_name():
    name = "p" * 120 + "/" + "n" * 90  # 211 chars: only fits ustar split at the '/'
    data, written = _archive([(name, "file", 0o644, 3, 7, "")], tarfile.USTAR_FORMAT)
    assert written and data[345 : 345 + 120] == b"p" * 120 and data[0:90] == b"n" * 90
    assert data[257:263] == b"ustar\0"
    [member] = list(TarReader([data]))
    assert (member.name, member.size) == (name, 3)


def test_gnu_long_name_and_long_link_headers():
    name, link = "d/" + "n" * 150, "t/" + "l" * 140
    data, _ = _archive([(name, "symlink", 0o777, 0, 0, link)], tarfile.GNU_FORMAT)
    assert {data[156:157], data[1024 + 156 : 1024 + 157]} == {b"K", b"L"}  # the headers used
    members = list(TarReader([data]))
    assert members == [Member(name, SYMLINK, 0o777, 0, link)]


def test_pax_header_overrides_path_and_size():
    info = _info("short", "file", 0o600, size=700)
    info.pax_headers = {"path": "from/pax/" + "ü" * 80, "size": "700"}
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    main = bytearray(header[-BLOCK:])
    main[124:136] = b"%011o\0" % 5  # the ustar size field disagrees: the PAX record wins
    data = header[:-BLOCK] + _fix_checksum(main) + _content(700, 1) + bytes(-700 % BLOCK + 1024)
    ours = _read_all([data])
    assert ours == [("from/pax/" + "ü" * 80, REGULAR, 0o600, 700, "", _content(700, 1))]
    assert _comparable(ours) == _tarfile_view(data)


def test_pax_global_header_applies_to_following_members():
    def member(name, kind, linkname=""):
        return _info(name, kind, linkname=linkname).tobuf(
            tarfile.PAX_FORMAT, "utf-8", "surrogateescape"
        )

    glob = tarfile.TarInfo.create_pax_global_header
    data = b"".join(
        [
            member("before", "symlink", "own-before"),
            glob({"linkpath": "from-global"}),
            member("after-1", "symlink", "own-1"),
            member("after-2", "dir"),
            glob({"linkpath": "second-global"}),  # a later 'g' updates the global set
            member("after-3", "symlink", "ü-own"),  # its own 'x' (non-ASCII) beats the global
            member("after-4", "symlink", "own-4"),
            bytes(1024),
        ]
    )
    ours = _read_all([data[i : i + 100] for i in range(0, len(data), 100)])
    assert [(name, link) for name, _, _, _, link, _ in ours] == [
        ("before", "own-before"),
        ("after-1", "from-global"),
        ("after-2/", "from-global"),
        ("after-3", "ü-own"),
        ("after-4", "second-global"),
    ]
    assert _comparable(ours) == _tarfile_view(data)


def test_pax_global_header_written_by_tarfile():
    specs = [("a", "symlink", 0o777, 0, 0, "x"), ("b", "file", 0o644, 9, 1, "")]
    data, _ = _archive(specs, tarfile.PAX_FORMAT, pax_headers={"linkpath": "g"})
    assert data[156:157] == b"g"
    ours = _read_all([data])
    assert [link for _, _, _, _, link, _ in ours] == ["g", "g"]
    assert _comparable(ours) == _tarfile_view(data)


def test_base256_size_field():
    info = _info("big-field", "file", size=1000)
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    header[124:136] = b"\x80" + (1000).to_bytes(11, "big")  # GNU base-256, as for sizes >= 8 GiB
    data = _fix_checksum(header) + _content(1000, 3) + bytes(24 + 1024)
    ours = _read_all([data])
    assert ours == [("big-field", REGULAR, 0o644, 1000, "", _content(1000, 3))]
    assert _comparable(ours) == _tarfile_view(data)


@settings(database=None)
@given(st.integers(-(256**11), -1))
def test_negative_base256_numbers_match_tarfile(value):
    from ppml_build.image.tarstream import _number

    field = tarfile.itn(value, 12, tarfile.GNU_FORMAT)
    assert _number(field) == tarfile.nti(field) == value


@settings(database=None)
@given(st.integers(0, 256**11 - 1))
def test_positive_base256_numbers_match_tarfile(value):
    from ppml_build.image.tarstream import _number

    field = bytes([0x80]) + value.to_bytes(11, "big")
    assert _number(field) == tarfile.nti(field) == value


def test_header_only_types_carry_no_data_whatever_their_size_field():
    headers = []
    for name, kind in [("d", "dir"), ("s", "symlink"), ("p", "fifo")]:
        h = bytearray(
            _info(name, kind, linkname="t" if kind == "symlink" else "").tobuf(
                tarfile.USTAR_FORMAT, "utf-8", "strict"
            )
        )
        h[124:136] = b"%011o\0" % 1000  # a size with no data behind it
        headers.append(_fix_checksum(h))
    data = b"".join(headers) + _archive([("f", "file", 0o644, 10, 9, "")], tarfile.USTAR_FORMAT)[0]
    ours = _read_all([data])
    assert [(n, k, s) for n, k, _, s, _, _ in ours] == [
        ("d/", DIRECTORY, 0),
        ("s", SYMLINK, 0),
        ("p", FIFO, 0),
        ("f", REGULAR, 10),
    ]
    assert _comparable(ours) == _tarfile_view(data)


def test_data_is_zero_copy_slices_of_the_chunks():
    data, _ = _archive([("f", "file", 0o644, 5000, 4, "")], tarfile.PAX_FORMAT)
    chunks = _chunks(data, [700, 1300])
    reader = TarReader(chunks)
    next(reader)
    pieces = list(reader.data())
    assert all(any(p.obj is c for c in chunks) for p in pieces)
    assert b"".join(bytes(p) for p in pieces) == _content(5000, 4)


# -- ends and broken streams ----------------------------------------------------------------


def _small_archive(fmt=tarfile.PAX_FORMAT):
    specs = [
        ("a/", "dir", 0o755, 0, 0, ""),
        ("a/one", "file", 0o644, 700, 1, ""),
        ("a/" + "long" * 40, "file", 0o644, 513, 2, ""),  # 'x' or 'L' header before it
        ("a/empty", "file", 0o644, 0, 3, ""),
        ("a/link", "symlink", 0o777, 0, 0, "t" * 150),
        ("a/last", "file", 0o600, 1024, 4, ""),
    ]
    return _archive(specs, fmt)[0]


def _layout(data: bytes):
    """(header offsets, data offsets, first byte after the last member) as tarfile sees them."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
    starts = [ti.offset for ti in members]
    data_starts = [ti.offset_data for ti in members]
    last = members[-1]
    end = last.offset_data + (-(-last.size // BLOCK) * BLOCK if last.isreg() else 0)
    return starts, data_starts, end


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_no_end_of_archive_blocks_ends_cleanly(fmt):
    data = _small_archive(fmt)
    _, _, end = _layout(data)
    assert data[end:].count(0) == len(data) - end >= 1024
    for sizes in ([len(data)], [1], [511]):
        assert _read_all(_chunks(data[:end], sizes)) == _read_all([data])
    assert _read_all([]) == [] and _read_all([b"", b""]) == []


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
@pytest.mark.parametrize("plan", ["all", "none"])
def test_truncation_anywhere_but_between_members_is_an_error(fmt, plan):
    data = _small_archive(fmt)
    starts, data_starts, end = _layout(data)
    full = _read_all([data])
    boundaries = set(starts) | {end}
    pending = {d - BLOCK for s, d in zip(starts, data_starts) if d - BLOCK != s}
    for cut in range(0, end):
        if cut in pending:
            continue  # after an extended header, before its member: an error (tested below)
        pieces = _chunks(data[:cut], [333])
        if cut in boundaries:
            n = sorted(boundaries).index(cut)
            assert _read_all(pieces, plan=[plan]) == [
                m if plan == "all" else m[:5] + (None,) for m in full[:n]
            ], cut
        else:
            with pytest.raises(TarFormatError):
                _read_all(pieces, plan=[plan])


def test_data_of_a_truncated_member_raises_while_it_is_read():
    data = _archive([("f", "file", 0o644, 2000, 5, "")], tarfile.GNU_FORMAT)[0]
    for cut in (BLOCK, BLOCK + 1, BLOCK + 1000, BLOCK + 1999):  # inside the data
        reader = TarReader(_chunks(data[:cut], [300]))
        assert next(reader).size == 2000
        with pytest.raises(TarFormatError, match="middle of a file"):
            for _ in reader.data():
                pass
    for cut in (BLOCK + 2000, BLOCK + 2047):  # all data there, its block's padding cut
        reader = TarReader(_chunks(data[:cut], [300]))
        next(reader)
        assert b"".join(bytes(p) for p in reader.data()) == _content(2000, 5)
        with pytest.raises(TarFormatError):
            next(reader)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_truncation_after_an_extended_header_is_an_error(fmt):
    data, _ = _archive([("n" * 150, "file", 0o644, 10, 1, "")], fmt)
    assert data[156:157] in (b"L", b"x")
    cut = _layout(data)[1][0] - BLOCK  # the member's own header starts here
    assert cut >= 2 * BLOCK
    with pytest.raises(tarfile.ReadError):
        tarfile.open(fileobj=io.BytesIO(data[:cut] + bytes(1024)), mode="r:").getmembers()
    with pytest.raises(TarFormatError):
        _read_all([data[:cut]])


def test_garbage_is_an_error():
    members = _small_archive()
    for garbage in [
        b"this is not a tar archive\n" * 40,
        b'{"schemaVersion": 2, "layers": []}',
        gzip.compress(members),  # a compressed layer fed without decompressing
        b"\xff" * 512,
        b"x",
    ]:
        with pytest.raises(TarFormatError):
            _read_all([garbage])


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(min_size=1, max_size=2000).filter(lambda b: any(b[:BLOCK])))
def test_random_bytes_are_an_error(garbage):
    with pytest.raises(TarFormatError):
        _read_all(_chunks(garbage, [97]))


def test_a_corrupted_header_anywhere_is_an_error():
    data = _small_archive()
    starts, data_starts, _ = _layout(data)
    # Every header block: extended ('x') headers and the members' own.
    headers = sorted(set(starts) | {d - BLOCK for d in data_starts})
    assert len(headers) > 6
    for offset in headers:
        for pos in (0, 100, 124, 156, 157):  # name, mode, size, type, linkname
            broken = bytearray(data)
            broken[offset + pos] ^= 0x41
            with pytest.raises(TarFormatError, match="checksum"):
                _read_all([bytes(broken)], plan=["none"])
        broken = bytearray(data)
        broken[offset + 148 : offset + 156] = b"zzzzzz\0 "  # the checksum field itself
        with pytest.raises(TarFormatError):
            _read_all([bytes(broken)], plan=["none"])


def test_sparse_members_are_refused():
    info = _info("holes", "file", size=0)
    info.type = tarfile.GNUTYPE_SPARSE
    data = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict") + bytes(1024)
    with pytest.raises(TarFormatError, match="sparse"):
        list(TarReader([data]))


@pytest.mark.parametrize("kind", [b"Z", b"V", b"M", b"A"])
def test_unknown_member_types_are_refused(kind):
    header = bytearray(_info("odd", "file").tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))
    header[156:157] = kind
    data = _archive([("first", "file", 0o644, 3, 1, "")], tarfile.USTAR_FORMAT)[0]
    data = data[: 2 * BLOCK] + _fix_checksum(header) + bytes(1024)
    reader = TarReader([data])
    assert next(reader).name == "first"
    with pytest.raises(TarFormatError, match="unknown tar member type"):
        next(reader)


@pytest.mark.parametrize("how", ["pax", "base256"])
def test_negative_sizes_are_refused(how):
    info = _info("neg", "file", size=0)
    if how == "pax":
        info.pax_headers = {"size": "-1"}
        data = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict") + b"A" * BLOCK + bytes(1024)
    else:
        header = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict"))
        header[124:136] = b"\xff" * 12  # base-256 for -1
        data = _fix_checksum(header) + b"A" * BLOCK + bytes(1024)
    with _time_limit(0.5), pytest.raises(TarFormatError):
        _read_all([data])
