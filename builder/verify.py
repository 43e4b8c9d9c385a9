"""``ppml-build verify``: re-check a signed enclave image from its own bytes, trusting nothing.

Everything is recomputed from what the image (or a directory) holds: MRENCLAVE from
``APP.manifest.sgx`` and the image's ``libpal.so``, the SIGSTRUCT's signature and Q1/Q2, every
trusted file's SHA-256 from the image's filesystem, then compared with the SIGSTRUCT, the
measurement record, the image labels and an attestation policy. Each comparison is one named
:class:`Check`; a readable input that disagrees is a failed check (exit 1), an unreadable input
(no such image, a record that is not JSON, a ``.sig`` that is not a SIGSTRUCT) is one
``PpmlError`` line (exit 2).

An image that agrees with itself proves little on its own: anyone can change it and re-sign it
with their own key. So verify also asks for a trust anchor (a record, a policy that pins
MRENCLAVE or MRSIGNER, ``--mrsigner``, ``--signer-key``) and refuses, as failed checks, what is
never production-safe: no anchor (unless ``allow_unpinned``), a debug enclave (unless
``allow_debug``), and allowed files that cover the whole file system (unless ``allow_unpinned``).

Layout: the pure core (:func:`run_checks`, the ``check_*`` functions and the policy
evaluators) takes bytes, parsed documents and a ``RootFS``; the edges (:func:`verify_directory`,
:func:`verify_image`) read files or one ``docker export`` stream and call it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import ImageError, ManifestError, PpmlError, SigningError
from ppml_build.gramine.launch import SUPPORT_DIR
from .policy.evaluate import (POLICY_FORMATS, PolicyDocument, QuoteValues, load_policy,
                              policy_problems)
from .limits import MAX_DOCUMENT_BYTES, MAX_SMALL_FILE_BYTES, check_size, read_at_most
from .policy.model import EnclaveValues, read_record_json
from ppml_build.image.rootfs import DirRootFS, RootFS, RootFSError, resolve
from .sign import keys
from .sign.sigstruct import (
    SIGSTRUCT_SIZE,
    Sigstruct,
    unsigned_sigstruct,
    verify_q1_q2,
    verify_signature,
)
from ppml_build.gramine.trusted import TrustedFile, trusted_list_digest
from ppml_build.gramine.uris import covers_whole_filesystem
from .versions import DEFAULT_GRAMINE_PREFIX

IN_IMAGE_DIR = SUPPORT_DIR  # /ppml: where `build` puts APP.manifest.sgx and APP.sig
LIBPAL_IN_PREFIX = "sgx/libpal.so"  # relative to the directory holding libsysdb.so
RECORD_FILE = "measurement.json"

Say = Callable[[str], None]


# --- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        """``ok   <name>[: detail]`` or ``FAIL <name>: <what differs>``."""
        head = "ok  " if self.ok else "FAIL"
        return f"{head} {self.name}: {self.detail}" if self.detail else f"{head} {self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class VerifyReport:
    target: str
    name: str
    checks: list[Check]
    mrenclave: str | None  # recomputed; None when it could not be
    mrsigner: str
    isv_prod_id: int
    isv_svn: int
    debug: bool
    pinned_by: list[str] = field(default_factory=list)  # the trust anchors; empty: unpinned

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def warning(self) -> str | None:
        """The line printed before the checks when nothing ties the enclave to a signer."""
        return None if self.pinned_by else UNPINNED_WARNING

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "warning": self.warning, "pinned_by": list(self.pinned_by),
                "target": self.target, "name": self.name,
                "mrenclave": self.mrenclave, "mrsigner": self.mrsigner,
                "isv_prod_id": self.isv_prod_id, "isv_svn": self.isv_svn, "debug": self.debug,
                "checks": [check.as_dict() for check in self.checks]}

    def summary_line(self) -> str:
        if self.ok and self.pinned_by:
            return f"verified: {len(self.checks)} checks passed, MRENCLAVE {self.mrenclave}"
        if self.ok:
            return (f"self-consistent only, nothing pins the signer: {len(self.checks)} checks "
                    f"passed, MRENCLAVE {self.mrenclave}")
        failed = self.failures
        return f"NOT verified: {len(failed)} of {len(self.checks)} checks failed"

    def lines(self) -> list[str]:
        """The text report: the unpinned warning first, one line per check, the summary."""
        head = [self.warning] if self.warning else []
        return head + [check.line() for check in self.checks] + [self.summary_line()]

    def failure_message(self) -> str:
        """The one stderr line for a failed verification."""
        names = [check.name for check in self.failures]
        shown = ", ".join(names[:6]) + (f", and {len(names) - 6} more" if len(names) > 6 else "")
        hints = [ACCEPT_HINTS[name] for name in names if name in ACCEPT_HINTS]
        return f"{self.target}: verification failed: {shown}" + "".join(f"; {h}" for h in hints)


UNPINNED_WARNING = (
    "WARNING: nothing pins the signer: the checks below only show that the image agrees with "
    "its own SIGSTRUCT, and anyone can change an image and re-sign it; pin it with --record "
    "measurement.json, --policy FILE, --mrsigner HEX or --signer-key PEM")
# What the one stderr line adds when a check that only a flag can waive failed.
ACCEPT_HINTS = {
    "trust_anchor": "pin the signer with --record, --policy, --mrsigner or --signer-key "
                    "(--allow-unpinned accepts a self-consistency check)",
    "debug_mode": "--allow-debug accepts a debug enclave (tests only)",
    "allowed_files": "--allow-unpinned accepts allowed files that cover the whole file system",
}


# --- the evidence ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SignerPin:
    """An MRSIGNER the user expects: from --mrsigner or from the key given as --signer-key."""

    option: str  # "--mrsigner" or "--signer-key key.pem", for messages
    check_name: str
    mrsigner: bytes


@dataclass
class Evidence:
    """Everything verify looks at, already read from the image or the directory."""

    target: str  # what the user named, for messages
    name: str  # APP
    manifest_sgx: bytes
    sigstruct: Sigstruct
    fs: RootFS  # the image filesystem: trusted files, libsysdb.so, libpal.so
    libpal: bytes | None = None  # --libpal; otherwise read from ``fs``
    labels: Mapping[str, str] | None = None  # image mode only
    manifest_copy: bytes | None = None  # /ppml/APP.manifest, when the image has one
    record: Mapping[str, Any] | None = None
    record_source: str = "record"
    policies: list[PolicyDocument] = field(default_factory=list)
    pins: list[SignerPin] = field(default_factory=list)  # --mrsigner / --signer-key
    allow_debug: bool = False
    allow_unpinned: bool = False  # no trust anchor, allowed files covering /


def _differs(what: str, expected: Any, actual: Any, expected_from: str,
             actual_from: str) -> str:
    return f"{what} is {expected} in {expected_from} but {actual} in {actual_from}"


# --- manifest-side checks ---------------------------------------------------------------------

def parse_manifest(data: bytes, source: str) -> tuple[dict | None, Check]:
    from ppml_build.gramine.signing import parse_manifest_toml

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
        return uri[len("file:"):]
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


def check_measurement(manifest_sgx: bytes, libpal: bytes | None, libpal_problem: str,
                      sig: Sigstruct, source: str) -> tuple[str | None, Check]:
    """Recompute MRENCLAVE and compare it with the SIGSTRUCT's ENCLAVEHASH."""
    from ppml_build.gramine.signing import measure_manifest_bytes

    if libpal is None:
        return None, Check("mrenclave", False, f"not recomputed: {libpal_problem}")
    try:
        mrenclave, _inputs, _ = measure_manifest_bytes(manifest_sgx, libpal, source=source)
    except PpmlError as err:
        return None, Check("mrenclave", False, f"not recomputed: {err}")
    recomputed = mrenclave.hex()
    signed = sig.enclave_hash.hex()
    if recomputed != signed:
        return recomputed, Check("mrenclave", False,
                                 f"recomputed {recomputed} from the manifest and libpal.so, "
                                 f"but the SIGSTRUCT's ENCLAVEHASH is {signed} (the manifest, "
                                 "libpal.so or the .sig was changed after signing)")
    return recomputed, Check("mrenclave", True, f"{recomputed} (recomputed = SIGSTRUCT)")


