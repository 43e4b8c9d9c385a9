"""Gramine 1.9's encrypted-files format (gramine.protected_files): round trips at the geometry's
boundaries, the on-disk layout checked against protected_files_format.h, and every refusal."""

from __future__ import annotations

import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ppml_build.gramine import protected_files as pf

KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
BOUND = "/srv/data/file.bin"

# Written here from protected_files_format.h, not taken from the module under test.
NODE = 4096
HEAD_BYTES = 3072  # MD_USER_DATA_SIZE
DATA_PER_MHT = 96  # ATTACHED_DATA_NODES_COUNT
CHILD_MHTS = 32  # CHILD_MHT_NODES_COUNT
# metadata_plaintext_t: file_id u64, major u8, minor u8, nonce[32], mac[16], feature_flags u8
PLAIN_SIZE = 8 + 1 + 1 + 32 + 16 + 1
# metadata_decrypted_t: file_path[772], file_size u64, root key[16], root mac[16], data[3072]
DECRYPTED_SIZE = 772 + 8 + 16 + 16 + 3072


def expected_nodes(size: int) -> int:
    data = 0 if size <= HEAD_BYTES else (size - HEAD_BYTES + NODE - 1) // NODE
    return 1 + data + (data + DATA_PER_MHT - 1) // DATA_PER_MHT


def encrypt_bytes(plain: bytes, key: bytes = KEY, bound: str = BOUND, **kwargs) -> bytes:
    buf = bytearray()

    def write_at(offset: int, data: bytes) -> None:
        end = offset + len(data)
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[offset:end] = data

    returned = pf.encrypt(
        lambda offset, n: plain[offset : offset + n], len(plain), write_at, key, bound, **kwargs
    )
    assert returned == len(buf)
    return bytes(buf)


def decrypt_bytes(blob: bytes, key: bytes = KEY, expected: str | None = BOUND):
    out: list[bytes] = []
    header = pf.decrypt(
        lambda first, count: blob[first * NODE : (first + count) * NODE],
        len(blob),
        out.append,
        key,
        expected,
    )
    return b"".join(out), header


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


