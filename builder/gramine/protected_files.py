"""Gramine 1.9's encrypted-files format ("protected files"), natively: bytes in, bytes out.

The layout, from ``common/src/protected_files/protected_files_format.h`` and
``protected_files.c`` at v1.9 (ported by Gramine from the SGX SDK's protected_fs):

- the file is a sequence of 4 KiB nodes; node 0 is the **metadata node**: a plaintext header
  (file id ``GRAFS_PF``, version 2.0, a 32-byte nonce, the GCM MAC of the encrypted part, feature
  flags) and an encrypted part holding the **bound path** (772 bytes, NUL-padded), the plaintext
  size, the root MHT node's key and MAC, and the file's first 3072 bytes;
- the rest of the data lives in **data nodes** of 4096 bytes each, every one encrypted under its
  own random AES-128-GCM key (zero IV, no AAD); the key and MAC sit in an **MHT node** (96 data
  entries, then 32 child-MHT entries of 32 bytes each), MHT nodes forming a 32-ary tree whose root
  is keyed from the metadata node. Physically: node 1 is the root MHT, nodes 2..97 its data, 98
  the next MHT node, and so on (``get_node_numbers``);
- the metadata key is AES-CMAC(user key, counter=1 ‖ label "SGX-PROTECTED-FS-METADATA-KEY" ‖
  nonce ‖ 128), the KDF of NIST SP 800-108 (``ipf_generate_metadata_key``).

The bound path is what Gramine's LibOS passes to ``pf_open``: the normalized path of the mount's
**URI** on the host side (``libos/src/fs/libos_fs_encrypted.c``,
``encrypted_file_internal_open``), the same string ``gramine-sgx-pf-crypt encrypt -o`` writes.

Encryption walks the MHT tree depth first (children before the parent that holds their keys),
reading the plaintext and writing the nodes at their offsets, so memory stays a few nodes
whatever the file's size; decryption reads the nodes in order with one cached MHT node per tree
level. Random keys come from ``os.urandom`` (a caller may inject its own source for tests).
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC

from ..errors import PpmlError
from .uris import gramine_norm_path as normalize_path  # the path Gramine binds, normalized

NODE_SIZE = 4096
KEY_SIZE = 16
MAC_SIZE = 16
NONCE_SIZE = 32
FILE_ID = 0x46505F5346415247  # "GRAFS_PF", little-endian
MAJOR_VERSION = 2
MINOR_VERSION = 0
PATH_MAX_SIZE = 260 + 512
METADATA_DATA_SIZE = NODE_SIZE * 3 // 4  # the first 3072 bytes of a file live in node 0
DATA_ENTRIES = 96  # (key, MAC) pairs per MHT node for its data nodes
CHILD_ENTRIES = 32  # ... and for its child MHT nodes
ENTRY_SIZE = KEY_SIZE + MAC_SIZE
METADATA_KEY_LABEL = b"SGX-PROTECTED-FS-METADATA-KEY"
HAS_PENDING_WRITE_FLAG = 0x01

_ZERO_IV = bytes(12)
# metadata_plaintext_t: file_id, major, minor, nonce, mac, feature_flags (v1 has no flags)
_PLAIN = struct.Struct("<QBB32s16sB")
_PLAIN_V1_SIZE = _PLAIN.size - 1
# metadata_decrypted_t: path, size, root MHT key and MAC, then the first 3072 bytes
_DECRYPTED = struct.Struct(f"<{PATH_MAX_SIZE}sQ16s16s")
ENCRYPTED_PART_SIZE = _DECRYPTED.size + METADATA_DATA_SIZE
# kdf_input_t: counter, label[64], nonce, output length in bits
_KDF_INPUT = struct.Struct("<I64s32sI")

assert _PLAIN.size + ENCRYPTED_PART_SIZE <= NODE_SIZE


class ProtectedFileError(PpmlError):
    """A file Gramine would refuse, or one that cannot be written in its format."""


# --- the file's geometry ----------------------------------------------------------------------


def data_node_count(size: int) -> int:
    return 0 if size <= METADATA_DATA_SIZE else -(-(size - METADATA_DATA_SIZE) // NODE_SIZE)


def mht_node_count(size: int) -> int:
    return -(-data_node_count(size) // DATA_ENTRIES)


def node_count(size: int) -> int:
    """How many 4 KiB nodes Gramine writes for a file of ``size`` plaintext bytes."""
    return 1 + data_node_count(size) + mht_node_count(size)


def encrypted_size(size: int) -> int:
    return node_count(size) * NODE_SIZE


def _data_node_position(logical: int) -> int:
    # metadata, root MHT, one MHT node before every 96 data nodes (get_node_numbers)
    return logical + 2 + logical // DATA_ENTRIES


def _mht_node_position(logical: int) -> int:
    return 1 + logical * (1 + DATA_ENTRIES)


def check_bound_path(path: str) -> bytes:
    """The bound path as stored: normalized, UTF-8, under Gramine's 772-byte limit."""
    encoded = normalize_path(path).encode()
    if not encoded or b"\0" in encoded:
        raise ProtectedFileError(f"{path!r}: not a usable path for an encrypted file")
    if len(encoded) > PATH_MAX_SIZE - 1:
        raise ProtectedFileError(
            f"{path}: {len(encoded)} bytes; Gramine binds at most {PATH_MAX_SIZE - 1} "
            "(PATH_MAX_SIZE in protected_files_format.h)"
        )
    return encoded


