"""Evaluate an emitted attestation policy against an enclave's identity, as its service would.

``ppml-build verify --policy FILE`` uses this to prove that a policy accepts the image it was
made for (and would reject another). Each format is read back from its file (detected by
extension and content) and judged with that service's own rules: Rego policies (ITA, Trustee)
by a real Rego engine (regopy), the others by their documented comparisons.

Longer than most: Rego evaluation for ITA and Trustee with the quote values each service
supplies, and the explanation of a failed pin, which reads the same policy text.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputLimitError, PpmlError
from ..limits import MAX_DOCUMENT_BYTES, MAX_NESTING, check_size, load_json_document, read_at_most
from .model import PolicyError

SGX_FLAGS_INIT = 0x1  # a running enclave's quote always has INIT set


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "(missing)" if value is None else str(value)


POLICY_FORMATS = ("gramine-ratls", "ita", "trustee", "ehsm", "bigdl", "marblerun", "maa")


@dataclass(frozen=True)
class PolicyDocument:
    """A policy file, its detected format and what it needs besides its text."""

    path: str
    format: str
    text: str
    data: Any = None  # parsed JSON, the Trustee reference values, the MAA policy text


def _policy_error(path: os.PathLike | str, message: str) -> PolicyError:
    return PolicyError(f"{path}: {message}")


def load_policy(path: os.PathLike | str) -> PolicyDocument:
    """Read a policy file and detect its format from the extension and the content."""
    path = Path(path)
    try:
        raw = read_at_most(path, MAX_DOCUMENT_BYTES)  # bounded: the path may be /dev/zero
        check_size(raw, MAX_DOCUMENT_BYTES, str(path), "the policy")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise _policy_error(path, "no such policy file") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise _policy_error(path, f"cannot read the policy: {reason}") from None
    name = path.name.lower()
    stripped = text.lstrip()
    supported = (
        "supported: gramine-ratls .env, ita/trustee .rego (trustee with its .rvps.json "
        "beside it), ehsm/bigdl/marblerun .json, maa .txt or .jwt"
    )
    if name.endswith(".rego"):
        if re.search(r"(?m)^\s*package\s+policy\s*$", text) or "trust_claims" in text:
            return PolicyDocument(str(path), "trustee", text, _trustee_reference_values(path))
        return PolicyDocument(str(path), "ita", text)
    if name.endswith(".env") or re.search(r"(?m)^\s*RA_TLS_MRENCLAVE\s*=", text):
        return PolicyDocument(str(path), "gramine-ratls", text)
    if name.endswith(".jwt") or re.fullmatch(
        r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\s*", text
    ):
        return PolicyDocument(str(path), "maa", text, _maa_text_from_jws(path, text))
    if name.endswith(".txt") or stripped.startswith("version"):
        if "authorizationrules" not in text:
            raise _policy_error(
                path, "no authorizationrules block: not an MAA policy; " + supported
            )
        return PolicyDocument(str(path), "maa", text, text)
    if name.endswith(".json") or stripped.startswith(("{", "[")):
        try:
            data = load_json_document(text, str(path), "a JSON policy")
        except PpmlError as err:
            raise PolicyError(str(err)) from None
        if isinstance(data, Mapping) and "mr_enclave" in data and "mr_signer" in data:
            return PolicyDocument(str(path), "ehsm", text, data)
        if (
            isinstance(data, list)
            and data
            and all(isinstance(b, Mapping) and "policyType" in b for b in data)
        ):
            return PolicyDocument(str(path), "bigdl", text, data)
        if isinstance(data, Mapping) and "policyType" in data:
            return PolicyDocument(str(path), "bigdl", text, [data])
        if isinstance(data, Mapping) and isinstance(data.get("Packages"), Mapping):
            return PolicyDocument(str(path), "marblerun", text, data)
        if isinstance(data, Mapping) and data.get("type") == "sample" and "payload" in data:
            raise _policy_error(
                path,
                "this is Trustee's RVPS reference-value message; give the "
                "policy .rego (the .rvps.json is read from beside it)",
            )
        raise _policy_error(
            path,
            "JSON that is neither an eHSM quote policy (mr_enclave, "
            "mr_signer), BigDL registerPolicy bodies (policyType) nor "
            "a MarbleRun manifest (Packages); " + supported,
        )
    raise _policy_error(path, "unknown policy format; " + supported)


def _trustee_reference_values(policy_path: Path) -> dict[str, Any]:
    name = policy_path.name
    stem = name[: -len(".rego")] if name.lower().endswith(".rego") else name
    rvps = policy_path.with_name(stem + ".rvps.json")
    try:
        raw = read_at_most(rvps, MAX_DOCUMENT_BYTES)
    except FileNotFoundError:
        raise _policy_error(
            policy_path,
            f"a Trustee policy reads its reference values from the "
            f"RVPS: put them beside it as {rvps.name}",
        ) from None
    except OSError as err:
        raise _policy_error(
            rvps, f"cannot read the RVPS reference values ({err.strerror or err})"
        ) from None
    try:
        message = load_json_document(raw, str(rvps), "the RVPS reference values")
        if isinstance(message, Mapping) and "payload" in message:
            values = load_json_document(
                base64.b64decode(message["payload"], validate=True),
                str(rvps),
                "the RVPS message's payload",
            )
        else:
            values = message
        if not isinstance(values, Mapping):
            raise ValueError("not an object")
    except PpmlError as err:  # not UTF-8, not JSON, past a limit
        raise PolicyError(str(err)) from None
    except (ValueError, TypeError) as err:
        raise _policy_error(
            rvps,
            f"the RVPS message's payload is not base64 of a JSON object "
            f"of reference values ({err})",
        ) from None
    return dict(values)


def _maa_text_from_jws(path: Path, token: str) -> str:
    try:
        payload = token.strip().split(".")[1]
        body = load_json_document(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)),
            str(path),
            "the JWS payload",
        )
        encoded = body["AttestationPolicy"]
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (PpmlError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        raise _policy_error(
            path, "not an MAA policy JWS (expected a payload with AttestationPolicy)"
        ) from None


@dataclass(frozen=True)
class QuoteValues:
    """What a quote from this enclave would say: the recomputed identity and the attributes."""

    mrenclave: str
    mrsigner: str
    isv_prod_id: int
    isv_svn: int
    debug: bool
    attribute_flags: int
    attribute_xfrm: int
    name: str = "app"


def policy_problems(doc: PolicyDocument, quote: QuoteValues) -> list[str]:
    """Why this policy would reject the enclave; empty if it accepts it (platform assumed
    genuine and up to date)."""
    return _EVALUATORS[doc.format](doc, quote)


def _ratls(doc: PolicyDocument, q: QuoteValues) -> list[str]:
    env: dict[str, str] = {}
    for line in doc.text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        env[key.strip()] = value.strip().strip('"').strip("'")
    problems = []
    for key in ("RA_TLS_MRENCLAVE", "RA_TLS_MRSIGNER", "RA_TLS_ISV_PROD_ID", "RA_TLS_ISV_SVN"):
        if key not in env:
            problems.append(
                f"{key} is not set (the verifier refuses to run without it; "
                "write 'any' to skip the check)"
            )
    for key, actual in (("RA_TLS_MRENCLAVE", q.mrenclave), ("RA_TLS_MRSIGNER", q.mrsigner)):
        value = env.get(key)
        if value is not None and value != "any" and value.lower() != actual:
            problems.append(f"{key}={value} but the enclave's is {actual}")
    value = env.get("RA_TLS_ISV_PROD_ID")
    if (
        value is not None
        and value != "any"
        and not (value.isdigit() and int(value) == q.isv_prod_id)
    ):
        problems.append(
            f"RA_TLS_ISV_PROD_ID={value} but the enclave's ISVPRODID is {q.isv_prod_id}"
        )
    value = env.get("RA_TLS_ISV_SVN")
    if value is not None and value != "any" and not (value.isdigit() and q.isv_svn >= int(value)):
        problems.append(
            f"RA_TLS_ISV_SVN={value} (a minimum) but the enclave's ISVSVN is {q.isv_svn}"
        )
    if q.debug and env.get("RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE") != "1":
        problems.append(
            "the enclave is a DEBUG enclave and RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE is not 1"
        )
    return problems


def _ehsm(doc: PolicyDocument, q: QuoteValues) -> list[str]:
    problems = []
    # eHSM prints quote values with %02x and strncmp's them: lowercase, 64 characters.
    for key, actual in (("mr_enclave", q.mrenclave), ("mr_signer", q.mrsigner)):
        value = doc.data.get(key)
        if value != actual:
            problems.append(f"{key} is {value} but the enclave's is {actual}")
    return problems


def _biginteger_hex(hex_text: str) -> str:
    return format(int(hex_text, 16), "x")


def _bigdl(doc: PolicyDocument, q: QuoteValues) -> list[str]:
    # Java BigInteger(1, bytes).toString(16): leading zeros dropped; ISVPRODID's LE bytes
    # read big-endian.
    prod_id = format(int.from_bytes(q.isv_prod_id.to_bytes(2, "little"), "big"), "x")
    problems = []
    for index, body in enumerate(doc.data):
        kind = body.get("policyType")
        if kind == "SGXMREnclavePolicy":
            if body.get("mrEnclave") != _biginteger_hex(q.mrenclave):
                problems.append(
                    f"[{index}] SGXMREnclavePolicy mrEnclave is "
                    f"{body.get('mrEnclave')} but the enclave's is "
                    f"{_biginteger_hex(q.mrenclave)}"
                )
        elif kind == "SGXMRSignerPolicy":
            if body.get("mrSigner") != _biginteger_hex(q.mrsigner):
                problems.append(
                    f"[{index}] SGXMRSignerPolicy mrSigner is {body.get('mrSigner')} "
                    f"but the enclave's is {_biginteger_hex(q.mrsigner)}"
                )
            if body.get("isvProdID") != prod_id:
                problems.append(
                    f"[{index}] SGXMRSignerPolicy isvProdID is "
                    f"{body.get('isvProdID')!r} but the enclave's ISVPRODID "
                    f"{q.isv_prod_id} reads as {prod_id!r}"
                )
        else:
            problems.append(
                f"[{index}] policyType {kind!r} is not an SGX identity policy "
                "this check understands (SGXMREnclavePolicy, SGXMRSignerPolicy)"
            )
    return problems


def _marblerun_package(entry: Mapping[str, Any], q: QuoteValues) -> list[str]:
    problems = []
    unique = entry.get("UniqueID")
    triple = {k: entry.get(k) for k in ("SignerID", "ProductID", "SecurityVersion")}
    if unique is not None and any(v is not None for v in triple.values()):
        return [
            "sets both UniqueID and SignerID/ProductID/SecurityVersion, which MarbleRun refuses"
        ]
    if unique is None and any(v is None for v in triple.values()):
        return ["needs UniqueID or all of SignerID, ProductID and SecurityVersion"]
    if unique is not None and str(unique).lower() != q.mrenclave:
        problems.append(f"UniqueID is {unique} but the enclave's MRENCLAVE is {q.mrenclave}")
    if unique is None:
        if str(triple["SignerID"]).lower() != q.mrsigner:
            problems.append(
                f"SignerID is {triple['SignerID']} but the enclave's MRSIGNER is {q.mrsigner}"
            )
        if triple["ProductID"] != q.isv_prod_id:
            problems.append(
                f"ProductID is {triple['ProductID']} but the enclave's is {q.isv_prod_id}"
            )
        if not isinstance(triple["SecurityVersion"], int) or triple["SecurityVersion"] > q.isv_svn:
            problems.append(
                f"SecurityVersion is {triple['SecurityVersion']} (a minimum) but the "
                f"enclave's ISVSVN is {q.isv_svn}"
            )
    if bool(entry.get("Debug", False)) != q.debug:
        problems.append(
            f"Debug is {_show(bool(entry.get('Debug', False)))} but the enclave's "
            f"debug flag is {_show(q.debug)} (MarbleRun requires them equal)"
        )
    return problems


def _marblerun(doc: PolicyDocument, q: QuoteValues) -> list[str]:
    packages = doc.data["Packages"]
    if not packages:
        return ["Packages is empty"]
    # The app's own package when there is one; otherwise any package that accepts it.
    names = [q.name] if q.name in packages else list(packages)
    results = {
        name: _marblerun_package(packages[name], q)
        for name in names
        if isinstance(packages[name], Mapping)
    }
    if any(not problems for problems in results.values()):
        return []
    return [f"package {name!r}: {', '.join(problems)}" for name, problems in results.items()]


_MAA_CONDITION = re.compile(
    r'\[\s*type\s*==\s*"([^"]+)"\s*,\s*value\s*(==|!=|>=|<=|>|<)\s*("[^"]*"|true|false|-?\d+)\s*\]'
)


def _maa(doc: PolicyDocument, q: QuoteValues) -> list[str]:
    text = doc.data
    match = re.search(r"authorizationrules\s*\{(.*?)\}\s*;", text, re.S)
    if match is None:
        return ["no authorizationrules { ... }; block"]
    claims: dict[str, Any] = {
        "x-ms-sgx-is-debuggable": q.debug,
        "$is-debuggable": q.debug,
        "x-ms-sgx-mrenclave": q.mrenclave,
        "$sgx-mrenclave": q.mrenclave,
        "x-ms-sgx-mrsigner": q.mrsigner,
        "$sgx-mrsigner": q.mrsigner,
        "x-ms-sgx-product-id": q.isv_prod_id,
        "$product-id": q.isv_prod_id,
        "x-ms-sgx-svn": q.isv_svn,
        "$svn": q.isv_svn,
    }
    rules = [rule.strip() for rule in match.group(1).split(";") if rule.strip()]
    permits = [rule for rule in rules if re.search(r"=>\s*permit\s*\(\s*\)", rule)]
    if not permits:
        return ["no permit() rule in authorizationrules"]
    reasons = []
    for rule in permits:
        conditions = rule.split("=>", 1)[0]
        failed = []
        for claim, op, literal in _MAA_CONDITION.findall(conditions):
            want: Any = (
                literal[1:-1]
                if literal.startswith('"')
                else literal == "true"
                if literal in ("true", "false")
                else int(literal)
            )
            have = claims.get(claim)
            if not _maa_compare(have, op, want):
                failed.append(
                    f"{claim} {op} {literal} but the enclave's is "
                    f"{_show(have) if have is not None else 'not a claim'}"
                )
        if not failed:
            return []  # one permit rule is enough (several rules mean OR)
        reasons.append(", ".join(failed))
    return reasons


def _maa_compare(have: Any, op: str, want: Any) -> bool:
    if (
        have is None
        or isinstance(have, bool) != isinstance(want, bool)
        or isinstance(have, str) != isinstance(want, str)
    ):
        return False
    if op == "==":
        return have == want
    if op == "!=":
        return have != want
    if isinstance(have, (str, bool)):
        return False  # ordering only on integers
    return {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want}[op]


@contextlib.contextmanager
def _quiet_native_stdout() -> Iterator[None]:
    """rego-cpp prints parse errors on the process's stdout; keep them out of --json output."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield  # stdout is not a real file (captured): nothing native can reach it
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        try:
            import ctypes

            ctypes.CDLL(None).fflush(None)
        except (OSError, AttributeError):
            pass
        os.dup2(saved, fd)
        os.close(saved)