def pattern(size: int) -> bytes:
    block = os.urandom(4093)  # a length prime to 4096 so no two nodes hold the same bytes
    return (block * (size // len(block) + 1))[:size]


class Recorder:
    """A seeded random source that remembers what it gave."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.calls: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        data = self.rng.randbytes(n)
        self.calls.append(data)
        return data


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        3071,
        3072,
        3073,
        3072 + 4096,
        3072 + 96 * 4096,
        3072 + 96 * 4096 + 1,
    ],
)
def test_round_trip_at_geometry_boundaries(size):
    plain = os.urandom(size)
    blob = encrypt_bytes(plain)
    assert len(blob) == pf.encrypted_size(size) == expected_nodes(size) * NODE
    got, header = decrypt_bytes(blob)
    assert got == plain
    assert header.size == size
    assert header.bound_path == BOUND
    assert header.version == (2, 0)


def test_round_trip_with_a_second_level_of_child_mht_nodes():
    # MHT 0 is the root, 1..32 its children; MHT 33 is the first grandchild (a child of MHT 1).
    size = HEAD_BYTES + (1 + CHILD_MHTS) * DATA_PER_MHT * NODE + 5000
    plain = pattern(size)
    blob = encrypt_bytes(plain)
    n_data = -(-(size - HEAD_BYTES) // NODE)
    assert -(-n_data // DATA_PER_MHT) == 34  # MHT nodes 0..33: 33 is below the root's children
    assert len(blob) == pf.encrypted_size(size) == expected_nodes(size) * NODE
    got, header = decrypt_bytes(blob)
    assert header.size == size
    assert got == plain
    # The grandchild MHT node sits at physical node 1 + 33 * 97; altering it is caught.
    grandchild = 1 + 33 * (1 + DATA_PER_MHT)
    with pytest.raises(pf.ProtectedFileError, match="MHT node 33 .*fails its MAC"):
        decrypt_bytes(flip(blob, grandchild * NODE + 100))


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=0, max_value=1_000_000), seed=st.integers(0, 2**32 - 1))
@example(size=1_000_000, seed=0)
def test_random_sizes_round_trip(size, seed):
    plain = random.Random(seed).randbytes(size)
    blob = encrypt_bytes(plain)
    assert len(blob) == expected_nodes(size) * NODE
    assert decrypt_bytes(blob)[0] == plain


# --- layout, from the format header ---------------------------------------------------------------


def test_node0_header_is_grafs_pf_version_2_0():
    blob = encrypt_bytes(b"hello")
    file_id, major, minor = struct.unpack_from("<QBB", blob)
    assert file_id == 0x46505F5346415247
    assert blob[:8] == b"GRAFS_PF"  # the id's bytes as stored, little-endian
    assert (major, minor) == (2, 0)
    assert blob[PLAIN_SIZE - 1] == 0  # feature_flags: no pending write


@pytest.mark.parametrize(
    "size, nodes",
    [
        (0, 1),
        (3072, 1),
        (3073, 3),  # metadata, root MHT, one data node
        (3072 + 96 * 4096, 1 + 1 + 96),
        (3072 + 96 * 4096 + 1, 1 + 2 + 97),
    ],
)
def test_node_counts(size, nodes):
    assert len(encrypt_bytes(bytes(size))) == nodes * NODE


def test_metadata_node_decrypts_with_gramines_kdf_written_independently():
    plain = b"first bytes " * 10
    blob = encrypt_bytes(plain, bound="/srv//data/./file.bin")
    nonce, mac = blob[10:42], blob[42:58]
    # ipf_generate_metadata_key: AES-CMAC(user key, kdf_input_t{1, label[64], nonce, 0x80})
    kdf = CMAC(algorithms.AES(KEY))
    kdf.update(
        struct.pack("<I", 1)
        + b"SGX-PROTECTED-FS-METADATA-KEY".ljust(64, b"\0")
        + nonce
        + struct.pack("<I", 128)
    )
    metadata_key = kdf.finalize()
    encrypted = blob[PLAIN_SIZE : PLAIN_SIZE + DECRYPTED_SIZE]
    decrypted = AESGCM(metadata_key).decrypt(bytes(12), encrypted + mac, None)
    assert decrypted[:772].rstrip(b"\0") == b"/srv/data/file.bin"  # stored normalized
    assert struct.unpack_from("<Q", decrypted, 772)[0] == len(plain)
    assert decrypted[812 : 812 + len(plain)] == plain
    assert blob[PLAIN_SIZE + DECRYPTED_SIZE :] == bytes(NODE - PLAIN_SIZE - DECRYPTED_SIZE)


def test_injected_random_gives_the_nonce_and_different_sources_differ():
    plain = os.urandom(3072 + 3 * 4096)
    first = Recorder(1)
    blob1 = encrypt_bytes(plain, random=first)
    assert len(first.calls[-1]) == 32
    assert blob1[10:42] == first.calls[-1]
    assert encrypt_bytes(plain, random=Recorder(1)) == blob1  # deterministic given the source
    second = Recorder(2)
    blob2 = encrypt_bytes(plain, random=second)
    assert blob2[10:42] == second.calls[-1]
    assert blob1 != blob2
    assert blob1[10:42] != blob2[10:42]
    assert blob1[NODE:] != blob2[NODE:]  # data and MHT nodes use fresh keys too
    assert decrypt_bytes(blob1)[0] == plain
    assert decrypt_bytes(blob2)[0] == plain


# --- refusals -------------------------------------------------------------------------------------

BIG = 3072 + 100 * 4096 + 17  # two MHT nodes


@pytest.fixture(scope="module")
def big():
    plain = os.urandom(BIG)
    return plain, encrypt_bytes(plain)


def test_wrong_key_is_a_metadata_mac_mismatch(big):
    with pytest.raises(pf.ProtectedFileError, match="metadata MAC mismatch"):
        decrypt_bytes(big[1], key=OTHER_KEY)


@pytest.mark.parametrize("at", [PLAIN_SIZE, PLAIN_SIZE + 800, PLAIN_SIZE + DECRYPTED_SIZE - 1])
def test_altered_metadata_node(big, at):
    with pytest.raises(pf.ProtectedFileError, match="metadata MAC mismatch.*altered"):
        decrypt_bytes(flip(big[1], at))


def test_altered_metadata_mac_or_nonce(big):
    for at in (12, 50):  # the nonce, the MAC
        with pytest.raises(pf.ProtectedFileError, match="metadata MAC mismatch"):
            decrypt_bytes(flip(big[1], at))


def test_altered_data_node(big):
    # physical node 2 is logical data node 0; node 99 is data node 96 (after MHT node 98)
    for physical, logical in ((2, 0), (50, 48), (99, 96)):
        with pytest.raises(
            pf.ProtectedFileError,
            match=rf"data node {logical} \(node {physical},.*fails its MAC.*altered",
        ):
            decrypt_bytes(flip(big[1], physical * NODE + 7))


def test_altered_mht_nodes(big):
    for physical, logical in ((1, 0), (98, 1)):
        with pytest.raises(
            pf.ProtectedFileError,
            match=rf"MHT node {logical} \(node {physical},.*fails its MAC.*altered",
        ):
            decrypt_bytes(flip(big[1], physical * NODE + 4095))


def test_truncated_by_a_node(big):
    with pytest.raises(pf.ProtectedFileError, match="truncated"):
        decrypt_bytes(big[1][:-NODE])


def test_truncated_by_a_byte(big):
    with pytest.raises(pf.ProtectedFileError, match="not a whole number"):
        decrypt_bytes(big[1][:-1])


def test_shorter_than_a_node_or_not_encrypted():
    with pytest.raises(pf.ProtectedFileError, match="not a whole number"):
        decrypt_bytes(b"plain text\n")
    with pytest.raises(pf.ProtectedFileError, match="not a Gramine encrypted file"):
        decrypt_bytes(bytes(NODE))


def test_bound_to_another_path(big):
    with pytest.raises(
        pf.ProtectedFileError, match="bound to /srv/data/file.bin.*renamed or moved"
    ):
        decrypt_bytes(big[1], expected="/srv/data/other.bin")


def test_no_expected_path_skips_the_check(big):
    plain, blob = big
    got, header = decrypt_bytes(blob, expected=None)
    assert got == plain
    assert header.bound_path == BOUND


def test_paths_are_compared_normalized():
    blob = encrypt_bytes(b"x", bound="/data/x")
    assert decrypt_bytes(blob, expected="/data//x/")[0] == b"x"
    assert decrypt_bytes(blob, expected="/data/./y/../x")[0] == b"x"
    blob = encrypt_bytes(b"x", bound="/data//x/")
    assert decrypt_bytes(blob, expected="/data/x")[1].bound_path == "/data/x"


@pytest.mark.parametrize(
    "path, normal",
    [
        ("/a/./b/../c/", "/a/c"),
        ("/..", "/"),
        ("/../x", "/x"),
        ("a/../../b", "../b"),
        ("//x", "/x"),
        ("/", "/"),
        ("a/b/", "a/b"),
        ("../../a", "../../a"),
    ],
)
def test_normalize_path_follows_get_norm_path(path, normal):
    assert pf.normalize_path(path) == normal


def test_bound_path_at_most_771_bytes():
    ok = "/" + "a" * 770
    assert decrypt_bytes(encrypt_bytes(b"z", bound=ok), expected=ok)[0] == b"z"
    with pytest.raises(pf.ProtectedFileError, match="772 bytes.*at most 771"):
        encrypt_bytes(b"z", bound="/" + "a" * 771)


def test_key_must_be_16_bytes():
    with pytest.raises(pf.ProtectedFileError, match="16 bytes.*got 15"):
        encrypt_bytes(b"z", key=KEY[:15])
    blob = encrypt_bytes(b"z")
    with pytest.raises(pf.ProtectedFileError, match="got 15"):
        decrypt_bytes(blob, key=KEY[:15])


def test_input_that_shrinks_while_read_is_refused():
    plain = os.urandom(10000)
    with pytest.raises(pf.ProtectedFileError, match="changed while it was read"):
        pf.encrypt(lambda o, n: plain[o : o + n], 20000, lambda o, d: None, KEY, BOUND)
