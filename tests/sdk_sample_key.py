"""TEST ONLY: the public half of the Intel SGX SDK sample key, and a key file that looks like it.

The sample key is the RSA-3072 (e=3) key the SDK's sample enclaves were signed with, and the
key Occlum signs with when ``occlum build`` gets no --sign-key (Occlum's
``etc/template/Enclave.pem``, copied into every instance by ``tools/occlum``). Its private half
is public too, so an enclave it signed proves nothing; ppml-build refuses it by its MRSIGNER,
the SHA-256 of the little-endian modulus (``ppml_build.sign.keys.check_public_key``).

Only the public half is kept here: it is in every SIGSTRUCT the key ever signed (MODULUS).
The private key itself is one of the real vectors (tests/real_vectors.py,
fortanix-sig1/sig1.key.pem); the tests that need a real signature from it skip without it.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization

# MRSIGNER of the key below: SHA-256 of its 384-byte little-endian modulus. Written out here,
# not taken from ppml_build.
SAMPLE_MRSIGNER_HEX = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"

SAMPLE_PUBLIC_PEM = b"""\
-----BEGIN RSA PUBLIC KEY-----
MIIBiAKCAYEAroOogvsj/fZDZY8XFdkl6dJmky0lRvnWMmpeH41Bla6U1qLZAmZu
yIF+mQC/cgojIsrBMzBxb1kKqzATF4+XwPwgKz7fmiddmHyYz2WDJfAjIveJZjdM
jM4+EytGlkkJ52T8V8ds0/L2qKexJ+NBLxkeQLfV8n1mIk7zX7jguwbCG1PrnEMd
J3Sew20vnje+RsngAzdPChoJpVsWi/K7cettX/tbnre1DL02GXc5qJoQYk7b3zkm
hz31TgFrd9VVtmUGyFXAysuSAb3EN+5VnHGr0xKkeg8utErea2FNtNIgua8HONfm
9Eiyaav1SVKzPHlyqLtcdxH3I8Wg7yqMsaprZ1n5A1v/levxnL8+It02KseD5HqV
4rf/cImSlCt3lpRg8U5E1pyFQ2IVEC/XTDMiI3c+AR+w2jSRB3Bwn9zJtFlWKHG3
m1xGI4ck+Lci1JvWWLXQagQSPtZTsubxTQNx1gsgZhgv1JHVZMdbVlAbbRMC1nSu
JNl7KPAS/VfzAgED
-----END RSA PUBLIC KEY-----
"""


def sample_modulus() -> int:
    return serialization.load_pem_public_key(SAMPLE_PUBLIC_PEM).public_numbers().n


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0: never negative
    return b"\x02" + _der_length(len(raw)) + raw


def lookalike_private_pem() -> bytes:
    """A PKCS#1 "RSA PRIVATE KEY" PEM whose public half is the sample key's, with made-up
    private numbers (RFC 8017 A.1.2 RSAPrivateKey: version, n, e, d, p, q, dP, dQ, qInv).

    Whatever judges a key by its public half (the sample-key refusal) must treat it exactly as
    the real sample key. It cannot sign: a signature made with it does not verify, which
    ppml-build's signer reports as a corrupt key.
    """
    numbers = (0, sample_modulus(), 3, 1, 1, 1, 1, 1, 1)
    body = b"".join(_der_integer(value) for value in numbers)
    der = b"\x30" + _der_length(len(body)) + body
    return (
        b"-----BEGIN RSA PRIVATE KEY-----\n"
        + base64.encodebytes(der)
        + b"-----END RSA PRIVATE KEY-----\n"
    )
