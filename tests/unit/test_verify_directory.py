"""`ppml-build verify` in directory mode (no Docker), and the --verify-reproducible comparison.

A signed directory is made the way a user would: `ppml-build manifest` over an image-like root
filesystem, then `ppml-build sign`. Each test tampers with one thing and checks that verify,
anchored to the signer (a record, a policy, --mrsigner or --signer-key), names it (exit 1), or
feeds unusable input (exit 2, one line). Without an anchor verify says so on its first line and
fails unless --allow-unpinned; debug enclaves and allowed files covering / fail unless accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from rootfs_factory import add_ppml_support, make_spark_rootfs

from ppml_build.cli import main
from ppml_build.gramine import build as gramine_build
from ppml_build.gramine.render import render_for_rootfs
from ppml_build.gramine.signing import sign_summary, tbs_sigstruct
from ppml_build.image.hashing import FileHasher
from ppml_build.image.rootfs import DirRootFS
from ppml_build.pipeline import backends, reproducible
from ppml_build.pipeline.options import BuildOptions, BuildResult
from ppml_build.pipeline.stages import load_and_plan
from ppml_build.plan import make_plan
from ppml_build.policy import render_policy, write_policy_files
from ppml_build.policy.evaluate import load_policy
from ppml_build.recipe import load_recipe_text
from ppml_build.sign import keys
from ppml_build.sign.sigstruct import Sigstruct
from ppml_build.verify.checks import run_checks
from ppml_build.verify.evidence import Evidence, parse_sigstruct

APP = "spark-demo"
RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", --driver-memory, 1g, /app/job.py]
enclave: {isv_prod_id: 7, isv_svn: 3}
"""
JAR = "/opt/spark-3.5.3/jars/lib-03.jar"
OTHER = "ab" * 32
ALL_FORMATS = ("gramine-ratls", "ehsm", "bigdl", "marblerun", "maa", "ita", "trustee")
PRIMARY = {
    "gramine-ratls": "ra-tls.env",
    "ehsm": "ehsm-quote-policy.json",
    "bigdl": "bigdl-policies.json",
    "marblerun": "marblerun-packages.json",
    "maa": "maa-policy.txt",
    "ita": "ita-policy.rego",
    "trustee": "trustee-policy.rego",
}


def _skip_special(directory: str, names: list[str]) -> list[str]:
    """copytree would block reading the factory's fifo: leave special files out."""
    out = []
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            out.append(name)
    return out


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True, ignore=_skip_special)
    return target


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    """The hash cache `manifest` keeps goes to a temp dir, not the developer's home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PPML_BUILD_CACHE_DIR", str(tmp_path_factory.mktemp("ppml-cache")))
        yield


@pytest.fixture(scope="module")
def signed(tmp_path_factory, standin_libpal):
    """rootfs/, out/ (APP.manifest.sgx, APP.sig), measurement.json and one policy per format."""
    base = tmp_path_factory.mktemp("verify")
    rootfs = make_spark_rootfs(base / "rootfs", libpal=standin_libpal.read_bytes())
    add_ppml_support(rootfs, make_plan(load_recipe_text(RECIPE)))
    (base / "job.py").write_text("print('job')\n")
    recipe = base / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = base / "out"
    assert main(["manifest", str(recipe), "--rootfs", str(rootfs), "--output-dir", str(out)]) == 0
    key = base / "key.pem"
    assert main(["keygen", "--output", str(key)]) == 0
    assert (
        main(
            [
                "sign",
                "--manifest",
                str(out / f"{APP}.manifest"),
                "--libpal",
                str(standin_libpal),
                "--key",
                str(key),
                "--output",
                str(out / f"{APP}.manifest.sgx"),
                "--sigfile",
                str(out / f"{APP}.sig"),
                "--chroot",
                str(rootfs),
                "--date",
                "2026-01-02",
            ]
        )
        == 0
    )
    # The record `build` would write for this manifest and signature.
    parsed, plan = load_and_plan(recipe)
    rendered = render_for_rootfs(parsed, plan, DirRootFS(rootfs), str(recipe))
    assert rendered.data == (out / f"{APP}.manifest.sgx").read_bytes()
    sig = Sigstruct.from_bytes((out / f"{APP}.sig").read_bytes())
    record = gramine_build.measurement_record(
        recipe=parsed,
        plan=plan,
        summary=sign_summary(sig),
        image="dir",
        image_id="",
        pushed_digest=None,
        base_digest="sha256:" + "0" * 64,
        rendered=rendered,
    )
    (out / "measurement.json").write_text(json.dumps(record, indent=2))
    policies = base / "policies"
    policies.mkdir()
    for fmt in ALL_FORMATS:
        write_policy_files(render_policy(record, fmt), policies)
    public = base / "key.pub"
    public.write_bytes(keys.public_key_pem(keys.load_private_key(key.read_bytes())))
    return {
        "base": base,
        "rootfs": rootfs,
        "out": out,
        "key": key,
        "public": public,
        "record": record,
        "policies": policies,
        "recipe": recipe,
        "sig": sig,
        "libpal": standin_libpal,
        "pin": ["--mrsigner", sig.mrsigner.hex()],
    }


def verify(capsys, *args) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main(["verify", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def failed(lines: list[str]) -> dict[str, str]:
    """FAIL lines as name -> detail."""
    out = {}
    for line in lines:
        if line.startswith("FAIL "):
            name, _, detail = line[5:].partition(": ")
            out[name] = detail
    return out


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("ppml-build: error: "), err
    return lines[0]


UNPINNED = "WARNING: nothing pins the signer"


def resign(
    signed,
    target: Path,
    *,
    edit=lambda text: text,
    key: Path | None = None,
    sign_args: tuple[str, ...] = (),
) -> Path:
    """``target``/APP.manifest.sgx and APP.sig: the fixture's manifest, edited, signed again."""
    target.mkdir()
    manifest = target / f"{APP}.manifest"
    text = (signed["out"] / f"{APP}.manifest").read_text()
    manifest.write_text(edit(text))
    assert (
        main(
            [
                "sign",
                "--manifest",
                str(manifest),
                "--libpal",
                str(signed["libpal"]),
                "--key",
                str(key or signed["key"]),
                "--output",
                str(target / f"{APP}.manifest.sgx"),
                "--sigfile",
                str(target / f"{APP}.sig"),
                "--chroot",
                str(signed["rootfs"]),
                "--date",
                "2026-01-02",
                *sign_args,
            ]
        )
        == 0
    )
    manifest.unlink()  # verify reads the signed .manifest.sgx only
    return target


