"""TEST ONLY: a signed SIGSTRUCT written from the Intel SGX SDK's definition of it, not with
``ppml_build.sign.sigstruct`` or ``ppml_build.sign.keys``, so that tests of those stay
independent of them (and run without the real vectors, tests/real_vectors.py).

intel/linux-sgx ``common/inc/internal/arch.h``, ``enclave_css_t`` (1808 bytes, packed,
little-endian), offsets in brackets:

    css_header_t  header[12] = 06000000 E1000000 00000100 (0), type (12), module_vendor (16),
                  date, BCD 0xYYYYMMDD (20), header2[16] = 01010000 60000000 60000000 01000000
                  (24), hw_version (40), reserved[84] (44)
    css_key_t     modulus[384] (128), exponent (512), signature[384] (516)
    css_body_t    misc_select (900), misc_mask (904), reserved (908), isv_family_id[16] (912),
                  attributes {flags, xfrm} (928), attribute_mask (944), enclave_hash (960),
                  reserved2 (992), isvext_prod_id[16] (1008), isv_prod_id (1024), isv_svn (1026)
    css_buffer_t  reserved[12] (1028), q1[384] (1040), q2[384] (1424)

The signature is RSASSA-PKCS1-v1_5 with SHA-256 over header || body (bytes 0-127 and 900-1027),
as ``sgx_sign`` makes it; Q1 = floor(S^2 / N) and Q2 = floor((S^3 - Q1 * S * N) / N) (Intel SDM
vol. 3D, EINIT's "Enclave Signature Structure"). Modulus, signature, Q1 and Q2 are stored
little-endian.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SIZE = 1808
HEADER = bytes.fromhex("06000000e100000000000100")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")


def bcd_date(year: int, month: int, day: int) -> int:
    return int(f"{year:04d}{month:02d}{day:02d}", 16)


def signed_sigstruct(
    key: rsa.RSAPrivateKey,
    *,
    enclave_hash: bytes,
    vendor: int = 0,
    date: tuple[int, int, int] = (2025, 1, 2),
    header_type: int = 0,
    misc_select: int = 0,
    misc_mask: int = 0xFFFFFFFF,
    attribute_flags: int = 0x4,
    attribute_xfrm: int = 0x3,
    attribute_flags_mask: int = 0xFFFFFFFFFFFFFFFD,
    attribute_xfrm_mask: int = 0xFFFFFFFFFFFFFF1B,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
) -> bytes:
    """The 1808 bytes, signed with ``key``. The default masks are those of an SDK enclave
    configured DisableDebug=0: ATTRIBUTEMASK leaves DEBUG (bit 1) free."""
    assert len(enclave_hash) == 32
    out = bytearray(SIZE)
    out[0:12] = HEADER
    struct.pack_into("<III", out, 12, header_type, vendor, bcd_date(*date))
    out[24:40] = HEADER2
    struct.pack_into("<II", out, 900, misc_select, misc_mask)
    struct.pack_into(
        "<QQQQ",
        out,
        928,
        attribute_flags,
        attribute_xfrm,
        attribute_flags_mask,
        attribute_xfrm_mask,
    )
    out[960:992] = enclave_hash
    struct.pack_into("<HH", out, 1024, isv_prod_id, isv_svn)

    numbers = key.public_key().public_numbers()
    signed_bytes = bytes(out[0:128] + out[900:1028])
    signature = int.from_bytes(key.sign(signed_bytes, padding.PKCS1v15(), hashes.SHA256()), "big")
    n = numbers.n
    q1 = signature**2 // n
    q2 = (signature**3 - q1 * signature * n) // n
    out[128:512] = n.to_bytes(384, "little")
    struct.pack_into("<I", out, 512, numbers.e)
    out[516:900] = signature.to_bytes(384, "little")
    out[1040:1424] = q1.to_bytes(384, "little")
    out[1424:1808] = q2.to_bytes(384, "little")
    return bytes(out)
