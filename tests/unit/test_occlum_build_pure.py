"""The pure parts of the Occlum build: reading and checking the SIGSTRUCT of an SDK-signed
enclave, the record, the labels, the image config, the build script and the key's temp dir.
The enclave tests run on one written by tests/sdk_enclave_factory.py (signed with a key made
here) and, when the real vectors are present, on a real enclave signed by the Intel SDK. The
container orchestration itself is tested in tests/integration/test_occlum_build.py (this file
has another name: two test files with one basename clash under pytest's default import mode)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from real_vectors import vector
from sdk_enclave_factory import Metadata, sdk_signed_elf
from sdk_sample_key import lookalike_private_pem
from sigstruct_reference import signed_sigstruct

from ppml_build.errors import RecipeError, SigningError, VerificationError
from ppml_build.gramine import build as gramine_build
from ppml_build.gramine.signing import sign_summary
from ppml_build.image import app_layer
from ppml_build.occlum import build as occlum_build
from ppml_build.occlum.build import (
    config_archive,
    final_image_config,
    key_mount_dir,
    occlum_build_script,
    occlum_labels,
    occlum_measurement_record,
)
from ppml_build.occlum.enclave import (
    check_occlum_sigstruct,
    read_occlum_enclave,
    sdk_debuggable,
    sdk_edmm,
)
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions
from ppml_build.pipeline.stages import load_and_plan
from ppml_build.plan import make_plan
from ppml_build.recipe import load_recipe_text
from ppml_build.sign import keys
from ppml_build.sign.sdk_metadata import read_sdk_metadata
from ppml_build.sign.sigstruct import SGX_FLAGS_DEBUG, verify_signature

PROJECT = Path(__file__).resolve().parents[2]
VECTOR_MRENCLAVE = "d1d79feb6fe2a02270d0bdc6e973544567e4fd9d5cb481e99c9b8c044aa76a40"
SAMPLE = keys.SAMPLE_KEY_MRSIGNER
MADE_MRENCLAVE = hashlib.sha256(b"a LibOS signed by sgx_sign, made here").hexdigest()

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-occlum
base: {image: "127.0.0.1:5000/ppml/spark-occlum:1"}
libos: {type: occlum, version: "0.31"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", /app/job.py]
enclave: {debug: DEBUG, edmm: EDMM, isv_prod_id: PROD, isv_svn: SVN}
"""


def recipe(debug=True, edmm=False, prod=0, svn=0):
    text = (
        RECIPE.replace("DEBUG", str(debug).lower())
        .replace("EDMM", str(edmm).lower())
        .replace("PROD", str(prod))
        .replace("SVN", str(svn))
    )
    return load_recipe_text(text)


@pytest.fixture(scope="module")
def own_key():
    return keys.generate_key()


@pytest.fixture(scope="module", params=["made-here", "real-sdk-enclave"])
def signed(request) -> SimpleNamespace:
    """A debuggable (DisableDebug=0), non-EDMM, ISV 0/0 enclave signed by sgx_sign, and what
    its metadata says: one written here with a key of its own, or the real one (signed with
    the SDK sample key, metadata 1.3, 8M)."""
    if request.param == "real-sdk-enclave":
        path = vector("sdk-signed-enclave/enclave.signed.so", "real-SDK-enclave cross-check")
        return SimpleNamespace(
            data=path.read_bytes(),
            mrenclave=VECTOR_MRENCLAVE,
            mrsigner=SAMPLE,
            date="2017-05-29",
            version="1.3",
            enclave_size=0x800000,
            size_text="8M",
        )
    signer = keys.generate_key()
    css = signed_sigstruct(signer, enclave_hash=bytes.fromhex(MADE_MRENCLAVE), date=(2025, 3, 4))
    data = sdk_signed_elf(Metadata(css, version=(2, 1), enclave_size=1 << 32))
    return SimpleNamespace(
        data=data,
        mrenclave=MADE_MRENCLAVE,
        mrsigner=keys.mrsigner_of(signer.public_key()),
        date="2025-03-04",
        version="2.1",
        enclave_size=1 << 32,
        size_text="4G",
    )