def check_signature(sig: Sigstruct) -> list[Check]:
    signature_ok = verify_signature(sig)
    q_ok = verify_q1_q2(sig)
    return [
        Check("sigstruct:signature", signature_ok,
              f"RSA-3072 e=3 signature verifies, MRSIGNER {sig.mrsigner.hex()}" if signature_ok
              else "the RSA signature does not verify against the SIGSTRUCT's modulus "
                   "(the .sig was modified after signing)"),
        Check("sigstruct:q1_q2", q_ok, "Q1/Q2 match the signature" if q_ok
              else "Q1/Q2 do not match the signature; EINIT would reject this SIGSTRUCT"),
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
            ("debug", "sgx.debug", expected.debug, sig.debug)):
        shown = (lambda v: str(v).lower()) if name == "debug" else str
        if want == got:
            out.append(Check(f"sigstruct:{name}", True, f"{shown(got)} (= manifest {key})"))
        else:
            out.append(Check(f"sigstruct:{name}", False,
                             _differs(name, shown(want), shown(got), f"the manifest ({key})",
                                      "the SIGSTRUCT")))
    fields = ("attribute_flags", "attribute_xfrm", "attribute_flags_mask", "attribute_xfrm_mask",
              "misc_select", "misc_mask")
    wrong = [f"{f} 0x{getattr(expected, f):x} expected, 0x{getattr(sig, f):x} signed"
             for f in fields if getattr(expected, f) != getattr(sig, f)]
    out.append(Check("sigstruct:attributes", not wrong,
                     "; ".join(wrong) if wrong else
                     f"flags 0x{sig.attribute_flags:x}, xfrm 0x{sig.attribute_xfrm:x}, "
                     f"misc_select 0x{sig.misc_select:x} (= manifest)"))
    return out


