"""The LibOS versions we emulate, in one table: adding Gramine 1.10 is one entry plus tests."""

from __future__ import annotations

from dataclasses import dataclass

# Gramine's pkglibdir in its Debian/Ubuntu packages (graminelibos._CONFIG_PKGLIBDIR).
DEFAULT_GRAMINE_PREFIX = "/usr/lib/x86_64-linux-gnu/gramine/"


@dataclass(frozen=True)
class GramineVersion:
    version: str
    # Paths relative to ``libos.prefix`` (Debian/Ubuntu package layout).
    libpal: str = "sgx/libpal.so"
    libsysdb: str = "libsysdb.so"
    runtime_glibc: str = "runtime/glibc/"
    # Keys this version's manifest schema accepts (graminelibos/manifest_check.py).
    schema: str = "gramine-1.9"


@dataclass(frozen=True)
class OcclumVersion:
    version: str


LIBOS_VERSIONS: dict[str, dict[str, object]] = {
    "gramine": {"1.9": GramineVersion("1.9")},
    "occlum": {"0.31": OcclumVersion("0.31")},
}


def gramine_version(version: str) -> GramineVersion:
    return LIBOS_VERSIONS["gramine"][version]  # type: ignore[return-value]
