"""keygen / sign / measure / sigstruct-view through the CLI entry point, as a user runs them."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from real_vectors import vector
from sdk_enclave_factory import Metadata, sdk_signed_elf
from sdk_sample_key import lookalike_private_pem
from sigstruct_reference import signed_sigstruct

from ppml_build.cli import main
from ppml_build.sign import keys

GRAMINE_LIB = "usr/lib/x86_64-linux-gnu/gramine"
HEX64 = set("0123456789abcdef")
SAMPLE_MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"

MANIFEST = """\
libos.entrypoint = "/app/run.sh"
loader.log_level = "error"
fs.mounts = [{ path = "/app", uri = "file:/app" }]
sgx.trusted_files = ["file:/app/", { uri = "file:/etc/conf" }]
"""
# Most tests use a small enclave: the unmeasured heap pages dominate the signing time.
SMALL = 'sgx.enclave_size = "16M"\n'


def run(capsys, *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("ppml-build: error: "), err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def key_pem(keydir) -> Path:
    path = keydir / "enclave-key.pem"
    assert main(["keygen", "--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, standin_libsysdb) -> Path:
    root = tmp_path_factory.mktemp("rootfs")
    (root / GRAMINE_LIB).mkdir(parents=True)
    shutil.copy(standin_libsysdb, root / GRAMINE_LIB / "libsysdb.so")
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "app" / "lib" / "job.jar").write_bytes(b"PK\x03\x04 not really a jar")
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("a=1\n")
    return root


@pytest.fixture
def work(tmp_path) -> Path:
    (tmp_path / "app.manifest").write_text(MANIFEST + SMALL)
    return tmp_path


def sign_args(
    work: Path, key: Path, image_root: Path, libpal: Path, *extra: str | Path, name: str = "app"
) -> list:
    return [
        "sign",
        "--manifest",
        work / "app.manifest",
        "--libpal",
        libpal,
        "--key",
        key,
        "--output",
        work / f"{name}.manifest.sgx",
        "--sigfile",
        work / f"{name}.sig",
        "--chroot",
        image_root,
        *extra,
    ]


# --- keygen ---------------------------------------------------------------------------------


def test_keygen_writes_0600_rsa3072_e3_and_never_overwrites(capsys, tmp_path):
    key = tmp_path / "k.pem"
    rc, out, _ = run(capsys, "keygen", "--output", key)
    assert rc == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    assert loaded.key_size == 3072 and loaded.public_key().public_numbers().e == 3
    assert "mrsigner" in out
    before = key.read_bytes()
    rc, _, err = run(capsys, "keygen", "--output", key)
    assert rc == 2
    assert_one_line_error(err, str(key), "already exists")
    assert key.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temp files left


def test_encrypted_key_via_passphrase_file_or_env(
    capsys, tmp_path, work, image_root, standin_libpal, monkeypatch
):
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse\n")
    key = tmp_path / "enc.pem"
    assert run(capsys, "keygen", "--output", key, "--passphrase-file", secret)[0] == 0
    assert b"ENCRYPTED" in key.read_bytes()
    monkeypatch.delenv("PPML_KEY_PASSPHRASE", raising=False)

    rc, _, err = run(capsys, *sign_args(work, key, image_root, standin_libpal))
    assert rc == 2
    assert_one_line_error(err, str(key), "encrypted", "--passphrase-file")
    assert not (work / "app.sig").exists() and not (work / "app.manifest.sgx").exists()

    wrong = tmp_path / "wrong.txt"
    wrong.write_text("battery staple\n")
    rc, _, err = run(
        capsys, *sign_args(work, key, image_root, standin_libpal, "--passphrase-file", wrong)
    )
    assert rc == 2
    assert_one_line_error(err, str(key), "wrong passphrase")

    assert (
        run(capsys, *sign_args(work, key, image_root, standin_libpal, "--passphrase-file", secret))[
            0
        ]
        == 0
    )
    monkeypatch.setenv("PPML_KEY_PASSPHRASE", "correct horse")
    assert run(capsys, *sign_args(work, key, image_root, standin_libpal, name="env"))[0] == 0


# --- sign, measure, view --------------------------------------------------------------------


def test_sign_then_view_round_trip(capsys, work, key_pem, image_root, standin_libpal):
    rc, out, err = run(capsys, *sign_args(work, key_pem, image_root, standin_libpal, "--json"))
    assert rc == 0, err
    signed = json.loads(out)
    assert set(signed) == {
        "mrenclave",
        "mrsigner",
        "isv_prod_id",
        "isv_svn",
        "debug",
        "date",
        "attributes",
        "misc_select",
    }
    assert len(signed["mrenclave"]) == 64 and set(signed["mrenclave"]) <= HEX64
    assert len(signed["mrsigner"]) == 64 and set(signed["mrsigner"]) <= HEX64
    assert signed["attributes"] == {"flags": "0x0000000000000004", "xfrm": "0x0000000000000003"}
    assert signed["misc_select"] == "0x00000000"
    assert (work / "app.sig").stat().st_size == 1808

    rc, out, _ = run(capsys, "sigstruct-view", work / "app.sig", "--json")
    assert rc == 0
    view = json.loads(out)
    for field in (
        "mrenclave",
        "mrsigner",
        "isv_prod_id",
        "isv_svn",
        "debug",
        "date",
        "attributes",
        "misc_select",
    ):
        assert view[field] == signed[field], field
    assert view["signature_valid"] is True and view["q1_q2_valid"] is True
    assert view["exponent"] == 3

    public = serialization.load_pem_private_key(key_pem.read_bytes(), None).public_key()
    n = public.public_numbers().n.to_bytes(384, "little")
    assert signed["mrsigner"] == hashlib.sha256(n).hexdigest()

    rc, out, _ = run(capsys, "sigstruct-view", work / "app.sig")
    assert rc == 0
    assert "mrenclave:" in out and signed["mrenclave"] in out
    assert re.search(r"^signature_check:\s+valid$", out, re.M)


def test_sign_text_summary(capsys, work, key_pem, image_root, standin_libpal):
    rc, out, _ = run(capsys, *sign_args(work, key_pem, image_root, standin_libpal))
    assert rc == 0
    assert out.splitlines()[0] == f"wrote {work / 'app.manifest.sgx'} and {work / 'app.sig'}"
    assert "mrenclave:" in out and "mrsigner:" in out


def test_measure_equals_signed_mrenclave(capsys, work, key_pem, image_root, standin_libpal):
    rc, out, _ = run(capsys, *sign_args(work, key_pem, image_root, standin_libpal, "--json"))
    assert rc == 0
    mrenclave = json.loads(out)["mrenclave"]
    rc, out, _ = run(
        capsys,
        "measure",
        "--manifest",
        work / "app.manifest.sgx",
        "--libpal",
        standin_libpal,
        "--json",
    )
    assert rc == 0
    assert json.loads(out) == {
        "mrenclave": mrenclave,
        "enclave_size": 16 << 20,
        "max_threads": 4,
        "edmm_enable": False,
    }
    # Any change to the shipped manifest bytes changes MRENCLAVE.
    sgx = work / "app.manifest.sgx"
    sgx.write_bytes(sgx.read_bytes() + b"\n")
    rc, out, _ = run(capsys, "measure", "--manifest", sgx, "--libpal", standin_libpal, "--json")
    assert json.loads(out)["mrenclave"] != mrenclave


def test_manifest_sgx_carries_gramine_defaults_and_hashes(
    capsys, work, key_pem, image_root, standin_libpal
):
    (work / "app.manifest").write_text(MANIFEST)
    assert run(capsys, *sign_args(work, key_pem, image_root, standin_libpal))[0] == 0
    shipped = tomllib.loads((work / "app.manifest.sgx").read_text())
    sgx = shipped["sgx"]
    assert sgx["enclave_size"] == "256M" and sgx["max_threads"] == 4
    assert (sgx["isvprodid"], sgx["isvsvn"], sgx["debug"], sgx["edmm_enable"]) == (
        0,
        0,
        False,
        False,
    )
    assert sgx["remote_attestation"] == "none" and sgx["use_exinfo"] is False
    assert sgx["cpu_features"] == {
        "avx": "unspecified",
        "avx512": "unspecified",
        "amx": "unspecified",
        "mpx": "disabled",
        "pkru": "disabled",
    }

    def sha(rel: str) -> str:
        return hashlib.sha256((image_root / rel).read_bytes()).hexdigest()

    assert sgx["trusted_files"] == [
        {"uri": "file:/app/lib/job.jar", "sha256": sha("app/lib/job.jar")},
        {"uri": "file:/app/run.sh", "sha256": sha("app/run.sh")},
        {"uri": "file:/etc/conf", "sha256": sha("etc/conf")},
    ]
    assert shipped["loader"]["entrypoint"] == {
        "uri": f"file:/{GRAMINE_LIB}/libsysdb.so",
        "sha256": sha(f"{GRAMINE_LIB}/libsysdb.so"),
    }
    assert shipped["loader"]["log_level"] == "error"  # user keys are kept


def test_edmm_default_size(capsys, work, key_pem, image_root, standin_libpal):
    (work / "app.manifest").write_text(MANIFEST + "sgx.edmm_enable = true\n")
    assert run(capsys, *sign_args(work, key_pem, image_root, standin_libpal))[0] == 0
    assert tomllib.loads((work / "app.manifest.sgx").read_text())["sgx"]["enclave_size"] == "1024G"


def test_attributes_come_from_the_manifest(capsys, work, key_pem, image_root, standin_libpal):
    (work / "app.manifest").write_text(
        MANIFEST
        + SMALL
        + """\
