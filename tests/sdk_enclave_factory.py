"""TEST ONLY: an enclave ELF in the form the Intel SGX SDK's ``sgx_sign`` leaves it, carrying a
given SIGSTRUCT. Written from the SDK's own definitions, not from ``ppml_build.sign.sdk_metadata``,
so the tests of that parser (and of the Occlum build that uses it) stay independent of it.

What the SDK defines (intel/linux-sgx):

- ``sdk/trts/linux/metadata_sec.S``: every enclave links one note into section
  ``.note.sgxmeta`` (SHT_NOTE, not allocated, so in no segment): namesz 13, descsz
  METADATA_SIZE, type 1, the name "sgx_metadata\\0" and, right after its 13 bytes with no
  padding, the descriptor. The section is aligned to 1 byte in SDK 1.x (``.p2align 0``) and to
  4 in 2.x (``.p2align 2``), and its end is padded to that alignment.
- ``psw/urts/parser/elfparser.cpp``, ``get_meta_property``: the loader (and ``sgx_sign``, which
  shares the parser) finds the metadata at ``sh_offset + sizeof(Elf64_Note) + namesz`` and
  wants ``sh_size == ROUND_TO(sizeof(Elf64_Note) + namesz + descsz, sh_addralign)``.
- ``sdk/sign_tool/SignTool/manage_metadata.cpp``, ``update_metadata`` writes METADATA_SIZE
  bytes there; ``print_metadata`` and ``psw/urts/urts_com.h`` ``get_metadata`` read
  ``metadata_t`` blocks back to back, the next one ``size`` bytes on, until the magic no longer
  matches (newer SDKs add "compatible" blocks of older metadata versions).
- ``common/inc/internal/metadata.h``, ``metadata_t`` (``#pragma pack(1)``, little-endian):
  magic_num u64 = METADATA_MAGIC, version u64 = major << 32 | minor, size u32, tcs_policy u32,
  ssa_frame_size u32 (pages), max_save_buffer_size u32 (MAX_SAVE_BUF_SIZE 2632),
  desired_misc_select u32, reserved u32 (``tcs_min_pool`` from metadata 2.0), enclave_size u64,
  attributes {flags u64, xfrm u64}, then ``enclave_css_t`` (the 1808-byte SIGSTRUCT), dirs[2],
  data. METADATA_SIZE is 0x1000 in SDK 1.x (metadata 1.3), 0x5000 in 2.x.

The ELF around the note is minimal (ELF64, x86-64, ET_DYN, one PT_LOAD): nothing here reads
code, and the SIGSTRUCT is whatever the caller signed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

METADATA_MAGIC = 0x86A80294635D0E4C
METADATA_SIZE_1X = 0x1000
METADATA_SIZE_2X = 0x5000
NOTE_NAME = b"sgx_metadata\0"  # namesz 13, counted with its NUL
NOTE_TYPE = 1
TCS_POLICY_UNBIND = 1
MAX_SAVE_BUF_SIZE = 2632
CSS_SIZE = 1808

# ELF64 (System V gABI): header, program header, section header; values from <elf.h>.
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_METADATA_HEAD = struct.Struct("<QQIIIIIIQQQ")  # metadata_t up to enclave_css
ET_DYN, EM_X86_64, EV_CURRENT = 3, 62, 1
PT_LOAD, PT_NOTE = 1, 4
PF_R = 4
SHT_NOTE, SHT_STRTAB = 7, 3
PAGE = 0x1000


@dataclass(frozen=True)
class Metadata:
    """One ``metadata_t``; ``size`` defaults to the METADATA_SIZE of its major version."""

    enclave_css: bytes
    version: tuple[int, int] = (2, 1)
    size: int | None = None
    tcs_policy: int = TCS_POLICY_UNBIND
    ssa_frame_size: int = 1
    max_save_buffer_size: int = MAX_SAVE_BUF_SIZE
    desired_misc_select: int = 0
    tcs_min_pool: int = 0
    enclave_size: int = 1 << 24
    attribute_flags: int = 0x4  # SGX_FLAGS_MODE64BIT
    attribute_xfrm: int = 0x3  # x87 + SSE

    @property
    def block_size(self) -> int:
        if self.size is not None:
            return self.size
        return METADATA_SIZE_1X if self.version[0] < 2 else METADATA_SIZE_2X

    def to_bytes(self) -> bytes:
        assert len(self.enclave_css) == CSS_SIZE, len(self.enclave_css)
        major, minor = self.version
        head = _METADATA_HEAD.pack(
            METADATA_MAGIC,
            major << 32 | minor,
            self.block_size,
            self.tcs_policy,
            self.ssa_frame_size,
            self.max_save_buffer_size,
            self.desired_misc_select,
            self.tcs_min_pool,
            self.enclave_size,
            self.attribute_flags,
            self.attribute_xfrm,
        )
        block = head + self.enclave_css
        return block + bytes(max(0, self.block_size - len(block)))


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def sgxmeta_section(descriptor: bytes, *, align: int) -> bytes:
    """The bytes of ``.note.sgxmeta``: Elf64_Note, the unpadded name, the descriptor, padding."""
    note = struct.pack("<III", len(NOTE_NAME), len(descriptor), NOTE_TYPE) + NOTE_NAME
    note += descriptor
    return note + bytes(_round_up(len(note), align) - len(note))


def sdk_signed_elf(
    metadata: Metadata | Sequence[Metadata],
    *,
    descriptor_size: int | None = None,
    section_headers: bool = True,
) -> bytes:
    """An SDK-signed enclave ELF holding ``metadata`` (one block, or several back to back).

    The descriptor is METADATA_SIZE of the first block's version (or ``descriptor_size``), at
    least as long as the blocks; the rest is zero, which ends the block list. The section is
    aligned as that SDK version aligns it. ``section_headers=False`` strips the section
    headers (as ``strip``-like tools may) and keeps the note reachable through a PT_NOTE
    segment instead.
    """
    blocks = [metadata] if isinstance(metadata, Metadata) else list(metadata)
    first = blocks[0]
    descriptor = b"".join(block.to_bytes() for block in blocks)
    size = (
        descriptor_size if descriptor_size is not None else max(first.block_size, len(descriptor))
    )
    descriptor = descriptor[:size] + bytes(max(0, size - len(descriptor)))
    align = 1 if first.version[0] < 2 else 4
    section = sgxmeta_section(descriptor, align=align)

    phnum = 1 if section_headers else 2
    note_offset = PAGE  # after the loadable first page
    shstrtab = b"\0.note.sgxmeta\0.shstrtab\0"
    shstrtab_offset = note_offset + len(section)
    shoff = _round_up(shstrtab_offset + len(shstrtab), 8)

    phdrs = _PHDR.pack(PT_LOAD, PF_R, 0, 0, 0, PAGE, PAGE, PAGE)
    if not section_headers:
        phdrs += _PHDR.pack(PT_NOTE, PF_R, note_offset, 0, 0, len(section), len(section), align)
    ident = b"\x7fELF" + bytes([2, 1, EV_CURRENT]) + bytes(9)  # ELFCLASS64, ELFDATA2LSB
    ehdr = _EHDR.pack(
        ident,
        ET_DYN,
        EM_X86_64,
        EV_CURRENT,
        0,
        _EHDR.size,
        shoff if section_headers else 0,
        0,
        _EHDR.size,
        _PHDR.size,
        phnum,
        _SHDR.size,
        3 if section_headers else 0,
        2 if section_headers else 0,
    )
    image = bytearray(ehdr + phdrs)
    image += bytes(note_offset - len(image))
    image += section
    if not section_headers:
        return bytes(image)
    image += shstrtab
    image += bytes(shoff - len(image))
    image += _SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    image += _SHDR.pack(
        shstrtab.index(b".note.sgxmeta"), SHT_NOTE, 0, 0, note_offset, len(section), 0, 0, align, 0
    )
    image += _SHDR.pack(
        shstrtab.index(b".shstrtab"), SHT_STRTAB, 0, 0, shstrtab_offset, len(shstrtab), 0, 0, 1, 0
    )
    return bytes(image)


# Where the first metadata_t starts in an ELF this module writes (get_meta_property's offset).
METADATA_OFFSET = PAGE + 12 + len(NOTE_NAME)
