"""Enclave signing keys: RSA-3072 with public exponent 3, as SGX's EINIT requires.

Pure code: PEM bytes in, key objects and SIGSTRUCTs out. Error messages name ``source`` (the
file the bytes came from) and never contain key material.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import SigningError
from .sigstruct import KEY_SIZE_BYTES, Sigstruct, verify_signature

SGX_RSA_KEY_SIZE = 3072
SGX_RSA_PUBLIC_EXPONENT = 3

# MRSIGNER of the Intel SGX SDK sample key (Enclave_private.pem / Occlum's default key). Anyone
# can sign with it, so an enclave signed by it proves nothing about who built it.
SAMPLE_KEY_MRSIGNER = bytes.fromhex(
    "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
)

_MAKE_ONE = "make one with `ppml-build keygen`"

PublicKey = rsa.RSAPublicKey
PrivateKey = rsa.RSAPrivateKey


def mrsigner_of(public_key: PublicKey) -> bytes:
    """SHA-256 of the modulus as the SIGSTRUCT stores it (384 bytes, little-endian)."""
    n = public_key.public_numbers().n
    return hashlib.sha256(n.to_bytes(KEY_SIZE_BYTES, "little")).digest()


def check_public_key(key: object, *, source: str, allow_sample_key: bool = False) -> PublicKey:
    """Refuse anything but RSA-3072/e=3, and the SDK sample key unless explicitly allowed."""
    if isinstance(key, rsa.RSAPrivateKey):
        key = key.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        kind = type(key).__name__.lstrip("_").replace("PublicKey", "").replace("PrivateKey", "")
        raise SigningError(
            f"{source}: expected an RSA-3072 key with exponent 3, got a key of type "
            f"{kind or 'unknown'}; {_MAKE_ONE}"
        )
    e = key.public_numbers().e
    if key.key_size != SGX_RSA_KEY_SIZE or e != SGX_RSA_PUBLIC_EXPONENT:
        raise SigningError(
            f"{source}: expected an RSA-3072 key with exponent 3, got "
            f"{key.key_size}-bit e={e}; {_MAKE_ONE}"
        )
    if not allow_sample_key and mrsigner_of(key) == SAMPLE_KEY_MRSIGNER:
        raise SigningError(
            f"{source}: this is the public Intel SGX SDK sample key (MRSIGNER "
            f"{SAMPLE_KEY_MRSIGNER.hex()}), anyone can sign with it; {_MAKE_ONE} "
            "(or pass --insecure-sample-key for tests only)"
        )
    return key


def load_private_key(
    pem: bytes,
    passphrase: bytes | None = None,
    *,
    source: str = "key",
    allow_sample_key: bool = False,
) -> PrivateKey:
    """Load a PEM private key and check it is usable for SGX signing."""
    try:
        # OpenSSL's RSA consistency check costs ~0.2 s for e=3 keys; sign_sigstruct verifies
        # every signature it makes instead, which also catches a corrupt key.
        key = serialization.load_pem_private_key(
            pem, password=passphrase, unsafe_skip_rsa_key_validation=True
        )
    except TypeError as exc:
        # cryptography raises TypeError for "encrypted but no password" and the reverse
        if passphrase is None:
            raise SigningError(
                f"{source}: the key is encrypted; give its passphrase with "
                "--passphrase-file FILE or the PPML_KEY_PASSPHRASE "
                "variable"
            ) from None
        raise SigningError(
            f"{source}: the key is not encrypted; drop --passphrase-file and PPML_KEY_PASSPHRASE"
        ) from exc
    except ValueError as exc:
        if passphrase is not None and b"ENCRYPTED" in pem:
            raise SigningError(f"{source}: wrong passphrase for the encrypted key") from None
        raise SigningError(
            f"{source}: not a PEM private key ({_first_line(exc)}); {_MAKE_ONE}"
        ) from None
    except UnsupportedAlgorithm:
        raise SigningError(f"{source}: unsupported key type; {_MAKE_ONE}") from None
    check_public_key(key.public_key(), source=source, allow_sample_key=allow_sample_key)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_public_key(
    pem: bytes, *, source: str = "public key", allow_sample_key: bool = False
) -> PublicKey:
    """Load a PEM public key (SubjectPublicKeyInfo or PKCS#1 "RSA PUBLIC KEY") and check it."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        hint = (
            " (this is a private key: give its public half, `openssl rsa -pubout`)"
            if b"PRIVATE KEY" in pem
            else f" ({_first_line(exc)})"
        )
        raise SigningError(f"{source}: not a PEM public key{hint}") from None
    return check_public_key(key, source=source, allow_sample_key=allow_sample_key)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def generate_key() -> PrivateKey:
    """A fresh RSA-3072 key with e=3 (what gramine-sgx-gen-private-key makes)."""
    return rsa.generate_private_key(
        public_exponent=SGX_RSA_PUBLIC_EXPONENT, key_size=SGX_RSA_KEY_SIZE
    )


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PEM of a private key: TraditionalOpenSSL like Gramine, or encrypted PKCS#8."""
    if passphrase:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a key's public half."""
    if isinstance(key, rsa.RSAPrivateKey):
        key = key.public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_sigstruct(
    sig: Sigstruct, private_key: PrivateKey, *, source: str = "signing key"
) -> Sigstruct:
    """Sign with RSASSA-PKCS1-v1_5/SHA-256 and fill MODULUS, EXPONENT, SIGNATURE, Q1, Q2."""
    check_public_key(private_key.public_key(), source=source, allow_sample_key=True)
    signature = private_key.sign(sig.signing_data(), padding.PKCS1v15(), hashes.SHA256())
    numbers = private_key.public_key().public_numbers()
    signed = sig.with_signature(
        modulus=numbers.n, exponent=numbers.e, signature=int.from_bytes(signature, "big")
    )
    if not verify_signature(signed):
        raise SigningError(
            f"{source}: the key made a signature that does not verify; the key "
            "is corrupt (make a new one with `ppml-build keygen`)"
        )
    return signed


def assemble_with_signature(
    sig: Sigstruct, public_key: PublicKey, signature_be: bytes, *, source: str = "signature"
) -> Sigstruct:
    """Second half of two-step signing: attach a signature made elsewhere (HSM, KMS, openssl).

    ``signature_be`` is the raw big-endian PKCS#1 v1.5 signature over ``sig.signing_data()``
    (what ``openssl dgst -sha256 -sign key.pem`` writes). It is verified before anything is
    returned, so a wrong key, wrong data or wrong hash never yields a SIGSTRUCT.
    """
    if len(signature_be) != KEY_SIZE_BYTES:
        raise SigningError(
            f"{source}: {len(signature_be)} bytes, an RSA-3072 signature is "
            f"{KEY_SIZE_BYTES} bytes (raw, as `openssl dgst -sha256 -sign` "
            "writes it)"
        )
    try:
        public_key.verify(signature_be, sig.signing_data(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SigningError(
            f"{source}: does not verify with the given public key over the signing "
            "data; sign exactly the signing-data file with the matching key, "
            "SHA-256 and PKCS#1 v1.5"
        ) from None
    numbers = public_key.public_numbers()
    return sig.with_signature(
        modulus=numbers.n, exponent=numbers.e, signature=int.from_bytes(signature_be, "big")
    )
