"""Where Gramine puts each memory area of the enclave (``populate_memory_areas`` in sgx_sign.py).

Areas are listed in EADD order: manifest, SSA, TCS, TLS, one stack and one signal stack per
thread, libpal, then the unmeasured free (heap) area. They are stacked downwards from the top of
the enclave; only a non-PIE libpal keeps its own link address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import SigningError
from ..units import format_gramine_size as format_size
from .constants import (
    DEFAULT_GRAMINE_VERSION,
    PAGE_SIZE,
    SECINFO_R,
    SECINFO_REG,
    SECINFO_TCS,
    SECINFO_W,
    SECINFO_X,
    gramine_constants,
    round_up,
)
from .elf import PalImage


class LayoutInputs(Protocol):
    """What the layout depends on (measure.py's ``MeasurementInputs`` is one): the manifest's
    sgx.enclave_size, sgx.max_threads and sgx.edmm_enable, already checked."""

    enclave_size: int
    max_threads: int
    edmm_enable: bool


_RW = SECINFO_REG | SECINFO_R | SECINFO_W
_FREE_FLAGS = SECINFO_REG | SECINFO_R | SECINFO_W | SECINFO_X


@dataclass(frozen=True)
class MemoryArea:
    name: str  # manifest, ssa, tcs, tls, stack, sig_stack, pal, free
    addr: int  # enclave offset of the first page (the base is 0, so also the address)
    size: int  # bytes, a page multiple
    flags: int  # SECINFO.FLAGS; for "pal" only the REG type, each segment adds its own R/W/X
    measured: bool  # EEXTENDed (everything but the free area)
    thread: int | None = None  # the thread slot of a stack / sig_stack

    @property
    def end(self) -> int:
        return self.addr + self.size

    @property
    def pages(self) -> int:
        return self.size // PAGE_SIZE

    def describe(self) -> str:
        """One line like Gramine's verbose output: ``0ffff000-10000000 [REG:R--] (manifest)``."""
        kind = "TCS" if self.flags & SECINFO_TCS else "REG"
        prot = "".join(
            c if self.flags & bit else "-"
            for c, bit in (("R", SECINFO_R), ("W", SECINFO_W), ("X", SECINFO_X))
        )
        label = self.name if self.thread is None else f"{self.name} {self.thread}"
        return f"{self.addr:016x}-{self.end:016x} [{kind}:{prot}] ({label})" + (
            " measured" if self.measured else ""
        )


def enclave_layout(
    manifest_size: int,
    inputs: LayoutInputs,
    pal: PalImage,
    *,
    version: str = DEFAULT_GRAMINE_VERSION,
) -> list[MemoryArea]:
    """The enclave's memory areas in EADD order; the free area comes last (none under EDMM).

    ``manifest_size`` is the length of the .manifest.sgx file; Gramine loads it with a trailing
    NUL, so the area holds ``manifest_size + 1`` bytes rounded up to pages.
    """
    c = gramine_constants(version)
    threads = inputs.max_threads
    top = c.enclave_base + inputs.enclave_size

    # (name, size, flags, thread) for the areas Gramine stacks down from the top.
    stacked: list[tuple[str, int, int, int | None]] = [
        ("manifest", round_up(manifest_size + 1), SECINFO_REG | SECINFO_R, None),
        ("ssa", threads * c.ssa_area_per_thread, _RW, None),
        ("tcs", threads * c.tcs_size, SECINFO_TCS, None),
        ("tls", threads * PAGE_SIZE, _RW, None),
    ]
    stacked += [("stack", c.enclave_stack_size, _RW, t) for t in range(threads)]
    stacked += [("sig_stack", c.enclave_sig_stack_size, _RW, t) for t in range(threads)]

    pal_low, pal_size = pal.span
    pal_preset = pal.preset_addr
    if pal_preset is None:
        stacked.append(("pal", pal_size, SECINFO_REG, None))

    needed = c.heap_min + sum(size for _, size, _, _ in stacked)
    if needed > top:
        raise SigningError(
            _too_small_message(
                inputs.enclave_size, needed, threads, c.pages_per_thread, c.max_enclave_size
            )
        )

    areas: list[MemoryArea] = []
    last = top
    for name, size, flags, thread in stacked:
        last -= size
        areas.append(MemoryArea(name, last, size, flags, True, thread))

    if pal_preset is not None:
        pal_area = MemoryArea("pal", pal_preset, pal_size, SECINFO_REG, True)
        # Gramine would sign overlapping or out-of-range areas; the enclave could never load them.
        if pal_area.addr < c.heap_min or pal_area.end > last:
            raise SigningError(
                f"{pal.name}: non-PIE libpal linked at {pal_area.addr:#x}-{pal_area.end:#x} does not "
                f"fit between the heap floor {c.heap_min:#x} and the thread areas at {last:#x} of a "
                f"{format_size(inputs.enclave_size)} enclave; use a PIE libpal.so (Gramine's default)"
            )
        areas.append(pal_area)

    if inputs.edmm_enable:
        return areas  # EDMM enclaves add heap pages at run time, not at build time
    return areas + _free_areas(areas, last, c.heap_min)


def _free_areas(areas: list[MemoryArea], last: int, heap_min: int) -> list[MemoryArea]:
    """The gaps Gramine fills with unmeasured RWX pages, in its order.

    ``last`` is the lowest stacked area. For a PIE libpal this yields exactly one area,
    [heap_min, pal); a non-PIE libpal can leave a second gap above itself, listed first.
    """
    free: list[MemoryArea] = []
    for area in areas:
        if area.end < last:
            free.append(MemoryArea("free", area.end, last - area.end, _FREE_FLAGS, False))
            last = area.addr
    if last > heap_min:
        free.append(MemoryArea("free", heap_min, last - heap_min, _FREE_FLAGS, False))
    return free


def _too_small_message(
    enclave_size: int, needed: int, threads: int, pages_per_thread: int, max_size: int
) -> str:
    suggestion = 1 << (needed - 1).bit_length()
    what = (
        f"sgx.enclave_size {format_size(enclave_size)} is too small: the manifest, "
        f"{threads} thread{'s' if threads != 1 else ''} ({pages_per_thread} pages each) and "
        f"libpal need at least {format_size(needed)}"
    )
    if suggestion > max_size:
        return what + f"; that exceeds the {format_size(max_size)} maximum, lower sgx.max_threads"
    return what + f"; use {format_size(suggestion)} or more"