def in_sgx_table(old: str, new: str):
    """An edit of one line of the manifest's [sgx] table."""

    def edit(text: str) -> str:
        head, sep, sgx = text.partition("\n[sgx]\n")
        assert sep and sgx.count(f"\n{old}\n") + sgx.startswith(f"{old}\n") == 1, old
        return head + sep + ("\n" + sgx).replace(f"\n{old}\n", f"\n{new}\n", 1)[1:]

    return edit


# --- the untouched enclave ------------------------------------------------------------------


def test_untouched_directory_verifies_with_record_and_every_policy(signed, capsys):
    policy_args = []
    for fmt in ALL_FORMATS:
        policy_args += ["--policy", signed["policies"] / PRIMARY[fmt]]
    policy_args += ["--policy", signed["policies"] / "maa-policy.jwt"]
    code, lines, err = verify(
        capsys, signed["out"], "--rootfs", signed["rootfs"], "--record", signed["out"], *policy_args
    )
    assert code == 0, "\n".join(lines) + err
    checks = lines[:-1]
    assert all(line.startswith("ok   ") for line in checks), lines
    names = {
        line[5:].split(":", 1)[0]
        if not line[5:].startswith(("trusted_file:", "record:", "policy:", "sigstruct:"))
        else ":".join(line[5:].split(":", 2)[:2])
        for line in checks
    }
    for expected in (
        "manifest",
        "mrenclave",
        "sigstruct:signature",
        "sigstruct:q1_q2",
        "sigstruct:isv_prod_id",
        "sigstruct:isv_svn",
        "sigstruct:debug",
        "loader.entrypoint",
        "trusted_files",
        "record:mrenclave",
        "record:mrsigner",
        "record:trusted_files",
        "record:manifest_sha256",
        *(f"policy:{fmt}" for fmt in ALL_FORMATS),
    ):
        assert expected in names, (expected, names)
    assert (
        lines[-1] == f"verified: {len(checks)} checks passed, MRENCLAVE "
        f"{signed['record']['mrenclave']}"
    )
    assert f"all {signed['record']['trusted_files']['count']} match the image" in "\n".join(lines)


def test_json_report(signed, capsys):
    code, lines, _ = verify(
        capsys,
        signed["out"],
        "--rootfs",
        signed["rootfs"],
        "--record",
        signed["out"] / "measurement.json",
        "--json",
    )
    assert code == 0
    report = json.loads("\n".join(lines))
    assert report["ok"] is True
    assert report["mrenclave"] == signed["record"]["mrenclave"]
    assert report["mrsigner"] == signed["record"]["mrsigner"]
    assert report["isv_prod_id"] == 7 and report["isv_svn"] == 3 and report["debug"] is False
    assert report["warning"] is None
    record_path = signed["out"] / "measurement.json"
    assert report["pinned_by"] == [f"record {record_path} (MRENCLAVE, MRSIGNER)"]
    assert all(set(c) == {"name", "ok", "detail"} and c["ok"] for c in report["checks"])


def test_unpacked_image_directory_needs_no_rootfs(signed, tmp_path, capsys):
    # `docker export | tar -x` of a built image: the image root with ppml/APP.* inside it.
    root = copy_tree(signed["rootfs"], tmp_path / "image")
    (root / "ppml").mkdir(exist_ok=True)  # the support files are there already
    for suffix in (".manifest.sgx", ".sig"):
        shutil.copy(signed["out"] / f"{APP}{suffix}", root / "ppml")
    code, lines, err = verify(capsys, root, "--signer-key", signed["key"])
    assert code == 0, "\n".join(lines) + err
    assert lines[0].startswith("ok   ")  # pinned: no warning


# --- tampering: exit 1, each mismatch named --------------------------------------------------


