"""Record validation and the refusals that keep a policy from rejecting its own enclave."""

from __future__ import annotations

import json

import pytest
from policy_support import MRENCLAVE, MRSIGNER, RECORD, write_record

from ppml_build.cli import main
from ppml_build.errors import PpmlError
from ppml_build.policy import EnclaveValues, PolicyError, load_record, render_policy


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["policy", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ppml-build: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_measurement_record_and_sign_json_both_load(tmp_path):
    values = load_record(write_record(tmp_path))
    assert values == EnclaveValues(bytes.fromhex(MRENCLAVE), bytes.fromhex(MRSIGNER), 1, 3, False)
    # `ppml-build sign --json` output: no schema key, different extra keys.
    sign_json = {
        "mrenclave": MRENCLAVE,
        "mrsigner": MRSIGNER,
        "isv_prod_id": 1,
        "isv_svn": 3,
        "debug": False,
        "sigstruct": "app.sig",
        "date": "2026-01-01",
    }
    path = tmp_path / "sign.json"
    path.write_text(json.dumps(sign_json))
    assert load_record(path) == values


def test_policy_error_is_a_ppml_error_with_exit_code_2():
    assert issubclass(PolicyError, PpmlError) and PolicyError.exit_code == 2


@pytest.mark.parametrize(
    "changes, needles",
    [
        ({"mrenclave": ...}, ["missing field 'mrenclave'"]),
        ({"mrsigner": ...}, ["missing field 'mrsigner'"]),
        ({"isv_prod_id": ...}, ["missing field 'isv_prod_id'"]),
        ({"isv_svn": ...}, ["missing field 'isv_svn'"]),
        ({"debug": ...}, ["missing field 'debug'"]),
        ({"mrenclave": "zz" * 32}, ["field 'mrenclave' must be 64 hex characters"]),
        ({"mrsigner": MRSIGNER[:-1]}, ["field 'mrsigner' must be 64 hex characters"]),
        ({"mrenclave": 12}, ["field 'mrenclave'"]),
        ({"mrsigner": None}, ["field 'mrsigner' is null", "not signed yet"]),  # pending signature
        ({"isv_svn": "3"}, ["field 'isv_svn' must be an integer 0..65535"]),
        ({"isv_svn": True}, ["field 'isv_svn'"]),
        ({"isv_prod_id": 70000}, ["field 'isv_prod_id'"]),
        ({"debug": "false"}, ["field 'debug' must be true or false"]),
        ({"schema": "ppml-build/measurement/v9"}, ["field 'schema'"]),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else str(v)[:30],
)
def test_bad_record_is_one_line_exit_2(tmp_path, capsys, changes, needles):
    record = write_record(tmp_path, **changes)
    code, out, err = run(capsys, str(record), "--format", "gramine-ratls")
    assert code == 2 and out == ""
    assert_one_error_line(err, str(record), *needles)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("", "not JSON"),
        ("\xff\xfe", "cannot read record"),
    ],
)
def test_unparseable_record_is_one_line_exit_2(tmp_path, capsys, content, needle):
    path = tmp_path / "measurement.json"
    path.write_bytes(content.encode("latin-1"))
    code, out, err = run(capsys, str(path), "--format", "ita")
    assert code == 2 and out == ""
    assert_one_error_line(err, str(path), needle)


def test_missing_record_file(tmp_path, capsys):
    code, _, err = run(capsys, str(tmp_path / "nope.json"), "--format", "ita")
    assert code == 2
    assert_one_error_line(err, "nope.json", "no such record file")


def test_unknown_format_is_exit_2(tmp_path, capsys):
    code, out, err = run(capsys, str(write_record(tmp_path)), "--format", "opa")
    assert code == 2 and out == ""
    assert "'opa' is not one of" in err


def test_format_or_submit_required(tmp_path, capsys):
    code, _, err = run(capsys, str(write_record(tmp_path)))
    assert code == 2
    assert_one_error_line(err, "--format")


