"""The I/O edge of signing: files in, files out, for ``keygen``, ``sign``, ``measure`` and
``sigstruct-view``. The pure parts live in ``ppml_build.sign``.

``sign`` follows ``gramine-sgx-sign`` (v1.9): load the TOML manifest, insert the defaults of
Gramine's ``Manifest`` constructor, expand and hash trusted files, serialise with tomli_w, measure
exactly those bytes, build and sign the SIGSTRUCT. Everything is computed in memory first; the
outputs are checked to be writable before that work and written together at the end, all or
none (``atomic.write_all_or_none``), so a failure leaves nothing half-written.

Longer than most: ``sign``, two-step signing, ``measure`` and ``sigstruct-view`` share the
file checks and the all-or-none outputs kept here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..atomic import Output, OutputError, check_writable, write_all_or_none, write_and_sync
from ..errors import InputLimitError, ManifestError, PpmlError, SigningError
from ..image.rootfs import DirRootFS, RootFS, stat_followed
from ..key_files import load_signing_key
from ..key_files import read_file as _read
from ..limits import MAX_SMALL_FILE_BYTES
from ..sign import keys
from ..sign.sdk_metadata import SdkMetadata, is_elf, read_sdk_metadata
from ..sign.sigstruct import (
    SIGSTRUCT_SIZE,
    Sigstruct,
    parse_date,
    unsigned_sigstruct,
    verify_q1_q2,
    verify_signature,
)
from ..versions import DEFAULT_GRAMINE_PREFIX, gramine_version
from .schema import apply_gramine_defaults

DEFAULT_LIBPAL = DEFAULT_GRAMINE_PREFIX + gramine_version().libpal
PENDING_SUFFIX = ".pending"
PENDING_FORMAT = "ppml-build-pending-sigstruct/1"


# --- small file helpers ---------------------------------------------------------------------


def _check_distinct(**paths: Path | None) -> None:
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        real = Path(os.path.abspath(path))
        if real in seen:
            raise SigningError(
                f"{path}: given as both --{seen[real]} and --{option}; use different files"
            )
        seen[real] = option.replace("_", "-")


# --- the manifest ---------------------------------------------------------------------------

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


def parse_manifest_toml(data: bytes, source: str) -> dict[str, Any]:
    """Parse TOML; a syntax error becomes ``FILE:LINE: ...`` on one line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(f"{source}:{line}: not UTF-8 text; a manifest is a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        match = _TOML_LINE.search(msg)
        where = f"{source}:{match.group(1)}" if match else source
        detail = _TOML_LINE.sub("", msg).strip().rstrip(".")
        column = f" (column {match.group(2)})" if match else ""
        raise ManifestError(f"{where}: invalid TOML: {detail}{column}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InputLimitError(
            f"{source}: arrays or inline tables nest too deeply to read; a "
            "Gramine manifest needs a few levels"
        ) from None
    except ValueError as err:  # int() past Python's 4300-digit limit
        raise InputLimitError(
            f"{source}: a number too large to read ({str(err).split(':')[0]})"
        ) from None


def finalize_manifest(manifest: dict[str, Any], fs: RootFS, *, source: str = "manifest") -> bytes:
    """Hash the LibOS entrypoint and trusted files through ``fs``; return .manifest.sgx bytes."""
    from .trusted import expand_trusted_files

    manifest = copy.deepcopy(manifest)
    entrypoint = manifest["loader"]["entrypoint"]
    uri = entrypoint.get("uri")
    if not isinstance(uri, str) or not uri.startswith("file:") or uri.endswith("/"):
        raise ManifestError(
            f"{source}: loader.entrypoint.uri = {uri!r}: expected a file: URI of "
            "the LibOS (Gramine's libsysdb.so)"
        )
    given = entrypoint.get("sha256")
    if given is not None and not (isinstance(given, str) and _SHA256_HEX.fullmatch(given)):
        raise ManifestError(
            f"{source}: loader.entrypoint.sha256 = {given!r}: must be 64 "
            "lowercase hex digits (or leave it out to hash the file)"
        )
    if "sha256" not in entrypoint:
        path = uri[len("file:") :]
        entry = stat_followed(fs, path) if path.startswith("/") else None
        if entry is None or entry.kind != "file":
            where = (
                "in the --chroot image"
                if isinstance(fs, DirRootFS) and fs.root != Path("/")
                else "on this machine"
            )
            raise ManifestError(
                f"{source}: loader.entrypoint.sha256 is not given and "
                f"{path} is not a file {where}; give "
                "loader.entrypoint.sha256, or --chroot the image root that "
                "holds it"
            )
        try:
            [hashed] = expand_trusted_files([uri], fs)
        except ManifestError as err:
            raise ManifestError(f"{source}: loader.entrypoint: {err}") from None
        entrypoint["sha256"] = hashed["sha256"]
    try:
        sgx = manifest["sgx"]
        sgx["trusted_files"] = expand_trusted_files(sgx["trusted_files"], fs)
    except ManifestError as err:
        raise ManifestError(f"{source}: {err}") from None
    text = tomli_w.dumps(manifest)
    return text.encode("utf-8")


def load_and_finalize(manifest_path: Path, fs: RootFS) -> bytes:
    """Input manifest path to the bytes of its .manifest.sgx."""
    source = str(manifest_path)
    manifest = parse_manifest_toml(_read(manifest_path, "manifest", ManifestError), source)
    return finalize_manifest(apply_gramine_defaults(manifest, source=source), fs, source=source)


# --- measurement and the SIGSTRUCT ----------------------------------------------------------


def _prefixed(err: PpmlError, source: str) -> PpmlError:
    text = str(err)
    return err if text.startswith(source) else type(err)(f"{source}: {text}")


def load_pal(libpal: Path | Any) -> Any:
    """A parsed libpal (``PalImage``); accepts an already parsed one."""
    from ..sign.elf import PalImage, read_pal_image

    return libpal if isinstance(libpal, PalImage) else read_pal_image(libpal)


def measure_manifest_bytes(
    manifest_sgx: bytes, libpal: Path | Any, *, source: str
) -> tuple[bytes, Any, dict]:
    """(MRENCLAVE, MeasurementInputs, parsed manifest) of exactly these .manifest.sgx bytes."""
    from ..sign.measure import measure_enclave, measurement_inputs

    manifest = parse_manifest_toml(manifest_sgx, source)
    try:
        inputs = measurement_inputs(manifest)
    except PpmlError as err:
        raise _prefixed(err, source) from None
    pal = load_pal(libpal)
    try:
        mrenclave = measure_enclave(manifest_sgx, pal, inputs)
    except PpmlError as err:
        raise _prefixed(err, source) from None
    return mrenclave, inputs, manifest


def tbs_sigstruct(
    manifest_sgx: bytes, libpal: Path | Any, date_bcd: int, *, source: str
) -> Sigstruct:
    """The to-be-signed SIGSTRUCT for a .manifest.sgx (Gramine's ``get_tbssigstruct``)."""
    manifest = parse_manifest_toml(manifest_sgx, source)
    try:
        # Attributes and ISV values first: a typo there should not wait for the measurement.
        unsigned = unsigned_sigstruct(
            enclave_hash=bytes(32), sgx=manifest.get("sgx", {}), date_bcd=date_bcd
        )
    except PpmlError as err:
        raise _prefixed(err, source) from None
    mrenclave, _inputs, _ = measure_manifest_bytes(manifest_sgx, libpal, source=source)
    return unsigned.copy(enclave_hash=mrenclave)


def _rootfs(chroot: Path | None) -> RootFS:
    if chroot is None:
        return DirRootFS(Path("/"))
    if not Path(chroot).is_dir():
        raise ManifestError(f"{chroot}: --chroot must be a directory (the image root)")
    return DirRootFS(Path(chroot))


def default_sigfile(manifest_path: Path) -> Path:
    """Gramine's default: the input manifest name without ``.manifest``, plus ``.sig``."""
    name = manifest_path.name
    stem = name[: -len(".manifest")] if name.endswith(".manifest") else name
    return manifest_path.with_name(stem + ".sig")


@dataclass(frozen=True)
class SignResult:
    sigstruct: Sigstruct
    manifest_sgx: Path
    sigfile: Path
    signed: bool = True
    signing_data: Path | None = None
    pending: Path | None = None


def sign(
    manifest_path: Path,
    libpal: Path,
    output: Path,
    sigfile: Path,
    *,
    key_path: Path,
    passphrase: bytes | None = None,
    date: str = "today",
    chroot: Path | None = None,
    allow_sample_key: bool = False,
) -> SignResult:
    """One-step signing with a PEM key: write OUTPUT (.manifest.sgx) and SIGFILE."""
    _check_distinct(manifest=manifest_path, output=output, sigfile=sigfile, key=key_path)
    check_writable(output, "--output")
    check_writable(sigfile, "--sigfile")
    date_bcd = parse_date(date)
    # The key first: a refused key should fail before minutes of hashing.
    private_key = load_signing_key(key_path, passphrase, allow_sample_key=allow_sample_key)
    pal = load_pal(libpal)
    manifest_sgx = load_and_finalize(manifest_path, _rootfs(chroot))
    sig = tbs_sigstruct(manifest_sgx, pal, date_bcd, source=str(output))
    signed = keys.sign_sigstruct(sig, private_key, source=str(key_path))
    # The .sig last: a .sig beside a .manifest.sgx means the pair is complete.
    write_all_or_none(
        {
            output: Output(manifest_sgx, option="--output"),
            sigfile: Output(signed.to_bytes(), option="--sigfile"),
        }
    )
    return SignResult(signed, output, sigfile)


def pending_path(sigfile: Path) -> Path:
    if not sigfile.name:  # ".", "/", "": a directory, not a file
        raise SigningError(
            f"--sigfile {sigfile}: names a directory; give a file path for --sigfile"
        )
    return sigfile.with_name(sigfile.name + PENDING_SUFFIX)


def prepare_external_signing(
    manifest_path: Path,
    libpal: Path,
    output: Path,
    sigfile: Path,
    signing_data_out: Path,
    *,
    date: str = "today",
    chroot: Path | None = None,
) -> SignResult:
    """Step 1 of two-step signing: write OUTPUT, the 256 bytes to sign and SIGFILE.pending."""
    pending = pending_path(sigfile)
    _check_distinct(
        manifest=manifest_path, output=output, sigfile=sigfile, signing_data_out=signing_data_out
    )
    for path, option in (
        (output, "--output"),
        (sigfile, "--sigfile"),
        (signing_data_out, "--signing-data-out"),
    ):
        check_writable(path, option)
    date_bcd = parse_date(date)
    pal = load_pal(libpal)
    manifest_sgx = load_and_finalize(manifest_path, _rootfs(chroot))
    sig = tbs_sigstruct(manifest_sgx, pal, date_bcd, source=str(output))
    state = {
        "format": PENDING_FORMAT,
        "manifest_sgx": os.path.abspath(output),
        "manifest_sgx_sha256": hashlib.sha256(manifest_sgx).hexdigest(),
        "signing_data_sha256": hashlib.sha256(sig.signing_data()).hexdigest(),
        "sigstruct": sig.to_bytes().hex(),
    }
    # The pending state last: step 2 reads it, and finds the other two files beside it.
    write_all_or_none(
        {
            output: Output(manifest_sgx, option="--output"),
            signing_data_out: Output(sig.signing_data(), option="--signing-data-out"),
            pending: Output(json.dumps(state, indent=2) + "\n", option="--sigfile"),
        }
    )
    return SignResult(
        sig, output, sigfile, signed=False, signing_data=signing_data_out, pending=pending
    )


def _load_pending(pending: Path, sigfile: Path) -> tuple[Sigstruct, str]:
    if not pending.exists():
        raise SigningError(
            f"{pending}: no pending signature for {sigfile}; run `ppml-build sign "
            "... --signing-data-out DATA.bin` first"
        )
    raw = _read(pending, "pending-signature file", limit=MAX_SMALL_FILE_BYTES)
    try:
        state = json.loads(raw)
        if state.get("format") != PENDING_FORMAT:
            raise ValueError("unknown format")
        sig = Sigstruct.from_bytes(bytes.fromhex(state["sigstruct"]), source=str(pending))
        expected = state["manifest_sgx_sha256"]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise SigningError(
            f"{pending}: not a ppml-build pending-signature file; redo step 1 "
            "(`ppml-build sign ... --signing-data-out DATA.bin`)"
        ) from None
    return sig, expected


def complete_external_signing(
    output: Path,
    sigfile: Path,
    signature_path: Path,
    public_key_path: Path,
    *,
    allow_sample_key: bool = False,
) -> SignResult:
    """Step 2: check OUTPUT is unchanged, verify the external signature, write SIGFILE."""
    check_writable(sigfile, "--sigfile")
    pending = pending_path(sigfile)
    sig, expected = _load_pending(pending, sigfile)
    manifest_sgx = _read(output, "manifest (.manifest.sgx)")
    if hashlib.sha256(manifest_sgx).hexdigest() != expected:
        raise SigningError(
            f"{output}: changed since the signing data was made (its MRENCLAVE "
            "would differ); redo step 1 with --signing-data-out"
        )
    public_pem = _read(public_key_path, "public key", limit=MAX_SMALL_FILE_BYTES)
    public_key = keys.load_public_key(
        public_pem, source=str(public_key_path), allow_sample_key=allow_sample_key
    )
    signature = _read(signature_path, "signature", limit=MAX_SMALL_FILE_BYTES)
    signed = keys.assemble_with_signature(sig, public_key, signature, source=str(signature_path))
    write_all_or_none({sigfile: Output(signed.to_bytes(), option="--sigfile")})
    pending.unlink(missing_ok=True)
    return SignResult(signed, output, sigfile)


# --- measure, view, keygen ------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    mrenclave: bytes
    enclave_size: int
    max_threads: int
    edmm_enable: bool


def measure(manifest_sgx_path: Path, libpal: Path) -> Measurement:
    """MRENCLAVE of an existing .manifest.sgx, exactly as written (no defaults re-serialised)."""
    data = _read(manifest_sgx_path, "manifest (.manifest.sgx)", ManifestError)
    mrenclave, inputs, _ = measure_manifest_bytes(data, libpal, source=str(manifest_sgx_path))
    return Measurement(mrenclave, inputs.enclave_size, inputs.max_threads, inputs.edmm_enable)


@dataclass(frozen=True)
class SigstructView:
    sigstruct: Sigstruct
    signature_valid: bool
    q1_q2_valid: bool
    sdk_metadata: SdkMetadata | None = None

    @property
    def valid(self) -> bool:
        return self.signature_valid and self.q1_q2_valid


def view(path: Path) -> SigstructView:
    """Parse a raw SIGSTRUCT (.sig) or the one inside an SGX-SDK-signed ELF, and verify it."""
    data = _read(path, "SIGSTRUCT")
    meta = None
    if is_elf(data):
        meta = read_sdk_metadata(data, source=str(path))[0]
        sig = meta.sigstruct
    elif len(data) == SIGSTRUCT_SIZE:
        sig = Sigstruct.from_bytes(data, source=str(path))
    else:
        raise SigningError(
            f"{path}: {len(data)} bytes, neither a {SIGSTRUCT_SIZE}-byte SIGSTRUCT "
            "(.sig; truncated?) nor an SGX-SDK-signed ELF enclave"
        )
    return SigstructView(sig, verify_signature(sig), verify_q1_q2(sig), meta)


def keygen(output: Path, passphrase: bytes | None = None) -> keys.PrivateKey:
    """Write a new RSA-3072/e=3 key, mode 0600, never replacing an existing file."""
    if output.exists() or output.is_symlink():
        raise SigningError(
            f"{output}: already exists; refusing to overwrite a key (remove it "
            "first or choose another --output)"
        )
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise SigningError(f"{output}: the directory {parent} does not exist")
    check_writable(output, "--output")
    key = keys.generate_key()
    pem = keys.private_key_pem(key, passphrase)
    try:
        _link_new_key(output, parent, pem)
    except OSError as err:
        raise OutputError(
            f"--output {output}: cannot write the key ({err.strerror or err}); "
            "choose a writable location"
        ) from None
    return key


def _link_new_key(output: Path, parent: Path, pem: bytes) -> None:
    # Complete file under a temp name (0600 from the start), then link(2) it into place:
    # link fails if the name exists, so a racing writer is never overwritten.
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent)
    try:
        write_and_sync(fd, pem, 0o600)
        try:
            os.link(tmp, output)
        except FileExistsError:
            raise SigningError(f"{output}: already exists; refusing to overwrite a key") from None
        except OSError:
            _write_exclusive(output, pem)  # filesystems without hard links
    finally:
        os.unlink(tmp)


