"""Find the signing key in a build context, in any encoding we can derive from it.

A key copied into app.files need not look like the key file: it may be DER, PKCS#8 instead of
PKCS#1, re-wrapped base64, a JWK (base64url), hex, or the bare numbers. What every unencrypted
encoding shares is the private numbers, so besides the key file itself and its DER forms we
look for slices of d, p and q: raw (big- and little-endian), hex, and base64 at each of the
three byte alignments a base64 stream can give them. Text needles are matched against a folded
view of the data (whitespace and backslashes dropped, base64url mapped to base64), so line
wrapping or JSON escaping does not hide them. Only secret values are needles: the modulus is
public (SIGSTRUCT carries it) and is never searched for.

Files are read in chunks with an overlap, so a context of hundreds of MB stays in bounded
memory and a needle across a chunk boundary is still found.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CHUNK = 8 * 1024 * 1024
SLICE_START = 16  # bytes into each number: past anything a padded encoding could change
SLICE_LENGTH = 36  # 288 bits: never there by chance; a multiple of 3, so base64 is exact
MIN_OVERLAP = 4096  # raw bytes kept between chunks; folding only shortens text

# Whitespace, escapes and hex separators (openssl's "ab:cd:") go; base64url's alphabet
# becomes base64's. Neither base64 nor hex uses a character that is dropped.
_FOLD_TABLE = bytes.maketrans(b"-_", b"+/")
_FOLD_DELETE = b" \t\r\n\\:"


class KeyNeedle(bytes):
    """Bytes that must never be shipped, named by the encoding they come from. A ``bytes``, so
    a plain ``needle in data`` test still works where one is enough."""

    encoding: str
    folded: bool  # matched against the folded text view, not the raw bytes

    def __new__(cls, data: bytes, encoding: str, *, folded: bool = False) -> KeyNeedle:
        needle = super().__new__(cls, data)
        needle.encoding = encoding
        needle.folded = folded
        return needle


def key_needles(key_file: bytes, private_key: rsa.RSAPrivateKey | None) -> list[KeyNeedle]:
    """Every needle for this key, most telling encoding first (the first match names it)."""
    needles: list[KeyNeedle] = []
    is_pem = key_file.lstrip().startswith(b"-----BEGIN")
    if key_file.strip():
        needles.append(
            KeyNeedle(
                key_file.strip(), "PEM, the key file itself" if is_pem else "the key file itself"
            )
        )
    if private_key is not None:
        # PKCS#8 first: it wraps the PKCS#1 form, which would otherwise name a PKCS#8 file.
        for label, fmt in (
            ("DER, PKCS#8", serialization.PrivateFormat.PKCS8),
            ("DER, PKCS#1", serialization.PrivateFormat.TraditionalOpenSSL),
        ):
            der = private_key.private_bytes(
                serialization.Encoding.DER, fmt, serialization.NoEncryption()
            )
            needles.append(KeyNeedle(der, label))
    # An encrypted key file's own DER (the DER forms above are the unencrypted ones).
    file_der = _pem_body(key_file) if is_pem and b"ENCRYPTED" in key_file else None
    if file_der:
        piece = file_der[-SLICE_START - SLICE_LENGTH : -SLICE_START]
        needles.append(KeyNeedle(piece, "DER of the key file"))
        needles += _base64_needles(file_der[len(file_der) // 2 :], "base64 of the key file")
    if private_key is not None:
        numbers = private_key.private_numbers()
        for name, value in (
            ("private exponent d", numbers.d),
            ("prime p", numbers.p),
            ("prime q", numbers.q),
        ):
            needles += _number_needles(name, value)
    unique: dict[tuple[bytes, bool], KeyNeedle] = {}
    for needle in needles:
        unique.setdefault((bytes(needle), needle.folded), needle)
    return list(unique.values())


def _pem_body(pem: bytes) -> bytes | None:
    body = b"".join(
        line.strip()
        for line in pem.splitlines()
        if line.strip() and not line.startswith(b"-----") and b":" not in line
    )
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:
        return None


def _number_needles(name: str, value: int) -> list[KeyNeedle]:
    width = (value.bit_length() + 7) // 8
    big = value.to_bytes(width, "big")
    piece = big[SLICE_START : SLICE_START + SLICE_LENGTH]
    little = value.to_bytes(width, "little")[SLICE_START : SLICE_START + SLICE_LENGTH]
    return [
        KeyNeedle(piece, f"the raw {name}, big-endian"),
        KeyNeedle(little, f"the raw {name}, little-endian"),
        *_base64_needles(big[SLICE_START:], f"base64 of the {name}, as a PEM or JWK has it"),
        KeyNeedle(piece.hex().encode(), f"hex of the {name}", folded=True),
        KeyNeedle(piece.hex().upper().encode(), f"hex of the {name}", folded=True),
    ]


def _base64_needles(data: bytes, label: str) -> list[KeyNeedle]:
    """Base64 of a slice of ``data`` at each alignment: inside any base64 stream holding
    ``data``, one of the three appears verbatim."""
    return [
        KeyNeedle(base64.b64encode(data[shift : shift + SLICE_LENGTH]), label, folded=True)
        for shift in range(3)
    ]


def find_in_bytes(data: bytes, needles: list[KeyNeedle]) -> KeyNeedle | None:
    """The first needle (in the given order) found in ``data``, raw or folded."""
    folded: bytes | None = None
    for needle in needles:
        if getattr(needle, "folded", False):
            if folded is None:
                folded = _fold(data)
            if needle in folded:
                return needle
        elif needle and needle in data:
            return needle
    return None


def _fold(data: bytes) -> bytes:
    """The text view: a JSON-escaped newline ("\\n") goes too, but only in text (no NUL byte),
    where it can be the line break of a PEM; dropping it costs more than folding itself."""
    if b"\\" in data and b"\0" not in data:
        data = data.replace(b"\\n", b"")
    return data.translate(_FOLD_TABLE, _FOLD_DELETE)


def find_in_file(path: os.PathLike | str, needles: list[KeyNeedle]) -> KeyNeedle | None:
    """``find_in_bytes`` over a file of any size: chunks read into one reused buffer, each
    searched together with the end of the one before (so no needle hides across a boundary)."""
    overlap = max([MIN_OVERLAP] + [2 * len(needle) for needle in needles])
    buffer = bytearray(CHUNK + overlap)
    view = memoryview(buffer)
    kept = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            end = kept
            while end < len(buffer) and (count := handle.readinto(view[end:])):
                end += count
            if end == kept:
                return None
            # A short (last) read is searched as a copy: the buffer's tail is stale.
            found = find_in_bytes(buffer if end == len(buffer) else buffer[:end], needles)
            if found is not None or end < len(buffer):
                return found
            kept = overlap
            buffer[:kept] = buffer[end - kept : end]


def find_in_tree(root: Path, needles: list[KeyNeedle]) -> tuple[str, KeyNeedle] | None:
    """The first regular file below ``root`` (links not followed) holding a needle, as its
    posix path relative to ``root``, with the needle found."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file():
                continue  # a link's target is scanned where it lies (inside the context)
            found = find_in_file(path, needles)
            if found is not None:
                return path.relative_to(root).as_posix(), found
    return None
