"""The SGX SIGSTRUCT (Intel SDM vol. 3D, "Enclave Signature Structure"): 1808 bytes, little-endian.

Pure code: bytes and ints in, bytes out. Field names follow the SDM; Gramine 1.9 fills the same
subset of them (``sgx_sign.get_tbssigstruct``) and leaves the rest zero.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import SigningError

SIGSTRUCT_SIZE = 1808
KEY_SIZE_BYTES = 384  # RSA-3072

# The first 12 bytes of HEADER are fixed; bytes 12..15 are what the Intel SDK calls the "type"
# (bit 31 set = signed with a debug key; everything else must be zero).
HEADER_FIXED = bytes.fromhex("06000000e100000000000100")
HEADER = HEADER_FIXED + bytes(4)
HEADER_TYPE_DEBUG = 0x80000000
HEADER2 = bytes.fromhex("01010000600000006000000001000000")

# sgx_arch.h constants (Gramine's _graminelibos_offsets values).
SGX_FLAGS_DEBUG = 0x2
SGX_FLAGS_MODE64BIT = 0x4
SGX_XFRM_LEGACY = 0x3
SGX_XFRM_AVX = 0x4
SGX_XFRM_MPX = 0x18
SGX_XFRM_AVX512 = 0xE4
SGX_XFRM_PKRU = 0x200
SGX_XFRM_AMX = 0x60000
SGX_MISCSELECT_EXINFO = 0x1
SGX_FLAGS_MASK_CONST = 0xFFFFFFFFFFFFFFFF
SGX_XFRM_MASK_CONST = 0xFFFFFFFFFFF9FF1B
SGX_MISCSELECT_MASK_CONST = 0xFFFFFFFF

# (field name, offset, struct format). Reserved areas are kept so that from_bytes/to_bytes
# round-trips any SIGSTRUCT exactly, even one with junk in them.
_LAYOUT: tuple[tuple[str, int, str], ...] = (
    ("header", 0, "16s"),
    ("vendor", 16, "<I"),
    ("date_bcd", 20, "<I"),
    ("header2", 24, "16s"),
    ("swdefined", 40, "<I"),
    ("reserved1", 44, "84s"),
    ("modulus", 128, "384s"),
    ("exponent", 512, "<I"),
    ("signature", 516, "384s"),
    ("misc_select", 900, "<I"),
    ("misc_mask", 904, "<I"),
    ("cet_attributes", 908, "<B"),
    ("cet_attributes_mask", 909, "<B"),
    ("reserved2", 910, "2s"),
    ("isv_family_id", 912, "16s"),
    ("attribute_flags", 928, "<Q"),
    ("attribute_xfrm", 936, "<Q"),
    ("attribute_flags_mask", 944, "<Q"),
    ("attribute_xfrm_mask", 952, "<Q"),
    ("enclave_hash", 960, "32s"),
    ("reserved3", 992, "16s"),
    ("isv_ext_prod_id", 1008, "16s"),
    ("isv_prod_id", 1024, "<H"),
    ("isv_svn", 1026, "<H"),
    ("reserved4", 1028, "12s"),
    ("q1", 1040, "384s"),
    ("q2", 1424, "384s"),
)

# The signed bytes: HEADER..reserved1, then MISCSELECT..ISVSVN (SDM; Gramine get_signing_data).
SIGNED_RANGES = ((0, 128), (900, 1028))


def encode_bcd_date(year: int, month: int, day: int) -> int:
    """DATE as stored (u32 LE 0xYYYYMMDD, BCD). As in Gramine, 0000-00-00 and the like are fine."""
    if not (0 <= year <= 9999 and 0 <= month <= 99 and 0 <= day <= 99):
        raise SigningError(
            f"date {year:04d}-{month:02d}-{day:02d}: year must have 4 digits, "
            "month and day 2 digits"
        )
    return (int(str(year), 16) << 16) | (int(str(month), 16) << 8) | int(str(day), 16)


def decode_bcd_date(raw: int) -> str:
    """'YYYY-MM-DD' from the raw DATE field, digit for digit (non-BCD nibbles show as hex)."""
    return f"{raw >> 16 & 0xFFFF:04x}-{raw >> 8 & 0xFF:02x}-{raw & 0xFF:02x}"


_DATE_RE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")


def parse_date(text: str, *, today: datetime.date | None = None) -> int:
    """``--date`` value ("YYYY-MM-DD" or "today") to the raw BCD DATE field.

    The calendar is not checked, as in gramine-sgx-sign: 0000-00-00 is the usual choice for
    reproducible signatures.
    """
    if text == "today":
        day = today or datetime.datetime.now(datetime.UTC).date()
        return encode_bcd_date(day.year, day.month, day.day)
    match = _DATE_RE.match(text)
    if not match:
        raise SigningError(
            f"--date {text!r}: expected YYYY-MM-DD (for example 2025-01-31 or "
            "0000-00-00) or 'today'"
        )
    year, month, day = (int(g) for g in match.groups())
    return encode_bcd_date(year, month, day)


@dataclass
class Sigstruct:
    """Every SIGSTRUCT field. Integers are host ints; byte fields hold the bytes as stored (LE)."""

    header: bytes = HEADER
    vendor: int = 0
    date_bcd: int = 0
    header2: bytes = HEADER2
    swdefined: int = 0
    reserved1: bytes = bytes(84)
    modulus: bytes = bytes(KEY_SIZE_BYTES)
    exponent: int = 0
    signature: bytes = bytes(KEY_SIZE_BYTES)
    misc_select: int = 0
    misc_mask: int = SGX_MISCSELECT_MASK_CONST
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    reserved2: bytes = bytes(2)
    isv_family_id: bytes = bytes(16)
    attribute_flags: int = 0
    attribute_xfrm: int = 0
    attribute_flags_mask: int = SGX_FLAGS_MASK_CONST
    attribute_xfrm_mask: int = SGX_XFRM_MASK_CONST
    enclave_hash: bytes = bytes(32)
    reserved3: bytes = bytes(16)
    isv_ext_prod_id: bytes = bytes(16)
    isv_prod_id: int = 0
    isv_svn: int = 0
    reserved4: bytes = bytes(12)
    q1: bytes = bytes(KEY_SIZE_BYTES)
    q2: bytes = bytes(KEY_SIZE_BYTES)

    # -- serialisation ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        buf = bytearray(SIGSTRUCT_SIZE)
        for name, offset, fmt in _LAYOUT:
            value = getattr(self, name)
            try:
                struct.pack_into(fmt, buf, offset, value)
            except struct.error as exc:
                raise SigningError(
                    f"SIGSTRUCT field {name} = {value!r} does not fit {fmt}"
                ) from exc
            if fmt.endswith("s") and len(value) != struct.calcsize(fmt):
                # struct pads or truncates silently; a wrong length is a bug in the caller
                raise SigningError(
                    f"SIGSTRUCT field {name} must be {struct.calcsize(fmt)} bytes, got {len(value)}"
                )
        return bytes(buf)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "SIGSTRUCT") -> "Sigstruct":
        """Parse 1808 bytes; SigningError (naming ``source``) on a wrong length or header."""
        if len(data) != SIGSTRUCT_SIZE:
            raise SigningError(
                f"{source}: {len(data)} bytes, a SIGSTRUCT is exactly "
                f"{SIGSTRUCT_SIZE} bytes (truncated or not a .sig file)"
            )
        values = {name: struct.unpack_from(fmt, data, offset)[0] for name, offset, fmt in _LAYOUT}
        sig = cls(**values)
        if sig.header[:12] != HEADER_FIXED or sig.header_type & ~HEADER_TYPE_DEBUG:
            raise SigningError(
                f"{source}: HEADER is {sig.header.hex()}, expected {HEADER.hex()} (not a SIGSTRUCT)"
            )
        if sig.header2 != HEADER2:
            raise SigningError(
                f"{source}: HEADER2 is {sig.header2.hex()}, expected "
                f"{HEADER2.hex()} (not a SIGSTRUCT)"
            )
        return sig

    def signing_data(self) -> bytes:
        """The 256 bytes the RSA signature covers: [0,128) + [900,1028)."""
        raw = self.to_bytes()
        return b"".join(raw[start:end] for start, end in SIGNED_RANGES)

    # -- derived values --------------------------------------------------------------------

    @property
    def header_type(self) -> int:
        return struct.unpack_from("<I", self.header, 12)[0]

    @property
    def date_text(self) -> str:
        return decode_bcd_date(self.date_bcd)

    @property
    def date(self) -> datetime.date | None:
        """The DATE as a calendar date, or None for a reproducibility date like 0000-00-00."""
        try:
            return datetime.date.fromisoformat(self.date_text)
        except ValueError:
            return None

    @date.setter
    def date(self, value: datetime.date) -> None:
        self.date_bcd = encode_bcd_date(value.year, value.month, value.day)

    @property
    def mrsigner(self) -> bytes:
        """SHA-256 of the 384-byte little-endian MODULUS field, as EINIT computes it."""
        return hashlib.sha256(self.modulus).digest()

    @property
    def mrenclave(self) -> bytes:
        return self.enclave_hash

    @property
    def debug(self) -> bool:
        return bool(self.attribute_flags & SGX_FLAGS_DEBUG)

    @property
    def modulus_int(self) -> int:
        return int.from_bytes(self.modulus, "little")

    @property
    def signature_int(self) -> int:
        return int.from_bytes(self.signature, "little")

    def copy(self, **changes: Any) -> "Sigstruct":
        return replace(self, **changes)

    def with_signature(self, *, modulus: int, exponent: int, signature: int) -> "Sigstruct":
        """A copy carrying the key, the signature and Q1/Q2 (``Sigstruct.sign`` in Gramine)."""
        if exponent != 3:
            raise SigningError(f"SGX requires RSA exponent 3, got {exponent}")
        q1, q2 = compute_q1_q2(signature, modulus)
        return replace(
            self,
            modulus=modulus.to_bytes(KEY_SIZE_BYTES, "little"),
            exponent=exponent,
            signature=signature.to_bytes(KEY_SIZE_BYTES, "little"),
            q1=q1.to_bytes(KEY_SIZE_BYTES, "little"),
            q2=q2.to_bytes(KEY_SIZE_BYTES, "little"),
        )


def compute_q1_q2(signature: int, modulus: int) -> tuple[int, int]:
    """Q1 = floor(S^2 / M), Q2 = floor((S^3 - Q1*S*M) / M): EINIT's helpers for S^3 mod M."""
    square = signature * signature
    return square // modulus, (square % modulus) * signature // modulus


