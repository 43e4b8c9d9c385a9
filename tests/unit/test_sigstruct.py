"""SIGSTRUCT layout, BCD date, verification and manifest attributes (against real vectors)."""

from __future__ import annotations

import datetime
import hashlib

import pytest

from ppml_build.errors import SigningError
from ppml_build.sign.sigstruct import (
    SIGSTRUCT_SIZE,
    Sigstruct,
    check_u16,
    decode_bcd_date,
    enclave_attributes,
    encode_bcd_date,
    parse_date,
    unsigned_sigstruct,
    verify_q1_q2,
    verify_signature,
)

INTEL_LE_MRENCLAVE = "7881af9f9def547da9908c008f29cde9bd78064e36ac7e14c83c294ca4806150"
INTEL_LE_MRSIGNER = "acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4"
FORTANIX_MRENCLAVE = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"
SAMPLE_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"


@pytest.fixture(scope="module")
def le_css(vectors_dir) -> bytes:
    return (vectors_dir / "intel-le" / "le_prod_css.bin").read_bytes()


@pytest.fixture(scope="module")
def fortanix_css(vectors_dir) -> bytes:
    return (vectors_dir / "fortanix-sig1" / "sig1.sigstruct.bin").read_bytes()


# --- Intel's production Launch Enclave SIGSTRUCT ---------------------------------------------


def test_intel_le_every_documented_field(le_css):
    sig = Sigstruct.from_bytes(le_css)
    assert sig.header_type == 0  # release
    assert sig.vendor == 0x8086
    assert sig.date_bcd == 0x20240811
    assert sig.date == datetime.date(2024, 8, 11)
    assert sig.date_text == "2024-08-11"
    assert sig.misc_select == 0
    assert sig.misc_mask == 0xFFFFFFFF
    assert sig.attribute_flags == 0x24
    assert sig.attribute_xfrm == 0x3
    assert sig.isv_prod_id == 32
    assert sig.isv_svn == 7
    assert sig.exponent == 3
    assert sig.enclave_hash.hex() == INTEL_LE_MRENCLAVE
    assert sig.mrsigner.hex() == INTEL_LE_MRSIGNER
    assert not sig.debug


def test_intel_le_signature_and_q1_q2_verify(le_css):
    sig = Sigstruct.from_bytes(le_css)
    assert verify_signature(sig)
    assert verify_q1_q2(sig)


def test_parse_then_serialise_is_byte_exact(le_css, fortanix_css):
    for raw in (le_css, fortanix_css):
        assert Sigstruct.from_bytes(raw).to_bytes() == raw


def test_signing_data_is_the_two_sdm_ranges(le_css):
    sig = Sigstruct.from_bytes(le_css)
    data = sig.signing_data()
    assert len(data) == 256
    assert data == le_css[0:128] + le_css[900:1028]


def test_mrsigner_is_sha256_of_little_endian_modulus(le_css):
    sig = Sigstruct.from_bytes(le_css)
    assert sig.mrsigner == hashlib.sha256(le_css[128:512]).digest()


def test_fortanix_vector_fields(fortanix_css):
    sig = Sigstruct.from_bytes(fortanix_css)
    assert (sig.vendor, sig.date_text, sig.misc_select, sig.misc_mask) == (
        0,
        "2016-01-09",
        0,
        0xFFFFFFFF,
    )
    assert (sig.attribute_flags, sig.attribute_xfrm) == (0x4, 0x3)
    assert sig.attribute_flags_mask == 0xFFFFFFFFFFFFFFFD
    assert sig.attribute_xfrm_mask == 0xFFFFFFFFFFFFFF1B
    assert (sig.isv_prod_id, sig.isv_svn) == (0, 0)
    assert sig.enclave_hash.hex() == FORTANIX_MRENCLAVE
    assert sig.mrsigner.hex() == SAMPLE_MRSIGNER
    assert verify_signature(sig) and verify_q1_q2(sig)


# --- tampering ------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [20, 960, 1024, 1026, 928, 600])
def test_a_flipped_byte_in_signed_fields_or_signature_fails(le_css, offset):
    raw = bytearray(le_css)
    raw[offset] ^= 0x01
    assert not verify_signature(Sigstruct.from_bytes(bytes(raw)))


def test_a_flipped_q1_byte_fails_q1_q2_only(le_css):
    raw = bytearray(le_css)
    raw[1040] ^= 0x01
    sig = Sigstruct.from_bytes(bytes(raw))
    assert verify_signature(sig)
    assert not verify_q1_q2(sig)


def test_garbage_modulus_does_not_raise(le_css):
    sig = Sigstruct.from_bytes(le_css).copy(modulus=bytes(384))
    assert verify_signature(sig) is False
    assert verify_q1_q2(sig) is False


@pytest.mark.parametrize("length", [0, 1000, SIGSTRUCT_SIZE - 1, SIGSTRUCT_SIZE + 1])
def test_wrong_length_is_a_signing_error_naming_the_source(le_css, length):
    data = (le_css * 2)[:length]
    with pytest.raises(SigningError, match=rf"^app\.sig: {length} bytes, a SIGSTRUCT is exactly"):
        Sigstruct.from_bytes(data, source="app.sig")


@pytest.mark.parametrize("offset", [0, 4, 11, 24, 39])
def test_wrong_header_is_rejected(le_css, offset):
    raw = bytearray(le_css)
    raw[offset] ^= 0xFF
    with pytest.raises(SigningError, match="HEADER"):
        Sigstruct.from_bytes(bytes(raw), source="x.sig")


