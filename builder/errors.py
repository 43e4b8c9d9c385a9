"""Error types the CLI turns into one line and exit code 2 (tracebacks only with --debug)."""

from __future__ import annotations

import re

# C0/C1 controls, DEL, zero-width and bidirectional format characters, lone surrogates: shown
# escaped, so a file name or value cannot move the cursor, recolour the terminal, reorder the
# line (U+202E) or split the one-line error (\r, \n).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def printable(text: str) -> str:
    """``text`` with every character that would act on a terminal written as an escape."""
    return _UNPRINTABLE.sub(_escape, text)


MAX_MESSAGE_CHARS = 2000


def one_line(text: str) -> str:
    """An error line for the terminal: escaped, and an echoed value of 100k characters cut in
    its middle, so the file and field (the head) and the fix (the tail) both stay."""
    text = printable(text)
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    cut = len(text) - 1500
    return f"{text[:1000]} … ({cut:,} characters left out) … {text[-500:]}"


class PpmlError(Exception):
    """A user-facing error: bad input, a missing file, a refused key.

    ``str(err)`` is the single line the CLI prints; it names the file, the field and the fix.
    """

    exit_code = 2


class RecipeError(PpmlError):
    """The recipe YAML is malformed or asks for something impossible."""


class PlanError(PpmlError):
    """The enclave cannot be sized as asked (too small, too many threads)."""


class ManifestError(PpmlError):
    """A manifest cannot be rendered or read (bad key, missing trusted file)."""


class SigningError(PpmlError):
    """A key, a manifest or a SIGSTRUCT is not acceptable for signing or measuring."""


class VerificationError(PpmlError):
    """A SIGSTRUCT or an image does not verify. Exit code 1: the input was readable but wrong."""

    exit_code = 1


class ImageError(PpmlError):
    """Docker engine or registry problems (engine down, auth refused, digest mismatch)."""


class InputLimitError(PpmlError):
    """An input past one of the bounds in limits.py (size, nesting, alias expansion, digits)."""


class OutputError(PpmlError):
    """An output cannot be written where asked: a missing or read-only directory, a directory
    in the way, a full disk."""