def test_changed_and_missing_trusted_files_are_named(signed, tmp_path, capsys):
    root = copy_tree(signed["rootfs"], tmp_path / "rootfs")
    jar = root / JAR.lstrip("/")
    old = jar.read_bytes()
    jar.write_bytes(old[:-1] + bytes([old[-1] ^ 1]))
    (root / "app/job.py").unlink()
    code, lines, err = verify(capsys, signed["out"], "--rootfs", root, *signed["pin"])
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"trusted_files", f"trusted_file:{JAR}", "trusted_file:/app/job.py"}
    assert "2 of " in fails["trusted_files"]
    assert "changed" in fails[f"trusted_file:{JAR}"]
    assert "missing in the image" in fails["trusted_file:/app/job.py"]
    assert lines[-1].startswith("NOT verified: 3 of ")
    line = one_error_line(err)
    assert f"trusted_file:{JAR}" in line and "trusted_file:/app/job.py" in line
    # MRENCLAVE itself still matches: only the files changed, not the signed manifest.
    assert any(line.startswith("ok   mrenclave") for line in lines)


def test_replaced_libos_is_named(signed, tmp_path, capsys):
    root = copy_tree(signed["rootfs"], tmp_path / "rootfs")
    (root / "usr/lib/x86_64-linux-gnu/gramine/libsysdb.so").write_bytes(b"another LibOS")
    code, lines, _ = verify(
        capsys, signed["out"], "--rootfs", root, "--signer-key", signed["public"]
    )
    assert code == 1
    libsysdb = "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
    assert set(failed(lines)) == {"loader.entrypoint", "trusted_files", f"trusted_file:{libsysdb}"}
    assert "the LibOS was replaced" in failed(lines)["loader.entrypoint"]


def test_changed_manifest_breaks_mrenclave_and_record(signed, tmp_path, capsys):
    out = copy_tree(signed["out"], tmp_path / "out")
    manifest = out / f"{APP}.manifest.sgx"
    text = manifest.read_text()
    assert 'SPARK_LOCAL_IP = "127.0.0.1"' in text
    manifest.write_text(text.replace('SPARK_LOCAL_IP = "127.0.0.1"', 'SPARK_LOCAL_IP = "0.0.0.0"'))
    code, lines, err = verify(capsys, out, "--rootfs", signed["rootfs"], "--record", signed["out"])
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"mrenclave", "record:mrenclave", "record:manifest_sha256"}
    assert signed["record"]["mrenclave"] in fails["mrenclave"]  # the signed value is shown
    assert "changed after signing" in fails["mrenclave"]
    assert "mrenclave" in one_error_line(err)


def test_manifest_that_no_longer_parses(signed, tmp_path, capsys):
    out = copy_tree(signed["out"], tmp_path / "out")
    with open(out / f"{APP}.manifest.sgx", "a") as handle:
        handle.write("[sgx\n")
    code, lines, _ = verify(capsys, out, "--rootfs", signed["rootfs"], *signed["pin"])
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"manifest", "mrenclave"}
    assert "invalid TOML" in fails["manifest"] and "not recomputed" in fails["mrenclave"]


def test_sig_from_another_key(signed, tmp_path, capsys):
    """Same manifest, valid signature, other signer: the record and policies catch it."""
    out = copy_tree(signed["out"], tmp_path / "out")
    manifest = (out / f"{APP}.manifest.sgx").read_bytes()
    unsigned = tbs_sigstruct(
        manifest,
        signed["rootfs"] / "usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so",
        signed["sig"].date_bcd,
        source="test",
    )
    other = keys.sign_sigstruct(unsigned, keys.generate_key(), source="test")
    (out / f"{APP}.sig").write_bytes(other.to_bytes())
    code, lines, _ = verify(
        capsys,
        out,
        "--rootfs",
        signed["rootfs"],
        "--record",
        signed["out"],
        "--policy",
        signed["policies"] / "ra-tls.env",
    )
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"record:mrsigner", "policy:gramine-ratls"}
    assert other.mrsigner.hex() in fails["record:mrsigner"]
    assert "RA_TLS_MRSIGNER" in fails["policy:gramine-ratls"]


def test_sig_of_another_enclave(signed, tmp_path, capsys, vectors_dir):
    out = copy_tree(signed["out"], tmp_path / "out")
    shutil.copy(vectors_dir / "intel-le" / "le_prod_css.bin", out / f"{APP}.sig")
    code, lines, _ = verify(
        capsys, out, "--rootfs", signed["rootfs"], "--signer-key", signed["key"]
    )
    assert code == 1
    fails = failed(lines)
    assert "signed by another key" in fails["pin:signer_key"]
    assert "7881af9f9def547da9908c008f29cde9bd78064e36ac7e14c83c294ca4806150" in fails["mrenclave"]
    assert (
        "isv_prod_id is 7 in the manifest (sgx.isvprodid) but 32 in the SIGSTRUCT"
        in fails["sigstruct:isv_prod_id"]
    )
    assert "sigstruct:signature" not in fails  # Intel's signature itself is genuine


def test_sig_modified_after_signing(signed, tmp_path, capsys):
    out = copy_tree(signed["out"], tmp_path / "out")
    raw = bytearray((out / f"{APP}.sig").read_bytes())
    raw[1026] ^= 1  # ISVSVN: inside the signed bytes
    (out / f"{APP}.sig").write_bytes(bytes(raw))
    code, lines, _ = verify(capsys, out, "--rootfs", signed["rootfs"], *signed["pin"])
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"sigstruct:signature", "sigstruct:isv_svn"}


def test_other_libpal_changes_the_measurement(signed, capsys, standin_libsysdb):
    code, lines, _ = verify(
        capsys,
        signed["out"],
        "--rootfs",
        signed["rootfs"],
        "--libpal",
        standin_libsysdb,
        *signed["pin"],
    )
    assert code == 1
    assert set(failed(lines)) == {"mrenclave"}