def test_sdk_debug_header_type_is_accepted(le_css):
    raw = bytearray(le_css)
    raw[15] = 0x80
    assert Sigstruct.from_bytes(bytes(raw)).header_type == 0x80000000


# --- BCD date -------------------------------------------------------------------------------


def test_bcd_date_bytes_match_gramine():
    sig = Sigstruct(date_bcd=encode_bcd_date(2025, 1, 2))
    assert sig.to_bytes()[20:24] == bytes([0x02, 0x01, 0x25, 0x20])


def test_reproducibility_date_zero():
    sig = Sigstruct(date_bcd=parse_date("0000-00-00"))
    assert sig.to_bytes()[20:24] == bytes(4)
    assert sig.date_text == "0000-00-00"
    assert sig.date is None


def test_date_setter_and_today():
    sig = Sigstruct()
    sig.date = datetime.date(1999, 12, 31)
    assert sig.date_bcd == 0x19991231
    assert parse_date("today", today=datetime.date(2030, 6, 7)) == 0x20300607
    utc_today = datetime.datetime.now(datetime.UTC).date()
    assert decode_bcd_date(parse_date("today")) in {
        utc_today.isoformat(),
        (utc_today + datetime.timedelta(1)).isoformat(),
    }


@pytest.mark.parametrize("text", ["2025/01/02", "25-01-02", "2025-1-2", "yesterday", ""])
def test_bad_date_text(text):
    with pytest.raises(SigningError, match="expected YYYY-MM-DD"):
        parse_date(text)


# --- attributes from the manifest -----------------------------------------------------------

MASK_DEFAULT = 0xFFFFFFFFFFF9FF1B


def test_default_attributes_match_gramine():
    assert enclave_attributes({}) == (0x4, 0x3, 0xFFFFFFFFFFFFFFFF, MASK_DEFAULT, 0, 0xFFFFFFFF)
    defaults = {
        "cpu_features": {
            "avx": "unspecified",
            "avx512": "unspecified",
            "amx": "unspecified",
            "mpx": "disabled",
            "pkru": "disabled",
        }
    }
    assert enclave_attributes(defaults) == enclave_attributes({})


def test_debug_and_exinfo():
    flags, _, _, _, misc, _ = enclave_attributes({"debug": True, "use_exinfo": True})
    assert flags == 0x6
    assert misc == 0x1


def test_avx_required():
    _, xfrm, _, mask, _, _ = enclave_attributes({"cpu_features": {"avx": "required"}})
    assert (xfrm, mask) == (0x7, MASK_DEFAULT | 0x4)


def test_xfrm_ordering_quirk():
    # SGX_XFRM_AVX512 (0xe4) includes the AVX bit and is applied after AVX (Gramine 1.9
    # python/graminelibos/sgx_sign.py, get_enclave_attributes: xfrms_dict order).
    sgx = {"cpu_features": {"avx": "required", "avx512": "disabled", "pkru": "required"}}
    _, xfrm, _, mask, _, _ = enclave_attributes(sgx)
    assert (xfrm, mask) == (0x203, 0xFFFFFFFFFFF9FFFF)


def test_amx_required_and_mpx_required():
    _, xfrm, _, mask, _, _ = enclave_attributes(
        {"cpu_features": {"amx": "required", "mpx": "required"}}
    )
    assert xfrm == 0x3 | 0x60000 | 0x18
    assert mask == MASK_DEFAULT | 0x60000


@pytest.mark.parametrize(
    "sgx, message",
    [
        ({"cpu_features": {"mpx": "unspecified"}}, r"sgx\.cpu_features\.mpx = 'unspecified'"),
        ({"cpu_features": {"avx": "maybe"}}, r"sgx\.cpu_features\.avx = 'maybe'"),
        ({"cpu_features": {"sse": "required"}}, r"sgx\.cpu_features\.sse: unknown"),
        ({"cpu_features": "avx"}, r"sgx\.cpu_features = 'avx'"),
        ({"require_avx": True}, r"sgx\.require_avx was removed .* sgx\.cpu_features\.avx"),
        ({"debug": "yes"}, r"sgx\.debug = 'yes': expected true or false"),
        ({"use_exinfo": 1}, r"sgx\.use_exinfo = 1"),
    ],
)
def test_bad_attribute_options(sgx, message):
    with pytest.raises(SigningError, match=message):
        enclave_attributes(sgx)


@pytest.mark.parametrize("value", [65536, -1, True, "1", 1.0])
def test_non_u16_isv_values(value):
    with pytest.raises(SigningError, match=r"sgx\.isvprodid = .*0 to 65535"):
        check_u16(value, "isvprodid")


def test_unsigned_sigstruct_from_manifest_table():
    sgx = {"isvprodid": 65535, "isvsvn": 9, "debug": True}
    sig = unsigned_sigstruct(enclave_hash=bytes(range(32)), sgx=sgx, date_bcd=0x20250102)
    raw = sig.to_bytes()
    assert raw[1024:1028] == b"\xff\xff\x09\x00"
    assert raw[960:992] == bytes(range(32))
    assert raw[928:936] == (6).to_bytes(8, "little")
    # Unsigned: key, signature and Q1/Q2 are zero; they lie outside the signed bytes anyway.
    assert raw[128:900] == bytes(772) and raw[1040:] == bytes(768)
    with pytest.raises(SigningError, match="isvsvn"):
        unsigned_sigstruct(enclave_hash=bytes(32), sgx={"isvsvn": 70000}, date_bcd=0)