def _metadata_key(user_key: bytes, nonce: bytes) -> bytes:
    cmac = CMAC(algorithms.AES(user_key))
    cmac.update(_KDF_INPUT.pack(1, METADATA_KEY_LABEL, nonce, KEY_SIZE * 8))
    return cmac.finalize()


def check_key(key: bytes) -> bytes:
    if len(key) != KEY_SIZE:
        raise ProtectedFileError(
            f"an encrypted-files key is {KEY_SIZE} bytes (AES-128-GCM), got {len(key)}"
        )
    return key


# --- encrypt ----------------------------------------------------------------------------------

ReadAt = Callable[[int, int], bytes]  # (offset, size) -> bytes, short only at the end
WriteAt = Callable[[int, bytes], None]  # (offset, data)


def encrypt(
    read_plain: ReadAt,
    size: int,
    write_at: WriteAt,
    key: bytes,
    bound_path: str,
    *,
    random: Callable[[int], bytes] = os.urandom,
) -> int:
    """Write the encrypted form of ``size`` plaintext bytes, bound to ``bound_path``.

    ``read_plain(offset, n)`` returns the plaintext at ``offset``; ``write_at`` stores whole
    nodes (up to 96 adjacent ones at a time).
    Returns the encrypted size (a multiple of 4096). Raises ProtectedFileError.
    """
    check_key(key)
    path = check_bound_path(bound_path)
    n_data = data_node_count(size)
    n_mht = mht_node_count(size)

    def plain(offset: int, length: int) -> bytes:
        chunk = read_plain(offset, length)
        if len(chunk) != length:
            raise ProtectedFileError(
                f"the input changed while it was read: {len(chunk)} of {length} bytes "
                f"at offset {offset}"
            )
        return chunk

    def seal_mht(logical: int) -> bytes:
        """Encrypt MHT node ``logical`` after its data nodes and child subtrees; its key+MAC."""
        node = bytearray(NODE_SIZE)
        first = logical * DATA_ENTRIES
        count = min(DATA_ENTRIES, n_data - first)
        # An MHT node's data nodes follow it on disk: one read and one write for all of them.
        offset = METADATA_DATA_SIZE + first * NODE_SIZE
        chunk = plain(offset, min(count * NODE_SIZE, size - offset))
        view = memoryview(chunk.ljust(count * NODE_SIZE, b"\0"))
        keys = random(KEY_SIZE * count)
        # Each node's ciphertext goes straight to its place in one buffer; its MAC lands on the
        # next node's first 16 bytes and is taken from there before that node overwrites it.
        out = memoryview(bytearray(count * NODE_SIZE + MAC_SIZE))
        for index in range(count):
            start, end = index * NODE_SIZE, (index + 1) * NODE_SIZE
            node_key = keys[index * KEY_SIZE : (index + 1) * KEY_SIZE]
            AESGCM(node_key).encrypt_into(
                _ZERO_IV, view[start:end], None, out[start : end + MAC_SIZE]
            )
            at = index * ENTRY_SIZE
            node[at : at + KEY_SIZE] = node_key
            node[at + KEY_SIZE : at + ENTRY_SIZE] = out[end : end + MAC_SIZE]
        write_at(_data_node_position(first) * NODE_SIZE, out[: count * NODE_SIZE])
        for slot in range(CHILD_ENTRIES):
            child = logical * CHILD_ENTRIES + 1 + slot
            if child >= n_mht:
                break
            at = DATA_ENTRIES * ENTRY_SIZE + slot * ENTRY_SIZE
            node[at : at + ENTRY_SIZE] = seal_mht(child)
        mht_key = random(KEY_SIZE)
        sealed = AESGCM(mht_key).encrypt(_ZERO_IV, bytes(node), None)
        write_at(_mht_node_position(logical) * NODE_SIZE, sealed[:NODE_SIZE])
        return mht_key + sealed[NODE_SIZE:]

    root = seal_mht(0) if n_data else bytes(ENTRY_SIZE)
    head = plain(0, min(size, METADATA_DATA_SIZE)).ljust(METADATA_DATA_SIZE, b"\0")
    decrypted = _DECRYPTED.pack(path, size, root[:KEY_SIZE], root[KEY_SIZE:]) + head
    nonce = random(NONCE_SIZE)
    sealed = AESGCM(_metadata_key(key, nonce)).encrypt(_ZERO_IV, decrypted, None)
    header = _PLAIN.pack(FILE_ID, MAJOR_VERSION, MINOR_VERSION, nonce, sealed[-MAC_SIZE:], 0)
    write_at(0, (header + sealed[:-MAC_SIZE]).ljust(NODE_SIZE, b"\0"))
    return encrypted_size(size)