# --- the SIGSTRUCT of the signed LibOS ------------------------------------------------------


def test_an_sdk_signed_enclave_is_read_and_accepted_for_a_debug_recipe(signed):
    enclave = read_occlum_enclave(
        signed.data, source="enclave.signed.so", recipe=recipe(), expected_mrsigner=signed.mrsigner
    )
    summary = enclave.summary()
    assert summary["mrenclave"] == signed.mrenclave
    assert summary["mrsigner"] == signed.mrsigner.hex()
    assert (summary["isv_prod_id"], summary["isv_svn"]) == (0, 0)
    assert summary["date"] == signed.date
    # DisableDebug=0 in its Enclave.config.xml: debuggable, though ATTRIBUTES has no DEBUG bit.
    assert enclave.debuggable is True and summary["debug"] is True
    assert sign_summary(enclave.sigstruct)["debug"] is False
    assert enclave.edmm is False
    assert enclave.metadata.version == signed.version
    assert enclave.metadata.enclave_size == signed.enclave_size


@pytest.mark.parametrize(
    "changed, needle",
    [
        (dict(debug=False), "debuggable"),
        (dict(edmm=True), "EDMM"),
        (dict(prod=1), "ISVPRODID/ISVSVN are 0/0"),
        (dict(svn=2), "isv_svn are 0/2"),
    ],
)
def test_an_enclave_other_than_the_recipe_asked_for_is_refused(signed, changed, needle):
    with pytest.raises(VerificationError) as err:
        read_occlum_enclave(
            signed.data,
            source="libocclum-libos.signed.so",
            recipe=recipe(**changed),
            expected_mrsigner=signed.mrsigner,
        )
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert message.startswith("libocclum-libos.signed.so: ")


def test_an_enclave_signed_with_occlums_default_key_instead_of_ours_is_refused(own_key):
    """Needs a real signature by the sample key, so the real enclave (no in-repo twin can
    have one; the branch is the MRSIGNER comparison with keys.SAMPLE_KEY_MRSIGNER, whose
    value test_keys checks against the sample key's public half)."""
    path = vector("sdk-signed-enclave/enclave.signed.so", "sample-key-signed-enclave check")
    with pytest.raises(VerificationError, match="default key, the public Intel SDK sample key"):
        read_occlum_enclave(
            path.read_bytes(),
            source="e.so",
            recipe=recipe(),
            expected_mrsigner=keys.mrsigner_of(own_key.public_key()),
        )


def test_an_enclave_signed_with_the_default_key_gets_its_own_message(signed, own_key, monkeypatch):
    """The in-repo stand-in for the check above, for the choice of message only: with the
    made enclave's signer in the place of the sample key, the refusal must name Occlum's
    default key (the real value of SAMPLE_KEY_MRSIGNER is pinned by test_keys against the
    sample key's public half)."""
    monkeypatch.setattr(keys, "SAMPLE_KEY_MRSIGNER", signed.mrsigner)
    with pytest.raises(VerificationError) as err:
        read_occlum_enclave(
            signed.data,
            source="e.so",
            recipe=recipe(),
            expected_mrsigner=keys.mrsigner_of(own_key.public_key()),
        )
    assert str(err.value) == (
        f"e.so: signed with Occlum's default key, the public Intel SDK sample key (MRSIGNER "
        f"{signed.mrsigner.hex()}), not with --key; the base image's occlum ignored "
        "--sign-key: use a genuine Occlum 0.31 base"
    )


def test_an_enclave_signed_with_some_other_key_is_refused(signed, own_key):
    sig = read_sdk_metadata(signed.data)[0].sigstruct
    other = keys.sign_sigstruct(sig, keys.generate_key(), source="other")
    with pytest.raises(VerificationError, match="MRSIGNER is .* but --key has MRSIGNER"):
        check_occlum_sigstruct(
            other,
            source="e.so",
            recipe=recipe(),
            expected_mrsigner=keys.mrsigner_of(own_key.public_key()),
        )


