"""Signing keys: RSA-3072/e=3 only, no sample key, passphrases, and exact signatures."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from real_vectors import vector
from sdk_sample_key import SAMPLE_MRSIGNER_HEX, SAMPLE_PUBLIC_PEM, lookalike_private_pem
from sigstruct_reference import signed_sigstruct

from ppml_build.errors import SigningError
from ppml_build.sign import keys
from ppml_build.sign.sigstruct import Sigstruct, encode_bcd_date, verify_q1_q2, verify_signature

FORTANIX_MRENCLAVE = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"


@pytest.fixture(scope="module")
def sample_pem() -> bytes:
    """The SDK sample key itself (fortanix-sig1/sig1.key.pem signed the fortanix vector)."""
    return vector("fortanix-sig1/sig1.key.pem", "real-sample-key check").read_bytes()


@pytest.fixture(scope="module", params=["lookalike", "real"])
def sample_private_pem(request) -> bytes:
    """A private key PEM whose public half is the sample key's: made here, or the real one."""
    if request.param == "real":
        return vector("fortanix-sig1/sig1.key.pem", "real-sample-key check").read_bytes()
    return lookalike_private_pem()


@pytest.fixture(scope="module")
def sgx_key() -> rsa.RSAPrivateKey:
    return keys.generate_key()


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _fortanix_fields() -> Sigstruct:
    """The documented fields of fortanix-sig1, built by hand (not parsed from the file)."""
    return Sigstruct(
        vendor=0,
        date_bcd=encode_bcd_date(2016, 1, 9),
        misc_select=0,
        misc_mask=0xFFFFFFFF,
        attribute_flags=0x4,
        attribute_xfrm=0x3,
        attribute_flags_mask=0xFFFFFFFFFFFFFFFD,
        attribute_xfrm_mask=0xFFFFFFFFFFFFFF1B,
        enclave_hash=bytes.fromhex(FORTANIX_MRENCLAVE),
        isv_prod_id=0,
        isv_svn=0,
    )


def test_resigning_fortanix_vector_reproduces_all_1808_bytes(sample_pem):
    key = keys.load_private_key(sample_pem, source="sig1.key.pem", allow_sample_key=True)
    signed = keys.sign_sigstruct(_fortanix_fields(), key)
    expected = vector("fortanix-sig1/sig1.sigstruct.bin", "real-SIGSTRUCT cross-check")
    assert signed.to_bytes() == expected.read_bytes()


def _unsigned(
    enclave_hash: bytes,
    *,
    vendor=0,
    date=(2025, 1, 2),
    misc_select=0,
    attribute_flags=0x4,
    attribute_xfrm=0x3,
    attribute_flags_mask=0xFFFFFFFFFFFFFFFD,
    attribute_xfrm_mask=0xFFFFFFFFFFFFFF1B,
    isv_prod_id=0,
    isv_svn=0,
) -> Sigstruct:
    """Our Sigstruct with the fields (and defaults) of sigstruct_reference.signed_sigstruct."""
    return Sigstruct(
        vendor=vendor,
        date_bcd=encode_bcd_date(*date),
        misc_select=misc_select,
        misc_mask=0xFFFFFFFF,
        attribute_flags=attribute_flags,
        attribute_xfrm=attribute_xfrm,
        attribute_flags_mask=attribute_flags_mask,
        attribute_xfrm_mask=attribute_xfrm_mask,
        enclave_hash=enclave_hash,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
    )


@pytest.mark.parametrize(
    "fields",
    [
        dict(),
        dict(
            vendor=0x8086,
            date=(2024, 8, 11),
            misc_select=1,
            attribute_flags=0x6,
            attribute_xfrm=0xE7,
            attribute_flags_mask=(1 << 64) - 1,
            attribute_xfrm_mask=0xFF,
            isv_prod_id=65535,
            isv_svn=7,
        ),
    ],
    ids=["sdk-defaults", "every-field-set"],
)
def test_signing_reproduces_an_independently_written_sigstruct_byte_for_byte(sgx_key, fields):
    """The in-repo twin of the fortanix cross-check: tests/sigstruct_reference.py writes and
    signs the SIGSTRUCT from the SDK's enclave_css_t; our signer must make the same 1808
    bytes (PKCS#1 v1.5 is deterministic)."""
    enclave_hash = hashlib.sha256(repr(fields).encode()).digest()
    expected = signed_sigstruct(sgx_key, enclave_hash=enclave_hash, **fields)
    ours = keys.sign_sigstruct(_unsigned(enclave_hash, **fields), sgx_key)
    assert ours.to_bytes() == expected


def test_generated_key_is_sgx_shaped_and_signs(sgx_key):
    assert sgx_key.key_size == 3072
    assert sgx_key.public_key().public_numbers().e == 3
    signed = keys.sign_sigstruct(_fortanix_fields(), sgx_key)
    assert verify_signature(signed) and verify_q1_q2(signed)
    assert signed.exponent == 3
    assert signed.mrsigner == keys.mrsigner_of(sgx_key.public_key())