# --- decrypt ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What node 0 says, once its MAC checked out."""

    bound_path: str
    size: int
    version: tuple[int, int]


def read_header(node0: bytes, key: bytes) -> tuple[Header, bytes, bytes, bytes]:
    """Check and decrypt the metadata node: (header, root MHT key, root MHT MAC, first bytes)."""
    check_key(key)
    if len(node0) < NODE_SIZE:
        raise ProtectedFileError(
            f"{len(node0)} bytes: shorter than one {NODE_SIZE}-byte node, not an encrypted file "
            "(or a truncated one)"
        )
    file_id, major, minor, nonce, mac, _flags = _PLAIN.unpack_from(node0)
    if file_id != FILE_ID:
        raise ProtectedFileError(
            "not a Gramine encrypted file (its first 8 bytes are not GRAFS_PF)"
        )
    if major == 1:  # Gramine migrates v1 headers, which had no feature-flags byte
        start = _PLAIN_V1_SIZE
    elif major == MAJOR_VERSION:
        start = _PLAIN.size
    else:
        raise ProtectedFileError(
            f"format version {major}.{minor}; Gramine 1.9 reads {MAJOR_VERSION}.x (and 1.x)"
        )
    blob = node0[start : start + ENCRYPTED_PART_SIZE]
    try:
        decrypted = AESGCM(_metadata_key(key, nonce)).decrypt(_ZERO_IV, blob + mac, None)
    except InvalidTag:
        raise ProtectedFileError(
            "metadata MAC mismatch: not the key this file was encrypted with, or its first "
            "4 KiB were altered (Gramine: 'MAC mismatch')"
        ) from None
    raw_path, size, root_key, root_mac = _DECRYPTED.unpack_from(decrypted)
    bound = raw_path.split(b"\0", 1)[0].decode("utf-8", "replace")
    head = decrypted[_DECRYPTED.size :]
    return Header(bound, size, (major, minor)), root_key, root_mac, head


