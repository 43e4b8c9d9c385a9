"""Does the image agree with its own SIGSTRUCT? MRENCLAVE recomputed from the manifest and
``libpal.so``, the RSA signature and Q1/Q2, the fields Gramine derives from the manifest, the
LibOS entrypoint's hash and every trusted file's hash, all from the image's own bytes.

An image that passes only these may still have been changed and re-signed by anyone: the
checks that tie it to a signer are in ``anchors``.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from typing import Any

from ..errors import ManifestError, PpmlError, SigningError
from ..gramine.trusted import TrustedFile
from ..image.rootfs import RootFS, RootFSError, resolve
from ..sign.sigstruct import (
    Sigstruct,
    unsigned_sigstruct,
    verify_q1_q2,
    verify_signature,
)
from ..versions import DEFAULT_GRAMINE_PREFIX, gramine_version
from .report import Check, differs

LIBPAL_IN_PREFIX = gramine_version().libpal  # relative to the directory holding libsysdb.so


def parse_manifest(data: bytes, source: str) -> tuple[dict | None, Check]:
    from ..gramine.signing import parse_manifest_toml

    try:
        manifest = parse_manifest_toml(data, source)
    except ManifestError as err:
        return None, Check("manifest", False, str(err))
    digest = hashlib.sha256(data).hexdigest()
    return manifest, Check("manifest", True, f"TOML, {len(data)} bytes, sha256 {digest}")


def libsysdb_path(manifest: Mapping[str, Any] | None) -> str:
    """In-image path of loader.entrypoint (Gramine's libsysdb.so)."""
    uri = None
    if manifest is not None:
        entry = (manifest.get("loader") or {}).get("entrypoint")
        uri = entry.get("uri") if isinstance(entry, Mapping) else None
    if isinstance(uri, str) and uri.startswith("file:/"):
        return uri[len("file:") :]
    return DEFAULT_GRAMINE_PREFIX + "libsysdb.so"


def libpal_path(manifest: Mapping[str, Any] | None) -> str:
    """libpal.so sits in ``sgx/`` beside libsysdb.so in Gramine's pkglibdir."""
    return posixpath.join(posixpath.dirname(libsysdb_path(manifest)), LIBPAL_IN_PREFIX)


def read_libpal(fs: RootFS, path: str) -> tuple[bytes | None, str]:
    """(bytes, "") or (None, why not)."""
    try:
        return fs.read_bytes(resolve(fs, path)), ""
    except (OSError, KeyError, ValueError) as err:
        return None, f"cannot read {path} in the image ({err}); give --libpal FILE"


def check_measurement(
    manifest_sgx: bytes, libpal: bytes | None, libpal_problem: str, sig: Sigstruct, source: str
) -> tuple[str | None, Check]:
    """Recompute MRENCLAVE and compare it with the SIGSTRUCT's ENCLAVEHASH."""
    from ..gramine.signing import measure_manifest_bytes

    if libpal is None:
        return None, Check("mrenclave", False, f"not recomputed: {libpal_problem}")
    try:
        mrenclave, _inputs, _ = measure_manifest_bytes(manifest_sgx, libpal, source=source)
    except PpmlError as err:
        return None, Check("mrenclave", False, f"not recomputed: {err}")
    recomputed = mrenclave.hex()
    signed = sig.enclave_hash.hex()
    if recomputed != signed:
        return recomputed, Check(
            "mrenclave",
            False,
            f"recomputed {recomputed} from the manifest and libpal.so, "
            f"but the SIGSTRUCT's ENCLAVEHASH is {signed} (the manifest, "
            "libpal.so or the .sig was changed after signing)",
        )
    return recomputed, Check("mrenclave", True, f"{recomputed} (recomputed = SIGSTRUCT)")


def check_signature(sig: Sigstruct) -> list[Check]:
    signature_ok = verify_signature(sig)
    q_ok = verify_q1_q2(sig)
    return [
        Check(
            "sigstruct:signature",
            signature_ok,
            f"RSA-3072 e=3 signature verifies, MRSIGNER {sig.mrsigner.hex()}"
            if signature_ok
            else "the RSA signature does not verify against the SIGSTRUCT's modulus "
            "(the .sig was modified after signing)",
        ),
        Check(
            "sigstruct:q1_q2",
            q_ok,
            "Q1/Q2 match the signature"
            if q_ok
            else "Q1/Q2 do not match the signature; EINIT would reject this SIGSTRUCT",
        ),
    ]


def check_sigstruct_fields(manifest: Mapping[str, Any], sig: Sigstruct) -> list[Check]:
    """ISVPRODID, ISVSVN, DEBUG and the attributes Gramine derives from the manifest."""
    sgx = manifest.get("sgx") or {}
    try:
        expected = unsigned_sigstruct(enclave_hash=bytes(32), sgx=sgx, date_bcd=0)
    except SigningError as err:
        return [Check("sigstruct:fields", False, f"the manifest's sgx values are invalid: {err}")]
    out = []
    for name, key, want, got in (
        ("isv_prod_id", "sgx.isvprodid", expected.isv_prod_id, sig.isv_prod_id),
        ("isv_svn", "sgx.isvsvn", expected.isv_svn, sig.isv_svn),
        ("debug", "sgx.debug", expected.debug, sig.debug),
    ):
        shown = (lambda v: str(v).lower()) if name == "debug" else str
        if want == got:
            out.append(Check(f"sigstruct:{name}", True, f"{shown(got)} (= manifest {key})"))
        else:
            out.append(
                Check(
                    f"sigstruct:{name}",
                    False,
                    differs(
                        name, shown(want), shown(got), f"the manifest ({key})", "the SIGSTRUCT"
                    ),
                )
            )
    fields = (
        "attribute_flags",
        "attribute_xfrm",
        "attribute_flags_mask",
        "attribute_xfrm_mask",
        "misc_select",
        "misc_mask",
    )
    wrong = [
        f"{f} 0x{getattr(expected, f):x} expected, 0x{getattr(sig, f):x} signed"
        for f in fields
        if getattr(expected, f) != getattr(sig, f)
    ]
    out.append(
        Check(
            "sigstruct:attributes",
            not wrong,
            "; ".join(wrong)
            if wrong
            else f"flags 0x{sig.attribute_flags:x}, xfrm 0x{sig.attribute_xfrm:x}, "
            f"misc_select 0x{sig.misc_select:x} (= manifest)",
        )
    )
    return out


def check_libos_entrypoint(manifest: Mapping[str, Any], fs: RootFS) -> Check:
    entry = (manifest.get("loader") or {}).get("entrypoint")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("uri"), str):
        return Check("loader.entrypoint", False, "the manifest has no loader.entrypoint.uri")
    path = libsysdb_path(manifest)
    want = entry.get("sha256")
    if not isinstance(want, str):
        return Check(
            "loader.entrypoint",
            False,
            f"{path}: no loader.entrypoint.sha256 in the .manifest.sgx (not a signed manifest?)",
        )
    got, problem = _image_sha256(fs, path)
    if got is None:
        return Check("loader.entrypoint", False, f"{path}: {problem}")
    if got != want:
        return Check(
            "loader.entrypoint",
            False,
            f"{path}: sha256 is {want} in the manifest but {got} in the image "
            "(the LibOS was replaced)",
        )
    return Check("loader.entrypoint", True, f"{path} sha256 {got}")


