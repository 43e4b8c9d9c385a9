"""The SIGSTRUCT inside SGX-SDK-signed enclaves (.note.sgxmeta)."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from ppml_build.errors import SigningError
from ppml_build.sign.sdk_metadata import (
    METADATA_MAGIC,
    find_sdk_sigstruct,
    read_sdk_metadata,
)
from ppml_build.sign.sigstruct import verify_q1_q2, verify_signature

SDK_MRENCLAVE = "d1d79feb6fe2a02270d0bdc6e973544567e4fd9d5cb481e99c9b8c044aa76a40"
SAMPLE_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"


@pytest.fixture(scope="module")
def enclave(vectors_dir) -> bytes:
    return (vectors_dir / "sdk-signed-enclave" / "enclave.signed.so").read_bytes()


def test_reads_mrenclave_mrsigner_and_fields(enclave):
    sig = find_sdk_sigstruct(enclave)
    assert sig.enclave_hash.hex() == SDK_MRENCLAVE
    assert sig.mrsigner.hex() == SAMPLE_MRSIGNER
    assert sig.date_text == "2017-05-29"
    assert (sig.attribute_flags, sig.attribute_xfrm) == (0x4, 0x3)
    assert (sig.isv_prod_id, sig.isv_svn) == (0, 0)
    assert verify_signature(sig) and verify_q1_q2(sig)


def test_metadata_header(enclave):
    [meta] = read_sdk_metadata(enclave)
    assert meta.version == "1.3"
    assert meta.tcs_policy == 1  # Enclave.config.xml: <TCSPolicy>1</TCSPolicy>
    assert meta.desired_misc_select == 0
    assert meta.enclave_size > 0 and meta.enclave_size & (meta.enclave_size - 1) == 0
    assert struct.unpack_from("<Q", enclave, meta.file_offset)[0] == METADATA_MAGIC


def test_not_an_elf():
    with pytest.raises(SigningError, match=r"^x\.bin: not an ELF file$"):
        read_sdk_metadata(b"\0" * 4096, source="x.bin")


def test_truncated_elf(enclave):
    with pytest.raises(SigningError, match=r"^cut\.so: "):
        read_sdk_metadata(enclave[:2000], source="cut.so")


def test_elf_without_sgxmeta(standin_libpal):
    with pytest.raises(SigningError, match=r"has no \.note\.sgxmeta note"):
        read_sdk_metadata(standin_libpal.read_bytes(), source=str(standin_libpal))


def _note(desc: bytes) -> bytes:
    """A standard (4-byte padded) ELF note named sgx_metadata."""
    name = b"sgx_metadata\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), 1) + pad(name) + pad(desc)


def _metadata_block(css: bytes, minor: int, size: int) -> bytes:
    header = struct.pack("<QQIIIIIIQQQ", METADATA_MAGIC, (2 << 32) | minor, size, 1, 1, 2632, 0,
                         0, 1 << 24, 0x4, 0x3)
    block = header + css
    return block + bytes(size - len(block))


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="needs binutils objcopy")
def test_padded_note_with_two_metadata_versions(tmp_path, standin_libpal, vectors_dir):
    css = (vectors_dir / "intel-le" / "le_prod_css.bin").read_bytes()
    desc = _metadata_block(css, 1, 4096) + _metadata_block(css, 0, 4096)
    blob = tmp_path / "note.bin"
    blob.write_bytes(_note(desc))
    out = tmp_path / "signed.so"
    subprocess.run(["objcopy", "--add-section", f".note.sgxmeta={blob}", str(standin_libpal),
                    str(out)], check=True, capture_output=True)
    blocks = read_sdk_metadata(out.read_bytes(), source=str(out))
    assert [b.version for b in blocks] == ["2.1", "2.0"]
    assert blocks[0].enclave_size == 1 << 24
    assert blocks[0].sigstruct.to_bytes() == css
    assert find_sdk_sigstruct(out.read_bytes()).isv_prod_id == 32
