"""ITA and Trustee policies evaluated by a real Rego engine (regopy = microsoft/rego-cpp)."""

from __future__ import annotations

import pytest
from policy_support import (
    MRENCLAVE,
    MRSIGNER,
    OTHER,
    RECORD,
    ita_claims,
    rego_query,
    rvps_values,
    trustee_claims,
)

from ppml_build.policy import render_policy

# Trustee's attestation service provides query_reference_value() as an engine extension that
# returns what the RVPS stores under a name, or null. Reproduce it over the generated RVPS
# message so the two emitted files are tested together.
TRUSTEE_RVPS_SHIM = """package policy
import rego.v1
query_reference_value(name) := object.get(data.rvps, name, null)
"""

AFFIRMING = {"executables": 3, "configuration": 2, "hardware": 2}


def ita_match(claims, **options) -> bool:
    text = render_policy(RECORD, "ita", **options)["ita-policy.rego"]
    # ITA policies carry no package line; every Rego engine needs one.
    return rego_query({"ita": "package ita\n" + text}, "m", "data.ita.match", claims)


def trustee_claims_out(claims, rvps=None, **options) -> dict:
    files = render_policy(RECORD, "trustee", **options)
    refs = rvps_values(files["trustee-policy.rvps.json"]) if rvps is None else rvps
    return rego_query(
        {"policy": files["trustee-policy.rego"], "shim": TRUSTEE_RVPS_SHIM},
        "t",
        "data.policy.trust_claims",
        claims,
        data={"rvps": refs},
    )


# --- Intel Trust Authority --------------------------------------------------------------------


def test_ita_accepts_the_recorded_enclave():
    assert ita_match(ita_claims()) is True


@pytest.mark.parametrize(
    "change",
    [
        {"sgx_mrenclave": OTHER},
        {"sgx_mrsigner": OTHER},
        {"sgx_isvsvn": 2},
        {"sgx_isvprodid": 2},
        {"sgx_is_debuggable": True},
        {"sgx_mrenclave": MRENCLAVE.upper()},  # ITA compares case-sensitively; claims are lowercase
    ],
    ids=["mrenclave", "mrsigner", "lower-svn", "prod-id", "debug", "uppercase"],
)
def test_ita_rejects_a_changed_claim(change):
    assert ita_match(ita_claims(**change)) is False


def test_ita_svn_is_a_minimum():
    assert ita_match(ita_claims(sgx_isvsvn=4)) is True
    assert ita_match(ita_claims(sgx_isvsvn=1), min_svn=1) is True
    assert ita_match(ita_claims(sgx_isvsvn=0), min_svn=1) is False


def test_ita_allow_debug_accepts_debug_and_says_so():
    assert ita_match(ita_claims(sgx_is_debuggable=True), allow_debug=True) is True
    text = render_policy(RECORD, "ita", allow_debug=True)["ita-policy.rego"]
    exported = rego_query({"ita": "package ita\n" + text}, "e", "data.ita.export", ita_claims())
    assert exported == {"ppml_debug_enclaves_allowed": True}


def test_ita_pin_selects_the_identity_checked():
    assert ita_match(ita_claims(sgx_mrenclave=OTHER), pin="mrsigner") is True
    assert ita_match(ita_claims(sgx_mrsigner=OTHER), pin="mrsigner") is False
    assert ita_match(ita_claims(sgx_mrsigner=OTHER), pin="mrenclave") is True
    assert ita_match(ita_claims(sgx_mrenclave=OTHER), pin="mrenclave") is False


def test_ita_policy_has_no_package_line_and_no_comments():
    text = render_policy(RECORD, "ita")["ita-policy.rego"]
    assert "package" not in text and "#" not in text  # ITA V2 forbids both


# --- CoCo Trustee -----------------------------------------------------------------------------


def test_trustee_affirms_the_recorded_enclave():
    assert trustee_claims_out(trustee_claims()) == AFFIRMING


@pytest.mark.parametrize(
    "change",
    [
        {"mr_enclave": OTHER},
        {"mr_signer": OTHER},
        {"isv_svn": 2},
        {"isv_prod_id": 2},
        {"isv_prod_id": 256},  # "0001": big-endian reading of "0100" would wrongly match
    ],
    ids=["mrenclave", "mrsigner", "lower-svn", "prod-id", "prod-id-byte-order"],
)
def test_trustee_rejects_a_changed_executable(change):
    out = trustee_claims_out(trustee_claims(**change))
    assert out["executables"] == 33
    assert out["configuration"] == 2


def test_trustee_decodes_little_endian_svn():
    # ISVSVN 256 is "0001" on the wire: a minimum of 3 must accept it.
    assert trustee_claims_out(trustee_claims(isv_svn=256))["executables"] == 3
    assert trustee_claims_out(trustee_claims(isv_svn=1), min_svn=1)["executables"] == 3


def test_trustee_rejects_debug_unless_allowed():
    assert trustee_claims_out(trustee_claims(debug=True))["configuration"] == 36
    assert trustee_claims_out(trustee_claims(debug=True), allow_debug=True) == AFFIRMING
    text = render_policy(RECORD, "trustee", allow_debug=True)["trustee-policy.rego"]
    assert "--allow-debug: DEBUG enclaves are ACCEPTED" in text


def test_trustee_needs_its_reference_values():
    # Without the RVPS entries (query_reference_value returns null) nothing is approved.
    assert trustee_claims_out(trustee_claims(), rvps={})["executables"] == 33


def test_trustee_rvps_message_holds_the_pinned_values():
    files = render_policy(RECORD, "trustee", pin="mrsigner")
    assert rvps_values(files["trustee-policy.rvps.json"]) == {"sgx_mr_signer": [MRSIGNER]}
    assert trustee_claims_out(trustee_claims(mr_enclave=OTHER), pin="mrsigner")["executables"] == 3
    files = render_policy(RECORD, "trustee")
    assert rvps_values(files["trustee-policy.rvps.json"]) == {
        "sgx_mr_enclave": [MRENCLAVE],
        "sgx_mr_signer": [MRSIGNER],
    }


def test_trustee_hardware_reflects_tcb_status():
    assert trustee_claims_out(trustee_claims(tcb_status="SWHardeningNeeded"))["hardware"] == 32
    assert trustee_claims_out(trustee_claims(tcb_status="OutOfDate"))["hardware"] == 97
