"""The LibOS versions we emulate, in one table: every fact that may differ between releases.

Adding Gramine 1.10 is one entry in ``GRAMINE_VERSIONS`` (plus tests): the recipe's choices,
the manifest schema and defaults, and which SGX layout the signer measures (and so the limits and
per-thread cost the plan sizes with: sign/constants.py's ``gramine_constants``) all read it. Only
what really changes needs saying; the rest are the defaults of ``GramineVersion``. A release that
changes the layout itself adds that layout to sign/constants.py's ``GRAMINE_LAYOUTS`` too.

This module is the bottom layer (tests/unit/test_import_layers.py): it imports only ``units``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .units import GiB, MiB

# Gramine's pkglibdir in its Debian/Ubuntu packages (graminelibos._CONFIG_PKGLIBDIR).
DEFAULT_GRAMINE_PREFIX = "/usr/lib/x86_64-linux-gnu/gramine/"
DEFAULT_GRAMINE_VERSION = "1.9"


@dataclass(frozen=True)
class GramineVersion:
    version: str
    # Keys this version's manifest schema accepts: a table of gramine/schema.py's SCHEMAS,
    # written from graminelibos/manifest_check.py.
    schema: str
    # The SGX layout its signer and loader use, and so sgx.max_threads' and sgx.enclave_size's
    # limits: a table of sign/constants.py's GRAMINE_LAYOUTS, named after the release that
    # introduced it.
    layout: str
    # What Gramine's Manifest constructor fills in when the manifest leaves them out (Gramine
    # python/graminelibos/manifest.py: DEFAULT_ENCLAVE_SIZE_NO_EDMM, _WITH_EDMM,
    # DEFAULT_THREAD_NUM).
    default_enclave_size: int = 256 * MiB
    default_enclave_size_edmm: int = 1024 * GiB
    default_max_threads: int = 4
    prefix: str = DEFAULT_GRAMINE_PREFIX
    # Paths relative to ``libos.prefix`` (Debian/Ubuntu package layout).
    libpal: str = "sgx/libpal.so"
    libsysdb: str = "libsysdb.so"
    runtime_glibc: str = "runtime/glibc/"

    def enclave_size_default(self, edmm: bool) -> int:
        return self.default_enclave_size_edmm if edmm else self.default_enclave_size


# Releases a recipe may choose (libos.version).
GRAMINE_VERSIONS: dict[str, GramineVersion] = {
    "1.9": GramineVersion("1.9", schema="gramine-1.9", layout="1.5"),
}
# Older releases whose enclaves the signer still measures (``ppml-build measure``), by layout.
GRAMINE_MEASURED_ONLY: dict[str, str] = {"1.5": "1.5", "1.6": "1.5", "1.7": "1.5", "1.8": "1.5"}


@dataclass(frozen=True)
class OcclumVersion:
    version: str
    # Mount types and options its LibOS parses (src/libos/src/config.rs,
    # ConfigMountFsType::from_input and InputConfigMountOptions).
    mount_types: frozenset[str]
    mount_options: frozenset[str]
    # What gen_internal_conf raises the EDMM maxima to and adds for the SDK (Occlum
    # tools/gen_internal_conf/src/main.rs, DefaultConfig::init).
    edmm_min_kernel_heap_max: int
    edmm_min_user_space_max: int
    edmm_min_tcs_max: int
    edmm_sdk_user_region_extra: int


OCCLUM_VERSIONS: dict[str, OcclumVersion] = {
    "0.31": OcclumVersion(
        "0.31",
        mount_types=frozenset({"sefs", "hostfs", "ramfs", "unionfs", "devfs", "procfs", "ext2"}),
        mount_options=frozenset({"MAC", "layers", "temporary", "cache_size", "disk_size", "index"}),
        edmm_min_kernel_heap_max=1 * GiB,
        edmm_min_user_space_max=16 * GiB,
        edmm_min_tcs_max=4096,
        edmm_sdk_user_region_extra=1 * GiB,
    ),
}
OCCLUM_VERSION = "0.31"  # the one Occlum release the backend writes for

LIBOS_VERSIONS: dict[str, dict[str, object]] = {  # what libos.type/libos.version may say
    "gramine": GRAMINE_VERSIONS,  # type: ignore[dict-item]
    "occlum": OCCLUM_VERSIONS,  # type: ignore[dict-item]
}


def gramine_version(version: str = DEFAULT_GRAMINE_VERSION) -> GramineVersion:
    return GRAMINE_VERSIONS[version]


def occlum_version(version: str = OCCLUM_VERSION) -> OcclumVersion:
    return OCCLUM_VERSIONS[version]
