"""The SIGSTRUCT inside an enclave signed by the Intel SGX SDK's ``sgx_sign`` (and Occlum).

``sgx_sign`` stores its ``metadata_t`` (linux-sgx ``common/inc/internal/metadata.h``) in an ELF
note named "sgx_metadata", in section ``.note.sgxmeta``. The note may hold several metadata
blocks back to back (newer SDKs write one per metadata version); each starts with the magic
0x86A80294635D0E4C and carries its own ``size``. The signed SIGSTRUCT (``enclave_css``) sits
at offset 64 of each block.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import SigningError
from .sigstruct import SIGSTRUCT_SIZE, Sigstruct

METADATA_MAGIC = 0x86A80294635D0E4C
NOTE_NAME = b"sgx_metadata"
SECTION_NAME = ".note.sgxmeta"
ELF_MAGIC = b"\x7fELF"

# metadata_t: magic, version (major << 32 | minor), size, tcs_policy, ssa_frame_size,
# max_save_buffer_size, desired_misc_select, tcs_min_pool (reserved before 2.0),
# enclave_size, attributes {flags, xfrm}; then enclave_css_t.
_HEADER = struct.Struct("<QQIIIIIIQQQ")
_CSS_OFFSET = _HEADER.size  # 64
assert _CSS_OFFSET == 64


@dataclass(frozen=True)
class SdkMetadata:
    """One ``metadata_t`` block and the SIGSTRUCT it carries."""

    version_major: int
    version_minor: int
    size: int
    tcs_policy: int
    ssa_frame_size: int  # pages
    max_save_buffer_size: int
    desired_misc_select: int
    tcs_min_pool: int
    enclave_size: int
    attribute_flags: int  # what the loader puts into SECS (before masking by CPU support)
    attribute_xfrm: int
    sigstruct: Sigstruct
    file_offset: int  # where the block starts in the ELF file

    @property
    def version(self) -> str:
        return f"{self.version_major}.{self.version_minor}"


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def _notes(blob: bytes, base: int) -> list[tuple[bytes, list[tuple[bytes, int]]]]:
    """(name, [(desc, desc file offset), ...]) of every note in a note section or segment.

    The ELF spec pads the name to 4 bytes before the descriptor, but sgx_sign places its
    metadata right after the 13-byte "sgx_metadata\\0" name, unpadded (and the SDK loader reads
    it there). So each note yields both candidate descriptor positions, SDK layout first.
    """
    out = []
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, _type = struct.unpack_from("<III", blob, pos)
        name_start = pos + 12
        name = blob[name_start : name_start + namesz].rstrip(b"\0")
        descs = []
        for desc_start in dict.fromkeys((name_start + namesz, name_start + (namesz + 3 & ~3))):
            desc = blob[desc_start : desc_start + descsz]
            descs.append((desc, base + desc_start))
        out.append((name, descs))
        pos = name_start + (namesz + 3 & ~3) + (descsz + 3 & ~3)
    return out


def _find_note(data: bytes, source: str) -> list[tuple[bytes, int]]:
    try:
        elf = ELFFile(io.BytesIO(data))
        section = elf.get_section_by_name(SECTION_NAME)
        if section is not None:
            candidates = [(section.data(), section["sh_offset"])]
        else:
            # Section headers can be stripped; the loader only needs the PT_NOTE segment.
            candidates = [
                (seg.data(), seg["p_offset"])
                for seg in elf.iter_segments()
                if seg["p_type"] == "PT_NOTE"
            ]
    except (ELFError, struct.error, ValueError) as exc:
        raise SigningError(f"{source}: not a readable ELF file ({exc})") from None
    except Exception as exc:  # pyelftools: offsets past 2**63 (OverflowError), construct errors
        raise SigningError(
            f"{source}: not a readable ELF file (malformed or truncated: {type(exc).__name__})"
        ) from None
    for blob, base in candidates:
        for name, descs in _notes(blob, base):
            if name == NOTE_NAME:
                return descs
    raise SigningError(
        f"{source}: ELF file has no {SECTION_NAME} note, so it is not an enclave "
        "signed by the Intel SGX SDK (sign it with sgx_sign, or give a .sig file)"
    )


def _magic_at(desc: bytes) -> bool:
    return len(desc) >= 8 and struct.unpack_from("<Q", desc)[0] == METADATA_MAGIC


def read_sdk_metadata(data: bytes, *, source: str = "enclave") -> list[SdkMetadata]:
    """Every metadata block of an SDK-signed enclave, first one first."""
    if not is_elf(data):
        raise SigningError(f"{source}: not an ELF file")
    descs = _find_note(data, source)
    desc, base = next((d for d in descs if _magic_at(d[0])), descs[0])
    blocks: list[SdkMetadata] = []
    pos = 0
    while pos + _HEADER.size + SIGSTRUCT_SIZE <= len(desc):
        (
            magic,
            version,
            size,
            tcs_policy,
            ssa_frame_size,
            max_save,
            misc_select,
            tcs_min_pool,
            enclave_size,
            flags,
            xfrm,
        ) = _HEADER.unpack_from(desc, pos)
        if magic != METADATA_MAGIC:
            break
        css = desc[pos + _CSS_OFFSET : pos + _CSS_OFFSET + SIGSTRUCT_SIZE]
        sig = Sigstruct.from_bytes(css, source=f"{source} ({SECTION_NAME} enclave_css)")
        blocks.append(
            SdkMetadata(
                version_major=version >> 32,
                version_minor=version & 0xFFFFFFFF,
                size=size,
                tcs_policy=tcs_policy,
                ssa_frame_size=ssa_frame_size,
                max_save_buffer_size=max_save,
                desired_misc_select=misc_select,
                tcs_min_pool=tcs_min_pool,
                enclave_size=enclave_size,
                attribute_flags=flags,
                attribute_xfrm=xfrm,
                sigstruct=sig,
                file_offset=base + pos,
            )
        )
        if size < _HEADER.size + SIGSTRUCT_SIZE:
            break  # a bogus size would loop forever or overlap; the first block is what counts
        pos += size
    if not blocks:
        raise SigningError(
            f"{source}: the {SECTION_NAME} note holds no SGX SDK metadata "
            f"(magic {METADATA_MAGIC:#x} not found)"
        )
    return blocks


def find_sdk_sigstruct(data: bytes, *, source: str = "enclave") -> Sigstruct:
    """The SIGSTRUCT of an SDK-signed enclave ELF (from its first metadata block)."""
    return read_sdk_metadata(data, source=source)[0].sigstruct
