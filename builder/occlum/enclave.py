"""A signed Occlum LibOS, read natively: its SIGSTRUCT checked against the recipe.

``occlum build`` signs with the Intel SDK's ``sgx_sign``, which embeds the SIGSTRUCT in the
ELF note ``.note.sgxmeta`` (``sign/sdk_metadata.py`` reads it). What the SDK's ATTRIBUTEMASK
and MISCSELECT mean for DEBUG and EDMM is decided here, and the record's values come from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import SigningError, VerificationError
from ..recipe import Recipe
from ..sign import keys
from ..sign.sdk_metadata import SdkMetadata, read_sdk_metadata
from ..sign.sigstruct import SGX_FLAGS_DEBUG, Sigstruct, verify_q1_q2, verify_signature


def sdk_debuggable(sig: Sigstruct) -> bool:
    """Can the enclave be launched with DEBUG (host-readable memory)?

    sgx_sign never sets DEBUG in ATTRIBUTES; a debuggable enclave (DisableDebug=0, from
    Occlum's metadata.debuggable) is one whose ATTRIBUTEMASK leaves DEBUG free, so the loader
    may set it at ECREATE and EINIT still accepts it.
    """
    return (
        bool(sig.attribute_flags & SGX_FLAGS_DEBUG)
        or not sig.attribute_flags_mask & SGX_FLAGS_DEBUG
    )


def sdk_edmm(sig: Sigstruct) -> bool:
    """Was the enclave signed for EDMM? Occlum's EDMM Enclave.xml sets MiscSelect 1 (EXINFO)
    with MiscMask 0xFFFFFFFF, the non-EDMM one 0/0 (Occlum 0.31 `tools/gen_internal_conf`); SIGSTRUCT keeps
    MiscSelect & MiscMask."""
    return bool(sig.misc_select & 1)


@dataclass(frozen=True)
class OcclumEnclave:
    """The checked SIGSTRUCT of a signed Occlum LibOS and what the record says about it."""

    sigstruct: Sigstruct
    metadata: SdkMetadata | None
    debuggable: bool
    edmm: bool

    def summary(self) -> dict[str, Any]:
        """The ``sign --json`` shape; ``debug`` means "may run as a debug enclave"."""
        sig = self.sigstruct
        return {
            "mrenclave": sig.enclave_hash.hex(),
            "mrsigner": sig.mrsigner.hex(),
            "isv_prod_id": sig.isv_prod_id,
            "isv_svn": sig.isv_svn,
            "debug": self.debuggable,
            "date": sig.date_text,
            "attributes": {
                "flags": f"0x{sig.attribute_flags:016x}",
                "xfrm": f"0x{sig.attribute_xfrm:016x}",
            },
            "misc_select": f"0x{sig.misc_select:08x}",
        }


def check_occlum_sigstruct(
    sig: Sigstruct,
    *,
    source: str,
    recipe: Recipe,
    expected_mrsigner: bytes,
    metadata: SdkMetadata | None = None,
) -> OcclumEnclave:
    """Refuse a signed enclave that is not what the recipe and key asked for.

    The values come from Occlum's tools inside the base image, so each one the recipe decides
    is checked: a base whose ``occlum`` ignores --sign-key, Occlum.json or --enable-edmm must
    not get a record that claims otherwise.
    """
    if not (verify_signature(sig) and verify_q1_q2(sig)):
        raise VerificationError(
            f"{source}: the SIGSTRUCT's RSA signature does not verify; "
            "the enclave is damaged or was not signed by sgx_sign"
        )
    if sig.mrsigner != expected_mrsigner:
        if sig.mrsigner == keys.SAMPLE_KEY_MRSIGNER:
            raise VerificationError(
                f"{source}: signed with Occlum's default key, the public Intel SDK sample key "
                f"(MRSIGNER {keys.SAMPLE_KEY_MRSIGNER.hex()}), not with --key; the base "
                "image's occlum ignored --sign-key: use a genuine Occlum 0.31 base"
            )
        raise VerificationError(
            f"{source}: MRSIGNER is {sig.mrsigner.hex()}, but --key has MRSIGNER "
            f"{expected_mrsigner.hex()}; the base image's occlum signed with another key"
        )
    if (sig.isv_prod_id, sig.isv_svn) != (recipe.enclave.isv_prod_id, recipe.enclave.isv_svn):
        raise VerificationError(
            f"{source}: ISVPRODID/ISVSVN are {sig.isv_prod_id}/{sig.isv_svn}, but the recipe's "
            f"enclave.isv_prod_id/isv_svn are {recipe.enclave.isv_prod_id}/"
            f"{recipe.enclave.isv_svn}; the base image's occlum did not sign the Occlum.json "
            "we wrote"
        )
    debuggable = sdk_debuggable(sig)
    if debuggable and not recipe.enclave.debug:
        raise VerificationError(
            f"{source}: the signed enclave is debuggable (its ATTRIBUTEMASK leaves DEBUG open, "
            "so the host can read its memory) but the recipe has enclave.debug: false; the "
            "base image's occlum ignored Occlum.json metadata.debuggable: use a genuine Occlum "
            "0.31 base (or set enclave.debug: true for a test build)"
        )
    edmm = sdk_edmm(sig)
    if edmm != recipe.enclave.edmm:
        raise VerificationError(
            f"{source}: the enclave was signed {'with' if edmm else 'without'} EDMM "
            f"(MISCSELECT 0x{sig.misc_select:08x}) but the recipe has enclave.edmm: "
            f"{'true' if recipe.enclave.edmm else 'false'}; EDMM changes MRENCLAVE, so the base "
            "image must not override --enable-edmm (check its ENABLE_EDMM / "
            "INSTANCE_IS_FOR_EDMM_PLATFORM environment)"
        )
    return OcclumEnclave(sig, metadata, debuggable, edmm)


def read_occlum_enclave(
    data: bytes, *, source: str, recipe: Recipe, expected_mrsigner: bytes
) -> OcclumEnclave:
    """Parse the SIGSTRUCT from an SDK-signed ELF's .note.sgxmeta (as ``sigstruct-view``
    does) and check it."""
    try:
        metadata = read_sdk_metadata(data, source=source)[0]
    except SigningError as err:
        raise VerificationError(str(err)) from None
    return check_occlum_sigstruct(
        metadata.sigstruct,
        source=source,
        recipe=recipe,
        expected_mrsigner=expected_mrsigner,
        metadata=metadata,
    )