def test_a_damaged_sigstruct_is_refused(signed):
    meta = read_sdk_metadata(signed.data)[0]
    damaged = bytearray(signed.data)
    damaged[meta.file_offset + 64 + 960] ^= 1  # first byte of ENCLAVEHASH
    with pytest.raises(VerificationError, match="signature does not verify"):
        read_occlum_enclave(
            bytes(damaged), source="e.so", recipe=recipe(), expected_mrsigner=signed.mrsigner
        )


def test_something_that_is_not_an_sdk_enclave_is_one_line(tmp_path):
    with pytest.raises(VerificationError) as err:
        read_occlum_enclave(
            b"\x7fELF" + bytes(60),
            source="libocclum-libos.signed.so",
            recipe=recipe(),
            expected_mrsigner=SAMPLE,
        )
    assert "\n" not in str(err.value) and "libocclum-libos.signed.so" in str(err.value)


def test_an_edmm_release_enclave_signed_with_our_key_is_accepted(signed, own_key):
    """Occlum's EDMM Enclave.xml: MiscSelect 1 / MiscMask 0xFFFFFFFF; DisableDebug=1 puts DEBUG
    into ATTRIBUTEMASK."""
    sig = read_sdk_metadata(signed.data)[0].sigstruct.copy(
        misc_select=1,
        misc_mask=0xFFFFFFFF,
        isv_prod_id=7,
        isv_svn=3,
        attribute_flags_mask=0xFFFFFFFFFFFFFFFF,
    )
    signed = keys.sign_sigstruct(sig, own_key, source="key")
    assert verify_signature(signed)
    enclave = check_occlum_sigstruct(
        signed,
        source="e.so",
        recipe=recipe(debug=False, edmm=True, prod=7, svn=3),
        expected_mrsigner=keys.mrsigner_of(own_key.public_key()),
    )
    assert enclave.edmm is True and enclave.debuggable is False
    assert enclave.summary()["misc_select"] == "0x00000001"
    with pytest.raises(VerificationError, match="signed with EDMM"):
        check_occlum_sigstruct(
            signed,
            source="e.so",
            recipe=recipe(debug=False, edmm=False, prod=7, svn=3),
            expected_mrsigner=keys.mrsigner_of(own_key.public_key()),
        )


def test_debuggable_means_debug_may_be_set_at_launch(signed):
    sig = read_sdk_metadata(signed.data)[0].sigstruct
    assert sdk_debuggable(sig)  # mask leaves DEBUG free
    assert not sdk_debuggable(
        sig.copy(attribute_flags_mask=sig.attribute_flags_mask | SGX_FLAGS_DEBUG)
    )  # DisableDebug=1
    assert sdk_debuggable(
        sig.copy(
            attribute_flags=sig.attribute_flags | SGX_FLAGS_DEBUG,
            attribute_flags_mask=~0 & 0xFFFFFFFFFFFFFFFF,
        )
    )  # Gramine-style
    assert not sdk_edmm(sig) and sdk_edmm(sig.copy(misc_select=1))


# --- record, labels, image config -----------------------------------------------------------


def _rendered():
    return SimpleNamespace(
        occlum_json={"entry_points": ["/opt/spark/bin"]},
        occlum_json_text='{"entry_points": ["/opt/spark/bin"]}\n',
        bom_text="targets: []\n",
        image_file_count=1234,
        entry_program="/ppml/entry/start.sh",
        entry_script="#!/bin/sh\n",
    )