# -- verification ----------------------------------------------------------------------------

# EMSA-PKCS1-v1_5 DigestInfo prefix for SHA-256 (RFC 8017 §9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def expected_encoded_message(signing_data: bytes) -> int:
    """The PKCS#1 v1.5 encoded message EM (as an integer) that S^3 mod N must equal."""
    t = _SHA256_DIGEST_INFO + hashlib.sha256(signing_data).digest()
    em = b"\x00\x01" + b"\xff" * (KEY_SIZE_BYTES - len(t) - 3) + b"\x00" + t
    return int.from_bytes(em, "big")


def verify_signature(sig: Sigstruct) -> bool:
    """Does SIGNATURE verify against MODULUS (e=3) over the signed bytes? Never raises."""
    n, s = sig.modulus_int, sig.signature_int
    if sig.exponent != 3 or n.bit_length() != 3072 or not 0 < s < n:
        return False
    return pow(s, 3, n) == expected_encoded_message(sig.signing_data())


def verify_q1_q2(sig: Sigstruct) -> bool:
    """Are Q1/Q2 the values EINIT expects for this SIGNATURE and MODULUS?"""
    n, s = sig.modulus_int, sig.signature_int
    # Q1 and Q2 fit in 384 bytes only for a signature below the modulus; a forged .sig with a
    # larger SIGNATURE is simply not consistent (never an exception).
    if n == 0 or not 0 <= s < n:
        return False
    q1, q2 = compute_q1_q2(s, n)
    return (
        q1.to_bytes(KEY_SIZE_BYTES, "little") == sig.q1
        and q2.to_bytes(KEY_SIZE_BYTES, "little") == sig.q2
    )