def test_labels_are_compared_with_the_recomputed_values(signed, standin_libpal):
    """Image mode's label check, on directory evidence (the Docker side is in integration)."""
    out, record = signed["out"], signed["record"]
    labels = {
        "ppml.mrenclave": record["mrenclave"],
        "ppml.mrsigner": record["mrsigner"],
        "ppml.isv_prod_id": "7",
        "ppml.isv_svn": "3",
        "ppml.debug": "false",
        "org.opencontainers.image.version": f"mrenclave-{record['mrenclave'][:12]}",
        "org.opencontainers.image.title": APP,
        "ppml.base.digest": record["base"]["digest"],
        "org.opencontainers.image.base.digest": record["base"]["digest"],
        "ppml.libos": "gramine 1.9",
    }

    def report(changed: dict):
        evidence = Evidence(
            target="test",
            name=APP,
            manifest_sgx=(out / f"{APP}.manifest.sgx").read_bytes(),
            sigstruct=parse_sigstruct((out / f"{APP}.sig").read_bytes(), "sig"),
            fs=DirRootFS(signed["rootfs"], FileHasher(use_cache=False)),
            labels={k: v for k, v in {**labels, **changed}.items() if v is not None},
            record=record,
        )
        return {c.name: c for c in run_checks(evidence).checks}

    untouched = report({})
    assert all(c.ok for c in untouched.values()) and "label:ppml.libos" in untouched
    checks = report({"ppml.mrenclave": OTHER, "ppml.debug": "true", "ppml.mrsigner": None})
    bad = {name for name, c in checks.items() if not c.ok}
    assert bad == {"label:ppml.mrenclave", "label:ppml.debug", "label:ppml.mrsigner"}
    assert OTHER in checks["label:ppml.mrenclave"].detail
    assert "missing" in checks["label:ppml.mrsigner"].detail


# --- no trust anchor: said first, and not "verified" ------------------------------------------


def test_unanchored_verify_says_so_first_and_fails(signed, capsys):
    code, lines, err = verify(capsys, signed["out"], "--rootfs", signed["rootfs"])
    assert code == 1
    assert lines[0].startswith(UNPINNED)
    for option in ("--record", "--policy", "--mrsigner", "--signer-key"):
        assert option in lines[0]
    assert set(failed(lines)) == {"trust_anchor"}  # the enclave itself is consistent
    assert lines[-1] == f"NOT verified: 1 of {len(lines) - 2} checks failed"
    line = one_error_line(err)
    assert "trust_anchor" in line and "--allow-unpinned" in line and "--mrsigner" in line

    code, lines, _ = verify(capsys, signed["out"], "--rootfs", signed["rootfs"], "--json")
    assert code == 1
    report = json.loads("\n".join(lines))
    assert report["ok"] is False and report["pinned_by"] == []
    assert report["warning"].startswith(UNPINNED) and "--signer-key" in report["warning"]


def test_allow_unpinned_passes_but_still_says_nothing_pins_the_signer(signed, capsys):
    code, lines, err = verify(
        capsys, signed["out"], "--rootfs", signed["rootfs"], "--allow-unpinned"
    )
    assert code == 0, "\n".join(lines) + err
    assert lines[0].startswith(UNPINNED)
    assert any(
        line.startswith("ok   trust_anchor: none, accepted by --allow-unpinned") for line in lines
    )
    assert not lines[-1].startswith("verified")
    assert lines[-1].startswith("self-consistent only, nothing pins the signer: ")
    code, lines, _ = verify(
        capsys, signed["out"], "--rootfs", signed["rootfs"], "--allow-unpinned", "--json"
    )
    report = json.loads("\n".join(lines))
    assert code == 0 and report["ok"] is True and report["warning"].startswith(UNPINNED)


def test_enclave_resigned_by_an_unknown_key(signed, tmp_path, capsys):
    """The issue's case: a consistent image re-signed by someone else. Unanchored, verify
    cannot tell and says so; each anchor catches it."""
    other_key = tmp_path / "other.pem"
    assert main(["keygen", "--output", str(other_key)]) == 0
    out = resign(signed, tmp_path / "out", key=other_key)
    theirs = Sigstruct.from_bytes((out / f"{APP}.sig").read_bytes()).mrsigner.hex()
    ours = signed["sig"].mrsigner.hex()
    base = [out, "--rootfs", signed["rootfs"]]

    code, lines, _ = verify(capsys, *base)
    assert code == 1 and lines[0].startswith(UNPINNED)
    assert set(failed(lines)) == {"trust_anchor"}
    code, lines, _ = verify(capsys, *base, "--allow-unpinned")
    assert code == 0 and lines[0].startswith(UNPINNED)  # consistent, and reported as unpinned

    code, lines, _ = verify(capsys, *base, "--mrsigner", ours.upper())
    assert code == 1 and not lines[0].startswith(UNPINNED)
    assert set(failed(lines)) == {"pin:mrsigner"}
    assert (
        f"MRSIGNER is {ours} from --mrsigner but {theirs} in the SIGSTRUCT"
        in failed(lines)["pin:mrsigner"]
    )
    for key in (signed["key"], signed["public"]):  # the private key or its public half
        code, lines, _ = verify(capsys, *base, "--signer-key", key)
        assert code == 1 and set(failed(lines)) == {"pin:signer_key"}
        assert f"--signer-key {key}" in failed(lines)["pin:signer_key"]
    code, lines, _ = verify(capsys, *base, "--record", signed["out"])
    assert code == 1 and set(failed(lines)) == {"record:mrsigner"}  # same manifest, same MRENCLAVE
    # Pinned to the key that did sign it, the same image verifies.
    code, lines, err = verify(capsys, *base, "--mrsigner", theirs, "--signer-key", other_key)
    assert code == 0, "\n".join(lines) + err
    assert f"ok   pin:mrsigner: MRSIGNER {theirs} (= --mrsigner)" in lines
    assert f"ok   trust_anchor: pinned by --mrsigner, --signer-key {other_key}" in lines


