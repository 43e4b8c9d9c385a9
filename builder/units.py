"""Byte sizes as people write them in recipes ("16G", "512m", "1728m") and as Gramine wants them."""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_UNITS = {"": 1, "b": 1, "k": KiB, "kb": KiB, "m": MiB, "mb": MiB, "g": GiB, "gb": GiB,
          "t": 1024 * GiB, "tb": 1024 * GiB}
# JVM, Spark and Flink all accept these spellings (case-insensitive); Flink also "mb"/"gb".
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([a-zA-Z]*)\s*$", re.ASCII)  # no full-width digits


def parse_size(text: str | int) -> int:
    """Parse "16G", "512m", "1728mb", 4096 into bytes. ValueError with a hint otherwise."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 16G or 512M, got a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        if text >= 2 ** 63:
            raise ValueError(f"{text} is past any size the JVM or Gramine takes; write e.g. 16G")
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r}; write e.g. 16G, 512M or 1728m")
    if len(match.group(1)) > 19:  # past 2**63: no JVM, Spark or Gramine size is that large
        raise ValueError(f"{len(match.group(1))} digits is not a size; write e.g. 16G")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def format_gramine_size(value: int) -> str:
    """The largest exact K/M/G spelling, in the subset both Gramine's signer and runtime accept."""
    for suffix, unit in (("G", GiB), ("M", MiB), ("K", KiB)):
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def human(value: int) -> str:
    """Short human form for messages and plan tables: 1.5G, 360K."""
    for suffix, unit in (("T", 1024 * GiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if value >= unit:
            amount = value / unit
            return f"{amount:.0f}{suffix}" if amount == int(amount) else f"{amount:.1f}{suffix}"
    return f"{value}B"


def next_power_of_two(value: int) -> int:
    return 1 if value <= 1 else 1 << (value - 1).bit_length()


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0