def test_record_has_the_gramine_records_shape_plus_the_occlum_facts(signed):
    r = recipe()
    plan = make_plan(r)
    enclave = read_occlum_enclave(
        signed.data, source="e", recipe=r, expected_mrsigner=signed.mrsigner
    )
    record = occlum_measurement_record(
        recipe=r,
        plan=plan,
        enclave=enclave,
        image="ppml/x:1",
        image_id="sha256:" + "a" * 64,
        pushed_digest=None,
        base_digest="sha256:" + "b" * 64,
        rendered=_rendered(),
    )
    gramine = gramine_build.measurement_record(
        recipe=r,
        plan=plan,
        summary=sign_summary(enclave.sigstruct),
        image="ppml/x:1",
        image_id="i",
        pushed_digest=None,
        base_digest="d",
        rendered=SimpleNamespace(data=b"", trusted_files=[]),
    )
    assert set(record) == set(gramine) | {"occlum"}
    assert record["libos"] == {"type": "occlum", "version": "0.31"}
    assert record["mrenclave"] == signed.mrenclave
    assert record["mrsigner"] == signed.mrsigner.hex()
    assert record["edmm"] is False and record["debug"] is True
    assert record["enclave_size"] == signed.size_text  # from the signed metadata
    assert record["trusted_files"]["count"] == 1234
    assert record["occlum"]["sgx_mode"] == "HW"
    assert record["occlum"]["sdk_metadata_version"] == signed.version
    assert (
        record["occlum"]["signed_enclave"]
        == "/ppml/occlum_instance/build/lib/libocclum-libos.signed.so"
    )
    # A policy reads it like any record (debug enclaves need --allow-debug there).
    from ppml_build.policy.model import EnclaveValues

    values = EnclaveValues.from_mapping(record)
    assert values.mrenclave.hex() == signed.mrenclave and values.debug is True


def test_labels_name_occlum_and_edmm(signed):
    enclave = read_occlum_enclave(
        signed.data, source="e", recipe=recipe(), expected_mrsigner=signed.mrsigner
    )
    labels = occlum_labels(recipe(), enclave, "sha256:" + "b" * 64, "2026-01-01T00:00:00Z")
    assert labels["ppml.libos"] == "occlum 0.31"
    assert labels["ppml.edmm"] == "false"
    assert labels["ppml.mrenclave"] == signed.mrenclave
    assert labels["ppml.debug"] == "true"
    assert labels["org.opencontainers.image.version"] == f"mrenclave-{signed.mrenclave[:12]}"


def test_the_image_runs_occlum_run_on_the_entry_script_in_the_instance():
    conf = final_image_config(recipe(), _rendered(), {"a": "b"})
    assert conf["Entrypoint"] == ["/opt/occlum/build/bin/occlum", "run", "/ppml/entry/start.sh"]
    assert conf["Cmd"] == []  # the script holds the command and refuses arguments
    assert conf["WorkingDir"] == "/ppml/occlum_instance"
    assert conf["Labels"] == {"a": "b"}


# --- the build script, the key dir, the config archive --------------------------------------


@pytest.mark.parametrize("edmm, flag", [(False, "N"), (True, "Y")])
def test_build_script_is_valid_sh_and_sets_edmm_both_ways(edmm, flag):
    script = occlum_build_script(edmm=edmm)
    assert subprocess.run(["sh", "-n"], input=script.encode(), check=False).returncode == 0
    assert f"--enable-edmm {flag}" in script and f"ENABLE_EDMM={flag}" in script
    assert '--sign-key "/run/ppml-signing-key/enclave-key.pem"' in script
    assert "SGX_MODE=HW" in script
    assert 'copy_bom -f "/ppml/bom.yaml" --root image' in script


