"""MRENCLAVE of a Gramine enclave, bit-exact with ``gramine-sgx-sign`` (v1.5 to v1.9).

MRENCLAVE is SHA-256 over the records the CPU hashes while the loader builds the enclave: one
ECREATE, then per page an EADD and, for measured pages, 16 EEXTENDs with 256 data bytes each
(Gramine 1.9 ``python/graminelibos/sgx_sign.py``, ``generate_measurement``). The few thousand
measured pages are built one page at a time. The free (heap) area is millions of EADD-only records
that differ only in their offset, so it is produced from a template buffer in big slices and fed
to hashlib several MiB at a time.
"""

from __future__ import annotations

import hashlib
import struct
import tomllib
from dataclasses import dataclass
from typing import Any

from ..errors import SigningError
from ..units import format_gramine_size as format_size
from ..units import parse_gramine_size
from ..versions import gramine_version
from .constants import (
    DEFAULT_GRAMINE_VERSION,
    EEXTEND_CHUNK,
    PAGE_SIZE,
    GramineSgxConstants,
    gramine_constants,
)
from .elf import PalImage
from .layout import MemoryArea, enclave_layout

_DEFAULTS = gramine_constants(DEFAULT_GRAMINE_VERSION)
_MAX_SIZE_TEXT = format_size(_DEFAULTS.max_enclave_size)


# --- manifest inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasurementInputs:
    """The three manifest values MRENCLAVE depends on (besides the manifest bytes and libpal)."""

    enclave_size: int
    max_threads: int
    edmm_enable: bool

    def __post_init__(self) -> None:
        # Checked here so that hand-built inputs get the same checks as parsed ones. Gramine's
        # signer accepts these values and the enclave then fails to start.
        size, threads = self.enclave_size, self.max_threads
        if not isinstance(size, int) or isinstance(size, bool):
            raise SigningError(f'sgx.enclave_size must be a size string like "16G", got {size!r}')
        if size <= 0:
            raise SigningError('sgx.enclave_size must not be zero; use a power of two like "16G"')
        if size & (size - 1):
            lower = 1 << (size.bit_length() - 1)
            raise SigningError(
                f"sgx.enclave_size {format_size(size)} is not a power of two; "
                f"use {format_size(lower)} or {format_size(lower * 2)}"
            )
        if size > _DEFAULTS.max_enclave_size:
            raise SigningError(
                f"sgx.enclave_size {format_size(size)} is larger than Gramine's "
                f"{_MAX_SIZE_TEXT} maximum; use {_MAX_SIZE_TEXT} or less"
            )
        if not isinstance(threads, int) or isinstance(threads, bool):
            raise SigningError(
                f"sgx.max_threads must be an integer, got {threads!r}; "
                "write e.g. sgx.max_threads = 4"
            )
        if not 1 <= threads <= _DEFAULTS.max_threads_limit:
            raise SigningError(
                f"sgx.max_threads = {threads} is out of range; "
                f"use 1 to {_DEFAULTS.max_threads_limit}"
            )
        if not isinstance(self.edmm_enable, bool):
            raise SigningError(f"sgx.edmm_enable must be true or false, got {self.edmm_enable!r}")


def parse_enclave_size(text: str, *, field: str = "sgx.enclave_size") -> int:
    """Bytes for a Gramine size string ("16G"), SigningError naming ``field`` otherwise."""
    try:
        return parse_gramine_size(text, field=field)
    except ValueError as err:
        raise SigningError(str(err)) from None


def measurement_inputs(manifest: dict[str, Any]) -> MeasurementInputs:
    """The measurement inputs of a parsed manifest, with Gramine's defaults; SigningError if bad."""
    sgx = manifest.get("sgx", {})
    if not isinstance(sgx, dict):
        raise SigningError("the manifest key sgx must be a table; write [sgx] settings")
    edmm = sgx.get("edmm_enable", False)
    if not isinstance(edmm, bool):
        raise SigningError(f"sgx.edmm_enable must be true or false, got {edmm!r}")
    defaults = gramine_version()  # what Gramine's Manifest constructor fills in
    return MeasurementInputs(
        enclave_size=(
            parse_enclave_size(sgx["enclave_size"])
            if "enclave_size" in sgx
            else defaults.enclave_size_default(edmm)
        ),
        max_threads=sgx.get("max_threads", defaults.default_max_threads),
        edmm_enable=edmm,
    )


# --- hashed records (sgx_sign.py do_ecreate/do_eadd/do_eextend; Intel SDM ECREATE/EADD/EEXTEND)