sgx.isvprodid = 65535
sgx.isvsvn = 12
sgx.debug = true
sgx.use_exinfo = true
sgx.cpu_features.avx = "required"
sgx.cpu_features.avx512 = "disabled"
sgx.cpu_features.pkru = "required"
"""
    )
    rc, out, _ = run(capsys, *sign_args(work, key_pem, image_root, standin_libpal, "--json"))
    assert rc == 0
    summary = json.loads(out)
    assert (summary["isv_prod_id"], summary["isv_svn"], summary["debug"]) == (65535, 12, True)
    assert summary["attributes"] == {"flags": "0x0000000000000006", "xfrm": "0x0000000000000203"}
    assert summary["misc_select"] == "0x00000001"
    rc, out, _ = run(capsys, "sigstruct-view", work / "app.sig", "--json")
    assert json.loads(out)["attribute_mask"]["xfrm"] == "0xfffffffffff9ffff"


def test_date_is_reproducible(capsys, work, key_pem, image_root, standin_libpal):
    for name in ("one", "two"):
        rc, out, _ = run(
            capsys,
            *sign_args(
                work,
                key_pem,
                image_root,
                standin_libpal,
                "--date",
                "2024-02-29",
                "--json",
                name=name,
            ),
        )
        assert rc == 0
        assert json.loads(out)["date"] == "2024-02-29"
    assert (work / "one.sig").read_bytes() == (work / "two.sig").read_bytes()
    assert (work / "one.manifest.sgx").read_bytes() == (work / "two.manifest.sgx").read_bytes()
    rc, out, _ = run(
        capsys,
        *sign_args(
            work, key_pem, image_root, standin_libpal, "--date", "0000-00-00", "--json", name="zero"
        ),
    )
    assert rc == 0 and json.loads(out)["date"] == "0000-00-00"
    assert (work / "zero.sig").read_bytes()[20:24] == bytes(4)


def test_default_date_is_today_utc(capsys, work, key_pem, image_root, standin_libpal):
    before = datetime.datetime.now(datetime.UTC).date().isoformat()
    rc, out, _ = run(capsys, *sign_args(work, key_pem, image_root, standin_libpal, "--json"))
    after = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert json.loads(out)["date"] in {before, after}


def test_bad_date(capsys, work, key_pem, image_root, standin_libpal):
    rc, _, err = run(
        capsys, *sign_args(work, key_pem, image_root, standin_libpal, "--date", "31/12/2024")
    )
    assert rc == 2
    assert_one_line_error(err, "--date", "YYYY-MM-DD")


# --- bad input: one line, exit 2, nothing written --------------------------------------------


def _nothing_written(work: Path) -> bool:
    return not any((work / n).exists() for n in ("app.manifest.sgx", "app.sig", "app.sig.pending"))


@pytest.mark.parametrize(
    "extra, fragments",
    [
        ("sgx.isvprodid = 70000\n", ["app.manifest", "sgx.isvprodid = 70000", "0 to 65535"]),
        ("sgx.isvsvn = -1\n", ["app.manifest", "sgx.isvsvn = -1"]),
        ('sgx.cpu_features.mpx = "unspecified"\n', ["sgx.cpu_features.mpx"]),
        ('sgx.enclave_size = "300M"\n', ["sgx.enclave_size", "power of two"]),
        (
            'loader.entrypoint = "file:/lib/libsysdb.so"\n',
            ["loader.entrypoint", "removed in Gramine 1.9"],
        ),
        ('sgx.trusted_files = ["file:/app/missing.txt"]\n', ["app.manifest", "/app/missing.txt"]),
    ],
)
def test_bad_manifest_values(capsys, work, key_pem, image_root, standin_libpal, extra, fragments):
    text = (
        MANIFEST.replace("sgx.trusted_files", "# sgx.trusted_files")
        if "trusted" in extra
        else MANIFEST
    )
    size = "" if "enclave_size" in extra else SMALL
    (work / "app.manifest").write_text(text + size + extra)
    rc, _, err = run(capsys, *sign_args(work, key_pem, image_root, standin_libpal))
    assert rc == 2
    assert_one_line_error(err, *fragments)
    assert _nothing_written(work)


def test_toml_syntax_error_names_file_and_line(capsys, work, key_pem, image_root, standin_libpal):
    (work / "app.manifest").write_text('libos.entrypoint = "/app/run.sh"\n\nsgx.debug = tru\n')
    rc, _, err = run(capsys, *sign_args(work, key_pem, image_root, standin_libpal))
    assert rc == 2
    assert_one_line_error(err, f"{work / 'app.manifest'}:3: invalid TOML")
    assert _nothing_written(work)


def test_missing_libos_without_chroot(capsys, work, key_pem, standin_libpal):
    (work / "app.manifest").write_text(
        'libos.entrypoint = "/x"\nloader.entrypoint.uri = "file:/nonexistent/libsysdb.so"\n'
    )
    rc, _, err = run(
        capsys,
        "sign",
        "--manifest",
        work / "app.manifest",
        "--libpal",
        standin_libpal,
        "--key",
        key_pem,
        "--output",
        work / "app.manifest.sgx",
    )
    assert rc == 2
    assert_one_line_error(err, "loader.entrypoint.sha256", "/nonexistent/libsysdb.so", "--chroot")
    assert _nothing_written(work)


def test_missing_libpal(capsys, work, key_pem, image_root):
    rc, _, err = run(capsys, *sign_args(work, key_pem, image_root, work / "nope" / "libpal.so"))
    assert rc == 2
    assert_one_line_error(err, "libpal.so")
    assert _nothing_written(work)
    rc, _, err = run(
        capsys, "measure", "--manifest", work / "app.manifest", "--libpal", work / "app.manifest"
    )
    assert rc == 2
    assert_one_line_error(err, "not an ELF")


def test_default_sigfile_follows_gramine(capsys, work, key_pem, image_root, standin_libpal):
    rc, _, _ = run(
        capsys,
        "sign",
        "--manifest",
        work / "app.manifest",
        "--libpal",
        standin_libpal,
        "--key",
        key_pem,
        "--output",
        work / "app.manifest.sgx",
        "--chroot",
        image_root,
    )
    assert rc == 0
    assert (work / "app.sig").stat().st_size == 1808


@pytest.mark.parametrize("bits, e", [(2048, 65537), (2048, 3)])
def test_wrong_key_shape(capsys, work, image_root, standin_libpal, bits, e):
    key = work / "bad.pem"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=e, key_size=bits).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    rc, _, err = run(capsys, *sign_args(work, key, image_root, standin_libpal))
    assert rc == 2
    assert err == (
        f"ppml-build: error: {key}: expected an RSA-3072 key with exponent 3, got "
        f"{bits}-bit e={e}; make one with `ppml-build keygen`\n"
    )
    assert _nothing_written(work)


@pytest.mark.parametrize("which", ["lookalike", "real"])
def test_sample_key_needs_the_insecure_flag(capsys, work, image_root, standin_libpal, which):
    """The SDK sample key is refused by its public half: the real key (a real vector), and
    a key file made here with only that public half (tests/sdk_sample_key.py)."""
    if which == "real":
        sample = vector("fortanix-sig1/sig1.key.pem", "real-sample-key signing")
    else:
        sample = work / "Enclave.pem"
        sample.write_bytes(lookalike_private_pem())
    rc, _, err = run(capsys, *sign_args(work, sample, image_root, standin_libpal))
    assert rc == 2
    assert_one_line_error(err, "sample key", SAMPLE_MRSIGNER)
    assert _nothing_written(work)
    rc, out, err = run(
        capsys,
        *sign_args(work, sample, image_root, standin_libpal, "--insecure-sample-key", "--json"),
    )
    if which == "real":
        assert rc == 0
        assert json.loads(out)["mrsigner"] == SAMPLE_MRSIGNER
    else:  # past the refusal; with made-up private numbers its signature cannot verify
        assert rc == 2
        assert_one_line_error(err, "signature that does not verify")
        assert _nothing_written(work)


def test_conflicting_options(capsys, work, key_pem, image_root, standin_libpal):
    rc, _, err = run(
        capsys,
        *sign_args(
            work, key_pem, image_root, standin_libpal, "--signing-data-out", work / "data.bin"
        ),
    )
    assert rc == 2
    assert_one_line_error(err, "--key", "--signing-data-out")
    assert _nothing_written(work)


# --- two-step signing (openssl plays the HSM) -----------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl CLI")


def _openssl_sign(key: Path, data: Path, out: Path) -> None:
    subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key), "-out", str(out), str(data)],
        check=True,
        capture_output=True,
    )


def _openssl_pub(key: Path, out: Path) -> None:
    subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(out)],
        check=True,
        capture_output=True,
    )


def _step1(capsys, work, image_root, libpal, *extra):
    return run(
        capsys,
        "sign",
        "--manifest",
        work / "app.manifest",
        "--libpal",
        libpal,
        "--output",
        work / "two.manifest.sgx",
        "--sigfile",
        work / "two.sig",
        "--signing-data-out",
        work / "data.bin",
        "--chroot",
        image_root,
        "--date",
        "2025-03-04",
        *extra,
    )


def _step2(capsys, work, signature, public, *extra):
    return run(
        capsys,
        "sign",
        "--complete",
        "--signature",
        signature,
        "--public-key",
        public,
        "--output",
        work / "two.manifest.sgx",
        "--sigfile",
        work / "two.sig",
        *extra,
    )


@needs_openssl
def test_two_step_with_openssl_is_byte_identical(capsys, work, key_pem, image_root, standin_libpal):
    rc, out, err = _step1(capsys, work, image_root, standin_libpal, "--json")
    assert rc == 0, err
    pending = json.loads(out)
    assert pending["mrsigner"] is None
    assert (work / "data.bin").stat().st_size == 256
    assert (work / "two.sig.pending").exists() and not (work / "two.sig").exists()

    _openssl_sign(key_pem, work / "data.bin", work / "sig.bin")
    _openssl_pub(key_pem, work / "pub.pem")
    rc, out, err = _step2(capsys, work, work / "sig.bin", work / "pub.pem", "--json")
    assert rc == 0, err
    assert json.loads(out)["mrenclave"] == pending["mrenclave"]
    assert not (work / "two.sig.pending").exists()

    rc, _, _ = run(
        capsys,
        *sign_args(work, key_pem, image_root, standin_libpal, "--date", "2025-03-04", name="one"),
    )
    assert rc == 0
    assert (work / "two.sig").read_bytes() == (work / "one.sig").read_bytes()
    assert (work / "two.manifest.sgx").read_bytes() == (work / "one.manifest.sgx").read_bytes()
    assert run(capsys, "sigstruct-view", work / "two.sig")[0] == 0


@needs_openssl
def test_two_step_refuses_changed_manifest_or_wrong_key(
    capsys, work, key_pem, image_root, standin_libpal
):
    assert _step1(capsys, work, image_root, standin_libpal)[0] == 0
    _openssl_pub(key_pem, work / "pub.pem")

    other = work / "other.pem"  # any other RSA-3072 key
    other.write_bytes(keys.private_key_pem(keys.generate_key()))
    _openssl_sign(other, work / "data.bin", work / "wrong.bin")
    rc, _, err = _step2(capsys, work, work / "wrong.bin", work / "pub.pem")
    assert rc == 2
    assert_one_line_error(err, "wrong.bin", "does not verify")
    assert not (work / "two.sig").exists() and (work / "two.sig.pending").exists()

    (work / "short.bin").write_bytes(b"\x01" * 100)
    rc, _, err = _step2(capsys, work, work / "short.bin", work / "pub.pem")
    assert rc == 2
    assert_one_line_error(err, "100 bytes")

    _openssl_sign(key_pem, work / "data.bin", work / "sig.bin")
    sgx = work / "two.manifest.sgx"
    sgx.write_text(sgx.read_text().replace("16M", "32M"))
    rc, _, err = _step2(capsys, work, work / "sig.bin", work / "pub.pem")
    assert rc == 2
    assert_one_line_error(err, str(sgx), "changed since the signing data was made")
    assert not (work / "two.sig").exists()


# --- sigstruct-view on broken and foreign files ---------------------------------------------


def test_truncated_and_corrupted_sig(capsys, work, key_pem, image_root, standin_libpal):
    assert run(capsys, *sign_args(work, key_pem, image_root, standin_libpal))[0] == 0
    raw = (work / "app.sig").read_bytes()

    (work / "cut.sig").write_bytes(raw[:1000])
    rc, out, err = run(capsys, "sigstruct-view", work / "cut.sig")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "cut.sig", "1000 bytes", "1808")

    flipped = bytearray(raw)
    flipped[1026] ^= 0x01  # ISVSVN: inside the signed bytes
    (work / "flip.sig").write_bytes(bytes(flipped))
    rc, out, err = run(capsys, "sigstruct-view", work / "flip.sig")
    assert rc == 1
    assert re.search(r"^signature_check:\s+INVALID$", out, re.M)
    assert_one_line_error(err, "flip.sig", "does not verify")
    rc, out, _ = run(capsys, "sigstruct-view", work / "flip.sig", "--json")
    assert rc == 1 and json.loads(out)["signature_valid"] is False

    qbad = bytearray(raw)
    qbad[1500] ^= 0x01  # Q2: outside the signed bytes, but EINIT would reject it
    (work / "q.sig").write_bytes(bytes(qbad))
    rc, _, err = run(capsys, "sigstruct-view", work / "q.sig")
    assert rc == 1
    assert_one_line_error(err, "Q1/Q2")


def test_view_intel_le_and_sdk_enclave(capsys, vectors_dir):
    rc, out, _ = run(
        capsys, "sigstruct-view", vectors_dir / "intel-le" / "le_prod_css.bin", "--json"
    )
    assert rc == 0
    view = json.loads(out)
    assert view["vendor"] == "0x00008086" and view["date"] == "2024-08-11"
    assert view["mrsigner"] == "acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4"
    assert (view["isv_prod_id"], view["isv_svn"]) == (32, 7)

    rc, out, _ = run(
        capsys, "sigstruct-view", vectors_dir / "sdk-signed-enclave" / "enclave.signed.so"
    )
    assert rc == 0
    assert "d1d79feb6fe2a02270d0bdc6e973544567e4fd9d5cb481e99c9b8c044aa76a40" in out
    assert "sdk_metadata.version:" in out


def test_view_a_foreign_sig_and_an_sdk_signed_enclave(capsys, tmp_path, standin_libpal):
    """The in-repo twin of the test above: a .sig and an SDK-signed ELF written here from the
    SDK's definitions (tests/sigstruct_reference.py, tests/sdk_enclave_factory.py)."""
    key = keys.generate_key()
    mrenclave = hashlib.sha256(b"someone else's enclave").digest()
    css = signed_sigstruct(
        key, enclave_hash=mrenclave, vendor=0x8086, date=(2024, 8, 11), isv_prod_id=32, isv_svn=7
    )
    (tmp_path / "le.sig").write_bytes(css)
    rc, out, _ = run(capsys, "sigstruct-view", tmp_path / "le.sig", "--json")
    assert rc == 0
    view = json.loads(out)
    assert view["vendor"] == "0x00008086" and view["date"] == "2024-08-11"
    assert view["mrsigner"] == keys.mrsigner_of(key.public_key()).hex()
    assert (view["isv_prod_id"], view["isv_svn"]) == (32, 7)

    (tmp_path / "enclave.signed.so").write_bytes(sdk_signed_elf(Metadata(css, version=(2, 1))))
    rc, out, _ = run(capsys, "sigstruct-view", tmp_path / "enclave.signed.so")
    assert rc == 0
    assert mrenclave.hex() in out
    assert re.search(r"^sdk_metadata\.version:\s+2\.1$", out, re.M), out

    rc, _, err = run(capsys, "sigstruct-view", standin_libpal)
    assert rc == 2
    assert_one_line_error(err, ".note.sgxmeta")


# --- key material never leaks ---------------------------------------------------------------


def _pem_body_lines(pem: bytes) -> list[str]:
    return [
        line
        for line in pem.decode().splitlines()
        if line and not line.startswith("-----") and ":" not in line
    ]


@needs_openssl
def test_private_key_never_appears_in_outputs(capsys, tmp_path, work, image_root, standin_libpal):
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "secret.pem"
    transcript = []
    for args in (
        ["keygen", "--output", key],
        sign_args(work, key, image_root, standin_libpal),
        sign_args(work, key, image_root, standin_libpal, "--json", name="j"),
        ["sigstruct-view", work / "app.sig"],
        ["sigstruct-view", work / "app.sig", "--json"],
        ["measure", "--manifest", work / "app.manifest.sgx", "--libpal", standin_libpal],
        sign_args(work, key, image_root, standin_libpal, "--passphrase-file", key),
        ["sigstruct-view", key],
    ):
        rc, out, err = run(capsys, *args)
        transcript.append(out + err)
    body = _pem_body_lines(key.read_bytes())
    assert len(body) > 30
    outputs = [p.read_bytes().decode("latin-1") for p in work.iterdir() if p.is_file()]
    for text in transcript + outputs:
        for line in body:
            assert line not in text