def test_a_policy_anchors_only_when_it_pins_mrenclave_or_mrsigner(signed, tmp_path, capsys):
    record = signed["record"]
    loose = tmp_path / "loose.env"
    loose.write_text(
        "RA_TLS_MRENCLAVE=any\nRA_TLS_MRSIGNER=any\nRA_TLS_ISV_PROD_ID=7\nRA_TLS_ISV_SVN=3\n"
    )
    code, lines, _ = verify(capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", loose)
    assert code == 1 and lines[0].startswith(UNPINNED)
    assert set(failed(lines)) == {"trust_anchor"}
    assert "loose.env pins neither" in failed(lines)["trust_anchor"]
    assert "ok   policy:gramine-ratls: loose.env accepts this enclave" in lines

    signer_only = tmp_path / "signer.env"
    signer_only.write_text(
        f"RA_TLS_MRENCLAVE=any\nRA_TLS_MRSIGNER={record['mrsigner']}\n"
        "RA_TLS_ISV_PROD_ID=any\nRA_TLS_ISV_SVN=any\n"
    )
    code, lines, _ = verify(
        capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", signer_only, "--json"
    )
    report = json.loads("\n".join(lines))
    assert code == 0 and report["warning"] is None
    assert report["pinned_by"] == ["policy signer.env (MRSIGNER)"]

    code, lines, _ = verify(
        capsys,
        signed["out"],
        "--rootfs",
        signed["rootfs"],
        "--policy",
        signed["policies"] / "ita-policy.rego",
        "--json",
    )
    report = json.loads("\n".join(lines))
    assert code == 0 and report["pinned_by"] == ["policy ita-policy.rego (MRENCLAVE, MRSIGNER)"], (
        report
    )


def test_the_sdk_sample_key_pins_nothing(signed, tmp_path, capsys, vectors_dir):
    """Anyone can sign with Intel's sample key: a policy naming its MRSIGNER is no anchor."""
    sample = vectors_dir / "fortanix-sig1" / "sig1.key.pem"
    out = resign(signed, tmp_path / "out", key=sample, sign_args=("--insecure-sample-key",))
    env = tmp_path / "sample.env"
    env.write_text(
        f"RA_TLS_MRENCLAVE=any\nRA_TLS_MRSIGNER={keys.SAMPLE_KEY_MRSIGNER.hex()}\n"
        "RA_TLS_ISV_PROD_ID=7\nRA_TLS_ISV_SVN=3\n"
    )
    code, lines, _ = verify(capsys, out, "--rootfs", signed["rootfs"], "--policy", env)
    assert code == 1 and lines[0].startswith(UNPINNED)
    assert set(failed(lines)) == {"trust_anchor"}
    code, _, err = verify(capsys, out, "--rootfs", signed["rootfs"], "--signer-key", sample)
    assert code == 2 and "sample key" in one_error_line(err)


# --- never production-safe: debug enclaves, allowed files covering / -----------------------------


def test_debug_enclave_fails_unless_allowed(signed, tmp_path, capsys):
    out = resign(signed, tmp_path / "out", edit=in_sgx_table("debug = false", "debug = true"))
    base = [out, "--rootfs", signed["rootfs"]]
    code, lines, err = verify(capsys, *base, "--signer-key", signed["key"])
    assert code == 1
    assert set(failed(lines)) == {"debug_mode"}  # pinned and consistent, but debug
    detail = failed(lines)["debug_mode"]
    assert "ATTRIBUTES.DEBUG is set" in detail and "sgx.debug = true" in detail
    assert "--allow-debug" in one_error_line(err)
    code, lines, err = verify(capsys, *base, "--signer-key", signed["key"], "--allow-debug")
    assert code == 0, "\n".join(lines) + err
    assert any(
        line.startswith("ok   debug_mode: a debug enclave")
        and line.endswith("accepted by --allow-debug")
        for line in lines
    )

    # A record that says debug anchors it; the enclave still needs --allow-debug.
    sig = Sigstruct.from_bytes((out / f"{APP}.sig").read_bytes())
    record = {
        **signed["record"],
        "debug": True,
        "mrenclave": sig.mrenclave.hex(),
        "manifest_sha256": hashlib.sha256((out / f"{APP}.manifest.sgx").read_bytes()).hexdigest(),
    }
    (tmp_path / "debug.json").write_text(json.dumps(record))
    code, lines, _ = verify(capsys, *base, "--record", tmp_path / "debug.json")
    assert code == 1 and set(failed(lines)) == {"debug_mode"}
    assert "ok   record:debug: true" in lines
    code, lines, _ = verify(capsys, *base, "--record", tmp_path / "debug.json", "--allow-debug")
    assert code == 0

    # Unanchored: --allow-unpinned does not accept debug, nor --allow-debug the missing anchor.
    code, lines, _ = verify(capsys, *base)
    assert code == 1 and lines[0].startswith(UNPINNED)
    assert set(failed(lines)) == {"trust_anchor", "debug_mode"}
    assert set(failed(verify(capsys, *base, "--allow-unpinned")[1])) == {"debug_mode"}
    assert set(failed(verify(capsys, *base, "--allow-debug")[1])) == {"trust_anchor"}
    code, lines, _ = verify(capsys, *base, "--allow-debug", "--allow-unpinned")
    assert code == 0 and lines[0].startswith(UNPINNED)


@pytest.mark.parametrize(
    "old,new,named",
    [
        (
            "allowed_files = []",
            'allowed_files = ["file:/tmp/", "file:/."]',
            "sgx.allowed_files entry 'file:/.' covers the whole file system",
        ),
        (
            'file_check_policy = "strict"',
            'file_check_policy = "allow_all_but_log"',
            'sgx.file_check_policy = "allow_all_but_log"',
        ),
    ],
)
def test_allowed_files_covering_everything_fail_unless_allowed(
    signed, tmp_path, capsys, old, new, named
):
    out = resign(signed, tmp_path / "out", edit=in_sgx_table(old, new))
    base = [out, "--rootfs", signed["rootfs"]]
    code, lines, err = verify(capsys, *base, *signed["pin"])
    assert code == 1
    assert set(failed(lines)) == {"allowed_files"}
    detail = failed(lines)["allowed_files"]
    assert named in detail and "the host can supply any file unverified" in detail
    assert "file:/tmp/" not in detail
    assert "--allow-unpinned" in one_error_line(err)
    code, lines, _ = verify(capsys, *base, *signed["pin"], "--allow-unpinned")
    assert code == 0
    assert any(
        line.startswith(f"ok   allowed_files: {named}")
        and line.endswith("accepted by --allow-unpinned")
        for line in lines
    )
    assert not lines[0].startswith(UNPINNED)  # pinned: --allow-unpinned changes no warning
    code, lines, _ = verify(capsys, *base)
    assert code == 1 and lines[0].startswith(UNPINNED)
    assert set(failed(lines)) == {"trust_anchor", "allowed_files"}


def test_allowed_files_that_do_not_cover_everything_pass(signed, tmp_path, capsys):
    out = resign(
        signed,
        tmp_path / "out",
        edit=in_sgx_table("allowed_files = []", 'allowed_files = ["file:/tmp/", "file:/../..a/"]'),
    )
    code, lines, err = verify(capsys, out, "--rootfs", signed["rootfs"], *signed["pin"])
    assert code == 0, "\n".join(lines) + err
    assert "ok   allowed_files: 2 allowed entries, none covers the whole file system" in lines


def test_unusable_pins_exit_2_with_one_line(signed, tmp_path, capsys):
    base = [signed["out"], "--rootfs", signed["rootfs"]]
    for value in ("xyz", "ab" * 31, "ab" * 33):
        code, lines, err = verify(capsys, *base, "--mrsigner", value)
        assert code == 2 and lines == []
        assert "--mrsigner" in one_error_line(err) and "64 hex digits" in one_error_line(err)
    code, _, err = verify(capsys, *base, "--mrsigner", keys.SAMPLE_KEY_MRSIGNER.hex())
    assert code == 2 and "sample key" in one_error_line(err)
    code, _, err = verify(capsys, *base, "--signer-key", tmp_path / "missing.pem")
    assert code == 2 and "missing.pem" in one_error_line(err)
    (tmp_path / "junk.pem").write_text("not a key\n")
    code, _, err = verify(capsys, *base, "--signer-key", tmp_path / "junk.pem")
    assert code == 2 and "not a PEM public key" in one_error_line(err)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        keys.private_key_pem(keys.load_private_key(signed["key"].read_bytes()), b"secret")
    )
    code, _, err = verify(capsys, *base, "--signer-key", encrypted)
    assert code == 2 and "-pubout" in one_error_line(err)


