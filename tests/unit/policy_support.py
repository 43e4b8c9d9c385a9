"""Shared bits for the policy tests: a record, claim builders in each service's encoding, Rego."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

# MRENCLAVE starts with a zero byte on purpose: BigDL drops leading zeros, others must not.
MRENCLAVE = "00a1b2c3d4e5f60718293a4b5c6d7e8f00112233445566778899aabbccddeeff"
MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
OTHER = "f" * 64

RECORD: dict[str, Any] = {
    "schema": "ppml-build/measurement/v1",
    "mrenclave": MRENCLAVE,
    "mrsigner": MRSIGNER,
    "isv_prod_id": 1,
    "isv_svn": 3,
    "debug": False,
    # Unknown keys of a real measurement record must be ignored.
    "libos": "gramine",
    "enclave_size": "0x80000000",
    "max_threads": 64,
}


def write_record(tmp_path: Path, **changes: Any) -> Path:
    record = {**RECORD, **changes}
    for key, value in changes.items():
        if value is ...:  # `...` deletes a field
            del record[key]
    path = tmp_path / "measurement.json"
    path.write_text(json.dumps(record))
    return path


def ita_claims(**changes: Any) -> dict[str, Any]:
    """ITA V2 token claims for the recorded enclave (lowercase hex, integers, bool)."""
    sgx = {
        "sgx_mrenclave": MRENCLAVE,
        "sgx_mrsigner": MRSIGNER,
        "sgx_isvprodid": 1,
        "sgx_isvsvn": 3,
        "sgx_is_debuggable": False,
        "attester_tcb_status": "UpToDate",
    }
    sgx.update(changes)
    return {"sgx": sgx}


def trustee_claims(
    *,
    mr_enclave: str = MRENCLAVE,
    mr_signer: str = MRSIGNER,
    isv_prod_id: int = 1,
    isv_svn: int = 3,
    debug: bool = False,
    tcb_status: str = "UpToDate",
) -> dict[str, Any]:
    """Trustee SGX verifier claims: raw quote bytes as lowercase hex, little-endian numbers."""
    flags = 0x05 | (0x02 if debug else 0)
    return {
        "sgx": {
            "body": {
                "mr_enclave": mr_enclave,
                "mr_signer": mr_signer,
                "isv_prod_id": isv_prod_id.to_bytes(2, "little").hex(),
                "isv_svn": isv_svn.to_bytes(2, "little").hex(),
                "attributes.flags": flags.to_bytes(8, "little").hex(),
                "attributes.xfrm": (3).to_bytes(8, "little").hex(),
            },
            "tcb_status": tcb_status,
            "collateral_expiration_status": "0",
        }
    }


def rego_query(
    modules: dict[str, str], query_var: str, query: str, input_doc: Any, data: Any = None
) -> Any:
    """Evaluate with regopy (rego-cpp) and return the binding as plain JSON.

    regopy prints a false query as 'undefined', so bind the rule to a variable instead; convert
    the result before the interpreter goes away (its nodes must not outlive it).
    """
    from regopy import Interpreter

    interpreter = Interpreter()
    for name, text in modules.items():
        interpreter.add_module(name, text)
    if data is not None:
        interpreter.add_data_json(json.dumps(data))
    interpreter.set_input_term(json.dumps(input_doc))
    output = interpreter.query(f"{query_var} := {query}")
    assert output.ok(), str(output)
    result = json.loads(str(output))
    return result["bindings"][query_var]


def rvps_values(message_text: str) -> dict[str, Any]:
    message = json.loads(message_text)
    return json.loads(base64.b64decode(message["payload"], validate=True))