def check_libos_entrypoint(manifest: Mapping[str, Any], fs: RootFS) -> Check:
    entry = (manifest.get("loader") or {}).get("entrypoint")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("uri"), str):
        return Check("loader.entrypoint", False, "the manifest has no loader.entrypoint.uri")
    path = libsysdb_path(manifest)
    want = entry.get("sha256")
    if not isinstance(want, str):
        return Check("loader.entrypoint", False, f"{path}: no loader.entrypoint.sha256 in the "
                                                 ".manifest.sgx (not a signed manifest?)")
    got, problem = _image_sha256(fs, path)
    if got is None:
        return Check("loader.entrypoint", False, f"{path}: {problem}")
    if got != want:
        return Check("loader.entrypoint", False,
                     f"{path}: sha256 is {want} in the manifest but {got} in the image "
                     "(the LibOS was replaced)")
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
        path = tf.uri[len("file:"):] if tf.uri.startswith("file:") else tf.uri
        name = f"trusted_file:{path}"
        if not tf.uri.startswith("file:/") or tf.uri.endswith("/"):
            failures.append(Check(name, False, f"{tf.uri!r} is not an expanded file: URI; a "
                                               ".manifest.sgx lists single files"))
            continue
        if not tf.sha256:
            failures.append(Check(name, False, "no sha256 in the .manifest.sgx (not a signed "
                                               "manifest?)"))
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
                failures.append(Check(f"trusted_file:{path}", False,
                                      f"cannot be read in the image ({got})"))
            elif got != sha:
                where = "" if real == path else f" (resolved to {real})"
                failures.append(Check(f"trusted_file:{path}", False,
                                      f"changed{where}: sha256 is {sha} in the manifest but "
                                      f"{got} in the image"))
    failures.sort(key=lambda check: check.name)
    total = len(files)
    if failures:
        summary = Check("trusted_files", False, f"{len(failures)} of {total} trusted files "
                                                "differ from the image or are missing")
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


# --- record and labels ------------------------------------------------------------------------

def check_record(record: Mapping[str, Any], source: str, *, mrenclave: str | None,
                 sig: Sigstruct, trusted: list[TrustedFile], manifest_sgx: bytes) -> list[Check]:
    """The record's values against the recomputed ones (a field the record lacks is skipped)."""
    out = []

    def compare(key: str, recorded: Any, actual: Any, what: str) -> None:
        if recorded == actual:
            out.append(Check(f"record:{key}", True, f"{_show(actual)}"))
        else:
            out.append(Check(f"record:{key}", False,
                             _differs(key, _show(recorded), _show(actual), source, what)))

    if mrenclave is None:
        out.append(Check("record:mrenclave", False, "not compared: MRENCLAVE could not be "
                                                    "recomputed (see mrenclave)"))
    else:
        compare("mrenclave", str(record.get("mrenclave", "")).lower(), mrenclave, "the image")
    compare("mrsigner", str(record.get("mrsigner", "")).lower(), sig.mrsigner.hex(),
            "the SIGSTRUCT")
    compare("isv_prod_id", record.get("isv_prod_id"), sig.isv_prod_id, "the SIGSTRUCT")
    compare("isv_svn", record.get("isv_svn"), sig.isv_svn, "the SIGSTRUCT")
    compare("debug", record.get("debug"), sig.debug, "the SIGSTRUCT")
    listed = record.get("trusted_files")
    if isinstance(listed, Mapping):
        count, digest = len(trusted), trusted_list_digest(trusted)
        problems = []
        if listed.get("count") != count:
            problems.append(f"count is {listed.get('count')} in {source} but {count} in the "
                            "manifest")
        if listed.get("digest") != digest:
            problems.append(f"digest is {listed.get('digest')} in {source} but {digest} in the "
                            "manifest")
        out.append(Check("record:trusted_files", not problems,
                         "; ".join(problems) if problems else f"{count} files, {digest}"))
    if isinstance(record.get("manifest_sha256"), str):
        compare("manifest_sha256", record["manifest_sha256"],
                hashlib.sha256(manifest_sgx).hexdigest(), "the image's .manifest.sgx")
    return out


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "(missing)" if value is None else str(value)


