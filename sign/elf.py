"""Read Gramine's libpal.so the way ``gramine-sgx-sign`` does: its PT_LOAD segments and e_entry."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import SigningError
from ..limits import MAX_DOCUMENT_BYTES, check_size, read_at_most
from .constants import (
    PAGE_SIZE,
    PF_R,
    PF_W,
    PF_X,
    SECINFO_R,
    SECINFO_REG,
    SECINFO_W,
    SECINFO_X,
    round_down,
    round_up,
)

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1


@dataclass(frozen=True)
class LoadSegment:
    offset: int  # p_offset
    vaddr: int  # p_vaddr
    filesz: int  # p_filesz
    memsz: int  # p_memsz
    flags: int  # p_flags: ELF PF_R/PF_W/PF_X bits

    @property
    def secinfo_flags(self) -> int:
        """SECINFO.FLAGS for this segment's pages: a regular page with the segment's R/W/X."""
        flags = SECINFO_REG
        if self.flags & PF_R:
            flags |= SECINFO_R
        if self.flags & PF_W:
            flags |= SECINFO_W
        if self.flags & PF_X:
            flags |= SECINFO_X
        return flags

    @property
    def page_vaddrs(self) -> range:
        """Link-time addresses of the pages this segment occupies, ascending."""
        return range(round_down(self.vaddr), round_up(self.vaddr + self.memsz), PAGE_SIZE)


@dataclass(frozen=True)
class PalImage:
    entry: int  # e_entry
    segments: tuple[LoadSegment, ...]  # PT_LOAD, program-header order
    data: bytes  # the whole file
    name: str = "libpal.so"  # for error messages

    @property
    def span(self) -> tuple[int, int]:
        """(lowest page-rounded p_vaddr, size up to the highest page-rounded end) over PT_LOAD."""
        low = min(round_down(seg.vaddr) for seg in self.segments)
        high = max(round_up(seg.vaddr + seg.memsz) for seg in self.segments)
        return low, high - low

    @property
    def preset_addr(self) -> int | None:
        """Where a non-PIE libpal must sit (its link address); None for a PIE one.

        Gramine places the PAL itself only when its lowest segment page is above 0.
        """
        low, _ = self.span
        return low if low > 0 else None

    def segment_pages(self, segment: LoadSegment) -> Iterator[tuple[int, bytes]]:
        """(link-time page address, 4096 bytes) for each page of ``segment``, ascending.

        A page holds the file bytes at the same distance from the rounded-down p_offset, clipped
        to [p_offset, p_offset+p_filesz); the rest (head before p_offset, tail, .bss) is zero.
        """
        file_lo, file_hi = segment.offset, segment.offset + segment.filesz
        file_page = round_down(segment.offset)
        first_page = round_down(segment.vaddr)
        for page in segment.page_vaddrs:
            start = file_page + (page - first_page)
            end = start + PAGE_SIZE
            lo, hi = max(start, file_lo), min(end, file_hi)
            if lo >= hi:
                yield page, bytes(PAGE_SIZE)
                continue
            yield page, bytes(lo - start) + self.data[lo:hi] + bytes(end - hi)


def read_pal_image(source: bytes | os.PathLike | str, *, name: str | None = None) -> PalImage:
    """Parse a libpal.so (bytes or a path). SigningError for anything Gramine could not load."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "libpal.so"
    else:
        path = Path(source)
        label = name or str(path)
        try:
            data = read_at_most(path, MAX_DOCUMENT_BYTES)  # bounded: it may be /dev/zero
        except OSError as err:
            raise SigningError(
                f"{label}: cannot read the PAL binary ({err.strerror or err}); "
                "pass the path of Gramine's sgx/libpal.so"
            ) from None
        check_size(data, MAX_DOCUMENT_BYTES, label, "the PAL binary")
    return _parse(data, label)


_USER_ADDRESS_LIMIT = 1 << 47


def _parse(data: bytes, label: str) -> PalImage:
    if data[:4] != _ELF_MAGIC:
        raise SigningError(f"{label}: not an ELF file (bad magic); pass Gramine's sgx/libpal.so")
    if len(data) < 64 or data[4] != _ELFCLASS64:
        raise SigningError(f"{label}: not a 64-bit ELF file; pass the x86-64 sgx/libpal.so")
    if data[5] != _ELFDATA2LSB:
        raise SigningError(f"{label}: not a little-endian ELF file; pass the x86-64 sgx/libpal.so")
    try:
        elf = ELFFile(io.BytesIO(data))
        header = elf.header
        if header.e_machine != "EM_X86_64":
            raise SigningError(
                f"{label}: ELF machine is {header.e_machine}, not x86-64; "
                "pass the x86-64 sgx/libpal.so"
            )
        if header.e_type not in ("ET_DYN", "ET_EXEC"):
            raise SigningError(
                f"{label}: ELF type {header.e_type} is not a shared object or executable; "
                "pass the linked sgx/libpal.so"
            )
        segments = tuple(
            LoadSegment(
                offset=seg.header.p_offset,
                vaddr=seg.header.p_vaddr,
                filesz=seg.header.p_filesz,
                memsz=seg.header.p_memsz,
                flags=seg.header.p_flags,
            )
            for seg in elf.iter_segments()
            if seg.header.p_type == "PT_LOAD"
        )
        entry = header.e_entry
    except SigningError:
        raise
    except ELFError as err:
        raise SigningError(
            f"{label}: malformed ELF file ({err}); pass Gramine's sgx/libpal.so"
        ) from None
    except Exception as err:  # pyelftools reports truncation through construct/struct errors
        raise SigningError(
            f"{label}: malformed or truncated ELF file ({type(err).__name__}); "
            "pass Gramine's sgx/libpal.so"
        ) from None

    if not segments:
        raise SigningError(
            f"{label}: has no PT_LOAD segment, nothing to load; pass the linked sgx/libpal.so"
        )
    # The enclave maps libpal.so inside its own range; an address past x86-64's 47-bit user
    # space cannot be loaded (and would overflow the TCS's 64-bit OENTRY field).
    if entry >= _USER_ADDRESS_LIMIT:
        raise SigningError(
            f"{label}: e_entry {entry:#x} is past the 47-bit address space; "
            "the ELF header is corrupt"
        )
    for index, seg in enumerate(segments):
        if seg.vaddr + seg.memsz >= _USER_ADDRESS_LIMIT:
            raise SigningError(
                f"{label}: PT_LOAD segment {index} ends past the 47-bit address "
                "space; the ELF file is corrupt"
            )
    for index, seg in enumerate(segments):
        if seg.filesz > seg.memsz:
            raise SigningError(
                f"{label}: PT_LOAD segment {index} has p_filesz > p_memsz; the ELF file is corrupt"
            )
        if seg.offset + seg.filesz > len(data):
            raise SigningError(
                f"{label}: PT_LOAD segment {index} extends past the end of the "
                f"file ({len(data)} bytes); the file is truncated"
            )
    return PalImage(entry=entry, segments=segments, data=data, name=label)