# -- attributes from the manifest -------------------------------------------------------------

_CPU_FEATURES_OPTIONAL = (("avx", SGX_XFRM_AVX), ("avx512", SGX_XFRM_AVX512), ("amx", SGX_XFRM_AMX))
_CPU_FEATURES_SECURE = (("mpx", SGX_XFRM_MPX), ("pkru", SGX_XFRM_PKRU))
_REMOVED_KEYS = (
    "require_avx",
    "require_avx512",
    "require_mpx",
    "require_pkru",
    "require_amx",
    "require_exinfo",
)


def _bool_option(sgx: Mapping[str, Any], key: str) -> bool:
    value = sgx.get(key, False)
    if not isinstance(value, bool):
        raise SigningError(f"sgx.{key} = {value!r}: expected true or false")
    return value


def enclave_attributes(sgx: Mapping[str, Any]) -> tuple[int, int, int, int, int, int]:
    """(flags, xfrm, flags_mask, xfrm_mask, misc_select, misc_mask) from a manifest's ``sgx`` table.

    Mirrors Gramine 1.9 ``get_enclave_attributes``, including its ordering quirk: features are
    applied avx, avx512, amx, then mpx, pkru, and SGX_XFRM_AVX512 (0xe4) contains the AVX bit,
    so avx="required" with avx512="disabled" ends up without AVX.
    """
    for key in _REMOVED_KEYS:
        if key in sgx:
            new = "sgx.use_exinfo" if key == "require_exinfo" else f"sgx.cpu_features.{key[8:]}"
            raise SigningError(f"sgx.{key} was removed in Gramine 1.8; use {new} instead")

    flags = SGX_FLAGS_MODE64BIT
    if _bool_option(sgx, "debug"):
        flags |= SGX_FLAGS_DEBUG
    misc_select = SGX_MISCSELECT_EXINFO if _bool_option(sgx, "use_exinfo") else 0

    xfrm, xfrm_mask = SGX_XFRM_LEGACY, SGX_XFRM_MASK_CONST
    features = sgx.get("cpu_features", {})
    if not isinstance(features, Mapping):
        raise SigningError(
            f'sgx.cpu_features = {features!r}: expected a table such as {{ avx = "required" }}'
        )
    known = {name for name, _ in _CPU_FEATURES_OPTIONAL + _CPU_FEATURES_SECURE}
    for name in features:
        if name not in known:
            raise SigningError(
                f"sgx.cpu_features.{name}: unknown CPU feature; known: " + ", ".join(sorted(known))
            )
    for options, allowed in (
        (_CPU_FEATURES_OPTIONAL, ("unspecified", "disabled", "required")),
        (_CPU_FEATURES_SECURE, ("disabled", "required")),
    ):
        for name, bits in options:
            value = features.get(name)
            if value is None or value == "unspecified" and "unspecified" in allowed:
                continue
            if value == "required":
                xfrm |= bits
                xfrm_mask |= bits
            elif value == "disabled":
                xfrm &= ~bits
                xfrm_mask |= bits
            else:
                choices = " or ".join(f'"{a}"' for a in allowed)
                raise SigningError(f"sgx.cpu_features.{name} = {value!r}: expected {choices}")
    return flags, xfrm, SGX_FLAGS_MASK_CONST, xfrm_mask, misc_select, SGX_MISCSELECT_MASK_CONST