def _write_exclusive(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{path}: already exists; refusing to overwrite a key") from None
    try:
        write_and_sync(fd, data, 0o600)
    except BaseException:
        os.unlink(path)  # never leave half a key
        raise


# --- presentation helpers (shared by the commands) ------------------------------------------


def sign_summary(sig: Sigstruct) -> dict[str, Any]:
    """The ``sign --json`` object."""
    return {
        "mrenclave": sig.enclave_hash.hex(),
        "mrsigner": sig.mrsigner.hex(),
        "isv_prod_id": sig.isv_prod_id,
        "isv_svn": sig.isv_svn,
        "debug": sig.debug,
        "date": sig.date_text,
        "attributes": {
            "flags": f"0x{sig.attribute_flags:016x}",
            "xfrm": f"0x{sig.attribute_xfrm:016x}",
        },
        "misc_select": f"0x{sig.misc_select:08x}",
    }


def sigstruct_fields(sig: Sigstruct) -> dict[str, Any]:
    """Every SIGSTRUCT field in SDM order, as JSON-ready values (hex strings for bytes)."""
    return {
        "header": sig.header.hex(),
        "header_type": f"0x{sig.header_type:08x}",
        "vendor": f"0x{sig.vendor:08x}",
        "date": sig.date_text,
        "header2": sig.header2.hex(),
        "swdefined": f"0x{sig.swdefined:08x}",
        "modulus": sig.modulus.hex(),
        "exponent": sig.exponent,
        "signature": sig.signature.hex(),
        "misc_select": f"0x{sig.misc_select:08x}",
        "misc_mask": f"0x{sig.misc_mask:08x}",
        "cet_attributes": f"0x{sig.cet_attributes:02x}",
        "cet_attributes_mask": f"0x{sig.cet_attributes_mask:02x}",
        "isv_family_id": sig.isv_family_id.hex(),
        "attributes": {
            "flags": f"0x{sig.attribute_flags:016x}",
            "xfrm": f"0x{sig.attribute_xfrm:016x}",
        },
        "attribute_mask": {
            "flags": f"0x{sig.attribute_flags_mask:016x}",
            "xfrm": f"0x{sig.attribute_xfrm_mask:016x}",
        },
        "mrenclave": sig.enclave_hash.hex(),
        "isv_ext_prod_id": sig.isv_ext_prod_id.hex(),
        "isv_prod_id": sig.isv_prod_id,
        "isv_svn": sig.isv_svn,
        "q1": sig.q1.hex(),
        "q2": sig.q2.hex(),
    }


def view_summary(result: SigstructView) -> dict[str, Any]:
    """The ``sigstruct-view --json`` object."""
    sig = result.sigstruct
    out: dict[str, Any] = sigstruct_fields(sig)
    out["mrsigner"] = sig.mrsigner.hex()
    out["debug"] = sig.debug
    out["signature_valid"] = result.signature_valid
    out["q1_q2_valid"] = result.q1_q2_valid
    if result.sdk_metadata is not None:
        meta = result.sdk_metadata
        out["sdk_metadata"] = {
            "version": meta.version,
            "enclave_size": f"0x{meta.enclave_size:x}",
            "tcs_policy": meta.tcs_policy,
            "ssa_frame_size": meta.ssa_frame_size,
            "attributes": {
                "flags": f"0x{meta.attribute_flags:016x}",
                "xfrm": f"0x{meta.attribute_xfrm:016x}",
            },
            "file_offset": meta.file_offset,
        }
    return out