def expected_labels(name: str, mrenclave: str, sig: Sigstruct,
                    record: Mapping[str, Any] | None) -> dict[str, str]:
    """The labels ``build`` puts on the image, from the recomputed values (and the record)."""
    labels = {
        "ppml.mrenclave": mrenclave,
        "ppml.mrsigner": sig.mrsigner.hex(),
        "ppml.isv_prod_id": str(sig.isv_prod_id),
        "ppml.isv_svn": str(sig.isv_svn),
        "ppml.debug": "true" if sig.debug else "false",
        "org.opencontainers.image.version": f"mrenclave-{mrenclave[:12]}",
        "org.opencontainers.image.title": name,
    }
    if record is not None:
        base = record.get("base")
        if isinstance(base, Mapping) and isinstance(base.get("digest"), str):
            labels["ppml.base.digest"] = base["digest"]
            labels["org.opencontainers.image.base.digest"] = base["digest"]
        libos = record.get("libos")
        if isinstance(libos, Mapping) and libos.get("type") and libos.get("version"):
            labels["ppml.libos"] = f"{libos['type']} {libos['version']}"
    return labels


def check_labels(labels: Mapping[str, str], expected: Mapping[str, str]) -> list[Check]:
    out = []
    for key, want in expected.items():
        got = labels.get(key)
        if got is None:
            out.append(Check(f"label:{key}", False, f"missing (expected {want}); not built by "
                                                    "ppml-build, or relabelled"))
        elif got != want:
            out.append(Check(f"label:{key}", False, f"the image says {got} but the recomputed "
                                                    f"value is {want}"))
        else:
            out.append(Check(f"label:{key}", True, got))
    return out


# --- attestation policies ---------------------------------------------------------------------

def evaluate_policy(doc: PolicyDocument, quote: QuoteValues) -> Check:
    """Would this policy accept the enclave? (Platform assumed genuine and up to date.)"""
    problems = policy_problems(doc, quote)
    label = f"policy:{doc.format}"
    where = Path(doc.path).name
    if problems:
        return Check(label, False, f"{where} rejects this enclave: " + "; ".join(problems))
    return Check(label, True, f"{where} accepts this enclave")


def policy_pins(doc: PolicyDocument, quote: QuoteValues) -> list[str]:
    """Which of MRENCLAVE and MRSIGNER the policy really constrains: changing only that value
    changes its verdict. Format-blind, so a policy that says "any" pins nothing."""
    baseline = policy_problems(doc, quote)
    pinned = []
    for label, attr in (("MRENCLAVE", "mrenclave"), ("MRSIGNER", "mrsigner")):
        flipped = bytes(b ^ 0xFF for b in bytes.fromhex(getattr(quote, attr))).hex()
        if policy_problems(doc, dataclasses.replace(quote, **{attr: flipped})) != baseline:
            pinned.append(label)
    return pinned


# --- is it acceptable: anchored, not debug, no unverified file system -------------------------

def check_signer_pins(pins: Sequence[SignerPin], sig: Sigstruct) -> list[Check]:
    actual = sig.mrsigner
    return [Check(pin.check_name, True, f"MRSIGNER {actual.hex()} (= {pin.option})")
            if pin.mrsigner == actual else
            Check(pin.check_name, False,
                  f"MRSIGNER is {pin.mrsigner.hex()} from {pin.option} but {actual.hex()} in the "
                  "SIGSTRUCT (signed by another key)")
            for pin in pins]