_ECREATE = struct.Struct("<8sLQ44s")
_EADD = struct.Struct("<8sQQ40s")
# One measured page as a single record string: EADD, then 16 x (EEXTEND header, 256 data bytes).
_CHUNKS = PAGE_SIZE // EEXTEND_CHUNK
_MEASURED_PAGE = struct.Struct("<8sQQ40s" + "8sQ48s256s" * _CHUNKS)
_ZERO_PAGE = bytes(PAGE_SIZE)
_FLUSH_BYTES = 1 << 20


class _MeasuredPages:
    """Appends EADD+EEXTEND records page by page and hands them to SHA-256 in ~1 MiB pieces."""

    def __init__(self, digest: Any) -> None:
        self._digest = digest
        self._pending = bytearray()

    def add(self, offset: int, flags: int, page: bytes) -> None:
        fields: list[Any] = [b"EADD", offset, flags, b""]
        for i in range(0, PAGE_SIZE, EEXTEND_CHUNK):
            fields += (b"EEXTEND", offset + i, b"", page[i : i + EEXTEND_CHUNK])
        self._pending += _MEASURED_PAGE.pack(*fields)
        if len(self._pending) >= _FLUSH_BYTES:
            self.flush()

    def add_zero_pages(self, offset: int, size: int, flags: int) -> None:
        for page in range(offset, offset + size, PAGE_SIZE):
            self.add(page, flags, _ZERO_PAGE)

    def add_content(self, offset: int, flags: int, content: bytes) -> None:
        """``content`` zero-padded to whole pages."""
        for start in range(0, len(content), PAGE_SIZE):
            page = content[start : start + PAGE_SIZE]
            self.add(offset + start, flags, page.ljust(PAGE_SIZE, b"\0"))

    def flush(self) -> None:
        if self._pending:
            self._digest.update(self._pending)
            self._pending = bytearray()


# Free area: records are built per block of 4096 pages. Within a block the page offset is
# (block << 24) | (j << 12), so the template fixes bytes 0-2 of every offset field and only
# bytes 3-7 (the block number) change between blocks. 16 blocks = 4 MiB per hash update.
_BLOCK_PAGES = 1 << 12
_RECORD = _EADD.size
_BLOCK_BYTES = _BLOCK_PAGES * _RECORD
_SLOTS = 16
_OFFSET_HIGH_BYTES = range(3, 8)  # bytes of the u64 offset holding the block number


def _hash_unmeasured_pages(digest: Any, first_offset: int, size: int, flags: int) -> None:
    """EADD records (no EEXTEND) for pages [first_offset, first_offset+size), in order."""
    if size <= 0:
        return
    first_page = first_offset // PAGE_SIZE
    end_page = first_page + size // PAGE_SIZE
    block_template = b"".join(
        _EADD.pack(b"EADD", j * PAGE_SIZE, flags, b"") for j in range(_BLOCK_PAGES)
    )
    buf = bytearray(block_template * _SLOTS)  # every slot starts out as block 0
    view = memoryview(buf)
    slot_block = [0] * _SLOTS

    block = first_page // _BLOCK_PAGES
    last_block = (end_page - 1) // _BLOCK_PAGES
    while block <= last_block:
        group = range(block, min(block + _SLOTS, last_block + 1))
        for slot, number in enumerate(group):
            changed = number ^ slot_block[slot]
            base = slot * _BLOCK_BYTES + 8  # the offset field of the slot's first record
            for byte in _OFFSET_HIGH_BYTES:
                if (changed >> (8 * (byte - 3))) & 0xFF:
                    value = (number >> (8 * (byte - 3))) & 0xFF
                    buf[base + byte : base + _BLOCK_BYTES : _RECORD] = (
                        bytes((value,)) * _BLOCK_PAGES
                    )
            slot_block[slot] = number
        lo_page = max(first_page, group[0] * _BLOCK_PAGES)
        hi_page = min(end_page, (group[-1] + 1) * _BLOCK_PAGES)
        start = (lo_page - group[0] * _BLOCK_PAGES) * _RECORD
        digest.update(view[start : start + (hi_page - lo_page) * _RECORD])
        block = group[-1] + 1
    view.release()


# --- TCS and TLS pages (Gramine 1.9 sgx_sign.py, gen_area_content) ----------------------------