def test_debug_record_is_refused_without_allow_debug(tmp_path, capsys):
    record = write_record(tmp_path, debug=True)
    code, out, err = run(capsys, str(record), "--format", "ita")
    assert code == 2 and out == ""
    assert_one_error_line(err, str(record), "'debug' is true", "--allow-debug")
    code, out, _ = run(capsys, str(record), "--format", "ita", "--allow-debug")
    assert code == 0 and "sgx_is_debuggable" not in out


def test_min_svn_above_the_enclave_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, str(write_record(tmp_path)), "--format", "ita", "--min-svn", "4")
    assert code == 2
    assert_one_error_line(err, "--min-svn 4", "isv_svn 3", "reject its own enclave")


def test_min_svn_lower_is_used(tmp_path, capsys):
    code, out, _ = run(
        capsys, str(write_record(tmp_path)), "--format", "gramine-ratls", "--min-svn", "2"
    )
    assert code == 0 and "RA_TLS_ISV_SVN=2\n" in out


def test_bad_pin_is_exit_2(tmp_path, capsys):
    code, _, _ = run(capsys, str(write_record(tmp_path)), "--format", "ita", "--pin", "mrsomething")
    assert code == 2


def test_ehsm_cannot_pin_one_identity(tmp_path, capsys):
    code, _, err = run(capsys, str(write_record(tmp_path)), "--format", "ehsm", "--pin", "mrsigner")
    assert code == 2
    assert_one_error_line(err, "--pin both")


def test_render_policy_refusals_raise_policy_error():
    with pytest.raises(PolicyError, match="'debug' is true"):
        render_policy({**RECORD, "debug": True}, "maa")
    with pytest.raises(PolicyError, match="unknown policy format"):
        render_policy(RECORD, "opa")
    with pytest.raises(PolicyError, match="missing field 'isv_svn'"):
        render_policy({k: v for k, v in RECORD.items() if k != "isv_svn"}, "maa")


def test_a_cluster_record_gives_a_policy_per_role_each_accepting_only_its_enclave(tmp_path, capsys):
    other = "ab" * 32
    roles = {
        "driver": {**RECORD, "enclave": "app-driver"},
        "executor": {**RECORD, "enclave": "app-executor", "mrenclave": other},
    }
    path = tmp_path / "measurement.json"
    path.write_text(json.dumps({"schema": "ppml-build/cluster/v1", "roles": roles}))
    code, out, _ = run(capsys, str(path), "--format", "gramine-ratls")
    assert code == 0
    parts = out.split("==> ")[1:]
    assert [part.split(" <==")[0] for part in parts] == [
        "driver-ra-tls.env",
        "executor-ra-tls.env",
    ]
    assert f"RA_TLS_MRENCLAVE={MRENCLAVE}" in parts[0] and other not in parts[0]
    assert f"RA_TLS_MRENCLAVE={other}" in parts[1] and MRENCLAVE not in parts[1]
    out_dir = tmp_path / "policies"
    out_dir.mkdir()
    code, _, _ = run(capsys, str(path), "--format", "marblerun", "--output", str(out_dir))
    assert code == 0
    packages = json.loads((out_dir / "executor-marblerun-packages.json").read_text())
    assert packages == {"Packages": {"app-executor": {"UniqueID": other, "Debug": False}}}
    # a role without its identity: one line naming the role, nothing written
    del roles["executor"]["mrsigner"]
    path.write_text(json.dumps({"schema": "ppml-build/cluster/v1", "roles": roles}))
    code, _, err = run(capsys, str(path), "--format", "ehsm")
    assert code == 2
    assert_one_error_line(err, "roles.executor", "missing field 'mrsigner'")
    # --submit registers one enclave's policy: a role's own record
    code, _, err = run(capsys, str(path), "--submit", "ehsm", "--url", "https://127.0.0.1:1")
    assert code == 2
    assert_one_error_line(err, "a cluster build's record", "roles/ROLE/measurement.json")