def check_trust_anchor(anchors: Sequence[str], unpinning_policies: Sequence[str],
                       allow_unpinned: bool) -> Check:
    if anchors:
        return Check("trust_anchor", True, "pinned by " + ", ".join(anchors))
    why = "no --record, --mrsigner or --signer-key, and no --policy that pins MRENCLAVE or " \
          "MRSIGNER"
    if unpinning_policies:
        why += f" ({', '.join(unpinning_policies)} pins neither)"
    if allow_unpinned:
        return Check("trust_anchor", True, f"none, accepted by --allow-unpinned: {why}")
    return Check("trust_anchor", False, f"{why}: anyone could have re-signed this image; pin "
                                        "the signer, or pass --allow-unpinned to accept a "
                                        "self-consistency check")


def check_debug_mode(manifest: Mapping[str, Any] | None, sig: Sigstruct,
                     allow_debug: bool) -> Check:
    """A debug enclave's memory is open to the host: never production-safe, anchored or not."""
    sgx = (manifest or {}).get("sgx") or {}
    why = [text for text, on in (("the SIGSTRUCT's ATTRIBUTES.DEBUG is set", sig.debug),
                                 ("the manifest says sgx.debug = true", sgx.get("debug") is True))
           if on]
    if not why:
        return Check("debug_mode", True, "release enclave (ATTRIBUTES.DEBUG clear, sgx.debug "
                                         "false)")
    what = f"a debug enclave ({'; '.join(why)}): the host can read and change its memory"
    if allow_debug:
        return Check("debug_mode", True, f"{what}; accepted by --allow-debug")
    return Check("debug_mode", False, f"{what}, so it proves nothing in production; pass "
                                      "--allow-debug to accept it (tests only)")


def check_allowed_files(manifest: Mapping[str, Any], allow_unpinned: bool) -> Check:
    """Allowed files are not hashed: one that covers / makes every trusted-file check moot."""
    sgx = manifest.get("sgx") or {}
    allowed = sgx.get("allowed_files") or []
    allowed = allowed if isinstance(allowed, list) else []
    whole = [f"sgx.allowed_files entry {uri!r} covers the whole file system" for uri in allowed
             if isinstance(uri, str) and covers_whole_filesystem(uri)]
    if sgx.get("file_check_policy") == "allow_all_but_log":
        whole.append('sgx.file_check_policy = "allow_all_but_log" lets the enclave open any file')
    if not whole:
        return Check("allowed_files", True, f"{len(allowed)} allowed entries, none covers the "
                                            "whole file system")
    what = "; ".join(whole) + ": the host can supply any file unverified"
    if allow_unpinned:
        return Check("allowed_files", True, f"{what}; accepted by --allow-unpinned")
    return Check("allowed_files", False, f"{what}; allow single files or directories, or pass "
                                         "--allow-unpinned to accept it")


# --- the core -------------------------------------------------------------------------------

