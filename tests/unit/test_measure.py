"""MRENCLAVE: ours against an independent, page-by-page reference written from the spec.

The reference below (``reference_mrenclave``) uses nothing from ppml_build: it parses the ELF
program headers with struct, restates Gramine's constants (Gramine 1.9
``pal/src/host/linux-sgx/generated_offsets.c``; ``python/graminelibos/sgx_sign.py``
``get_memory_areas``, ``populate_memory_areas``, ``generate_measurement``; Intel SDM
ECREATE/EADD/EEXTEND) and hashes every record with one update per record, like Gramine's signer.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from elftools.elf.elffile import ELFFile

from ppml_build.errors import SigningError
from ppml_build.sign.elf import read_pal_image
from ppml_build.sign.layout import enclave_layout
from ppml_build.sign.measure import (
    MeasurementInputs,
    measure_enclave,
    measure_manifest,
    measurement_inputs,
    parse_enclave_size,
)

K, M, G = 1 << 10, 1 << 20, 1 << 30
PAGE = 4096


# --- the independent reference ----------------------------------------------------------------


def _rd(x: int) -> int:
    return x - x % PAGE


def _ru(x: int) -> int:
    return _rd(x + PAGE - 1)


def _ref_elf(data: bytes) -> tuple[int, list[tuple[int, int, int, int, int]]]:
    """(e_entry, [(p_offset, p_vaddr, p_filesz, p_memsz, p_flags)] of PT_LOAD) via struct."""
    (entry,) = struct.unpack_from("<Q", data, 0x18)
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads = []
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = struct.unpack_from(
            "<LLQQQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:  # PT_LOAD
            loads.append((p_offset, p_vaddr, p_filesz, p_memsz, p_flags))
    return entry, loads


def _page_with_fields(fields: list[tuple[int, int, int]]) -> bytes:
    """A zero page with each (offset, width, value) written byte by byte, little-endian."""
    page = bytearray(PAGE)
    for offset, width, value in fields:
        for k in range(width):
            page[offset + k] = (value >> (8 * k)) & 0xFF
    return bytes(page)


def reference_mrenclave(
    manifest: bytes, pal_bytes: bytes, enclave_size: int, threads: int, edmm: bool
) -> bytes:
    entry, loads = _ref_elf(pal_bytes)
    h = hashlib.sha256()
    h.update(struct.pack("<8sLQ44s", b"ECREATE", 4, enclave_size, b""))

    def page(addr: int, flags: int, content: bytes | None) -> None:
        h.update(struct.pack("<8sQQ40s", b"EADD", addr, flags, b""))
        if content is not None:
            assert len(content) == PAGE
            for i in range(0, PAGE, 256):
                h.update(struct.pack("<8sQ48s", b"EEXTEND", addr + i, b""))
                h.update(content[i : i + 256])

    # Layout, top-down from enclave_size (base 0).
    manifest_mem = manifest + b"\0"
    manifest_addr = enclave_size - _ru(len(manifest_mem))
    ssa_addr = manifest_addr - threads * 2 * 0x4000
    tcs_addr = ssa_addr - threads * PAGE
    tls_addr = tcs_addr - threads * PAGE
    stack_addr = [tls_addr - (t + 1) * 0x40000 for t in range(threads)]
    sig_addr = [stack_addr[-1] - (t + 1) * 0x10000 for t in range(threads)]
    pal_lo = min(_rd(vaddr) for _, vaddr, _, _, _ in loads)
    pal_hi = max(_ru(vaddr + memsz) for _, vaddr, _, memsz, _ in loads)
    if pal_lo > 0:  # non-PIE: Gramine keeps the link address
        pal_addr = pal_lo
    else:
        pal_addr = sig_addr[-1] - (pal_hi - pal_lo)
    assert pal_addr >= 0x10000

    # manifest
    for off in range(0, len(manifest_mem), PAGE):
        page(manifest_addr + off, 0x201, manifest_mem[off : off + PAGE].ljust(PAGE, b"\0"))
    # ssa
    for a in range(ssa_addr, manifest_addr, PAGE):
        page(a, 0x203, bytes(PAGE))
    # tcs
    for t in range(threads):
        ssa_t = ssa_addr + t * 0x8000
        page(
            tcs_addr + t * PAGE,
            0x100,
            _page_with_fields(
                [
                    (0x10, 8, ssa_t),
                    (0x1C, 4, 2),
                    (0x20, 8, pal_addr + entry),
                    (0x38, 8, tls_addr + t * PAGE),
                    (0x40, 4, 0xFFF),
                    (0x44, 4, 0xFFF),
                ]
            ),
        )
    # tls
    for t in range(threads):
        ssa_t = ssa_addr + t * 0x8000
        page(
            tls_addr + t * PAGE,
            0x203,
            _page_with_fields(
                [
                    (0x000, 8, tls_addr + t * PAGE),
                    (0x008, 8, 0xBADBADBADBAD),
                    (0x110, 8, enclave_size),
                    (0x118, 8, tcs_addr + t * PAGE),
                    (0x120, 8, stack_addr[t] + 0x40000),
                    (0x130, 8, sig_addr[t]),
                    (0x138, 8, sig_addr[t] + 0x10000),
                    (0x148, 8, ssa_t),
                    (0x150, 8, ssa_t + 0x4000 - 0xB8),
                    (0x1A0, 8, len(manifest_mem)),
                    (0x1A8, 8, 0x10000),
                    (0x1B0, 8, pal_addr),
                ]
            ),
        )
    for t in range(threads):
        for a in range(stack_addr[t], stack_addr[t] + 0x40000, PAGE):
            page(a, 0x203, bytes(PAGE))
    for t in range(threads):
        for a in range(sig_addr[t], sig_addr[t] + 0x10000, PAGE):
            page(a, 0x203, bytes(PAGE))
    # pal: per segment, per page, file bytes clipped to [p_offset, p_offset+p_filesz)
    for p_offset, p_vaddr, p_filesz, p_memsz, p_flags in loads:
        flags = (
            0x200
            | (1 if p_flags & 4 else 0)
            | (2 if p_flags & 2 else 0)
            | (4 if p_flags & 1 else 0)
        )
        for vpage in range(_rd(p_vaddr), _ru(p_vaddr + p_memsz), PAGE):
            content = bytearray(PAGE)
            for k in range(PAGE):
                file_pos = _rd(p_offset) + (vpage - _rd(p_vaddr)) + k
                if p_offset <= file_pos < p_offset + p_filesz:
                    content[k] = pal_bytes[file_pos]
            page(pal_addr - pal_lo + vpage, flags, bytes(content))
    # free (heap): EADD only, RWX
    if not edmm:
        if pal_lo > 0 and pal_hi < sig_addr[-1]:
            for a in range(pal_hi, sig_addr[-1], PAGE):
                page(a, 0x207, None)
        for a in range(0x10000, pal_addr, PAGE):
            page(a, 0x207, None)
    return h.digest()


# --- deterministic synthetic libpal -----------------------------------------------------------


def synthetic_elf(
    *,
    vaddr_base: int = 0,
    rw_end: int = 0x7F00,
    elf_class: int = 2,
    e_type: int = 3,
    machine: int = 62,
) -> bytes:
    """An ELF64 x86-64 shared object with two PT_LOADs: R+X text, and RW data starting mid-page
    with .bss (memsz > filesz) up to ``rw_end``. Byte values are pseudo-random so misplaced
    bytes change the digest."""
    text = (0x0, vaddr_base + 0x0, 0x1800, 0x1800, 0x5)  # offset, vaddr, filesz, memsz, R+X
    rw_off, rw_vaddr, rw_filesz = 0x2A30, vaddr_base + 0x3A30, 0x700
    rw = (rw_off, rw_vaddr, rw_filesz, vaddr_base + rw_end - rw_vaddr, 0x6)  # R+W
    body = bytearray(hashlib.shake_256(b"ppml synthetic pal").digest(rw_off + rw_filesz))
    header = struct.pack(
        "<4sBBBBB7sHHLQQQLHHHHHH",
        b"\x7fELF",
        elf_class,
        1,
        1,
        0,
        0,
        b"",
        e_type,
        machine,
        1,
        vaddr_base + 0x120,
        64,
        0,
        0,
        64,
        56,
        2,
        64,
        0,
        0,
    )
    phdrs = b"".join(
        struct.pack("<LLQQQQQQ", 1, flags, off, vaddr, vaddr, filesz, memsz, 0x1000)
        for off, vaddr, filesz, memsz, flags in (text, rw)
    )
    body[: len(header) + len(phdrs)] = header + phdrs
    return bytes(body)


@pytest.fixture(scope="module")
def synthetic_pal_bytes() -> bytes:
    return synthetic_elf()


def manifest_of(size: int) -> bytes:
    text = b'[sgx]\nenclave_size = "64M"\n# '
    return (text + b"x" * size)[:size]


# --- ours == reference ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "enclave_size, threads, edmm, manifest_len",
    [
        (64 * M, 1, False, 1),
        (64 * M, 4, False, 4095),  # + NUL = exactly one page
        (64 * M, 4, True, 4096),  # + NUL = two pages
        (64 * M, 17, False, 300),
        (256 * M, 4, False, 4095),
        (256 * M, 17, True, 1),
        (1 * G, 2, False, 4096),  # free area crosses many 4096-page blocks and 16-block groups
        (1024 * G, 1, True, 700),  # EDMM: ECREATE carries the full 1 TiB, no free area
    ],
)
def test_synthetic_pal_matches_reference(
    synthetic_pal_bytes, enclave_size, threads, edmm, manifest_len
):
    manifest = manifest_of(manifest_len)
    pal = read_pal_image(synthetic_pal_bytes)
    ours = measure_enclave(manifest, pal, MeasurementInputs(enclave_size, threads, edmm))
    assert ours == reference_mrenclave(manifest, synthetic_pal_bytes, enclave_size, threads, edmm)


@pytest.mark.parametrize("edmm", [False, True])
def test_compiled_standin_pal_matches_reference(standin_libpal, edmm):
    data = standin_libpal.read_bytes()
    manifest = b'[sgx]\nenclave_size = "64M"\nmax_threads = 4\n'
    ours = measure_enclave(
        manifest, read_pal_image(standin_libpal), MeasurementInputs(64 * M, 4, edmm)
    )
    assert ours == reference_mrenclave(manifest, data, 64 * M, 4, edmm)


def test_non_pie_pal_keeps_its_link_address_and_matches_reference():
    data = synthetic_elf(vaddr_base=0x400000)
    pal = read_pal_image(data)
    manifest = manifest_of(10)
    inputs = MeasurementInputs(64 * M, 2, False)
    areas = enclave_layout(len(manifest), inputs, pal)
    pal_area = next(a for a in areas if a.name == "pal")
    assert (pal_area.addr, pal_area.size) == (0x400000, 0x8000)
    free = [(a.addr, a.end) for a in areas if a.name == "free"]
    lowest_sig_stack = min(a.addr for a in areas if a.name == "sig_stack")
    assert free == [(0x408000, lowest_sig_stack), (0x10000, 0x400000)]
    assert measure_enclave(manifest, pal, inputs) == reference_mrenclave(
        manifest, data, 64 * M, 2, False
    )


def test_enclave_filled_exactly_has_no_free_area(synthetic_pal_bytes):
    # 64K floor + 2 threads x 360K + 8-page PAL (32K) + 52 manifest pages = 1024K exactly.
    pal = read_pal_image(synthetic_pal_bytes)
    manifest = manifest_of(52 * PAGE - 1)
    inputs = MeasurementInputs(1 * M, 2, False)
    areas = enclave_layout(len(manifest), inputs, pal)
    assert areas[-1].name == "pal" and areas[-1].addr == 0x10000
    assert measure_enclave(manifest, pal, inputs) == reference_mrenclave(
        manifest, synthetic_pal_bytes, 1 * M, 2, False
    )
    with pytest.raises(
        SigningError, match=r"sgx\.enclave_size 1M is too small.*need at least 1028K; use 2M"
    ):
        enclave_layout(len(manifest) + 1, inputs, pal)


def test_inputs_change_the_measurement(synthetic_pal_bytes):
    pal = read_pal_image(synthetic_pal_bytes)
    base = measure_enclave(b"a", pal, MeasurementInputs(64 * M, 4, False))
    assert measure_enclave(b"b", pal, MeasurementInputs(64 * M, 4, False)) != base
    assert measure_enclave(b"a", pal, MeasurementInputs(128 * M, 4, False)) != base
    assert measure_enclave(b"a", pal, MeasurementInputs(64 * M, 5, False)) != base
    assert measure_enclave(b"a", pal, MeasurementInputs(64 * M, 4, True)) != base


@pytest.mark.parametrize(
    "first_page, pages",
    [
        (16, 1),
        (16, 4080),
        (4095, 4098),
        (3, 16 * 4096 + 5),
        (4096 * 300 - 7, 70000),
        (1 << 27, 4096 * 33),
    ],
)
def test_free_area_records_match_per_page_loop(first_page, pages):
    from ppml_build.sign.measure import _hash_unmeasured_pages

    ours = hashlib.sha256(b"prefix")
    _hash_unmeasured_pages(ours, first_page * PAGE, pages * PAGE, 0x207)
    naive = hashlib.sha256(b"prefix")
    for p in range(first_page, first_page + pages):
        naive.update(struct.pack("<8sQQ40s", b"EADD", p * PAGE, 0x207, b""))
    assert ours.digest() == naive.digest()


# --- layout -----------------------------------------------------------------------------------


def test_worked_example_layout_256m_4_threads():
    # What Gramine 1.9 sgx_sign.py get_memory_areas + populate_memory_areas lay out for 256M,
    # 4 threads, a 1-page manifest and an 8-page PAL.
    pal = read_pal_image(synthetic_elf(rw_end=0x8000))
    assert pal.span == (0, 8 * PAGE)
    areas = enclave_layout(100, MeasurementInputs(256 * M, 4, False), pal)
    got = [(a.name, a.addr, a.end, a.flags, a.measured) for a in areas]
    assert got[:4] == [
        ("manifest", 0x0FFFF000, 0x10000000, 0x201, True),
        ("ssa", 0x0FFDF000, 0x0FFFF000, 0x203, True),
        ("tcs", 0x0FFDB000, 0x0FFDF000, 0x100, True),
        ("tls", 0x0FFD7000, 0x0FFDB000, 0x203, True),
    ]
    stacks = [a for a in areas if a.name == "stack"]
    assert [a.thread for a in stacks] == [0, 1, 2, 3]
    assert (stacks[0].end, stacks[-1].addr) == (0x0FFD7000, 0x0FED7000)
    sig_stacks = [a for a in areas if a.name == "sig_stack"]
    assert (sig_stacks[0].end, sig_stacks[-1].addr) == (0x0FED7000, 0x0FE97000)
    assert got[-2] == ("pal", 0x0FE8F000, 0x0FE97000, 0x200, True)
    assert got[-1] == ("free", 0x00010000, 0x0FE8F000, 0x207, False)
    assert len(areas) == 4 + 4 + 4 + 2


def test_edmm_layout_has_no_free_area(synthetic_pal_bytes):
    areas = enclave_layout(
        10, MeasurementInputs(1024 * G, 4, True), read_pal_image(synthetic_pal_bytes)
    )
    assert [a.name for a in areas][-1] == "pal"
    assert areas[0].end == 1024 * G


def test_unknown_gramine_version_is_refused(synthetic_pal_bytes):
    with pytest.raises(SigningError, match=r"Gramine version '1\.4' is not supported.*1\.9"):
        measure_enclave(
            b"a",
            read_pal_image(synthetic_pal_bytes),
            MeasurementInputs(64 * M, 4, False),
            version="1.4",
        )


def test_manifest_with_nul_is_refused(synthetic_pal_bytes):
    with pytest.raises(SigningError, match="NUL"):
        measure_enclave(
            b"a\0b", read_pal_image(synthetic_pal_bytes), MeasurementInputs(64 * M, 4, False)
        )


# --- manifest inputs and validation ------------------------------------------------------------


def test_measurement_inputs_defaults():
    assert measurement_inputs({}) == MeasurementInputs(256 * M, 4, False)
    assert measurement_inputs({"sgx": {"edmm_enable": True}}) == MeasurementInputs(
        1024 * G, 4, True
    )
    assert measurement_inputs(
        {"sgx": {"enclave_size": "16G", "max_threads": 64}}
    ) == MeasurementInputs(16 * G, 64, False)


@pytest.mark.parametrize(
    "text, value",
    [("4096", 4096), ("64K", 64 * K), ("512M", 512 * M), ("1024G", 1024 * G), ("0", 0)],
)
def test_parse_enclave_size_accepts(text, value):
    assert parse_enclave_size(text) == value


@pytest.mark.parametrize(
    "text", ["16g", "0x100M", "016G", "16 G", " 16G", "16GB", "", "1.5G", "-1G"]
)
def test_parse_enclave_size_rejects_what_gramine_would_not_read_both_ways(text):
    with pytest.raises(SigningError, match=r"sgx\.enclave_size.*e\.g\. \"16G\""):
        parse_enclave_size(text)


@pytest.mark.parametrize(
    "sgx, message",
    [
        ({"enclave_size": "3G"}, r"sgx\.enclave_size 3G is not a power of two; use 2G or 4G"),
        ({"enclave_size": "2048G"}, r"sgx\.enclave_size 2048G is larger .* use 1024G or less"),
        ({"enclave_size": "0"}, r"sgx\.enclave_size must not be zero"),
        ({"enclave_size": 4096}, r"sgx\.enclave_size must be a string"),
        ({"max_threads": 0}, r"sgx\.max_threads = 0 is out of range; use 1 to 4096"),
        ({"max_threads": 5000}, r"sgx\.max_threads = 5000 is out of range"),
        ({"max_threads": True}, r"sgx\.max_threads must be an integer"),
        ({"max_threads": "4"}, r"sgx\.max_threads must be an integer"),
        ({"edmm_enable": "yes"}, r"sgx\.edmm_enable must be true or false"),
    ],
)
def test_measurement_inputs_rejects(sgx, message):
    with pytest.raises(SigningError, match=message):
        measurement_inputs({"sgx": sgx})


def test_too_small_enclave_names_field_and_fix(synthetic_pal_bytes):
    pal = read_pal_image(synthetic_pal_bytes)
    with pytest.raises(SigningError) as err:
        measure_enclave(b"x", pal, measurement_inputs({"sgx": {"enclave_size": "1M"}}))
    # 64K floor + 4K manifest + 4 x 360K + 32K PAL = 1540K
    assert str(err.value) == (
        "sgx.enclave_size 1M is too small: the manifest, 4 threads "
        "(90 pages each) and libpal need at least 1540K; use 2M or more"
    )


def test_measure_manifest_reads_inputs_from_the_toml(synthetic_pal_bytes):
    manifest = b'[sgx]\nenclave_size = "64M"\nmax_threads = 3\nedmm_enable = false\n'
    pal = read_pal_image(synthetic_pal_bytes)
    assert measure_manifest(manifest, pal) == reference_mrenclave(
        manifest, synthetic_pal_bytes, 64 * M, 3, False
    )
    with pytest.raises(SigningError, match="not valid TOML"):
        measure_manifest(b"[sgx\n", pal)
    with pytest.raises(SigningError, match="not UTF-8"):
        measure_manifest(b"a = '\xff'\n", pal)


# --- reading libpal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (b"garbage bytes, not an ELF at all", "not an ELF file"),
        (b"", "not an ELF file"),
        (synthetic_elf(elf_class=1), "not a 64-bit ELF"),
        (synthetic_elf(machine=3), "not x86-64"),
        (synthetic_elf(e_type=1), "not a shared object"),
        (synthetic_elf()[:0x2A40], "truncated"),
        (synthetic_elf()[:100], "libpal.so: malformed"),
    ],
)
def test_read_pal_image_rejects_bad_files(data, message):
    with pytest.raises(SigningError, match=message):
        read_pal_image(data)


def test_read_pal_image_rejects_missing_file_and_elf_without_load(tmp_path):
    with pytest.raises(SigningError, match="cannot read"):
        read_pal_image(tmp_path / "nope.so")
    no_load = bytearray(synthetic_elf())
    struct.pack_into("<H", no_load, 0x38, 0)  # e_phnum = 0
    with pytest.raises(SigningError, match="no PT_LOAD"):
        read_pal_image(bytes(no_load))


def test_standin_libpal_has_the_shapes_measurement_must_handle(standin_libpal):
    pal = read_pal_image(standin_libpal)
    assert pal.preset_addr is None  # PIE
    rw = [s for s in pal.segments if s.flags & 0x2]
    assert len(rw) == 1 and rw[0].vaddr % PAGE != 0  # RW (RELRO) segment starts mid-page
    assert rw[0].memsz - rw[0].filesz > 4 * PAGE  # multi-page .bss
    assert any(s.flags == 0x4 for s in pal.segments)  # read-only data
    with standin_libpal.open("rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_DYN"
        pal_start = elf.get_section_by_name(".dynsym").get_symbol_by_name("pal_start")[0]
        assert pal.entry == pal_start["st_value"]
    code = [s for s in pal.segments if s.flags & 0x1]
    assert any(s.vaddr <= pal.entry < s.vaddr + s.memsz for s in code)
