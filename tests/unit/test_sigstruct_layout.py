"""Reading, verifying and tampering with a SIGSTRUCT written from the SDK's definition
(tests/sigstruct_reference.py, independent of ppml_build): what test_sigstruct.py checks on the
real vectors (tests/real_vectors.py), with a key made here, so it runs without them."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from sigstruct_reference import signed_sigstruct

from ppml_build.errors import SigningError
from ppml_build.sign import keys
from ppml_build.sign.sigstruct import SIGSTRUCT_SIZE, Sigstruct, verify_q1_q2, verify_signature

ENCLAVE_HASH = hashlib.sha256(b"test_sigstruct_layout").digest()


@pytest.fixture(scope="module")
def key():
    return keys.generate_key()


@pytest.fixture(scope="module")
def css(key) -> bytes:
    """Every field away from its default, so a field read from the wrong offset shows."""
    return signed_sigstruct(
        key,
        enclave_hash=ENCLAVE_HASH,
        vendor=0x8086,
        date=(2024, 8, 11),
        misc_select=0x1,
        misc_mask=0xFFFFFFFE,
        attribute_flags=0x24,
        attribute_xfrm=0xE7,
        attribute_flags_mask=0xFFFFFFFFFFFFFFFB,
        attribute_xfrm_mask=0xFFFFFFFFFFFFFF1F,
        isv_prod_id=32,
        isv_svn=7,
    )


def test_every_field_is_read_from_its_offset(css, key):
    sig = Sigstruct.from_bytes(css)
    assert sig.header_type == 0 and sig.vendor == 0x8086
    assert sig.date_bcd == 0x20240811 and sig.date_text == "2024-08-11"
    assert (sig.misc_select, sig.misc_mask) == (0x1, 0xFFFFFFFE)
    assert (sig.attribute_flags, sig.attribute_xfrm) == (0x24, 0xE7)
    assert (sig.attribute_flags_mask, sig.attribute_xfrm_mask) == (
        0xFFFFFFFFFFFFFFFB,
        0xFFFFFFFFFFFFFF1F,
    )
    assert (sig.isv_prod_id, sig.isv_svn) == (32, 7)
    assert sig.exponent == 3 and sig.enclave_hash == ENCLAVE_HASH
    assert sig.modulus_int == key.public_key().public_numbers().n
    assert sig.mrsigner == keys.mrsigner_of(key.public_key())
    assert not sig.debug


def test_signature_and_q1_q2_verify(css, key):
    sig = Sigstruct.from_bytes(css)
    assert verify_signature(sig) and verify_q1_q2(sig)
    # The bytes we say are signed are the ones the key signed (cryptography checks it).
    key.public_key().verify(
        sig.signature_int.to_bytes(384, "big"),
        sig.signing_data(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_parse_then_serialise_is_byte_exact_even_with_junk_in_reserved_fields(css):
    raw = bytearray(css)
    for start, end in ((44, 128), (908, 928), (992, 1024), (1028, 1040)):
        raw[start:end] = bytes(range(1, end - start + 1))
    assert Sigstruct.from_bytes(bytes(raw)).to_bytes() == bytes(raw)
    assert Sigstruct.from_bytes(css).to_bytes() == css


def test_signing_data_is_the_two_sdm_ranges(css):
    assert Sigstruct.from_bytes(css).signing_data() == css[0:128] + css[900:1028]


def test_mrsigner_is_sha256_of_little_endian_modulus(css):
    assert Sigstruct.from_bytes(css).mrsigner == hashlib.sha256(css[128:512]).digest()


@pytest.mark.parametrize("offset", [20, 960, 1024, 1026, 928, 600])
def test_a_flipped_byte_in_signed_fields_or_signature_fails(css, offset):
    raw = bytearray(css)
    raw[offset] ^= 0x01
    assert not verify_signature(Sigstruct.from_bytes(bytes(raw)))


def test_a_flipped_q1_byte_fails_q1_q2_only(css):
    raw = bytearray(css)
    raw[1040] ^= 0x01
    sig = Sigstruct.from_bytes(bytes(raw))
    assert verify_signature(sig) and not verify_q1_q2(sig)


def test_garbage_modulus_does_not_raise(css):
    sig = Sigstruct.from_bytes(css).copy(modulus=bytes(384))
    assert verify_signature(sig) is False and verify_q1_q2(sig) is False


@pytest.mark.parametrize("above", ["one", "all ones"])
def test_a_signature_above_the_modulus_is_inconsistent_not_an_error(css, above):
    """A forged .sig whose SIGNATURE exceeds its MODULUS: Q1 would not fit in 384 bytes."""
    sig = Sigstruct.from_bytes(css)
    value = sig.modulus_int + 1 if above == "one" else (1 << 3072) - 1
    sig = sig.copy(signature=value.to_bytes(384, "little"))
    assert sig.signature_int > sig.modulus_int
    assert verify_signature(sig) is False and verify_q1_q2(sig) is False


@pytest.mark.parametrize("length", [0, 1000, SIGSTRUCT_SIZE - 1, SIGSTRUCT_SIZE + 1])
def test_wrong_length_is_a_signing_error_naming_the_source(css, length):
    with pytest.raises(SigningError, match=rf"^app\.sig: {length} bytes, a SIGSTRUCT is exactly"):
        Sigstruct.from_bytes((css * 2)[:length], source="app.sig")


@pytest.mark.parametrize("offset", [0, 4, 11, 24, 39])
def test_wrong_header_is_rejected(css, offset):
    raw = bytearray(css)
    raw[offset] ^= 0xFF
    with pytest.raises(SigningError, match="HEADER"):
        Sigstruct.from_bytes(bytes(raw), source="x.sig")


def test_sdk_debug_header_type_is_accepted(key):
    """The SDK marks a SIGSTRUCT signed with a debug key by setting bit 31 of ``type``."""
    css = signed_sigstruct(key, enclave_hash=ENCLAVE_HASH, header_type=0x80000000)
    sig = Sigstruct.from_bytes(css)
    assert sig.header_type == 0x80000000 and verify_signature(sig)