def run_checks(ev: Evidence) -> VerifyReport:
    """Every check over already-read evidence; never raises for a mismatch."""
    sig = ev.sigstruct
    checks: list[Check] = []
    manifest_source = f"{ev.target}: {ev.name}.manifest.sgx"
    manifest, parsed = parse_manifest(ev.manifest_sgx, manifest_source)
    checks.append(parsed)
    if ev.manifest_copy is not None:
        same = ev.manifest_copy == ev.manifest_sgx
        checks.append(Check("manifest_copy", same,
                            f"{ev.name}.manifest equals {ev.name}.manifest.sgx" if same else
                            f"{ev.name}.manifest differs from {ev.name}.manifest.sgx (the "
                            "enclave loads .manifest.sgx; the copy misleads readers)"))
    checks += check_signature(sig)

    mrenclave = None
    if manifest is not None:
        libpal, problem = ev.libpal, ""
        if libpal is None:
            libpal, problem = read_libpal(ev.fs, libpal_path(manifest))
        mrenclave, measured = check_measurement(ev.manifest_sgx, libpal, problem, sig,
                                                manifest_source)
        checks.append(measured)
        checks += check_sigstruct_fields(manifest, sig)
        checks.append(check_libos_entrypoint(manifest, ev.fs))
        trusted = manifest_trusted_files(manifest)
        checks += check_trusted_files(trusted, ev.fs)
    else:
        checks.append(Check("mrenclave", False, "not recomputed: the manifest does not parse"))
        trusted = []

    if ev.record is not None:
        checks += check_record(ev.record, ev.record_source, mrenclave=mrenclave, sig=sig,
                               trusted=trusted, manifest_sgx=ev.manifest_sgx)
    if ev.labels is not None:
        shown = mrenclave or sig.enclave_hash.hex()
        checks += check_labels(ev.labels, expected_labels(ev.name, shown, sig, ev.record))
    anchors = [f"record {ev.record_source} (MRENCLAVE, MRSIGNER)"] if ev.record is not None \
        else []
    anchors += [pin.option for pin in ev.pins]
    checks += check_signer_pins(ev.pins, sig)
    unpinning_policies = []
    for doc in ev.policies:
        # The SIGSTRUCT's MRENCLAVE is enough to see what a policy pins, not to evaluate it.
        quote = QuoteValues(mrenclave or sig.enclave_hash.hex(), sig.mrsigner.hex(),
                            sig.isv_prod_id, sig.isv_svn, sig.debug, sig.attribute_flags,
                            sig.attribute_xfrm, ev.name)
        pinned = policy_pins(doc, quote)
        if sig.mrsigner == keys.SAMPLE_KEY_MRSIGNER:  # anyone can sign with that key
            pinned = [value for value in pinned if value != "MRSIGNER"]
        if pinned:
            anchors.append(f"policy {Path(doc.path).name} ({', '.join(pinned)})")
        else:
            unpinning_policies.append(Path(doc.path).name)
        if mrenclave is None:
            checks.append(Check(f"policy:{doc.format}", False,
                                "not evaluated: MRENCLAVE could not be recomputed"))
            continue
        checks.append(evaluate_policy(doc, quote))

    checks.append(check_trust_anchor(anchors, unpinning_policies, ev.allow_unpinned))
    checks.append(check_debug_mode(manifest, sig, ev.allow_debug))
    if manifest is not None:
        checks.append(check_allowed_files(manifest, ev.allow_unpinned))
    return VerifyReport(ev.target, ev.name, checks, mrenclave, sig.mrsigner.hex(),
                        sig.isv_prod_id, sig.isv_svn, sig.debug, pinned_by=anchors)


# --- the I/O edges --------------------------------------------------------------------------