# A string, a raw string, a comment, or one bracket: brackets inside the first three don't count.
_REGO_TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|`[^`]*`|#[^\n]*|[()\[\]{}]')


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether (), [] and {} in Rego text nest more than ``limit`` deep (outside strings and
    comments); stops at the first level past it."""
    depth = 0
    for token in _REGO_TOKEN.finditer(text):
        char = token.group()
        if char in "([{":
            depth += 1
            if depth > limit:
                return True
        elif char in ")]}":
            depth -= 1
    return False


def _rego_query(
    path: str, modules: dict[str, str], query: str, input_doc: Any, data: Any = None
) -> Any:
    """Evaluate ``query`` with regopy; None for undefined. PolicyError if it cannot run."""
    try:
        from regopy import Interpreter
    except ImportError:
        raise PolicyError(
            f"{path}: evaluating a Rego policy needs regopy (pip install 'regopy>=1.5')"
        ) from None
    # rego-cpp recurses per level and crashes (SIGSEGV) a few thousand levels deep.
    if any(_nests_deeper_than(text, MAX_NESTING) for text in modules.values()):
        raise InputLimitError(
            f"{path}: the policy nests brackets more than {MAX_NESTING} "
            "levels deep; a Rego policy needs a handful"
        )
    with _quiet_native_stdout():
        try:
            interpreter = Interpreter()
            for name, text in modules.items():
                interpreter.add_module(name, text)
            if data is not None:
                interpreter.add_data_json(json.dumps(data))
            interpreter.set_input_term(json.dumps(input_doc))
            output = interpreter.query(f"result := {query}")
            ok, text = output.ok(), str(output)
        except Exception as err:  # regopy raises RegoError with a multi-line AST dump
            raise PolicyError(
                f"{path}: the Rego engine rejected the policy "
                f"({_rego_error_text(err)}); check its syntax"
            ) from None
    if not ok:
        first = text.strip().splitlines()
        raise PolicyError(
            f"{path}: the Rego engine could not evaluate the policy: "
            f"{first[0] if first else 'unknown error'}"
        )
    if text.strip() == "undefined":
        return None
    return json.loads(text)["bindings"]["result"]


def _rego_error_text(err: Exception) -> str:
    """The messages of regopy's error tree, e.g. '(errormsg 16:this is unclosed)'."""
    messages = re.findall(r"errormsg \d+:([^)\n]*)", str(err))
    if messages:
        return "; ".join(dict.fromkeys(m.strip() for m in messages))
    first = str(err).strip().splitlines()
    return first[0] if first else type(err).__name__


def _ita(doc: PolicyDocument, q: QuoteValues) -> list[str]:
    text = doc.text
    found = re.search(r"(?m)^\s*package\s+([A-Za-z_][\w.]*)\s*$", text)
    package = found.group(1) if found else "ita"
    if found is None:
        text = f"package {package}\n" + text  # ITA policies carry no package line
    claims = {
        "sgx": {
            "sgx_mrenclave": q.mrenclave,
            "sgx_mrsigner": q.mrsigner,
            "sgx_isvprodid": q.isv_prod_id,
            "sgx_isvsvn": q.isv_svn,
            "sgx_is_debuggable": q.debug,
            "attester_tcb_status": "UpToDate",
        }
    }
    # V2 policies decide with `match`, V1 with `matches_sgx_policy`.
    for rule in ("match", "matches_sgx_policy"):
        verdict = _rego_query(doc.path, {"ita": text}, f"data.{package}.{rule}", claims)
        if verdict is not None:
            break
    if verdict is True:
        return []
    if verdict is None:
        return ["defines neither 'match' (policy V2) nor 'matches_sgx_policy' (V1)"]
    return ["'match' is false for the enclave's claims"] + _pinned_differences(
        text, q, {"sgx_mrenclave": q.mrenclave, "sgx_mrsigner": q.mrsigner}
    )


def _pinned_differences(text: str, q: QuoteValues, fields: Mapping[str, str]) -> list[str]:
    """Say which pinned hex value differs, when the policy spells it out literally."""
    out = []
    for claim, actual in fields.items():
        for value in re.findall(rf'{claim}\s*==\s*"([0-9a-fA-F]{{64}})"', text):
            if value != actual:
                out.append(f"it pins {claim} {value}, the enclave's is {actual}")
    return out


_TRUSTEE_RVPS_SHIM = """package policy
import rego.v1
query_reference_value(name) := object.get(data.ppml_verify_rvps, name, null)
"""


def _trustee(doc: PolicyDocument, q: QuoteValues) -> list[str]:
    # Trustee's SGX verifier gives raw quote fields as hex in quote byte order (little-endian).
    flags = q.attribute_flags | SGX_FLAGS_INIT
    claims = {
        "sgx": {
            "body": {
                "mr_enclave": q.mrenclave,
                "mr_signer": q.mrsigner,
                "isv_prod_id": q.isv_prod_id.to_bytes(2, "little").hex(),
                "isv_svn": q.isv_svn.to_bytes(2, "little").hex(),
                "attributes.flags": flags.to_bytes(8, "little").hex(),
                "attributes.xfrm": q.attribute_xfrm.to_bytes(8, "little").hex(),
            },
            "tcb_status": "UpToDate",
            "collateral_expiration_status": "0",
        }
    }
    result = _rego_query(
        doc.path,
        {"policy": doc.text, "ppml_verify_shim": _TRUSTEE_RVPS_SHIM},
        "data.policy.trust_claims",
        claims,
        data={"ppml_verify_rvps": doc.data},
    )
    if not isinstance(result, Mapping):
        return ["defines no trust_claims object"]
    # AR4SI: 2..31 is the affirming tier; the rest is none, warning or contraindicated.
    problems = [
        f"{claim} = {value} (not affirming)"
        for claim, value in sorted(result.items())
        if not (isinstance(value, int) and 2 <= value <= 31)
    ]
    if problems:
        for name, actual in (("sgx_mr_enclave", q.mrenclave), ("sgx_mr_signer", q.mrsigner)):
            refs = doc.data.get(name)
            if isinstance(refs, list) and actual not in refs:
                problems.append(
                    f"the reference values list {name} {', '.join(map(str, refs))}, "
                    f"the enclave's is {actual}"
                )
    return problems


_EVALUATORS: dict[str, Callable[[PolicyDocument, QuoteValues], list[str]]] = {
    "gramine-ratls": _ratls,
    "ita": _ita,
    "trustee": _trustee,
    "ehsm": _ehsm,
    "bigdl": _bigdl,
    "marblerun": _marblerun,
    "maa": _maa,
}
