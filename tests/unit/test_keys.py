"""Signing keys: RSA-3072/e=3 only, no sample key, passphrases, and exact signatures."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ppml_build.errors import SigningError
from ppml_build.sign import keys
from ppml_build.sign.sigstruct import Sigstruct, encode_bcd_date, verify_q1_q2, verify_signature

FORTANIX_MRENCLAVE = "c50673624a6cb17c1c6c2a4e6906f47a170c4629b8723781d1017ef376f1a75d"


@pytest.fixture(scope="module")
def sample_pem(vectors_dir) -> bytes:
    return (vectors_dir / "fortanix-sig1" / "sig1.key.pem").read_bytes()


@pytest.fixture(scope="module")
def sgx_key() -> rsa.RSAPrivateKey:
    return keys.generate_key()


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


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


def test_resigning_fortanix_vector_reproduces_all_1808_bytes(vectors_dir, sample_pem):
    key = keys.load_private_key(sample_pem, source="sig1.key.pem", allow_sample_key=True)
    signed = keys.sign_sigstruct(_fortanix_fields(), key)
    expected = (vectors_dir / "fortanix-sig1" / "sig1.sigstruct.bin").read_bytes()
    assert signed.to_bytes() == expected


def test_generated_key_is_sgx_shaped_and_signs(sgx_key):
    assert sgx_key.key_size == 3072
    assert sgx_key.public_key().public_numbers().e == 3
    signed = keys.sign_sigstruct(_fortanix_fields(), sgx_key)
    assert verify_signature(signed) and verify_q1_q2(signed)
    assert signed.exponent == 3
    assert signed.mrsigner == keys.mrsigner_of(sgx_key.public_key())


def test_corrupt_key_is_caught_by_verifying_the_signature(sgx_key):
    n = sgx_key.private_numbers()
    broken = rsa.RSAPrivateNumbers(n.p, n.q, n.d + 2, n.dmp1 + 2, n.dmq1, n.iqmp,
                                   n.public_numbers).private_key(
                                       unsafe_skip_rsa_key_validation=True)
    key = keys.load_private_key(_pem(broken), source="KEY.pem")
    with pytest.raises(SigningError, match=r"^KEY\.pem: the key made a signature that does not"):
        keys.sign_sigstruct(_fortanix_fields(), key, source="KEY.pem")


def test_sample_key_refused_without_flag(sample_pem):
    with pytest.raises(SigningError) as info:
        keys.load_private_key(sample_pem, source="sig1.key.pem")
    msg = str(info.value)
    assert msg.startswith("sig1.key.pem: this is the public Intel SGX SDK sample key")
    assert keys.SAMPLE_KEY_MRSIGNER.hex() in msg
    assert "ppml-build keygen" in msg and "\n" not in msg


@pytest.mark.parametrize("bits, e", [(2048, 65537), (2048, 3), (3072, 65537)])
def test_wrong_size_or_exponent(bits, e):
    pem = _pem(rsa.generate_private_key(public_exponent=e, key_size=bits))
    with pytest.raises(SigningError) as info:
        keys.load_private_key(pem, source="KEY.pem")
    assert str(info.value) == (f"KEY.pem: expected an RSA-3072 key with exponent 3, got {bits}-bit "
                               f"e={e}; make one with `ppml-build keygen`")


def test_non_rsa_key():
    pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SigningError, match=r"^KEY\.pem: expected an RSA-3072 key with exponent "
                                           r"3, got a key of type EC; make one with `ppml-build "
                                           r"keygen`$"):
        keys.load_private_key(pem, source="KEY.pem")


def test_not_a_pem():
    with pytest.raises(SigningError, match=r"^KEY\.pem: not a PEM private key"):
        keys.load_private_key(b"hello\n", source="KEY.pem")


def test_encrypted_key_needs_the_right_passphrase(sgx_key):
    pem = keys.private_key_pem(sgx_key, b"s3cret")
    assert b"ENCRYPTED" in pem
    with pytest.raises(SigningError, match=r"^KEY\.pem: the key is encrypted; give its passphrase "
                                           r"with --passphrase-file"):
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


def test_public_key_loading(sgx_key, sample_pem):
    pub_pem = keys.public_key_pem(sgx_key)
    pub = keys.load_public_key(pub_pem, source="pub.pem")
    assert pub.public_numbers() == sgx_key.public_key().public_numbers()
    sample_pub = keys.public_key_pem(serialization.load_pem_private_key(sample_pem, None))
    with pytest.raises(SigningError, match="sample key"):
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