def _thread_pages(
    c: GramineSgxConstants,
    areas: list[MemoryArea],
    pal: PalImage,
    manifest_size: int,
    enclave_size: int,
) -> tuple[bytes, bytes]:
    """The contents of the TCS area and of the TLS area, one page per thread."""
    by_name = {area.name: area for area in areas if area.thread is None}
    ssa, tcs, tls, pal_area = by_name["ssa"], by_name["tcs"], by_name["tls"], by_name["pal"]
    stacks = [area for area in areas if area.name == "stack"]
    sig_stacks = [area for area in areas if area.name == "sig_stack"]
    base = c.enclave_base
    # Gramine adds e_entry to the PAL area's address even for a non-PIE libpal; we follow it.
    entry = pal_area.addr + pal.entry - base
    tcs_data = bytearray(tcs.size)
    tls_data = bytearray(tls.size)
    for t in range(len(stacks)):
        page = t * PAGE_SIZE
        ssa_t = ssa.addr + t * c.ssa_area_per_thread
        struct.pack_into("<Q", tcs_data, page + c.tcs_ossa, ssa_t - base)
        struct.pack_into("<L", tcs_data, page + c.tcs_nssa, c.ssa_frame_num)
        struct.pack_into("<Q", tcs_data, page + c.tcs_oentry, entry)
        struct.pack_into("<Q", tcs_data, page + c.tcs_ogs_base, tls.addr - base + page)
        struct.pack_into("<L", tcs_data, page + c.tcs_ofs_limit, 0xFFF)
        struct.pack_into("<L", tcs_data, page + c.tcs_ogs_limit, 0xFFF)

        for offset, value in (
            (c.tls_self, tls.addr + page),
            (c.tls_canary, c.stack_protector_canary),
            (c.tls_enclave_size, enclave_size),
            (c.tls_tcs_offset, tcs.addr - base + t * c.tcs_size),
            (c.tls_initial_stack_addr, stacks[t].end),
            (c.tls_sig_stack_low, sig_stacks[t].addr),
            (c.tls_sig_stack_high, sig_stacks[t].end),
            (c.tls_ssa, ssa_t),
            (c.tls_gpr, ssa_t + c.ssa_frame_size - c.gpr_size),
            (c.tls_manifest_size, manifest_size + 1),  # with the NUL
            (c.tls_heap_min, c.heap_min),
            (c.tls_heap_max, pal_area.addr),
        ):
            struct.pack_into("<Q", tls_data, page + offset, value)
    return bytes(tcs_data), bytes(tls_data)


# --- MRENCLAVE ------------------------------------------------------------------------------


def measure_enclave(
    manifest_bytes: bytes,
    pal: PalImage,
    inputs: MeasurementInputs,
    *,
    version: str = DEFAULT_GRAMINE_VERSION,
) -> bytes:
    """The 32-byte MRENCLAVE of the enclave Gramine builds from this .manifest.sgx and libpal.

    ``manifest_bytes`` are the exact file bytes; the trailing NUL Gramine loads is added here.
    ``inputs`` must be the values in that manifest (see ``measurement_inputs``).
    """
    if b"\0" in manifest_bytes:
        raise SigningError(
            "the .manifest.sgx contains a NUL byte, which Gramine's loader would "
            "cut the manifest at; remove it from the manifest text"
        )
    c = gramine_constants(version)
    areas = enclave_layout(len(manifest_bytes), inputs, pal, version=version)
    tcs_data, tls_data = _thread_pages(c, areas, pal, len(manifest_bytes), inputs.enclave_size)
    contents = {"manifest": manifest_bytes + b"\0", "tcs": tcs_data, "tls": tls_data}

    digest = hashlib.sha256(
        _ECREATE.pack(b"ECREATE", c.ssa_frame_size // PAGE_SIZE, inputs.enclave_size, b"")
    )
    measured = _MeasuredPages(digest)
    for area in areas:
        offset = area.addr - c.enclave_base
        if area.name == "pal":
            _measure_pal(measured, pal, offset)
        elif not area.measured:
            measured.flush()
            _hash_unmeasured_pages(digest, offset, area.size, area.flags)
        elif area.name in contents:
            measured.add_content(offset, area.flags, contents[area.name])
        else:
            measured.add_zero_pages(offset, area.size, area.flags)
    measured.flush()
    return digest.digest()


def _measure_pal(measured: _MeasuredPages, pal: PalImage, pal_offset: int) -> None:
    """libpal's PT_LOAD pages, segment by segment, relocated so its lowest page is at pal_offset."""
    shift = pal_offset - pal.span[0]
    for segment in pal.segments:
        flags = segment.secinfo_flags
        for page, data in pal.segment_pages(segment):
            measured.add(shift + page, flags, data)


def measure_manifest(
    manifest_bytes: bytes, pal: PalImage, *, version: str = DEFAULT_GRAMINE_VERSION
) -> bytes:
    """MRENCLAVE of a .manifest.sgx: parse it, take its sgx.* inputs and measure it."""
    try:
        manifest = tomllib.loads(manifest_bytes.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise SigningError(
            f"the .manifest.sgx is not UTF-8 (byte {err.start}); write the manifest as UTF-8 text"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise SigningError(
            f"the .manifest.sgx is not valid TOML ({err}); fix the manifest"
        ) from None
    return measure_enclave(manifest_bytes, pal, measurement_inputs(manifest), version=version)


__all__ = [
    "MeasurementInputs",
    "measure_enclave",
    "measure_manifest",
    "measurement_inputs",
    "parse_enclave_size",
]
