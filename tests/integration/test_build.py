"""`ppml-build build` end to end: real engine, real registry with auth, real Spark and Flink.

The base images carry real Gramine 1.9 (built from its source tarballs; see conftest's
gramine_bases), so what is measured here is the real SGX libpal.so.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ppml_build.cli import main
from ppml_build.gramine import build as build_module
from ppml_build.image import app_layer, engine
from ppml_build.image.native import run_native
from ppml_build.image.tarfs import keep_paths
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions
from ppml_build.recipe import load_recipe
from ppml_build.sign.elf import read_pal_image
from ppml_build.sign.measure import measure_manifest
from ppml_build.sign.sigstruct import Sigstruct, verify_q1_q2, verify_signature

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parents[2]
SPARK_RECIPE = PROJECT / "recipes/spark/pyspark-sql-agg"
FLINK_RECIPE = PROJECT / "recipes/flink/pyflink-table"
LIBPAL = "/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so"


def copy_recipe(
    source: Path,
    target: Path,
    base_image: str,
    digest: str | None = None,
    recipe_file: str = "recipe.yaml",
) -> Path:
    shutil.copytree(source, target)
    recipe = target / recipe_file
    text = re.sub(r"(?m)^  image: .*$", f"  image: {base_image}", recipe.read_text())
    if digest:
        text = text.replace(f"  image: {base_image}", f"  image: {base_image}\n  digest: {digest}")
    recipe.write_text(text)
    return recipe


def build_cli(recipe: Path, key: Path, registry, out: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    code = main(
        [
            "build",
            str(recipe),
            "--key",
            str(key),
            "--registry-auth",
            str(registry.auth_file),
            "--output-dir",
            str(out),
            "--date",
            "2026-11-01",
            "--json",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out) | {"_stderr": captured.err}


def file_from_image(client, image: str, path: str) -> bytes:
    container = client.containers.create(image, entrypoint=["/nonexistent"], network_mode="none")
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            member = archive.next()
            return archive.extractfile(member).read()
    finally:
        container.remove(force=True)


def expected_spark_lines() -> list[str]:
    regions = ["north", "south", "east", "west"]
    totals: dict[str, list[int]] = {r: [0, 0] for r in regions}
    for i in range(1, 1001):
        region = regions[i % 4]
        totals[region][0] += 1
        totals[region][1] += ((i % 7) + 1) * 10 * ((i % 5) + 1)
    return [f"RESULT {r} orders={n} revenue={rev}" for r, (n, rev) in sorted(totals.items())]


@pytest.fixture(scope="module")
def spark_build(pushed_bases, key, registry, tmp_path_factory):
    """One Spark build shared by several tests (through the Python API; the CLI is used below)."""
    remote, _ = pushed_bases["spark"]
    work = tmp_path_factory.mktemp("spark")
    recipe = copy_recipe(SPARK_RECIPE, work / "recipe", remote)
    out = work / "out"
    result = backends.build(
        BuildOptions(
            recipe=recipe,
            key=key,
            output_dir=out,
            tag="ppml-test/pyspark-sql-agg:it",
            registry_auth=registry.auth_file,
            date="2026-11-01",
            policies=["gramine-ratls"],
        )
    )
    summary = {"mrenclave": result.record["mrenclave"], "mrsigner": result.record["mrsigner"]}
    return {"recipe": recipe, "out": out, "summary": summary, "work": work, "stats": result.stats}


def test_spark_record_labels_and_sigstruct_agree(spark_build, docker_client):
    out = spark_build["out"]
    record = json.loads((out / "measurement.json").read_text())
    summary = spark_build["summary"]
    assert record["schema"] == "ppml-build/measurement/v1"
    assert record["mrenclave"] == summary["mrenclave"] and len(record["mrenclave"]) == 64
    assert record["libos"] == {"type": "gramine", "version": "1.9"}
    assert record["debug"] is False and record["isv_prod_id"] == 1
    assert record["base"]["digest"].startswith("sha256:")
    listing = json.loads((out / "trusted-files.json").read_text())["files"]
    assert record["trusted_files"]["count"] == len(listing) > 100

    image = docker_client.images.get("ppml-test/pyspark-sql-agg:it")
    labels = image.labels
    assert labels["ppml.mrenclave"] == record["mrenclave"]
    assert labels["ppml.mrsigner"] == record["mrsigner"]
    assert labels["ppml.isv_prod_id"] == "1" and labels["ppml.debug"] == "false"
    assert labels["ppml.base.digest"] == record["base"]["digest"]
    assert labels["org.opencontainers.image.title"] == "pyspark-sql-agg"

    # The .sig inside the image verifies and names the recorded MRENCLAVE/MRSIGNER.
    sig_bytes = file_from_image(docker_client, image.id, "/ppml/pyspark-sql-agg.sig")
    sig = Sigstruct.from_bytes(sig_bytes)
    assert verify_signature(sig) and verify_q1_q2(sig)
    assert sig.mrenclave.hex() == record["mrenclave"] and sig.mrsigner.hex() == record["mrsigner"]
    sig_file = spark_build["work"] / "in-image.sig"
    sig_file.write_bytes(sig_bytes)
    assert main(["sigstruct-view", str(sig_file)]) == 0

    # Independent re-measurement of the image's own manifest and libpal.so.
    manifest = file_from_image(docker_client, image.id, "/ppml/pyspark-sql-agg.manifest.sgx")
    pal = read_pal_image(file_from_image(docker_client, image.id, LIBPAL))
    assert measure_manifest(manifest, pal).hex() == record["mrenclave"]
    assert (out / "pyspark-sql-agg.manifest.sgx").read_bytes() == manifest
    # And the policy written next to the record pins the same values.
    env = (out / "ra-tls.env").read_text()
    assert f"RA_TLS_MRENCLAVE={record['mrenclave']}" in env


def test_spark_job_runs_natively_and_prints_the_right_answer(spark_build, docker_client):
    recipe = load_recipe(spark_build["recipe"])
    result = run_native(docker_client, "ppml-test/pyspark-sql-agg:it", recipe)
    assert result.exit_code == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines == expected_spark_lines()


def test_manifest_from_cached_index_equals_manifest_from_a_real_export(spark_build, docker_client):
    """The base index (read from the registry's layers during the pull) + app-layer model
    must see exactly what the built image holds."""
    from ppml_build.gramine.render import render_for_rootfs
    from ppml_build.pipeline.stages import load_and_plan

    assert spark_build["stats"]["base_index_source"] == "registry"

    recipe, plan = load_and_plan(spark_build["recipe"])
    # The renderer reads what the support stage left in /ppml/launch (Spark's launcher output).
    fs = engine.export_image_rootfs(
        docker_client,
        "ppml-test/pyspark-sql-agg:it",
        keep=lambda path: keep_paths(LIBPAL)(path) or path.startswith("/ppml/launch/"),
    )
    rendered = render_for_rootfs(recipe, plan, fs, "export")
    assert rendered.data == (spark_build["out"] / "pyspark-sql-agg.manifest.sgx").read_bytes()


def test_base_index_from_an_engine_export_gives_the_same_mrenclave(
    spark_build, key, registry, capsys
):
    """--base-index engine (no caches: really exported) measures what the registry path did."""
    first = spark_build["summary"]
    exported = build_cli(
        spark_build["recipe"],
        key,
        registry,
        spark_build["work"] / "out-engine",
        capsys,
        "--tag",
        "ppml-test/pyspark-sql-agg:engine",
        "--base-index",
        "engine",
        "--no-cache",
    )
    assert exported["stats"]["base_index_source"] == "export"
    assert exported["mrenclave"] == first["mrenclave"]


def test_rebuild_is_reproducible_cached_and_rehashes_only_the_change(
    spark_build, key, registry, capsys
):
    first = spark_build["summary"]
    again = build_cli(
        spark_build["recipe"],
        key,
        registry,
        spark_build["work"] / "out2",
        capsys,
        "--tag",
        "ppml-test/pyspark-sql-agg:it2",
    )
    assert again["mrenclave"] == first["mrenclave"]
    assert again["stats"]["base_index_cached"] is True
    assert again["stats"]["app_files_hashed"] == 0
    job = spark_build["recipe"].parent / "job.py"
    job.write_text(job.read_text() + "# changed\n")
    changed = build_cli(
        spark_build["recipe"],
        key,
        registry,
        spark_build["work"] / "out3",
        capsys,
        "--tag",
        "ppml-test/pyspark-sql-agg:it3",
    )
    assert changed["mrenclave"] != first["mrenclave"]
    assert changed["mrsigner"] == first["mrsigner"]
    assert changed["stats"]["app_files_hashed"] == 1


@pytest.mark.parametrize("cluster", [False, True], ids=["one-enclave", "cluster-roles"])
def test_no_key_material_anywhere(
    pushed_bases, key, registry, tmp_path, capsys, docker_client, monkeypatch, cluster
):
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    numbers = private.private_numbers()
    pem_lines = [
        line for line in key.read_bytes().splitlines() if line and not line.startswith(b"-----")
    ]
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    needles = [line for line in pem_lines if len(line) >= 40] + [
        der[40:104],
        numbers.d.to_bytes(384, "big")[:48],
        numbers.p.to_bytes(192, "big")[:48],
        numbers.d.to_bytes(384, "little")[:48],
        base64.b64encode(der)[40:100],
    ]
    # The registry password too, bare and in the Basic header form the base-index reader sends.
    needles += [
        registry.password.encode(),
        base64.b64encode(f"{registry.username}:{registry.password}".encode()),
    ]

    def scan(blob: bytes, where: str) -> None:
        for needle in needles:
            assert needle not in blob, f"key material or registry password found in {where}"

    contexts: list[Path] = []
    real_build_image = build_module.build_image

    def scanning_build_image(client, context, **kwargs):
        for path in Path(context).rglob("*"):
            if path.is_file():
                scan(path.read_bytes(), f"build context {path.name}")
        contexts.append(Path(context))
        return real_build_image(client, context, **kwargs)

    monkeypatch.setattr(build_module, "build_image", scanning_build_image)  # the final image
    monkeypatch.setattr(app_layer, "build_image", scanning_build_image)  # the app layer
    remote, _ = pushed_bases["spark"]
    recipe = copy_recipe(SPARK_RECIPE, tmp_path / "recipe", remote)
    if cluster:  # an enclave per role, in the same two builds
        recipe.write_text(recipe.read_text() + "\ncluster:\n  roles: [driver, executor]\n")
    summary = build_cli(
        recipe,
        key,
        registry,
        tmp_path / "out",
        capsys,
        "--tag",
        "ppml-test/keyscan:it",
        "--policy",
        "ita",
    )
    assert len(contexts) == 2  # app layer and final image, both scanned
    scan(summary["_stderr"].encode() + json.dumps(summary).encode(), "the build's output")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():  # a cluster's roles/<role>/ records and policies too
            scan(path.read_bytes(), f"output {path.name}")
    history = docker_client.api.history("ppml-test/keyscan:it")
    scan(json.dumps(history).encode(), "docker history")
    scan(
        json.dumps(docker_client.api.inspect_image("ppml-test/keyscan:it")).encode(), "image config"
    )
    for path in Path(os.environ["PPML_BUILD_CACHE_DIR"]).rglob("*"):
        if path.is_file():  # hash cache and base indexes (gzip'd JSON)
            data = path.read_bytes()
            scan(gzip.decompress(data) if path.suffix == ".gz" else data, f"cache {path.name}")
    saved = b"".join(docker_client.images.get("ppml-test/keyscan:it").save(named=True))
    scan(saved, "docker save")
    # and the layers are really in there: the manifest we wrote is found in the save stream
    enclave = "pyspark-sql-agg-driver" if cluster else "pyspark-sql-agg"
    assert (tmp_path / "out" / f"{enclave}.manifest.sgx").read_bytes()[
        :200
    ] in saved or f"{enclave}.manifest.sgx".encode() in saved


def test_flink_build_and_native_run(pushed_bases, key, registry, tmp_path, capsys, docker_client):
    remote, digest = pushed_bases["flink"]
    recipe_path = copy_recipe(FLINK_RECIPE, tmp_path / "recipe", remote, digest)
    summary = build_cli(
        recipe_path, key, registry, tmp_path / "out", capsys, "--tag", "ppml-test/pyflink-table:it"
    )
    record = json.loads((tmp_path / "out" / "measurement.json").read_text())
    assert record["mrenclave"] == summary["mrenclave"] and record["base"]["digest"] == digest
    result = run_native(docker_client, "ppml-test/pyflink-table:it", load_recipe(recipe_path))
    assert result.exit_code == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    words = "to be or not to be that is the question".split()
    assert lines == [f"RESULT {w} {words.count(w)}" for w in sorted(set(words))]


# --- failures: one line, exit 2, nothing written ---------------------------------------------


def fail_cli(recipe: Path, key: Path, auth: Path, out: Path, capsys, env=None) -> str:
    capsys.readouterr()
    code = main(
        [
            "build",
            str(recipe),
            "--key",
            str(key),
            "--registry-auth",
            str(auth),
            "--output-dir",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert not out.exists()
    errors = [line for line in err if line.startswith("ppml-build: error: ")]
    assert len(errors) == 1
    return errors[0]


def test_wrong_registry_password(pushed_bases, key, registry, tmp_path, capsys):
    remote, _ = pushed_bases["spark"]
    recipe = copy_recipe(SPARK_RECIPE, tmp_path / "recipe", remote)
    bad = tmp_path / "auth.json"
    bad.write_text(json.dumps({"username": registry.username, "password": "wrong-password"}))
    line = fail_cli(recipe, key, bad, tmp_path / "out", capsys)
    assert "wrong-password" not in line
    assert "credentials" in line or "unauthorized" in line.lower() or "401" in line


def test_missing_base_image(pushed_bases, key, registry, tmp_path, capsys):
    recipe = copy_recipe(
        SPARK_RECIPE, tmp_path / "recipe", f"{registry.address}/ppml/no-such-image:1"
    )
    line = fail_cli(recipe, key, registry.auth_file, tmp_path / "out", capsys)
    assert "no-such-image" in line


def test_digest_mismatch(pushed_bases, key, registry, tmp_path, capsys):
    remote, _ = pushed_bases["spark"]
    recipe = copy_recipe(SPARK_RECIPE, tmp_path / "recipe", remote, "sha256:" + "0" * 64)
    line = fail_cli(recipe, key, registry.auth_file, tmp_path / "out", capsys)
    assert "pin" in line and "0" * 64 in line


def test_docker_not_running(pushed_bases, key, registry, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    remote, _ = pushed_bases["spark"]
    recipe = copy_recipe(SPARK_RECIPE, tmp_path / "recipe", remote)
    line = fail_cli(recipe, key, registry.auth_file, tmp_path / "out", capsys)
    assert "cannot reach the Docker engine" in line and "docker-up.sh" in line


def test_push_records_the_pushed_digest(
    pushed_bases, key, registry, tmp_path, capsys, docker_client
):
    remote, _ = pushed_bases["spark"]
    recipe = copy_recipe(SPARK_RECIPE, tmp_path / "recipe", remote)
    target = f"{registry.address}/ppml/pyspark-sql-agg:pushed"
    summary = build_cli(recipe, key, registry, tmp_path / "out", capsys, "--tag", target, "--push")
    record = json.loads((tmp_path / "out" / "measurement.json").read_text())
    assert record["image"]["reference"] == target
    digest = record["image"]["digest"]
    assert digest and digest.startswith("sha256:")
    assert engine.registry_digest(docker_client, target, auth=registry.auth) == digest
    assert summary["mrenclave"] == record["mrenclave"]


def test_push_needs_a_registry_in_the_tag(pushed_bases, key, registry, tmp_path, capsys):
    remote, _ = pushed_bases["spark"]
    recipe = copy_recipe(SPARK_RECIPE, tmp_path / "recipe", remote)
    capsys.readouterr()
    code = main(
        [
            "build",
            str(recipe),
            "--key",
            str(key),
            "--registry-auth",
            str(registry.auth_file),
            "--output-dir",
            str(tmp_path / "out"),
            "--push",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--push needs --tag with a registry" in err
    assert not (tmp_path / "out").exists()
