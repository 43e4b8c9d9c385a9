"""`ppml-build verify` on real images (one export stream each), tampered one way at a time, and
`build --verify-reproducible` (two from-scratch builds) end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Fixtures shared with the build tests: the stand-in bases pushed to the auth registry, the
# signing key and the isolated caches (autouse).
from test_build import SPARK_RECIPE, copy_recipe, file_from_image

from ppml_build.cli import main
from ppml_build.gramine.signing import tbs_sigstruct
from ppml_build.image.docker_build import build_image
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions
from ppml_build.pipeline.reproducible import verify_reproducible
from ppml_build.sign import keys
from ppml_build.sign.elf import read_pal_image
from ppml_build.sign.sigstruct import Sigstruct

pytestmark = pytest.mark.docker

APP = "pyspark-sql-agg"
TAG = "ppml-test/verify:it"
POLICIES = ("gramine-ratls", "ita", "trustee", "ehsm", "marblerun", "maa", "bigdl")
LIBPAL = "/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so"


@pytest.fixture(scope="module")
def built(pushed_bases, key, registry, tmp_path_factory, docker_client):
    remote, digest = pushed_bases["spark"]
    work = tmp_path_factory.mktemp("verify-image")
    recipe = copy_recipe(SPARK_RECIPE, work / "recipe", remote, digest)
    out = work / "out"
    result = backends.build(
        BuildOptions(
            recipe=recipe,
            key=key,
            output_dir=out,
            tag=TAG,
            registry_auth=registry.auth_file,
            date="2026-11-01",
            policies=list(POLICIES),
        )
    )
    tags: list[str] = [TAG]
    yield {"result": result, "out": out, "work": work, "tags": tags, "recipe": recipe}
    for tag in tags:
        try:
            docker_client.api.remove_image(tag)
        except Exception:
            pass


def derive(
    client,
    built,
    tag: str,
    files: dict[str, bytes] | None = None,
    labels: dict[str, str] | None = None,
) -> str:
    """A new image on top of the built one: one layer replacing ``files``, or new labels."""
    context = built["work"] / f"ctx-{tag.replace('/', '-').replace(':', '-')}"
    context.mkdir()
    lines = [f"FROM {TAG}"]
    for index, (path, data) in enumerate((files or {}).items()):
        (context / f"f{index}").write_bytes(data)
        lines.append(f"COPY f{index} {path}")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    build_image(client, context, tag=tag, labels=labels)
    built["tags"].append(tag)
    return tag


def verify(capsys, *args) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main(["verify", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def failed(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        if line.startswith("FAIL "):
            name, _, detail = line[5:].partition(": ")
            out[name] = detail
    return out


def error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("ppml-build: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def policy_args(out: Path) -> list[str | Path]:
    names = [
        "ra-tls.env",
        "ita-policy.rego",
        "trustee-policy.rego",
        "ehsm-quote-policy.json",
        "marblerun-packages.json",
        "maa-policy.txt",
        "bigdl-policies.json",
    ]
    args: list[str | Path] = []
    for name in names:
        args += ["--policy", out / name]
    return args


def test_built_image_verifies_against_record_labels_and_policies(built, capsys):
    out = built["out"]
    code, lines, err = verify(capsys, TAG, "--record", out, *policy_args(out))
    assert code == 0, "\n".join(lines) + err
    assert all(line.startswith("ok   ") for line in lines[:-1]), lines
    text = "\n".join(lines)
    record = built["result"].record
    for name in (
        "label:ppml.mrenclave",
        "label:ppml.mrsigner",
        "label:ppml.base.digest",
        "manifest_copy",
        "record:trusted_files",
        "loader.entrypoint",
        *(f"policy:{fmt}" for fmt in POLICIES),
    ):
        assert f"ok   {name}" in text, name
    assert f"all {record['trusted_files']['count']} match the image" in text
    assert lines[-1].endswith(f"MRENCLAVE {record['mrenclave']}")


def test_json_report_on_an_image(built, capsys):
    record = built["result"].record
    code, lines, _ = verify(capsys, TAG, "--json", "--mrsigner", record["mrsigner"])
    assert code == 0
    report = json.loads("\n".join(lines))
    assert report["ok"] is True and report["name"] == APP
    assert report["mrenclave"] == record["mrenclave"]
    assert report["warning"] is None and report["pinned_by"] == ["--mrsigner"]


def test_unanchored_image_is_reported_as_such(built, capsys):
    code, lines, err = verify(capsys, TAG)
    assert code == 1
    assert lines[0].startswith("WARNING: nothing pins the signer")
    assert set(failed(lines)) == {"trust_anchor"}
    assert "--allow-unpinned" in error_line(err)
    code, lines, _ = verify(capsys, TAG, "--allow-unpinned")
    assert code == 0 and lines[0].startswith("WARNING: nothing pins the signer")
    assert lines[-1].startswith("self-consistent only, nothing pins the signer")


def test_changed_trusted_file_in_a_new_layer(built, capsys, docker_client):
    listing = json.loads((built["out"] / "trusted-files.json").read_text())["files"]
    jar = next(f["path"] for f in listing if f["path"].endswith(".jar"))
    tag = derive(
        docker_client,
        built,
        "ppml-test/verify:changed-file",
        files={"/app/job.py": b"print('not the job that was signed')\n", jar: b"PK not the jar"},
    )
    code, lines, err = verify(capsys, tag, "--record", built["out"])
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"trusted_files", "trusted_file:/app/job.py", f"trusted_file:{jar}"}
    assert "2 of " in fails["trusted_files"]
    assert "changed" in fails["trusted_file:/app/job.py"]
    line = error_line(err)
    assert "trusted_file:/app/job.py" in line and jar in line


def test_changed_manifest(built, capsys, docker_client):
    manifest = (built["out"] / f"{APP}.manifest.sgx").read_text()
    assert 'SPARK_LOCAL_IP = "127.0.0.1"' in manifest
    changed = manifest.replace('SPARK_LOCAL_IP = "127.0.0.1"', 'SPARK_LOCAL_IP = "0.0.0.0"')
    tag = derive(
        docker_client,
        built,
        "ppml-test/verify:changed-manifest",
        files={f"/ppml/{APP}.manifest.sgx": changed.encode()},
    )
    code, lines, err = verify(capsys, tag, "--record", built["out"])
    assert code == 1
    fails = failed(lines)
    # The labels still carry the signed MRENCLAVE: they now disagree with the recomputed one.
    assert set(fails) == {
        "mrenclave",
        "manifest_copy",
        "record:mrenclave",
        "record:manifest_sha256",
        "label:ppml.mrenclave",
        "label:org.opencontainers.image.version",
    }
    assert "changed after signing" in fails["mrenclave"]
    assert "mrenclave" in error_line(err)


def test_swapped_sig(built, capsys, docker_client, key):
    """A valid SIGSTRUCT for the same manifest, signed by someone else."""
    manifest = (built["out"] / f"{APP}.manifest.sgx").read_bytes()
    pal = read_pal_image(file_from_image(docker_client, TAG, LIBPAL))
    ours = Sigstruct.from_bytes((built["out"] / f"{APP}.sig").read_bytes())
    theirs = keys.sign_sigstruct(
        tbs_sigstruct(manifest, pal, ours.date_bcd, source="test"),
        keys.generate_key(),
        source="test",
    )
    tag = derive(
        docker_client,
        built,
        "ppml-test/verify:swapped-sig",
        files={f"/ppml/{APP}.sig": theirs.to_bytes()},
    )
    code, lines, _ = verify(
        capsys, tag, "--record", built["out"], "--policy", built["out"] / "ita-policy.rego"
    )
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"label:ppml.mrsigner", "record:mrsigner", "policy:ita"}
    assert theirs.mrsigner.hex() in fails["label:ppml.mrsigner"]
    # Pinned by the key alone, the swap is caught too; unpinned, only the labels tell.
    code, lines, _ = verify(capsys, tag, "--signer-key", key)
    assert code == 1
    assert set(failed(lines)) == {"label:ppml.mrsigner", "pin:signer_key"}
    code, lines, _ = verify(capsys, tag, "--allow-unpinned")
    assert code == 1 and lines[0].startswith("WARNING: nothing pins the signer")
    assert set(failed(lines)) == {"label:ppml.mrsigner"}


def test_changed_label(built, capsys, docker_client):
    tag = derive(
        docker_client,
        built,
        "ppml-test/verify:relabelled",
        labels={"ppml.mrenclave": "0" * 64, "ppml.debug": "true"},
    )
    code, lines, _ = verify(capsys, tag, "--mrsigner", built["result"].record["mrsigner"])
    assert code == 1
    fails = failed(lines)
    assert set(fails) == {"label:ppml.mrenclave", "label:ppml.debug"}
    assert "0" * 64 in fails["label:ppml.mrenclave"]


def test_missing_image_is_one_line_exit_2(docker_client, capsys):
    code, lines, err = verify(capsys, "ppml-test/no-such-image:nope")
    assert code == 2 and lines == []
    assert "no such image in the local Docker engine" in error_line(err)


def test_not_a_ppml_image_is_one_line_exit_2(docker_client, debian_base, capsys):
    code, _, err = verify(capsys, debian_base.reference)
    assert code == 2 and "/ppml/" in error_line(err)


def test_verify_reproducible_two_scratch_builds(
    built, pushed_bases, key, registry, tmp_path, capsys, docker_client
):
    remote, digest = pushed_bases["spark"]
    recipe = copy_recipe(SPARK_RECIPE, tmp_path / "recipe", remote, digest)
    options = BuildOptions(
        recipe=recipe,
        key=key,
        output_dir=tmp_path / "out",
        tag="ppml-test/verify:repro",
        registry_auth=registry.auth_file,
        date="2026-11-01",
    )
    said: list[str] = []
    result = verify_reproducible(options, said.append)
    built["tags"].append("ppml-test/verify:repro")
    assert result.reproducible
    assert result.mrenclave == result.check_mrenclave == built["result"].record["mrenclave"]
    # From scratch: nothing from a cache in either build.
    assert any(
        line.startswith(
            (
                "[build 2/2] indexing the base image",
                "[build 2/2] base image index: read from the registry",
            )
        )
        for line in said
    ), said
    assert not any("reused from the cache" in line for line in said)
    # The throw-away image is gone, the kept one verifies against its record.
    assert not docker_client.images.list(name="ppml-test/verify:repro-reproducible-check")
    code, lines, err = verify(capsys, "ppml-test/verify:repro", "--record", tmp_path / "out")
    assert code == 0, "\n".join(lines) + err
