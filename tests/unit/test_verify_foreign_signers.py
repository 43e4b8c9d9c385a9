"""`ppml-build verify` on a .sig of someone else's enclave and on the SDK sample key, with no
../shared: the in-repo twins of test_verify_directory's real-vector tests (Intel's LE
SIGSTRUCT, a resigning with the real sample key). The foreign SIGSTRUCT is written from the
SDK's definition (tests/sigstruct_reference.py); the sample key is its public half
(tests/sdk_sample_key.py), which is all verify looks at.
"""

from __future__ import annotations

import hashlib

import pytest
import test_verify_directory as directory_mode
from sdk_sample_key import (
    SAMPLE_MRSIGNER_HEX,
    SAMPLE_PUBLIC_PEM,
    lookalike_private_pem,
    sample_modulus,
)
from sigstruct_reference import signed_sigstruct
from test_verify_directory import APP, UNPINNED, copy_tree, failed, one_error_line, verify

from ppml_build.sign import keys
from ppml_build.sign.sigstruct import Sigstruct

# The directory-mode tests' fixtures: the signed directory, and its private hash cache.
signed = directory_mode.signed
isolated_cache = directory_mode.isolated_cache


def test_sig_of_another_enclave_by_another_signer(signed, tmp_path, capsys):
    out = copy_tree(signed["out"], tmp_path / "out")
    theirs = hashlib.sha256(b"another enclave").hexdigest()
    (out / f"{APP}.sig").write_bytes(
        signed_sigstruct(
            keys.generate_key(),
            enclave_hash=bytes.fromhex(theirs),
            vendor=0x8086,
            isv_prod_id=32,
            isv_svn=7,
        )
    )
    code, lines, _ = verify(
        capsys, out, "--rootfs", signed["rootfs"], "--signer-key", signed["key"]
    )
    assert code == 1
    fails = failed(lines)
    assert "signed by another key" in fails["pin:signer_key"]
    assert theirs in fails["mrenclave"]
    assert (
        "isv_prod_id is 7 in the manifest (sgx.isvprodid) but 32 in the SIGSTRUCT"
        in fails["sigstruct:isv_prod_id"]
    )
    assert "sigstruct:signature" not in fails  # their signature itself is genuine


def test_a_policy_naming_the_sample_keys_mrsigner_pins_nothing(signed, tmp_path, capsys):
    """A SIGSTRUCT carrying the sample key's modulus (its signature cannot verify without the
    private half): a policy pinning that MRSIGNER is no trust anchor."""
    out = copy_tree(signed["out"], tmp_path / "out")
    sig = Sigstruct.from_bytes((out / f"{APP}.sig").read_bytes())
    sample = sig.copy(modulus=sample_modulus().to_bytes(384, "little"))
    assert sample.mrsigner.hex() == SAMPLE_MRSIGNER_HEX
    (out / f"{APP}.sig").write_bytes(sample.to_bytes())
    env = tmp_path / "sample.env"
    env.write_text(
        f"RA_TLS_MRENCLAVE=any\nRA_TLS_MRSIGNER={SAMPLE_MRSIGNER_HEX}\n"
        "RA_TLS_ISV_PROD_ID=7\nRA_TLS_ISV_SVN=3\n"
    )
    code, lines, _ = verify(capsys, out, "--rootfs", signed["rootfs"], "--policy", env)
    assert code == 1 and lines[0].startswith(UNPINNED)
    assert set(failed(lines)) == {"trust_anchor", "sigstruct:signature", "sigstruct:q1_q2"}

    # The same policy with the enclave's own MRSIGNER is an anchor: the sample key made it none.
    (out / f"{APP}.sig").write_bytes(sig.to_bytes())
    env.write_text(env.read_text().replace(SAMPLE_MRSIGNER_HEX, sig.mrsigner.hex()))
    code, lines, _ = verify(capsys, out, "--rootfs", signed["rootfs"], "--policy", env)
    assert code == 0, lines


@pytest.mark.parametrize("form", ["public", "private"])
def test_the_sample_key_as_signer_key_is_refused(signed, tmp_path, capsys, form):
    key = tmp_path / f"sample-{form}.pem"
    key.write_bytes(SAMPLE_PUBLIC_PEM if form == "public" else lookalike_private_pem())
    code, _, err = verify(capsys, signed["out"], "--rootfs", signed["rootfs"], "--signer-key", key)
    line = one_error_line(err)
    assert code == 2 and "sample key" in line and SAMPLE_MRSIGNER_HEX in line