def test_corrupt_key_is_caught_by_verifying_the_signature(sgx_key):
    n = sgx_key.private_numbers()
    broken = rsa.RSAPrivateNumbers(
        n.p, n.q, n.d + 2, n.dmp1 + 2, n.dmq1, n.iqmp, n.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    key = keys.load_private_key(_pem(broken), source="KEY.pem")
    with pytest.raises(SigningError, match=r"^KEY\.pem: the key made a signature that does not"):
        keys.sign_sigstruct(_fortanix_fields(), key, source="KEY.pem")


def test_the_refused_mrsigner_is_the_sample_keys():
    """What the refusal compares with is the SHA-256 of the sample key's little-endian modulus
    (its public half is in tests/sdk_sample_key.py)."""
    n = serialization.load_pem_public_key(SAMPLE_PUBLIC_PEM).public_numbers().n
    assert hashlib.sha256(n.to_bytes(384, "little")).hexdigest() == SAMPLE_MRSIGNER_HEX
    assert keys.SAMPLE_KEY_MRSIGNER.hex() == SAMPLE_MRSIGNER_HEX


def test_sample_key_refused_without_flag(sample_private_pem):
    with pytest.raises(SigningError) as info:
        keys.load_private_key(sample_private_pem, source="sig1.key.pem")
    msg = str(info.value)
    assert msg.startswith("sig1.key.pem: this is the public Intel SGX SDK sample key")
    assert SAMPLE_MRSIGNER_HEX in msg
    assert "ppml-build keygen" in msg and "\n" not in msg
    assert keys.load_private_key(sample_private_pem, source="k", allow_sample_key=True)


@pytest.mark.parametrize("bits, e", [(2048, 65537), (2048, 3), (3072, 65537)])
def test_wrong_size_or_exponent(bits, e):
    pem = _pem(rsa.generate_private_key(public_exponent=e, key_size=bits))
    with pytest.raises(SigningError) as info:
        keys.load_private_key(pem, source="KEY.pem")
    assert str(info.value) == (
        f"KEY.pem: expected an RSA-3072 key with exponent 3, got {bits}-bit "
        f"e={e}; make one with `ppml-build keygen`"
    )


def test_non_rsa_key():
    pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(
        SigningError,
        match=r"^KEY\.pem: expected an RSA-3072 key with exponent "
        r"3, got a key of type EC; make one with `ppml-build "
        r"keygen`$",
    ):
        keys.load_private_key(pem, source="KEY.pem")


def test_not_a_pem():
    with pytest.raises(SigningError, match=r"^KEY\.pem: not a PEM private key"):
        keys.load_private_key(b"hello\n", source="KEY.pem")


def test_encrypted_key_needs_the_right_passphrase(sgx_key):
    pem = keys.private_key_pem(sgx_key, b"s3cret")
    assert b"ENCRYPTED" in pem
    with pytest.raises(
        SigningError,
        match=r"^KEY\.pem: the key is encrypted; give its passphrase "
        r"with --passphrase-file",
    ):
        keys.load_private_key(pem, source="KEY.pem")
    with pytest.raises(SigningError, match=r"^KEY\.pem: wrong passphrase"):
        keys.load_private_key(pem, b"wrong", source="KEY.pem")
    loaded = keys.load_private_key(pem, b"s3cret", source="KEY.pem")
    assert loaded.private_numbers() == sgx_key.private_numbers()


def test_passphrase_for_plain_key_is_an_error(sgx_key):
    with pytest.raises(SigningError, match="not encrypted"):
        keys.load_private_key(keys.private_key_pem(sgx_key), b"x", source="KEY.pem")


def test_unencrypted_pem_is_traditional_openssl_like_gramine(sgx_key):
    assert keys.private_key_pem(sgx_key).startswith(b"-----BEGIN RSA PRIVATE KEY-----")


@pytest.mark.parametrize(
    "sample_pub",
    [
        SAMPLE_PUBLIC_PEM,  # PKCS#1
        keys.public_key_pem(serialization.load_pem_public_key(SAMPLE_PUBLIC_PEM)),  # SPKI
    ],
    ids=["pkcs1", "spki"],
)
def test_public_key_loading(sgx_key, sample_pub):
    pub_pem = keys.public_key_pem(sgx_key)
    pub = keys.load_public_key(pub_pem, source="pub.pem")
    assert pub.public_numbers() == sgx_key.public_key().public_numbers()
    with pytest.raises(SigningError, match=r"^pub\.pem: this is the public Intel SGX SDK sample"):
        keys.load_public_key(sample_pub, source="pub.pem")
    assert keys.load_public_key(sample_pub, source="pub.pem", allow_sample_key=True)
    with pytest.raises(SigningError, match=r"^pub\.pem: not a PEM public key \(this is a private"):
        keys.load_public_key(keys.private_key_pem(sgx_key), source="pub.pem")


def test_two_step_assembly_equals_one_step(sgx_key):
    tbs = _fortanix_fields()
    external = sgx_key.sign(tbs.signing_data(), padding.PKCS1v15(), hashes.SHA256())
    assembled = keys.assemble_with_signature(tbs, sgx_key.public_key(), external)
    assert assembled.to_bytes() == keys.sign_sigstruct(tbs, sgx_key).to_bytes()


def test_two_step_rejects_a_signature_over_other_data(sgx_key):
    tbs = _fortanix_fields()
    other = sgx_key.sign(b"something else", padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(SigningError, match=r"^sig\.bin: does not verify"):
        keys.assemble_with_signature(tbs, sgx_key.public_key(), other, source="sig.bin")
    with pytest.raises(SigningError, match=r"^sig\.bin: 10 bytes, an RSA-3072 signature is 384"):
        keys.assemble_with_signature(tbs, sgx_key.public_key(), bytes(10), source="sig.bin")
