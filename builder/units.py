"""Byte sizes, the one home of their syntax: as recipes, the JVM, Spark and Flink write them
("16G", "512m", "1728m"), as Gramine reads them ("16G") and as Occlum reads them ("256MB").

Everything here is pure arithmetic on integers and text; callers turn a ``ValueError`` into the
error of their own layer (a recipe line, a manifest key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "m": MiB,
    "mb": MiB,
    "g": GiB,
    "gb": GiB,
    "t": TiB,
    "tb": TiB,
}
# JVM, Spark and Flink all accept these spellings (case-insensitive); Flink also "mb"/"gb".
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([a-zA-Z]*)\s*$", re.ASCII)  # no full-width digits


def parse_size(text: str | int) -> int:
    """Parse "16G", "512m", "1728mb", 4096 into bytes. ValueError with a hint otherwise."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 16G or 512M, got a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        if text >= 2**63:
            raise ValueError(f"{text} is past any size the JVM or Gramine takes; write e.g. 16G")
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r}; write e.g. 16G, 512M or 1728m")
    if len(match.group(1)) > 19:  # past 2**63: no JVM, Spark or Gramine size is that large
        raise ValueError(f"{len(match.group(1))} digits is not a size; write e.g. 16G")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_spark_size(text: str | int) -> int:
    """A Spark memory setting (spark.driver.memory, --executor-memory): a bare number means MiB
    (Spark's ``JavaUtils.byteStringAsMb``), where JVM flags and Flink read it as bytes."""
    text = str(text).strip()
    return parse_size(text) * MiB if text.isascii() and text.isdigit() else parse_size(text)


# A HotSpot size flag's value (-Xmx2g, -XX:MaxMetaspaceSize=256m): digits and one k/m/g/t.
JVM_SIZE_PATTERN = r"[0-9]+[kKmMgGtT]?"


def format_jvm_size(value: int) -> str:
    """A size as HotSpot's flags take it: whole megabytes where they divide, else kilobytes
    (rounded up)."""
    return f"{value // MiB}m" if value % MiB == 0 else f"{round_up(value, KiB) // KiB}k"


# Accepted by both Gramine's signer (int(x, 0)) and its runtime parser (decimal, k/m/g).
_GRAMINE_SIZE_RE = re.compile(r"(0|[1-9][0-9]*)([KMG]?)")
_GRAMINE_UNITS = (("G", GiB), ("M", MiB), ("K", KiB))
_GRAMINE_SCALE = {"": 1, **dict(_GRAMINE_UNITS)}


def parse_gramine_size(text: str, *, field: str = "sgx.enclave_size") -> int:
    """Bytes for a Gramine size string: decimal digits and an optional K, M or G ("16G").

    ValueError naming ``field`` for anything either of Gramine's readers would take otherwise.
    """
    if not isinstance(text, str):
        raise ValueError(f'{field} must be a string like "16G", got {text!r}')
    match = _GRAMINE_SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f'{field} = "{text}" is not a size Gramine accepts; write decimal digits without a '
            'leading zero and an optional uppercase K, M or G suffix, e.g. "16G"'
        )
    return int(match.group(1)) * _GRAMINE_SCALE[match.group(2)]


def _largest_exact(value: int, units: tuple[tuple[str, int], ...]) -> tuple[int, str] | None:
    for suffix, unit in units:
        if value >= unit and value % unit == 0:
            return value // unit, suffix
    return None


def format_gramine_size(value: int) -> str:
    """The largest exact K/M/G spelling, in the subset both Gramine's signer and runtime accept."""
    exact = _largest_exact(value, _GRAMINE_UNITS)
    return f"{exact[0]}{exact[1]}" if exact else str(value)


# Occlum 0.31 tools/gen_internal_conf/src/main.rs, parse_memory_size: the first suffix that
# matches, in this order (so "B" last), powers of 1024, upper case only.
_OCCLUM_UNITS = (("KB", KiB), ("MB", MiB), ("GB", GiB), ("TB", TiB), ("B", 1))


def format_occlum_size(value: int) -> str:
    """Bytes as Occlum writes them: the largest exact of GB/MB/KB, else ``<n>B`` ("32MB")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"cannot write {value!r} as an Occlum size")
    exact = _largest_exact(value, (("GB", GiB), ("MB", MiB), ("KB", KiB)))
    return f"{exact[0]}{exact[1]}" if exact else f"{value}B"


def parse_occlum_size(text: str) -> int:
    """Occlum 0.31's ``parse_memory_size``: trim, first matching suffix of KB/MB/GB/TB/B, then a
    whole number. ValueError for anything it would refuse."""
    if not isinstance(text, str):
        raise ValueError(f"an Occlum size is a string, got {type(text).__name__}")
    stripped = text.strip()
    for suffix, unit in _OCCLUM_UNITS:
        if stripped.endswith(suffix):
            number = stripped[: -len(suffix)].strip()
            if not number.isascii() or not number.isdigit():
                raise ValueError(f"{text!r}: Occlum needs a whole number before {suffix}")
            return int(number) * unit
    raise ValueError(f"{text!r}: Occlum sizes end in KB, MB, GB, TB or B (e.g. 32MB)")


def human(value: int) -> str:
    """Short human form for messages and plan tables: 1.5G, 360K."""
    for suffix, unit in (("T", TiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if value >= unit:
            amount = value / unit
            return f"{amount:.0f}{suffix}" if amount == int(amount) else f"{amount:.1f}{suffix}"
    return f"{value}B"


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a whole number of ``multiple`` (pages, granules, MiB)."""
    return -(-value // multiple) * multiple


def next_power_of_two(value: int) -> int:
    return 1 if value <= 1 else 1 << (value - 1).bit_length()


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class Size:
    """A size from the recipe, parsed once: ``bytes`` for arithmetic, ``text`` for messages and
    for settings passed on as written (``str(size)`` is the text)."""

    bytes: int
    text: str

    def __str__(self) -> str:
        return self.text
