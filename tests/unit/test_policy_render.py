"""Each format's output read back the way its service reads it (schemas, env parsing, JWS)."""

from __future__ import annotations

import base64
import json
import re
from typing import Literal

import pytest
from policy_support import MRENCLAVE, MRSIGNER, RECORD, write_record
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ppml_build.cli import main
from ppml_build.policy import FORMATS, load_record, render, render_policy, write_policy_files

HEX64 = r"^[0-9a-f]{64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --- Gramine RA-TLS -----------------------------------------------------------------------------


def parse_env(text: str) -> dict[str, str]:
    """Read an env file like docker --env-file / systemd EnvironmentFile: KEY=VALUE, # comments."""
    env = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
        env[key] = value
    return env


@pytest.mark.parametrize(
    "pin, mrenclave, mrsigner",
    [("both", MRENCLAVE, MRSIGNER), ("mrenclave", MRENCLAVE, "any"), ("mrsigner", "any", MRSIGNER)],
)
def test_gramine_env_file_parses_back(pin, mrenclave, mrsigner):
    env = parse_env(render_policy(RECORD, "gramine-ratls", pin=pin)["ra-tls.env"])
    assert env == {
        "RA_TLS_MRENCLAVE": mrenclave,
        "RA_TLS_MRSIGNER": mrsigner,
        "RA_TLS_ISV_PROD_ID": "1",
        "RA_TLS_ISV_SVN": "3",
        # Only the exact value "1" allows debug enclaves in ra_tls_verify_common.c.
        "RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE": "0",
    }


def test_gramine_allow_debug_and_min_svn():
    text = render_policy(RECORD, "gramine-ratls", allow_debug=True, min_svn=1)["ra-tls.env"]
    env = parse_env(text)
    assert env["RA_TLS_ALLOW_DEBUG_ENCLAVE_INSECURE"] == "1"
    assert env["RA_TLS_ISV_SVN"] == "1"
    assert "DEBUG enclaves are ACCEPTED" in text


# --- eHSM ---------------------------------------------------------------------------------------


class EhsmPayload(Strict):
    mr_enclave: StrictStr = Field(pattern=HEX64)
    mr_signer: StrictStr = Field(pattern=HEX64)


def test_ehsm_payload_schema_and_notes():
    rendered = render(RECORD, "ehsm")
    payload = EhsmPayload.model_validate_json(rendered.files["ehsm-quote-policy.json"])
    assert (payload.mr_enclave, payload.mr_signer) == (MRENCLAVE, MRSIGNER)
    assert any("NOT enforced" in note for note in rendered.notes)


def test_ehsm_lowercases_hex_from_the_record():
    record = {**RECORD, "mrenclave": MRENCLAVE.upper()}
    payload = json.loads(render_policy(record, "ehsm")["ehsm-quote-policy.json"])
    assert payload["mr_enclave"] == MRENCLAVE  # eHSM compares %02x output with strncmp


# --- BigDL --------------------------------------------------------------------------------------

BIGINT_HEX = r"^(0|[1-9a-f][0-9a-f]{0,63})$"


class BigdlMrEnclave(Strict):
    policyType: Literal["SGXMREnclavePolicy"]
    mrEnclave: StrictStr = Field(pattern=BIGINT_HEX)


class BigdlMrSigner(Strict):
    policyType: Literal["SGXMRSignerPolicy"]
    mrSigner: StrictStr = Field(pattern=BIGINT_HEX)
    isvProdID: StrictStr = Field(pattern=BIGINT_HEX)


def test_bigdl_bodies_use_java_biginteger_hex():
    bodies = json.loads(render_policy(RECORD, "bigdl")["bigdl-policies.json"])
    enclave, signer = BigdlMrEnclave(**bodies[0]), BigdlMrSigner(**bodies[1])
    assert enclave.mrEnclave == MRENCLAVE.lstrip("0")  # leading zero byte dropped
    assert signer.mrSigner == MRSIGNER
    assert signer.isvProdID == "100"  # ISVPRODID 1 = bytes 01 00 read big-endian


@pytest.mark.parametrize(
    "prod_id, expected", [(0, "0"), (1, "100"), (0x1234, "3412"), (0x0100, "1")]
)
def test_bigdl_isv_prod_id_encoding(prod_id, expected):
    bodies = json.loads(
        render_policy({**RECORD, "isv_prod_id": prod_id}, "bigdl", pin="mrsigner")[
            "bigdl-policies.json"
        ]
    )
    assert bodies == [
        {"policyType": "SGXMRSignerPolicy", "mrSigner": MRSIGNER, "isvProdID": expected}
    ]


def test_bigdl_pin_mrenclave_is_one_body():
    bodies = json.loads(render_policy(RECORD, "bigdl", pin="mrenclave")["bigdl-policies.json"])
    assert [b["policyType"] for b in bodies] == ["SGXMREnclavePolicy"]


# --- MarbleRun ----------------------------------------------------------------------------------


class UniqueIdPackage(Strict):
    UniqueID: StrictStr = Field(pattern=HEX64)
    Debug: StrictBool


class SignerPackage(Strict):
    SignerID: StrictStr = Field(pattern=HEX64)
    ProductID: StrictInt = Field(ge=0, le=0xFFFF)
    SecurityVersion: StrictInt = Field(ge=0, le=0xFFFF)
    Debug: StrictBool


def marblerun_package(**options) -> dict:
    document = json.loads(render_policy(RECORD, "marblerun", **options)["marblerun-packages.json"])
    assert list(document) == ["Packages"] and list(document["Packages"]) == ["app"]
    return document["Packages"]["app"]