def load_record_file(path: os.PathLike | str) -> tuple[dict[str, Any], str]:
    """A measurement record (or OUT/ holding measurement.json), validated; exit 2 if unusable."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    data = read_record_json(path)
    EnclaveValues.from_mapping(data, str(path))  # the same validation `policy` applies
    return data, str(path)


def parse_sigstruct(data: bytes, source: str) -> Sigstruct:
    if len(data) != SIGSTRUCT_SIZE:
        raise SigningError(f"{source}: {len(data)} bytes, not a {SIGSTRUCT_SIZE}-byte SIGSTRUCT "
                           "(.sig); truncated or the wrong file")
    return Sigstruct.from_bytes(data, source=source)


def _read_host(path: Path, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """A host file, at most ``limit`` bytes (the path may be /dev/zero)."""
    try:
        data = read_at_most(path, limit)
        check_size(data, limit, str(path), f"the {what}")
        return data
    except FileNotFoundError:
        raise PpmlError(f"{path}: {what} not found") from None
    except OSError as err:
        raise PpmlError(f"{path}: cannot read the {what} ({err.strerror or err})") from None


def _discover_name(names: list[str], where: str, name: str | None) -> str:
    suffix = ".manifest.sgx"
    found = sorted(n[:-len(suffix)] for n in names if n.endswith(suffix) and len(n) > len(suffix))
    if name is not None:
        if name not in found:
            raise PpmlError(f"{where}: no {name}{suffix} (has: {', '.join(found) or 'none'}); "
                            "check --name")
        return name
    if len(found) != 1:
        listed = ", ".join(f"{n}{suffix}" for n in found) or f"no *{suffix}"
        raise PpmlError(f"{where}: expected exactly one *{suffix}, found {listed}; "
                        "choose one with --name APP")
    return found[0]


_MRSIGNER_HEX = re.compile(r"[0-9a-fA-F]{64}")


def _refuse_sample_key(mrsigner: bytes, option: str) -> None:
    if mrsigner == keys.SAMPLE_KEY_MRSIGNER:
        raise PpmlError(f"{option}: this is the public Intel SGX SDK sample key (MRSIGNER "
                        f"{mrsigner.hex()}); anyone can sign with it, so it pins nothing; give "
                        "the MRSIGNER or the public key of the real signing key")


def parse_mrsigner_option(text: str) -> SignerPin:
    value = text.strip().lower()
    if not _MRSIGNER_HEX.fullmatch(value):
        raise PpmlError(f"--mrsigner {text!r}: expected 64 hex digits, the SHA-256 of the "
                        "signing key's modulus (mrsigner in measurement.json, or `ppml-build "
                        "sigstruct-view APP.sig`)")
    mrsigner = bytes.fromhex(value)
    _refuse_sample_key(mrsigner, "--mrsigner")
    return SignerPin("--mrsigner", "pin:mrsigner", mrsigner)


def load_signer_key(path: os.PathLike | str) -> SignerPin:
    """--signer-key: a PEM public key, or the private key itself (only its public half is used)."""
    path = Path(path)
    option = f"--signer-key {path}"
    pem = _read_host(path, "signer key (--signer-key)", MAX_SMALL_FILE_BYTES)
    if b"PRIVATE KEY" in pem:
        if b"ENCRYPTED" in pem:
            raise PpmlError(f"{option}: an encrypted private key; give its public half instead "
                            "(openssl rsa -in KEY -pubout -out key.pub)")
        public = keys.load_private_key(pem, source=option, allow_sample_key=True).public_key()
    else:
        public = keys.load_public_key(pem, source=option, allow_sample_key=True)
    mrsigner = keys.mrsigner_of(public)
    _refuse_sample_key(mrsigner, option)
    return SignerPin(option, "pin:signer_key", mrsigner)


def signer_pins(mrsigner: str | None = None,
                signer_key: os.PathLike | str | None = None) -> list[SignerPin]:
    pins = [parse_mrsigner_option(mrsigner)] if mrsigner is not None else []
    return pins + ([load_signer_key(signer_key)] if signer_key is not None else [])


@dataclass(frozen=True)
class Expectations:
    """What the user gave verify to compare the image with, and what they accept."""

    record: os.PathLike | str | None = None
    policies: Sequence[os.PathLike | str] = ()
    mrsigner: str | None = None  # --mrsigner HEX
    signer_key: os.PathLike | str | None = None  # --signer-key PEM
    allow_debug: bool = False
    allow_unpinned: bool = False


def _load_expectations(expect: Expectations) -> dict[str, Any]:
    """The Evidence fields the user supplied, read first: bad input fails before any export."""
    data, source = (load_record_file(expect.record) if expect.record is not None
                    else (None, "record"))
    return {"record": data, "record_source": source,
            "policies": [load_policy(p) for p in expect.policies],
            "pins": signer_pins(expect.mrsigner, expect.signer_key),
            "allow_debug": expect.allow_debug, "allow_unpinned": expect.allow_unpinned}


def verify_directory(directory: os.PathLike | str, *, rootfs: os.PathLike | str | None = None,
                     name: str | None = None, libpal: os.PathLike | str | None = None,
                     expect: Expectations = Expectations()) -> VerifyReport:
    """Directory mode: APP.manifest.sgx and APP.sig in ``directory``, the image in ``rootfs``.

    Without ``rootfs``, a directory that is itself an unpacked image (it has ppml/APP.*) is
    used as both.
    """
    from ppml_build.image.hashing import FileHasher

    directory = Path(directory)
    expected = _load_expectations(expect)
    artifacts = directory
    if rootfs is None:
        if (directory / IN_IMAGE_DIR.strip("/")).is_dir() and not any(
                p.name.endswith(".manifest.sgx") for p in directory.iterdir()):
            rootfs, artifacts = directory, directory / IN_IMAGE_DIR.strip("/")
        else:
            raise PpmlError(f"{directory}: directory mode needs --rootfs DIR, the image's "
                            "filesystem unpacked on the host (e.g. docker export | tar -x), to "
                            "check the trusted files against")
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise PpmlError(f"--rootfs {rootfs}: not a directory (the image's unpacked filesystem)")
    app = _discover_name([p.name for p in artifacts.iterdir()], str(artifacts), name)
    manifest_sgx = _read_host(artifacts / f"{app}.manifest.sgx", "manifest (.manifest.sgx)")
    sig_path = artifacts / f"{app}.sig"
    sig = parse_sigstruct(_read_host(sig_path, "SIGSTRUCT (.sig)", MAX_SMALL_FILE_BYTES),
                          str(sig_path))
    pal = _read_host(Path(libpal), "libpal.so (--libpal)") if libpal is not None else None
    # An auditor's check reads every byte: no hash cache.
    fs = DirRootFS(rootfs, FileHasher(use_cache=False))
    evidence = Evidence(target=str(directory), name=app, manifest_sgx=manifest_sgx,
                        sigstruct=sig, fs=fs, libpal=pal, **expected)
    return run_checks(evidence)


def _keep_for_verify(path: str) -> bool:
    """Hold in memory what verify reads whole: /ppml/ and the LibOS files (libpal.so)."""
    return path.startswith(IN_IMAGE_DIR + "/") or "/gramine/" in path or \
        path.endswith("/libpal.so")


def verify_image(reference: str, *, name: str | None = None,
                 libpal: os.PathLike | str | None = None,
                 expect: Expectations = Expectations(),
                 client: Any = None, say: Say = lambda line: None) -> VerifyReport:
    """Image mode: everything from the local engine's image, exported in ONE stream."""
    import docker.errors

    from ppml_build.image.engine import connect, export_image_rootfs

    expected = _load_expectations(expect)
    pal = _read_host(Path(libpal), "libpal.so (--libpal)") if libpal is not None else None
    client = client or connect()
    try:
        attrs = client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        raise ImageError(f"{reference}: no such image in the local Docker engine (verify does "
                         f"not pull); pull it first (docker pull {reference}) or build it") \
            from None
    except docker.errors.APIError as err:
        raise ImageError(f"{reference}: cannot inspect the image: "
                         f"{err.explanation or err}") from None
    image_id = attrs["Id"]  # labels and files from the same image, even if the tag moves
    labels = dict((attrs.get("Config") or {}).get("Labels") or {})
    say(f"exporting {reference} ({image_id[:19]}) to hash its files")
    fs = export_image_rootfs(client, image_id, keep=_keep_for_verify)
    try:
        names = fs.listdir(IN_IMAGE_DIR)
    except RootFSError:
        raise ImageError(f"{reference}: no {IN_IMAGE_DIR}/ directory in the image: not built "
                         "by `ppml-build build`") from None
    app = _discover_name(names, f"{reference}:{IN_IMAGE_DIR}/", name)

    def image_file(file_name: str, what: str) -> bytes:
        path = f"{IN_IMAGE_DIR}/{file_name}"
        try:
            return fs.read_bytes(resolve(fs, path))
        except (OSError, KeyError) as err:
            raise ImageError(f"{reference}: cannot read {path} ({what}): {err}") from None

    manifest_sgx = image_file(f"{app}.manifest.sgx", "the manifest")
    sig = parse_sigstruct(image_file(f"{app}.sig", "the SIGSTRUCT"),
                          f"{reference}:{IN_IMAGE_DIR}/{app}.sig")
    copy = None
    if fs.lstat(f"{IN_IMAGE_DIR}/{app}.manifest") is not None:
        copy = image_file(f"{app}.manifest", "the manifest copy")
    evidence = Evidence(target=reference, name=app, manifest_sgx=manifest_sgx, sigstruct=sig,
                        fs=fs, libpal=pal, labels=labels, manifest_copy=copy, **expected)
    say("checking")
    return run_checks(evidence)