@pytest.mark.skipif(os.path.exists("/run/ppml-signing-key"), reason="key mount path exists")
def test_build_script_stops_with_its_own_code_when_the_key_is_not_mounted(tmp_path):
    result = subprocess.run(
        ["sh", "-c", occlum_build_script(edmm=False)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == occlum_build.EXIT_NO_KEY
    assert result.stdout.startswith("ppml-error: no signing key at /run/ppml-signing-key/")
    assert not (tmp_path / "occlum_instance").exists()


def test_key_dir_holds_only_a_0400_copy_and_is_removed_even_on_error(own_key):
    with pytest.raises(RuntimeError):
        with key_mount_dir(own_key) as directory:
            files = list(directory.iterdir())
            assert [p.name for p in files] == ["enclave-key.pem"]
            assert stat.S_IMODE(files[0].stat().st_mode) == 0o400
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            pem = files[0].read_bytes()
            assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # sgx_sign's form
            loaded = serialization.load_pem_private_key(pem, None)
            assert loaded.private_numbers() == own_key.private_numbers()
            raise RuntimeError("build failed")
    assert not directory.exists()


def test_config_archive_puts_public_inputs_under_ppml():
    data = config_archive({"/ppml/Occlum.json": b"{}", "/ppml/occlum-build.sh": b"#!/bin/sh\n"})
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert set(members) == {"ppml", "ppml/Occlum.json", "ppml/occlum-build.sh"}
        assert members["ppml"].isdir()
        assert members["ppml/occlum-build.sh"].mode == 0o755
        assert members["ppml/Occlum.json"].mode == 0o644
        assert members["ppml/Occlum.json"].uid == 0 and members["ppml/Occlum.json"].mtime == 0
        assert archive.extractfile("ppml/Occlum.json").read() == b"{}"


# --- refusals before any Docker work --------------------------------------------------------


def _recipe_dir(tmp_path: Path, text: str) -> Path:
    (tmp_path / "job.py").write_text("print('hi')\n")
    (tmp_path / "recipe.yaml").write_text(text)
    return tmp_path / "recipe.yaml"


@pytest.fixture
def no_docker(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the engine must not be contacted")

    monkeypatch.setattr(app_layer, "connect", refuse)


@pytest.mark.parametrize("which", ["lookalike", "real"])
def test_occlums_default_key_is_refused_without_insecure_sample_key(tmp_path, no_docker, which):
    path = _recipe_dir(
        tmp_path,
        RECIPE.replace("DEBUG", "false")
        .replace("EDMM", "false")
        .replace("PROD", "0")
        .replace("SVN", "0"),
    )
    # The SDK sample key = Occlum's etc/template/Enclave.pem; refused by its public half, so a
    # key file with that public half (tests/sdk_sample_key.py) must be refused just the same.
    if which == "real":
        key = vector("fortanix-sig1/sig1.key.pem", "real-sample-key check")
    else:
        key = tmp_path / "Enclave.pem"
        key.write_bytes(lookalike_private_pem())
    with pytest.raises(SigningError) as err:
        backends.build(BuildOptions(recipe=path, key=key, output_dir=tmp_path / "out"))
    assert "sample key" in str(err.value) and "--insecure-sample-key" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_gramine_recipe_is_not_built_as_occlum(tmp_path, no_docker):
    text = (PROJECT / "recipes/spark/pyspark-sql-agg/recipe.yaml").read_text()
    shutil.copy(PROJECT / "recipes/spark/pyspark-sql-agg/job.py", tmp_path / "job.py")
    (tmp_path / "recipe.yaml").write_text(text)
    with pytest.raises(RecipeError, match="occlum recipes only"):
        options = BuildOptions(recipe=tmp_path / "recipe.yaml", key=tmp_path / "none.pem")
        occlum_build.check_occlum(options, *load_and_plan(options.recipe), print)


def test_debuggable_occlum_json_is_never_written_for_a_release_recipe():
    """The first line of refusal is the config itself (ppml_build.occlum.config.check_occlum_json)."""
    from ppml_build.errors import ManifestError
    from ppml_build.occlum.config import check_occlum_json

    with pytest.raises(ManifestError, match="debuggable"):
        check_occlum_json({"metadata": {"debuggable": True}}, recipe(debug=False))


@pytest.mark.parametrize(
    "code, log, needle",
    [
        (occlum_build.EXIT_NO_KEY, "ppml-error: no signing key at /run/k\n", "DOCKER_HOST"),
        (occlum_build.EXIT_NO_OCCLUM, "ppml-error: copy_bom\n", "base: has no `copy_bom` in "),
        (
            1,
            "ppml-step: occlum build --sign-key k\nmake: *** [x] Error 2\n",
            "failed at `occlum build --sign-key k` (exit 1): make: *** [x] Error 2; full log: /o/l",
        ),
    ],
)
def test_a_failed_build_container_is_one_line_naming_the_step(code, log, needle):
    run = occlum_build.ContainerRun(code, log, "occlum build --sign-key k")
    message = str(occlum_build._failure(run, "base", Path("/o/l")))
    assert needle in message and "\n" not in message