def test_marblerun_signer_triple():
    package = SignerPackage(**marblerun_package(pin="mrsigner", min_svn=2))
    assert (package.SignerID, package.ProductID, package.SecurityVersion, package.Debug) == (
        MRSIGNER,
        1,
        2,
        False,
    )


@pytest.mark.parametrize("pin", ["both", "mrenclave"])
def test_marblerun_never_mixes_uniqueid_with_the_triple(pin):
    # MarbleRun rejects a package with UniqueID *and* SignerID/ProductID/SecurityVersion.
    package = UniqueIdPackage(**marblerun_package(pin=pin))
    assert package.UniqueID == MRENCLAVE and package.Debug is False


def test_marblerun_debug_must_equal_the_enclave_flag():
    debug_record = {**RECORD, "debug": True}
    document = json.loads(
        render_policy(debug_record, "marblerun", allow_debug=True)["marblerun-packages.json"]
    )
    assert document["Packages"]["app"]["Debug"] is True
    # A release enclave stays Debug=false even with --allow-debug (true would reject it).
    assert marblerun_package(allow_debug=True)["Debug"] is False


def test_marblerun_package_name_comes_from_the_record():
    document = json.loads(
        render_policy({**RECORD, "name": "spark-pi"}, "marblerun")["marblerun-packages.json"]
    )
    assert list(document["Packages"]) == ["spark-pi"]


# --- Microsoft Azure Attestation ----------------------------------------------------------------


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_maa_jws_decodes_back_to_the_policy_text():
    files = render_policy(RECORD, "maa")
    text, token = files["maa-policy.txt"], files["maa-policy.jwt"]
    assert token == token.strip()  # the file is the token, byte for byte
    header, payload, signature = token.split(".")
    assert json.loads(b64url_decode(header)) == {"alg": "none"}
    assert signature == ""  # unsigned JWS: empty signature part
    assert "=" not in header + payload  # base64url without padding
    body = json.loads(b64url_decode(payload))
    assert list(body) == ["AttestationPolicy"]
    assert b64url_decode(body["AttestationPolicy"]).decode() == text


def test_maa_policy_text_rules():
    text = render_policy(RECORD, "maa")["maa-policy.txt"]
    assert text.startswith("version=1.0;\nauthorizationrules\n{")
    rule = text.split("authorizationrules", 1)[1].split("=> permit();")[0]
    assert '[ type=="x-ms-sgx-is-debuggable", value==false ]' in rule
    assert f'[ type=="x-ms-sgx-mrenclave", value=="{MRENCLAVE}" ]' in rule
    assert f'[ type=="x-ms-sgx-mrsigner", value=="{MRSIGNER}" ]' in rule
    assert '[ type=="x-ms-sgx-product-id", value==1 ]' in rule
    assert '[ type=="x-ms-sgx-svn", value>=3 ]' in rule
    assert rule.count("&&") == 4  # one rule: every condition must hold


def test_maa_allow_debug_drops_the_debug_condition():
    rendered = render(RECORD, "maa", allow_debug=True, pin="mrsigner")
    rule = rendered.files["maa-policy.txt"].split("=> permit();")[0]
    assert "x-ms-sgx-is-debuggable" not in rule and "x-ms-sgx-mrenclave" not in rule
    assert any("--allow-debug" in note for note in rendered.notes)


# --- render_policy / output ---------------------------------------------------------------------


def test_render_policy_returns_every_format_file():
    names = {fmt: list(render_policy(RECORD, fmt)) for fmt in FORMATS}
    assert names == {
        "gramine-ratls": ["ra-tls.env"],
        "ehsm": ["ehsm-quote-policy.json"],
        "bigdl": ["bigdl-policies.json"],
        "marblerun": ["marblerun-packages.json"],
        "maa": ["maa-policy.txt", "maa-policy.jwt"],
        "ita": ["ita-policy.rego"],
        "trustee": ["trustee-policy.rego", "trustee-policy.rvps.json"],
    }


def test_cli_writes_both_files_next_to_output(tmp_path, capsys):
    record = write_record(tmp_path)
    out = tmp_path / "out" / "prod.txt"
    out.parent.mkdir()
    assert main(["policy", str(record), "--format", "maa", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "prod.jwt",
        "prod.txt",
    ]  # no temp files left
    assert out.read_text() == render_policy(RECORD, "maa")["maa-policy.txt"]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "wrote" in captured.err and "x-ms-sgx-svn is a minimum" in captured.err


def test_cli_output_directory_uses_default_names(tmp_path):
    record = write_record(tmp_path)
    outdir = tmp_path / "policies"
    outdir.mkdir()
    assert main(["policy", str(record), "-f", "trustee", "-o", str(outdir)]) == 0
    assert sorted(p.name for p in outdir.iterdir()) == [
        "trustee-policy.rego",
        "trustee-policy.rvps.json",
    ]


def test_cli_prints_single_file_to_stdout(tmp_path, capsys):
    record = write_record(tmp_path)
    assert main(["policy", str(record), "--format", "ehsm"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"mr_enclave": MRENCLAVE, "mr_signer": MRSIGNER}
    assert "ppml-build: note: eHSM checks only" in captured.err


def test_cli_refuses_output_names_that_collide(tmp_path, capsys):
    record = write_record(tmp_path)
    assert main(["policy", str(record), "-f", "maa", "-o", str(tmp_path / "p.jwt")]) == 2
    assert "overwrite each other" in capsys.readouterr().err
    assert not (tmp_path / "p.jwt").exists()


def test_write_policy_files_replaces_atomically(tmp_path):
    target = tmp_path / "ra-tls.env"
    target.write_text("old\n")
    files = render_policy(load_record(write_record(tmp_path)), "gramine-ratls")
    assert write_policy_files(files, target) == [target]
    assert target.read_text() == files["ra-tls.env"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measurement.json", "ra-tls.env"]