def _looks_like_path(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~")) or target in (".", "..")


def verify_target(target: str, *, rootfs: os.PathLike | str | None = None,
                  name: str | None = None, libpal: os.PathLike | str | None = None,
                  expect: Expectations = Expectations(),
                  say: Say = lambda line: None) -> VerifyReport:
    """An existing directory → directory mode; anything else is a local image reference."""
    if Path(target).is_dir():
        return verify_directory(target, rootfs=rootfs, name=name, libpal=libpal, expect=expect)
    if Path(target).exists():
        raise PpmlError(f"{target}: not a directory; give the directory holding "
                        "APP.manifest.sgx and APP.sig (or an image reference)")
    if _looks_like_path(target):
        raise PpmlError(f"{target}: no such directory (give a directory holding "
                        "APP.manifest.sgx and APP.sig, or an image reference)")
    if rootfs is not None:
        raise PpmlError(f"--rootfs is for directory mode; {target} is not a directory (an "
                        "image is checked against its own filesystem)")
    return verify_image(target, name=name, libpal=libpal, expect=expect, say=say)


__all__ = ["Check", "Evidence", "Expectations", "POLICY_FORMATS", "PolicyDocument", "QuoteValues",
           "SignerPin", "VerifyReport", "evaluate_policy",
           "load_policy", "load_record_file", "load_signer_key", "parse_mrsigner_option",
           "policy_pins", "run_checks", "signer_pins", "verify_directory", "verify_image",
           "verify_target"]
