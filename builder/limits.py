"""Bounds on what ppml-build reads, so a hostile input ends in one line, never a hang or a crash.

One home for every limit; the README's "Limits" section lists them. Each kind of limit has its
own message (and all raise :class:`InputLimitError`, exit 2).
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InputLimitError, PpmlError

# A recipe is a page of YAML; a megabyte is already a thousand pages.
MAX_RECIPE_BYTES = 1024 * 1024
# Values a recipe may build, counting every alias expansion ("billion laughs": 9 aliases to 9
# aliases ... is 731 bytes and 387 million values).
MAX_RECIPE_VALUES = 100_000
# Mappings and lists inside each other: a recipe needs about 5.
MAX_NESTING = 64
# Digits of a whole number in a recipe, record or manifest: enclave sizes need 13, and Python
# refuses to convert more than 4300 (sys.int_info.str_digits_check_threshold).
MAX_INT_DIGITS = 30
# Records, policies and manifests we parse (JSON/TOML): a 25,000-entry manifest is ~4 MB.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
# Directory levels under a trusted tree (Linux's PATH_MAX of 4096 allows ~2000 one-letter levels).
MAX_TREE_DEPTH = 256
# Keys, passphrases, signatures and secrets: a few KiB each.
MAX_SMALL_FILE_BYTES = 1024 * 1024


def check_int_text(text: str, where: str) -> None:
    """Refuse a whole number written with more than MAX_INT_DIGITS digits."""
    digits = sum(ch.isdigit() for ch in text)
    if digits > MAX_INT_DIGITS:
        raise InputLimitError(
            f"{where}: a number of {digits} digits; numbers here have at most "
            f"{MAX_INT_DIGITS} digits"
        )


def read_at_most(path, limit: int) -> bytes:
    """The first ``limit + 1`` bytes of a file: enough for check_size to tell one past the
    limit, never all of /dev/zero. OSError as open() and read() raise it."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


def check_size(data: bytes | str, limit: int, where: str, what: str) -> None:
    if len(data) > limit:
        raise InputLimitError(
            f"{where}: {what} is {len(data):,} bytes; the limit is {limit:,} bytes"
        )


def _nesting_error(where: str, what: str) -> InputLimitError:
    # json's and tomllib's decoders recurse per level: Python's recursion limit is the bound.
    return InputLimitError(
        f"{where}: {what} nests tables or lists too deeply to read; "
        f"keep it under {MAX_NESTING} levels"
    )


def load_json_document(data: bytes | str, where: str, what: str) -> Any:
    """json.loads with bounded size, nesting and numbers; a PpmlError line on any bad input."""
    check_size(data, MAX_DOCUMENT_BYTES, where, what)
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise PpmlError(
            f"{where}: cannot read {what}: not UTF-8 (byte {err.start}); it must be JSON text"
        ) from None

    def whole_number(token: str) -> int:
        check_int_text(token, where)
        return int(token)

    def finite_number(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):  # 1e999: json reads it as infinity
            raise InputLimitError(
                f"{where}: {what} holds a number too large for a float "
                f"({token[:20]}...); JSON numbers here are finite"
            )
        return value

    def not_json(name: str):  # NaN, Infinity: Python's json reads them, JSON has no such thing
        raise PpmlError(f"{where}: {what} holds {name}, which is not a JSON number")

    try:
        return json.loads(
            text, parse_int=whole_number, parse_float=finite_number, parse_constant=not_json
        )
    except json.JSONDecodeError as err:
        raise PpmlError(
            f"{where}: not JSON ({err.msg} at line {err.lineno} column "
            f"{err.colno}); {what} must be JSON"
        ) from None
    except RecursionError:
        raise _nesting_error(where, what) from None