def _image_sha256(fs: RootFS, path: str) -> tuple[str | None, str]:
    try:
        real = resolve(fs, path)
    except RootFSError as err:
        return None, f"missing in the image ({err})"
    entry = fs.lstat(real)
    if entry is None or entry.kind != "file":
        return None, f"not a regular file in the image ({entry.kind if entry else 'missing'})"
    try:
        return fs.sha256_many([real])[real], ""
    except (OSError, KeyError) as err:
        return None, f"cannot be read in the image ({err})"


def manifest_trusted_files(manifest: Mapping[str, Any]) -> list[TrustedFile]:
    """The (uri, sha256) list as signed; entries without a sha256 keep sha256 ''."""
    out = []
    for item in (manifest.get("sgx") or {}).get("trusted_files") or []:
        if isinstance(item, Mapping):
            out.append(TrustedFile(str(item.get("uri", "")), str(item.get("sha256") or "")))
        else:
            out.append(TrustedFile(str(item), ""))
    return out


def check_trusted_files(files: list[TrustedFile], fs: RootFS) -> list[Check]:
    """Each trusted file's signed sha256 against the file in the image (resolved inside it)."""
    failures: list[Check] = []
    to_hash: dict[str, list[tuple[str, str]]] = {}  # resolved path -> [(in-manifest path, sha)]
    for tf in files:
        path = tf.uri[len("file:") :] if tf.uri.startswith("file:") else tf.uri
        name = f"trusted_file:{path}"
        if not tf.uri.startswith("file:/") or tf.uri.endswith("/"):
            failures.append(
                Check(
                    name,
                    False,
                    f"{tf.uri!r} is not an expanded file: URI; a .manifest.sgx lists single files",
                )
            )
            continue
        if not tf.sha256:
            failures.append(
                Check(name, False, "no sha256 in the .manifest.sgx (not a signed manifest?)")
            )
            continue
        try:
            real = resolve(fs, path)
        except RootFSError as err:
            failures.append(Check(name, False, f"missing in the image ({err})"))
            continue
        entry = fs.lstat(real)
        if entry is None or entry.kind != "file":
            kind = entry.kind if entry else "missing"
            failures.append(Check(name, False, f"not a regular file in the image ({kind})"))
            continue
        to_hash.setdefault(real, []).append((path, tf.sha256))
    digests = _sha256_each(fs, list(to_hash))
    for real, wanted in to_hash.items():
        got = digests.get(real)
        for path, sha in wanted:
            if isinstance(got, Exception):
                failures.append(
                    Check(f"trusted_file:{path}", False, f"cannot be read in the image ({got})")
                )
            elif got != sha:
                where = "" if real == path else f" (resolved to {real})"
                failures.append(
                    Check(
                        f"trusted_file:{path}",
                        False,
                        f"changed{where}: sha256 is {sha} in the manifest but {got} in the image",
                    )
                )
    failures.sort(key=lambda check: check.name)
    total = len(files)
    if failures:
        summary = Check(
            "trusted_files",
            False,
            f"{len(failures)} of {total} trusted files differ from the image or are missing",
        )
    else:
        summary = Check("trusted_files", True, f"all {total} match the image")
    return [summary] + failures


def _sha256_each(fs: RootFS, paths: list[str]) -> dict[str, str | Exception]:
    """Hash in one batch (parallel on a directory); on a read error fall back per file."""
    if not paths:
        return {}
    try:
        return dict(fs.sha256_many(paths))
    except (OSError, KeyError):
        out: dict[str, str | Exception] = {}
        for path in paths:
            try:
                out[path] = fs.sha256_many([path])[path]
            except (OSError, KeyError) as err:
                out[path] = err
        return out


__all__ = [
    "check_libos_entrypoint",
    "check_measurement",
    "check_signature",
    "check_sigstruct_fields",
    "check_trusted_files",
    "libpal_path",
    "libsysdb_path",
    "manifest_trusted_files",
    "parse_manifest",
    "read_libpal",
]
