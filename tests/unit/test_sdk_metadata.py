"""The SIGSTRUCT inside SGX-SDK-signed enclaves (.note.sgxmeta).

Each reading test runs on an enclave written here by tests/sdk_enclave_factory.py (from the
SDK's definitions, carrying a SIGSTRUCT signed with a key made for the test) and on the real
SDK-signed enclave among the real vectors (tests/real_vectors.py) when that is present.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from types import SimpleNamespace

import pytest
from real_vectors import vector
from sdk_enclave_factory import METADATA_OFFSET, Metadata, sdk_signed_elf
from sigstruct_reference import signed_sigstruct

from ppml_build.errors import SigningError
from ppml_build.sign import keys
from ppml_build.sign.sdk_metadata import (
    METADATA_MAGIC,
    find_sdk_sigstruct,
    read_sdk_metadata,
)
from ppml_build.sign.sigstruct import verify_q1_q2, verify_signature

SDK_MRENCLAVE = "d1d79feb6fe2a02270d0bdc6e973544567e4fd9d5cb481e99c9b8c044aa76a40"
SAMPLE_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
MADE_MRENCLAVE = hashlib.sha256(b"an enclave made by sdk_enclave_factory").digest()


@pytest.fixture(scope="module")
def made_key():
    return keys.generate_key()


def made_css(key, **fields) -> bytes:
    return signed_sigstruct(key, enclave_hash=MADE_MRENCLAVE, date=(2025, 1, 2), **fields)


@pytest.fixture(scope="module", params=["made-here", "real-sdk-enclave"])
def enclave(request, made_key) -> SimpleNamespace:
    """An SDK-signed enclave and what is known about it."""
    if request.param == "real-sdk-enclave":
        path = vector("sdk-signed-enclave/enclave.signed.so", "real-SDK-enclave cross-check")
        return SimpleNamespace(
            data=path.read_bytes(),
            mrenclave=SDK_MRENCLAVE,
            mrsigner=SAMPLE_MRSIGNER,
            date="2017-05-29",
            version="1.3",
        )
    data = sdk_signed_elf(Metadata(made_css(made_key), version=(2, 1)))
    return SimpleNamespace(
        data=data,
        mrenclave=MADE_MRENCLAVE.hex(),
        mrsigner=keys.mrsigner_of(made_key.public_key()).hex(),
        date="2025-01-02",
        version="2.1",
    )


def test_reads_mrenclave_mrsigner_and_fields(enclave):
    sig = find_sdk_sigstruct(enclave.data)
    assert sig.enclave_hash.hex() == enclave.mrenclave
    assert sig.mrsigner.hex() == enclave.mrsigner
    assert sig.date_text == enclave.date
    assert (sig.attribute_flags, sig.attribute_xfrm) == (0x4, 0x3)
    assert (sig.isv_prod_id, sig.isv_svn) == (0, 0)
    assert verify_signature(sig) and verify_q1_q2(sig)


def test_metadata_header(enclave):
    [meta] = read_sdk_metadata(enclave.data)
    assert meta.version == enclave.version
    assert meta.tcs_policy == 1  # Enclave.config.xml: <TCSPolicy>1</TCSPolicy>
    assert meta.desired_misc_select == 0
    assert meta.enclave_size > 0 and meta.enclave_size & (meta.enclave_size - 1) == 0
    assert struct.unpack_from("<Q", enclave.data, meta.file_offset)[0] == METADATA_MAGIC


def test_not_an_elf():
    with pytest.raises(SigningError, match=r"^x\.bin: not an ELF file$"):
        read_sdk_metadata(b"\0" * 4096, source="x.bin")


def test_truncated_elf(enclave):
    with pytest.raises(SigningError, match=r"^cut\.so: "):
        read_sdk_metadata(enclave.data[:2000], source="cut.so")


def test_elf_without_sgxmeta(standin_libpal):
    with pytest.raises(SigningError, match=r"has no \.note\.sgxmeta note"):
        read_sdk_metadata(standin_libpal.read_bytes(), source=str(standin_libpal))


def _note(desc: bytes) -> bytes:
    """A standard (4-byte padded) ELF note named sgx_metadata."""
    name = b"sgx_metadata\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), 1) + pad(name) + pad(desc)


def _metadata_block(css: bytes, minor: int, size: int) -> bytes:
    header = struct.pack(
        "<QQIIIIIIQQQ", METADATA_MAGIC, (2 << 32) | minor, size, 1, 1, 2632, 0, 0, 1 << 24, 0x4, 0x3
    )
    block = header + css
    return block + bytes(size - len(block))


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="needs binutils objcopy")
def test_padded_note_with_two_metadata_versions(tmp_path, standin_libpal, made_key):
    css = made_css(made_key, isv_prod_id=32)
    desc = _metadata_block(css, 1, 4096) + _metadata_block(css, 0, 4096)
    blob = tmp_path / "note.bin"
    blob.write_bytes(_note(desc))
    out = tmp_path / "signed.so"
    subprocess.run(
        ["objcopy", "--add-section", f".note.sgxmeta={blob}", str(standin_libpal), str(out)],
        check=True,
        capture_output=True,
    )
    blocks = read_sdk_metadata(out.read_bytes(), source=str(out))
    assert [b.version for b in blocks] == ["2.1", "2.0"]
    assert blocks[0].enclave_size == 1 << 24
    assert blocks[0].sigstruct.to_bytes() == css
    assert find_sdk_sigstruct(out.read_bytes()).isv_prod_id == 32


# --- the SDK's layout, written by tests/sdk_enclave_factory.py ----------------------------------


def test_the_metadata_sits_right_after_the_unpadded_note_name(made_key):
    for version in ((1, 3), (2, 1)):
        data = sdk_signed_elf(Metadata(made_css(made_key), version=version))
        [meta] = read_sdk_metadata(data)
        assert meta.file_offset == METADATA_OFFSET and meta.version == f"{version[0]}.{version[1]}"


def test_compatible_blocks_follow_the_first_which_is_the_one_read(made_key):
    """Newer sgx_sign writes the current metadata, then "compatible" older versions, each
    ``size`` bytes on from the last (linux-sgx psw/urts/urts_com.h, get_metadata)."""
    current, older = made_css(made_key, isv_svn=2), made_css(made_key, isv_svn=1)
    data = sdk_signed_elf(
        [
            Metadata(current, version=(2, 1), size=0x2000, tcs_min_pool=1),
            Metadata(older, version=(1, 4), size=0x1000),
        ],
        descriptor_size=0x5000,
    )
    blocks = read_sdk_metadata(data, source="e.so")
    assert [(b.version, b.size, b.tcs_min_pool) for b in blocks] == [
        ("2.1", 0x2000, 1),
        ("1.4", 0x1000, 0),
    ]
    assert blocks[1].file_offset == blocks[0].file_offset + 0x2000
    assert [b.sigstruct.to_bytes() for b in blocks] == [current, older]
    assert find_sdk_sigstruct(data).isv_svn == 2


def test_without_section_headers_the_pt_note_segment_is_read(made_key):
    css = made_css(made_key)
    data = sdk_signed_elf(Metadata(css, enclave_size=1 << 30), section_headers=False)
    [meta] = read_sdk_metadata(data)
    assert meta.sigstruct.to_bytes() == css and meta.enclave_size == 1 << 30


def test_a_note_without_metadata_is_one_line():
    data = sdk_signed_elf(Metadata(bytes(1808)), descriptor_size=0x1000)
    data = data.replace(struct.pack("<Q", METADATA_MAGIC), bytes(8))
    with pytest.raises(
        SigningError,
        match=r"^e\.so: the \.note\.sgxmeta note holds no SGX SDK "
        r"metadata \(magic 0x86a80294635d0e4c not found\)$",
    ):
        read_sdk_metadata(data, source="e.so")


def test_a_block_size_too_small_for_a_sigstruct_ends_the_list(made_key):
    css = made_css(made_key)
    data = sdk_signed_elf([Metadata(css, size=0), Metadata(css, version=(1, 4))])
    assert [b.version for b in read_sdk_metadata(data)] == ["2.1"]