def check_u16(value: Any, key: str) -> int:
    """ISVPRODID/ISVSVN are 16-bit in the SIGSTRUCT; Gramine lets ``struct`` fail on larger ones."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise SigningError(f"sgx.{key} = {value!r}: expected an integer from 0 to 65535")
    return value


def unsigned_sigstruct(*, enclave_hash: bytes, sgx: Mapping[str, Any], date_bcd: int) -> Sigstruct:
    """The to-be-signed SIGSTRUCT Gramine's ``get_tbssigstruct`` builds for a manifest."""
    if len(enclave_hash) != 32:
        raise SigningError(f"MRENCLAVE must be 32 bytes, got {len(enclave_hash)}")
    flags, xfrm, flags_mask, xfrm_mask, misc_select, misc_mask = enclave_attributes(sgx)
    return Sigstruct(
        date_bcd=date_bcd,
        enclave_hash=bytes(enclave_hash),
        isv_prod_id=check_u16(sgx.get("isvprodid", 0), "isvprodid"),
        isv_svn=check_u16(sgx.get("isvsvn", 0), "isvsvn"),
        attribute_flags=flags,
        attribute_xfrm=xfrm,
        attribute_flags_mask=flags_mask,
        attribute_xfrm_mask=xfrm_mask,
        misc_select=misc_select,
        misc_mask=misc_mask,
    )