# --- policies that do not accept the enclave ---------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_policy_for_another_enclave_is_rejected(signed, tmp_path, capsys, fmt):
    other_record = {**signed["record"], "mrenclave": "00" + OTHER[2:]}
    write_policy_files(
        render_policy(other_record, fmt, pin="mrenclave" if fmt != "ehsm" else "both"), tmp_path
    )
    code, lines, err = verify(
        capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", tmp_path / PRIMARY[fmt]
    )
    assert code == 1, err
    fails = failed(lines)
    assert set(fails) == {f"policy:{fmt}"}
    assert "rejects this enclave" in fails[f"policy:{fmt}"]
    # The detail names the pinned value that differs (BigDL drops the leading zeros).
    assert OTHER[2:] in fails[f"policy:{fmt}"]


def test_policy_details_name_the_field(signed, tmp_path, capsys):
    env = tmp_path / "strict.env"
    env.write_text(
        f"RA_TLS_MRENCLAVE=any\nRA_TLS_MRSIGNER={signed['record']['mrsigner']}\n"
        "RA_TLS_ISV_PROD_ID=7\nRA_TLS_ISV_SVN=4\n"
    )
    code, lines, _ = verify(capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", env)
    assert code == 1
    assert (
        "RA_TLS_ISV_SVN=4 (a minimum) but the enclave's ISVSVN is 3"
        in failed(lines)["policy:gramine-ratls"]
    )
    maa = tmp_path / "maa.txt"
    maa.write_text(
        "version=1.0;\nauthorizationrules\n{\n"
        '    [ type=="x-ms-sgx-product-id", value==8 ] => permit();\n'
        '    [ type=="x-ms-sgx-svn", value>=9 ] => permit();\n};\n'
    )
    code, lines, _ = verify(
        capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", maa, *signed["pin"]
    )
    assert code == 1
    detail = failed(lines)["policy:maa"]
    assert "x-ms-sgx-product-id == 8" in detail and "x-ms-sgx-svn >= 9" in detail
    # Either permit rule alone is enough.
    maa.write_text(
        "version=1.0;\nauthorizationrules\n{\n"
        '    [ type=="x-ms-sgx-product-id", value==8 ] => permit();\n'
        '    [ type=="x-ms-sgx-svn", value>=3 ] => permit();\n};\n'
    )
    assert (
        verify(
            capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", maa, *signed["pin"]
        )[0]
        == 0
    )


def test_debug_policy_rules(signed, tmp_path):
    """A policy that only admits debug enclaves rejects this release enclave, and vice versa."""
    from ppml_build.policy.evaluate import QuoteValues
    from ppml_build.verify.policies import evaluate_policy

    record = signed["record"]
    write_policy_files(
        render_policy({**record, "debug": True}, "marblerun", pin="mrenclave", allow_debug=True),
        tmp_path,
    )
    doc = load_policy(tmp_path / "marblerun-packages.json")
    release = QuoteValues(record["mrenclave"], record["mrsigner"], 7, 3, False, 0x4, 0x3, APP)
    debug = QuoteValues(record["mrenclave"], record["mrsigner"], 7, 3, True, 0x6, 0x3, APP)
    assert not evaluate_policy(doc, release).ok  # MarbleRun: Debug must equal the flag
    assert evaluate_policy(doc, debug).ok
    write_policy_files(render_policy(record, "trustee"), tmp_path)
    trustee = load_policy(tmp_path / "trustee-policy.rego")
    assert evaluate_policy(trustee, release).ok
    check = evaluate_policy(trustee, debug)
    assert not check.ok and "configuration = 36" in check.detail


# --- unusable input: exit 2, one line ----------------------------------------------------------


def test_unusable_inputs_exit_2_with_one_line(signed, tmp_path, capsys):
    out = copy_tree(signed["out"], tmp_path / "out")
    (out / f"{APP}.sig").write_bytes((out / f"{APP}.sig").read_bytes()[:100])
    code, _, err = verify(capsys, out, "--rootfs", signed["rootfs"])
    assert code == 2 and "not a 1808-byte SIGSTRUCT" in one_error_line(err)

    (out / f"{APP}.sig").write_bytes(bytes(1808))
    code, _, err = verify(capsys, out, "--rootfs", signed["rootfs"])
    assert code == 2 and "not a SIGSTRUCT" in one_error_line(err)

    code, _, err = verify(capsys, signed["out"])
    assert code == 2 and "--rootfs" in one_error_line(err)

    code, _, err = verify(capsys, tmp_path / "no-such-dir")
    assert code == 2 and "no such directory" in one_error_line(err)
    code, _, err = verify(capsys, signed["out"] / f"{APP}.sig")
    assert code == 2 and "not a directory" in one_error_line(err)

    bad = tmp_path / "record.json"
    bad.write_text("{not json")
    code, _, err = verify(capsys, signed["out"], "--rootfs", signed["rootfs"], "--record", bad)
    assert code == 2 and "record.json: not JSON" in one_error_line(err)
    bad.write_text(json.dumps({**signed["record"], "mrenclave": "xyz"}))
    code, _, err = verify(capsys, signed["out"], "--rootfs", signed["rootfs"], "--record", bad)
    assert code == 2 and "'mrenclave' must be 64 hex" in one_error_line(err)

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(signed["policies"] / "trustee-policy.rego", lonely)
    code, _, err = verify(
        capsys,
        signed["out"],
        "--rootfs",
        signed["rootfs"],
        "--policy",
        lonely / "trustee-policy.rego",
    )
    assert code == 2 and "trustee-policy.rvps.json" in one_error_line(err)

    unknown = tmp_path / "policy.yaml"
    unknown.write_text("hello: world\n")
    code, _, err = verify(capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", unknown)
    assert code == 2 and "unknown policy format" in one_error_line(err)

    broken = tmp_path / "broken.rego"
    broken.write_text("package ita\nmatch if {\n")
    code, lines, err = verify(
        capsys, signed["out"], "--rootfs", signed["rootfs"], "--policy", broken
    )
    assert code == 2 and "Rego engine rejected" in one_error_line(err)
    assert lines == []  # the Rego engine's own error dump stays off stdout

    two = copy_tree(signed["out"], tmp_path / "two")
    shutil.copy(two / f"{APP}.manifest.sgx", two / "other.manifest.sgx")
    code, _, err = verify(capsys, two, "--rootfs", signed["rootfs"])
    assert code == 2 and "--name" in one_error_line(err)
    code, _, _ = verify(capsys, two, "--rootfs", signed["rootfs"], "--name", APP, *signed["pin"])
    assert code == 0


# --- --verify-reproducible ---------------------------------------------------------------------


def test_first_difference_order():
    first = [{"path": "/a", "sha256": "1"}, {"path": "/b", "sha256": "2"}]
    assert reproducible.first_trusted_difference(first, list(first)) is None
    changed = [{"path": "/a", "sha256": "1"}, {"path": "/b", "sha256": "3"}]
    assert (
        reproducible.first_difference((first, changed), (b"x", b"y"))
        == "trusted file /b: sha256 2 in build 1, 3 in build 2"
    )
    assert "in build 2 only" in reproducible.first_trusted_difference(
        first, first + [{"path": "/c", "sha256": "4"}]
    )
    assert (
        reproducible.first_difference((first, first), (b"a\nb\nc\n", b"a\nB\nc\n"))
        == "manifest line 2: 'b' in build 1, 'B' in build 2"
    )

    def libpals():
        return "/gramine/sgx/libpal.so", b"one", b"two"

    assert reproducible.first_difference((first, first), (b"m", b"m"), libpals).startswith(
        "libpal.so (/gramine/sgx/libpal.so): sha256 "
    )
    assert (
        reproducible.libpal_path_of(
            b'[loader.entrypoint]\nuri = "file:/opt/gramine/lib/libsysdb.so"\n'
        )
        == "/opt/gramine/lib/sgx/libpal.so"
    )


class FakeBuilds:
    """Stands in for ppml_build.pipeline.backends.build: writes the outputs a build would, records calls."""

    def __init__(self, mrenclaves: list[str], trusted: list[list[dict]]) -> None:
        self.mrenclaves, self.trusted = mrenclaves, trusted
        self.calls: list[dict] = []

    def __call__(self, options, say=lambda line: None):
        index = len(self.calls)
        self.calls.append(
            {
                "options": options,
                "cache": str(options.cache.root),
                "environment": os.environ.get("PPML_BUILD_CACHE_DIR"),
            }
        )
        say("building")
        out = Path(options.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "trusted-files.json").write_text(json.dumps({"files": self.trusted[index]}))
        (out / "app.manifest.sgx").write_text('[loader.entrypoint]\nuri = "file:/g/libsysdb.so"\n')
        record = {
            "name": "app",
            "mrenclave": self.mrenclaves[index],
            "base": {"digest": "sha256:" + "1" * 64},
            "image": {"digest": None},
        }
        (out / "measurement.json").write_text(json.dumps(record))
        return BuildResult(
            record, out / "measurement.json", out, options.tag or "ppml/app:latest", {}, []
        )


def test_verify_reproducible_builds_twice_from_scratch(tmp_path, monkeypatch):
    files = [{"path": "/app/job.py", "sha256": "aa", "size": 1}]
    fake = FakeBuilds(["11" * 32, "11" * 32], [files, files])
    monkeypatch.setattr(backends, "build", fake)
    removed: list[str] = []
    monkeypatch.setattr(reproducible, "_remove_image", removed.append)
    monkeypatch.setenv("PPML_BUILD_CACHE_DIR", str(tmp_path / "user-cache"))
    said: list[str] = []
    options = BuildOptions(
        recipe=tmp_path / "recipe.yaml",
        key=tmp_path / "k.pem",
        output_dir=tmp_path / "out",
        tag="reg/app:1",
        policies=["ita"],
    )
    result = reproducible.verify_reproducible(options, said.append)
    assert result.reproducible and result.mrenclave == "11" * 32
    first, second = fake.calls
    assert first["options"].no_cache and second["options"].no_cache
    assert not first["options"].push and not second["options"].push
    assert first["options"].tag == "reg/app:1" and first["options"].output_dir == tmp_path / "out"
    assert first["options"].policies == ("ita",)
    assert second["options"].tag == "reg/app:1-reproducible-check"
    assert second["options"].output_dir != first["options"].output_dir
    assert first["cache"] != second["cache"]
    assert str(tmp_path / "user-cache") not in (first["cache"], second["cache"])
    # ... handed to each build, never through the environment (which stays the user's)
    assert first["environment"] == second["environment"] == str(tmp_path / "user-cache")
    assert os.environ["PPML_BUILD_CACHE_DIR"] == str(tmp_path / "user-cache")
    assert removed == ["reg/app:1-reproducible-check"]
    assert "[build 1/2] building" in said and "[build 2/2] building" in said
    assert result.build.output_dir == tmp_path / "out"


def test_verify_reproducible_names_the_first_differing_input(tmp_path, monkeypatch):
    files = [
        {"path": "/app/job.py", "sha256": "aa", "size": 1},
        {"path": "/opt/spark/jars/x.jar", "sha256": "bb", "size": 1},
    ]
    drifted = [files[0], {**files[1], "sha256": "cc"}]
    monkeypatch.setattr(backends, "build", FakeBuilds(["11" * 32, "22" * 32], [files, drifted]))
    removed: list[str] = []
    monkeypatch.setattr(reproducible, "_remove_image", removed.append)
    options = BuildOptions(
        recipe=tmp_path / "recipe.yaml", key=tmp_path / "k.pem", output_dir=tmp_path / "out"
    )
    with pytest.raises(reproducible.NotReproducibleError) as caught:
        reproducible.verify_reproducible(options)
    message = str(caught.value)
    assert caught.value.exit_code == 1
    assert "not reproducible" in message and "11" * 32 in message and "22" * 32 in message
    assert "trusted file /opt/spark/jars/x.jar: sha256 bb in build 1, cc in build 2" in message
    assert caught.value.result.difference.startswith("trusted file /opt/spark/jars/x.jar")
    assert removed == ["ppml/app:latest-reproducible-check"]  # the check image never stays
