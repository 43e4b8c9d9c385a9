"""Gramine's SGX layout constants: one table, keyed by Gramine version.

Values are those of Gramine's generated ``_graminelibos_offsets`` module on x86_64 (Gramine 1.9
``pal/src/host/linux-sgx/generated_offsets.c``) plus the PAGEINFO flags of
``python/graminelibos/sgx_sign.py``. They have been identical from v1.5 (base fixed at 0, 4-page
SSA frames) to v1.9. Which release uses which layout is said in ``ppml_build.versions``; a future
Gramine that changes a value adds one entry to ``GRAMINE_LAYOUTS`` here and names it in its
versions entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ..errors import SigningError
from ..units import round_up as _round_up_to
from ..versions import DEFAULT_GRAMINE_VERSION, GRAMINE_MEASURED_ONLY, GRAMINE_VERSIONS

PAGE_SIZE = 0x1000
EEXTEND_CHUNK = 256  # EEXTEND measures 256 bytes at a time (16 per page)

# SECINFO.FLAGS as Gramine's signer spells them: page type << 8 plus the R/W/X permission bits.
SECINFO_R = 0x1
SECINFO_W = 0x2
SECINFO_X = 0x4
SECINFO_TCS = 0x100
SECINFO_REG = 0x200

# ELF program-header permission bits (note the order differs from SECINFO's).
PF_X = 0x1
PF_W = 0x2
PF_R = 0x4


@dataclass(frozen=True)
class GramineSgxConstants:
    """The values MRENCLAVE depends on, named as in Gramine's generated offsets module."""

    enclave_base: int  # DEFAULT_ENCLAVE_BASE
    heap_min: int  # MMAP_MIN_ADDR: nothing is EADDed below it
    ssa_frame_size: int
    ssa_frame_num: int
    tcs_size: int
    enclave_stack_size: int
    enclave_sig_stack_size: int
    max_threads_limit: int  # MAX_DBG_THREADS, enforced by the runtime loader
    max_enclave_size: int  # DBGINFO_ADDR: the enclave must end below it
    stack_protector_canary: int
    gpr_size: int  # sizeof(sgx_pal_gpr_t)
    # TCS field offsets (sgx_arch_tcs_t)
    tcs_ossa: int
    tcs_nssa: int
    tcs_oentry: int
    tcs_ogs_base: int
    tcs_ofs_limit: int
    tcs_ogs_limit: int
    # TLS field offsets (struct pal_enclave_tcb)
    tls_self: int
    tls_canary: int
    tls_enclave_size: int
    tls_tcs_offset: int
    tls_initial_stack_addr: int
    tls_sig_stack_low: int
    tls_sig_stack_high: int
    tls_ssa: int
    tls_gpr: int
    tls_manifest_size: int
    tls_heap_min: int
    tls_heap_max: int

    @property
    def ssa_area_per_thread(self) -> int:
        return self.ssa_frame_size * self.ssa_frame_num

    @property
    def bytes_per_thread(self) -> int:
        """Enclave memory every thread slot takes besides the app's own (360K in v1.9)."""
        return self.pages_per_thread * PAGE_SIZE

    @property
    def pages_per_thread(self) -> int:
        """SSA + TCS + TLS + stack + signal stack pages every thread slot costs (90 in v1.9)."""
        per_thread = (
            self.ssa_area_per_thread
            + self.tcs_size
            + PAGE_SIZE
            + self.enclave_stack_size
            + self.enclave_sig_stack_size
        )
        return per_thread // PAGE_SIZE


_GRAMINE_1_5 = GramineSgxConstants(
    enclave_base=0x0,
    heap_min=0x10000,
    ssa_frame_size=0x4000,
    ssa_frame_num=2,
    tcs_size=0x1000,
    enclave_stack_size=0x40000,
    enclave_sig_stack_size=0x10000,
    max_threads_limit=4096,
    max_enclave_size=1 << 40,
    stack_protector_canary=0xBADBADBADBAD,
    gpr_size=0xB8,
    tcs_ossa=0x10,
    tcs_nssa=0x1C,
    tcs_oentry=0x20,
    tcs_ogs_base=0x38,
    tcs_ofs_limit=0x40,
    tcs_ogs_limit=0x44,
    tls_self=0x0,
    tls_canary=0x8,
    tls_enclave_size=0x110,
    tls_tcs_offset=0x118,
    tls_initial_stack_addr=0x120,
    tls_sig_stack_low=0x130,
    tls_sig_stack_high=0x138,
    tls_ssa=0x148,
    tls_gpr=0x150,
    tls_manifest_size=0x1A0,
    tls_heap_min=0x1A8,
    tls_heap_max=0x1B0,
)

# Layouts by the release that introduced them; the layout code has been unchanged since v1.5.
GRAMINE_LAYOUTS: dict[str, GramineSgxConstants] = {"1.5": _GRAMINE_1_5}
# Versions whose measurement we reproduce: the older ones and every one a recipe may choose.
_LAYOUT_OF = {
    **GRAMINE_MEASURED_ONLY,
    **{version: entry.layout for version, entry in GRAMINE_VERSIONS.items()},
}
GRAMINE_LAYOUT_VERSIONS: tuple[str, ...] = tuple(_LAYOUT_OF)
GRAMINE_CONSTANTS: dict[str, GramineSgxConstants] = {
    version: GRAMINE_LAYOUTS[layout] for version, layout in _LAYOUT_OF.items()
}


def gramine_constants(version: str = DEFAULT_GRAMINE_VERSION) -> GramineSgxConstants:
    """The constant table for a Gramine release ("1.9"); SigningError for one we do not know."""
    try:
        return GRAMINE_CONSTANTS[version]
    except KeyError:
        known = ", ".join(GRAMINE_LAYOUT_VERSIONS)
        raise SigningError(
            f"Gramine version {version!r} is not supported for measurement; use one of {known}"
        ) from None


def round_down(value: int) -> int:
    return value - value % PAGE_SIZE


round_up = partial(_round_up_to, multiple=PAGE_SIZE)  # up to a page boundary