def decrypt(
    read_nodes: Callable[[int, int], bytes],
    stored_size: int,
    write: Callable[[bytes], None],
    key: bytes,
    expected_path: str | None,
) -> Header:
    """Check and decrypt a whole file, writing the plaintext in order through ``write``.

    ``read_nodes(first, count)`` returns ``count`` physical nodes from node ``first`` (4096 bytes
    each); ``stored_size`` is the encrypted file's size. ``write`` gets the plaintext in pieces of
    up to 96 nodes. With ``expected_path`` the bound path must equal it (normalized), as Gramine
    checks on open. Raises ProtectedFileError naming what is wrong.
    """
    if stored_size % NODE_SIZE:
        raise ProtectedFileError(
            f"{stored_size} bytes is not a whole number of {NODE_SIZE}-byte nodes: truncated or "
            "appended to (Gramine: 'Invalid header')"
        )
    header, root_key, root_mac, head = read_header(read_nodes(0, 1), key)
    if expected_path is not None:
        want = normalize_path(expected_path)
        if header.bound_path != want:
            raise ProtectedFileError(
                f"bound to {header.bound_path}, not {want}: renamed or moved after it was "
                "encrypted (Gramine: 'Invalid path'); decrypt it at the path it was made for"
            )
    needed = node_count(header.size)
    if stored_size < needed * NODE_SIZE:
        raise ProtectedFileError(
            f"truncated: {stored_size // NODE_SIZE} of the {needed} nodes a {header.size}-byte "
            "file needs"
        )
    write(head[: min(header.size, METADATA_DATA_SIZE)])
    n_data = data_node_count(header.size)
    cache: OrderedDict[int, bytearray] = OrderedDict()

    scratch = memoryview(bytearray(NODE_SIZE + MAC_SIZE))  # a node's ciphertext, then its MAC

    def open_node(
        sealed: bytes | memoryview, position: int, entry: bytes, what: str, into: memoryview
    ) -> None:
        try:
            scratch[:NODE_SIZE] = sealed
            scratch[NODE_SIZE:] = entry[KEY_SIZE:]
            AESGCM(entry[:KEY_SIZE]).decrypt_into(_ZERO_IV, scratch, None, into)
        except (InvalidTag, ValueError):  # ValueError: a node cut short
            raise ProtectedFileError(
                f"{what} (node {position}, bytes {position * NODE_SIZE}.."
                f"{(position + 1) * NODE_SIZE - 1} of the file) fails its MAC: the file was "
                "altered (Gramine: 'File is corrupted')"
            ) from None

    def mht(logical: int) -> bytearray:
        if logical in cache:
            cache.move_to_end(logical)
            return cache[logical]
        if logical == 0:
            entry = root_key + root_mac
        else:
            parent = mht((logical - 1) // CHILD_ENTRIES)
            at = DATA_ENTRIES * ENTRY_SIZE + ((logical - 1) % CHILD_ENTRIES) * ENTRY_SIZE
            entry = parent[at : at + ENTRY_SIZE]
        position = _mht_node_position(logical)
        node = bytearray(NODE_SIZE)
        open_node(read_nodes(position, 1), position, entry, f"MHT node {logical}", memoryview(node))
        cache[logical] = node
        if len(cache) > 16:  # one per tree level is enough when walking in order
            cache.popitem(last=False)
        return node

    # Each MHT node's data nodes are adjacent on disk: read, check and write them as one piece.
    for group in range(mht_node_count(header.size)):
        parent = mht(group)
        first = group * DATA_ENTRIES
        count = min(DATA_ENTRIES, n_data - first)
        start = _data_node_position(first)
        sealed = memoryview(read_nodes(start, count))
        plain = memoryview(bytearray(count * NODE_SIZE))
        for index in range(count):
            at = index * ENTRY_SIZE
            open_node(
                sealed[index * NODE_SIZE : (index + 1) * NODE_SIZE],
                start + index,
                parent[at : at + ENTRY_SIZE],
                f"data node {first + index}",
                plain[index * NODE_SIZE : (index + 1) * NODE_SIZE],
            )
        end = METADATA_DATA_SIZE + (first + count) * NODE_SIZE
        write(plain[: count * NODE_SIZE - max(0, end - header.size)])  # less the last padding
    return header
