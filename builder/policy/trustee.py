"""CoCo Trustee attestation-service policy for SGX claims, plus its RVPS reference values.

Trustee's SGX verifier hands the policy raw quote fields as lowercase hex *in quote byte order*:
ISVPRODID/ISVSVN arrive as two little-endian bytes ("0100" for 1) and DEBUG is bit 0x02 of the
first byte of ``attributes.flags``. The policy decodes them itself, with a lookup table rather
than ``to_number`` (which does not take hex in every Rego engine).
"""

from __future__ import annotations

import base64
import json

from .model import PolicySpec, RenderedPolicy, le_hex_u16

POLICY_NAME = "trustee-policy.rego"
RVPS_NAME = "trustee-policy.rvps.json"
REF_MRENCLAVE = "sgx_mr_enclave"
REF_MRSIGNER = "sgx_mr_signer"

# Statuses that mean "genuine, but the platform needs an update or a BIOS change": AR4SI
# warning tier rather than affirming.
_WARNING_TCB = ("SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded")


def reference_values(spec: PolicySpec) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    if spec.pins_mrenclave:
        refs[REF_MRENCLAVE] = [spec.values.mrenclave_hex]
    if spec.pins_mrsigner:
        refs[REF_MRSIGNER] = [spec.values.mrsigner_hex]
    return refs


def rvps_message(spec: PolicySpec) -> str:
    """RVPS 'sample' provenance message: the payload is standard base64 of the JSON values."""
    inner = json.dumps(reference_values(spec), separators=(",", ":")).encode("utf-8")
    message = {
        "version": "0.1.0",
        "type": "sample",
        "payload": base64.b64encode(inner).decode("ascii"),
    }
    return json.dumps(message, indent=2) + "\n"


def policy_text(spec: PolicySpec) -> str:
    v = spec.values
    identity = []
    if spec.pins_mrenclave:
        identity.append(f'\taccepted("{REF_MRENCLAVE}", input.sgx.body.mr_enclave)')
    if spec.pins_mrsigner:
        identity.append(f'\taccepted("{REF_MRSIGNER}", input.sgx.body.mr_signer)')
    warning = ", ".join(f'"{s}"' for s in _WARNING_TCB)
    names = " and ".join(
        n
        for n, on in ((REF_MRENCLAVE, spec.pins_mrenclave), (REF_MRSIGNER, spec.pins_mrsigner))
        if on
    )
    if spec.allow_debug:
        configuration = [
            "# --allow-debug: DEBUG enclaves are ACCEPTED (their memory is readable by the host).",
            "# Test-only policy: never upload it to a production Trustee.",
            "configuration := 2 if {",
            "\tinput.sgx",
            "}",
        ]
    else:
        configuration = [
            "# 2 = approved configuration: the enclave was not launched in DEBUG mode.",
            "# DEBUG enclaves keep the default 36 and never reach an affirming verdict.",
            "configuration := 2 if {",
            "\tinput.sgx",
            "\tnot sgx_debug",
            "}",
        ]
    lines = [
        "# Trustee attestation-service policy for one SGX enclave, written by ppml-build.",
        "# Upload as a CPU policy (the service appends _cpu to the requested policy id), e.g.",
        f"#   kbs-client ... config set-attestation-policy --policy-file {POLICY_NAME} --id default_cpu",
        f"# It reads {names} from the RVPS: register {RVPS_NAME} first",
        f"#   rvps-tool register --path {RVPS_NAME}",
        "package policy",
        "",
        "import rego.v1",
        "",
        "default executables := 33",
        "",
        "default hardware := 97",
        "",
        "default configuration := 36",
        "",
        "trust_claims := {",
        '\t"executables": executables,',
        '\t"hardware": hardware,',
        '\t"configuration": configuration,',
        "}",
        "",
        "# Quote fields are hex of the raw little-endian bytes: decode u16 values here.",
        'hexval := {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7,',
        '\t"8": 8, "9": 9, "a": 10, "b": 11, "c": 12, "d": 13, "e": 14, "f": 15}',
        "",
        "le16(h) := v if {",
        "\tcount(h) == 4",
        "\tlo := (hexval[substring(h, 0, 1)] * 16) + hexval[substring(h, 1, 1)]",
        "\thi := (hexval[substring(h, 2, 1)] * 16) + hexval[substring(h, 3, 1)]",
        "\tv := (hi * 256) + lo",
        "}",
        "",
        "# DEBUG is bit 0x02 of the first byte of attributes.flags (second hex digit).",
        "sgx_debug if {",
        '\tsubstring(input.sgx.body["attributes.flags"], 1, 1) in {"2", "3", "6", "7", "a", "b", "e", "f"}',
        "}",
        "",
        "# A missing reference value (null) or a non-list one never matches.",
        "accepted(name, value) if {",
        "\trefs := query_reference_value(name)",
        "\tis_array(refs)",
        "\tvalue in refs",
        "}",
        "",
        "# 3 = only approved executables: pinned identity, product id, minimum SVN.",
        "executables := 3 if {",
        "\tinput.sgx",
        *identity,
        f'\tle16(input.sgx.body.isv_prod_id) == {v.isv_prod_id}  # ISVPRODID {v.isv_prod_id} = "{le_hex_u16(v.isv_prod_id)}"',
        f"\tle16(input.sgx.body.isv_svn) >= {spec.min_svn}  # ISVSVN is a minimum",
        "}",
        "",
        *configuration,
        "",
        "# 2 = genuine, up-to-date platform; 32 = genuine but needs a TCB/configuration update.",
        "hardware := 2 if {",
        "\tinput.sgx",
        '\tinput.sgx.tcb_status == "UpToDate"',
        '\tinput.sgx.collateral_expiration_status == "0"',
        "}",
        "",
        "hardware := 32 if {",
        "\tinput.sgx",
        f"\tinput.sgx.tcb_status in {{{warning}}}",
        '\tinput.sgx.collateral_expiration_status == "0"',
        "}",
    ]
    return "\n".join(lines) + "\n"


def render(spec: PolicySpec) -> RenderedPolicy:
    notes = []
    if spec.allow_debug:
        notes.append(
            "--allow-debug: the Trustee policy marks DEBUG enclaves as approved configuration"
        )
    return RenderedPolicy({POLICY_NAME: policy_text(spec), RVPS_NAME: rvps_message(spec)}, notes)
