"""--submit ehsm / bigdl against local fakes that check requests the way the services do."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl

import pytest
from fake_services import FakeBigdl, FakeEhsm, make_quote
from policy_support import MRENCLAVE, MRSIGNER, OTHER, write_record

from ppml_build.cli import main
from ppml_build.policy import EnclaveValues, PolicyError, ehsm, make_spec
from ppml_build.policy._http import post_json


@pytest.fixture
def record(tmp_path):
    return write_record(tmp_path)


def secret_files(tmp_path, appid: str, apikey: str) -> list[str]:
    appid_file, apikey_file = tmp_path / "appid", tmp_path / "apikey"
    appid_file.write_text(appid + "\n")
    apikey_file.write_text(apikey + "\n")
    apikey_file.chmod(0o600)
    return ["--appid-file", str(appid_file), "--apikey-file", str(apikey_file)]


def quote_b64(mrenclave=MRENCLAVE, mrsigner=MRSIGNER, isv_prod_id=1) -> str:
    raw = make_quote(bytes.fromhex(mrenclave), bytes.fromhex(mrsigner), isv_prod_id, 3, False)
    return base64.b64encode(raw).decode()


# --- eHSM -----------------------------------------------------------------------------------------


def test_ehsm_string_to_sign_matches_the_documented_form():
    envelope = {
        "appid": "app-1",
        "timestamp": "1732200000000",
        "payload": {"mr_signer": "bb", "mr_enclave": "aa"},
    }
    assert ehsm.canonical_string(envelope) == (
        "appid=app-1&payload=mr_enclave=aa&mr_signer=bb&timestamp=1732200000000"
    )
    signed = ehsm.build_request(envelope["payload"], "app-1", "key", now_ms=1732200000000)
    assert signed["timestamp"] == "1732200000000" and len(signed["timestamp"]) == 13
    assert base64.b64decode(signed["sign"], validate=True)  # standard base64, not upper-cased


def test_ehsm_submit_prints_policy_id_and_stores_exact_values(tmp_path, record, capsys):
    with FakeEhsm() as server:
        appid, apikey = server.enroll()
        code = main(
            [
                "policy",
                str(record),
                "--submit",
                "ehsm",
                "--url",
                server.url,
                *secret_files(tmp_path, appid, apikey),
            ]
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err
        policy_id = captured.out.strip()
        assert captured.out == policy_id + "\n"
        assert server.policies[policy_id]["mr_enclave"] == MRENCLAVE
        assert server.policies[policy_id]["mr_signer"] == MRSIGNER
        # The key signs the request but never travels, and is never printed.
        assert all(apikey.encode() not in body for _, _, body in server.requests)
        assert apikey not in captured.out + captured.err
        assert "NOT enforced" in captured.err

        # The stored policy really admits a quote of this enclave (and not another).
        def verify(quote: str) -> bool:
            request = ehsm.build_request(
                {"quote": quote, "nonce": "bm9uY2U=", "policyId": policy_id}, appid, apikey
            )
            reply = post_json(server.url + "/ehsm?Action=VerifyQuote", request, service="eHSM")
            answer = reply.json()
            assert answer["code"] == 200, answer
            return answer["result"]["result"]

        assert verify(quote_b64()) is True
        assert verify(quote_b64(mrenclave=OTHER)) is False


def test_ehsm_wrong_apikey_is_one_line_without_the_key(tmp_path, record, capsys):
    with FakeEhsm() as server:
        appid, _ = server.enroll()
        wrong = "not-the-key-0123456789abcdef"
        code = main(
            [
                "policy",
                str(record),
                "--submit",
                "ehsm",
                "--url",
                server.url + "/ehsm",
                *secret_files(tmp_path, appid, wrong),
            ]
        )
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [line for line in err.splitlines() if "error" in line]
    assert (
        len(error_lines) == 1
        and "sign error" in error_lines[0]
        and "--apikey-file" in error_lines[0]
    )
    assert wrong not in err


def test_ehsm_stale_timestamp_is_refused_by_the_service():
    with FakeEhsm() as server:
        appid, apikey = server.enroll()
        spec = make_spec(
            EnclaveValues(bytes.fromhex(MRENCLAVE), bytes.fromhex(MRSIGNER), 1, 3, False)
        )
        with pytest.raises(PolicyError, match="Timestamp error.*clock"):
            ehsm.submit(spec, url=server.url, appid=appid, apikey=apikey, now_ms=1_000_000_000_000)


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and a server context using it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake attestation service")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


def test_ehsm_over_https_needs_the_service_ca(tmp_path, record, capsys, tls_pair):
    cert_path, context = tls_pair
    with FakeEhsm(tls=context) as server:
        appid, apikey = server.enroll()
        args = [
            "policy",
            str(record),
            "--submit",
            "ehsm",
            "--url",
            server.url,
            *secret_files(tmp_path, appid, apikey),
        ]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "--cacert" in err and "certificate verify failed" in err
        assert main([*args, "--cacert", str(cert_path)]) == 0
        assert capsys.readouterr().out.strip() in server.policies


# --- BigDL ----------------------------------------------------------------------------------------


def bigdl_verify(server: FakeBigdl, app_id: str, api_key: str, policy_id: str, quote: str) -> int:
    reply = post_json(
        server.url + "/verifyQuote",
        {"appID": app_id, "apiKey": api_key, "quote": quote, "policyID": policy_id},
        service="BigDL",
    )
    return reply.json()["result"]


def test_bigdl_submit_registers_both_policies_that_admit_the_quote(tmp_path, record, capsys):
    with FakeBigdl() as server:
        app_id, api_key = server.enroll()
        code = main(
            [
                "policy",
                str(record),
                "--submit",
                "bigdl",
                "--url",
                server.url,
                *secret_files(tmp_path, app_id, api_key),
            ]
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err
        enclave_id, signer_id = captured.out.split()
        assert server.policies[enclave_id]["policyType"] == "SGXMREnclavePolicy"
        assert server.policies[signer_id] == {
            "appID": app_id,
            "policyType": "SGXMRSignerPolicy",
            "mrSigner": MRSIGNER,
            "isvProdID": "100",
        }
        assert "verify each quote against both policy IDs" in captured.err
        assert api_key not in captured.out + captured.err
        # MRENCLAVE starts with 00: only the leading-zero-free form matches the service's view.
        assert bigdl_verify(server, app_id, api_key, enclave_id, quote_b64()) == 0
        assert bigdl_verify(server, app_id, api_key, signer_id, quote_b64()) == 0
        assert bigdl_verify(server, app_id, api_key, enclave_id, quote_b64(mrenclave=OTHER)) == -1
        assert bigdl_verify(server, app_id, api_key, signer_id, quote_b64(isv_prod_id=2)) == -1


def test_bigdl_pin_mrsigner_registers_one_policy(tmp_path, record, capsys):
    with FakeBigdl() as server:
        app_id, api_key = server.enroll()
        code = main(
            [
                "policy",
                str(record),
                "--submit",
                "bigdl",
                "--pin",
                "mrsigner",
                "--url",
                server.url + "/",
                *secret_files(tmp_path, app_id, api_key),
            ]
        )
        out = capsys.readouterr().out
        assert code == 0 and len(out.split()) == 1
        assert [p["policyType"] for p in server.policies.values()] == ["SGXMRSignerPolicy"]


def test_bigdl_bad_credentials_are_refused(tmp_path, record, capsys):
    with FakeBigdl() as server:
        app_id, _ = server.enroll()
        code = main(
            [
                "policy",
                str(record),
                "--submit",
                "bigdl",
                "--url",
                server.url,
                *secret_files(tmp_path, app_id, "x" * 32),
            ]
        )
        assert not server.policies
    err = capsys.readouterr().err
    assert code == 2 and "Invalid app_id and api_key." in err and "x" * 32 not in err


# --- argument checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        ([], "--url"),
        (["--url", "ftp://host"], "not an http(s) URL"),
        (
            [
                "--url",
                "http://127.0.0.1:1",
                "--apikey-file",
                "/nonexistent/k",
                "--appid-file",
                "/nonexistent/a",
            ],
            "no such file",
        ),
        (["--url", "http://127.0.0.1:1", "--format", "ita"], "disagree"),
    ],
)
def test_submit_argument_errors(record, capsys, extra, needle):
    code = main(["policy", str(record), "--submit", "ehsm", *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_empty_secret_file_is_refused(tmp_path, record, capsys):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "appid").write_text("app\n")
    code = main(
        [
            "policy",
            str(record),
            "--submit",
            "bigdl",
            "--url",
            "http://127.0.0.1:1",
            "--appid-file",
            str(tmp_path / "appid"),
            "--apikey-file",
            str(tmp_path / "empty"),
        ]
    )
    assert code == 2 and "the file is empty" in capsys.readouterr().err


def test_unreachable_service_is_one_line(tmp_path, record, capsys):
    with FakeEhsm() as server:
        url = server.url  # closed when the block exits: nothing listens there any more
    code = main(
        ["policy", str(record), "--submit", "ehsm", "--url", url, *secret_files(tmp_path, "a", "k")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach eHSM-KMS" in err
