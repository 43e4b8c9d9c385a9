"""Encrypted data end to end, judged by Gramine 1.9 itself (recipes/spark/spark-encrypted-csv):

- files `ppml-build encrypt` wrote are read by the job under gramine-direct (fixed test key) and
  by `gramine-sgx-pf-crypt decrypt` from the real Gramine base; files Gramine wrote (its tool,
  and the job's own output) are decrypted by `ppml-build decrypt`, byte-identical;
- one byte changed, a truncated or a renamed file is refused by Gramine and by `decrypt`;
- the job's result, decrypted, equals the result of the same job run natively on plaintext.

The production recipe (recipe.yaml: secret provisioning) needs SGX attestation, so the LibOS
runs its test-key twin (recipe.test-key.yaml) for the data; the production image itself runs
far enough to show Gramine's provisioning client loads and, without a key server, stops the
process before the app. tests/unit/test_encryption_keys.py checks the provisioning manifest
against Gramine's example and schema.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from test_build import copy_recipe

from ppml_build.cli import main
from ppml_build.gramine.direct import run_direct
from ppml_build.gramine.overrides import ManifestOptions
from ppml_build.image.native import run_native
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions
from ppml_build.recipe import load_recipe

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parents[2]
RECIPE_DIR = PROJECT / "recipes/spark/spark-encrypted-csv"
TEST_KEY = bytes.fromhex("7e577e577e577e577e577e577e577e57")  # recipe.test-key.yaml's
NAME = "spark-encrypted-csv-test-key"


def expected_summary() -> str:
    """The job's summary.csv, computed here from the plaintext input."""
    rows = list(csv.DictReader(io.StringIO((RECIPE_DIR / "data/orders.csv").read_text())))
    groups: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        slot = groups.setdefault((row["region"], row["product"]), [0, 0, 0])
        slot[0] += 1
        slot[1] += int(row["quantity"])
        slot[2] += int(row["quantity"]) * int(row["unit_price_cents"])
    lines = ["region,product,orders,units,revenue_cents"] + [
        f"{r},{p},{o},{u},{c}" for (r, p), (o, u, c) in sorted(groups.items())
    ]
    return "\n".join(lines) + "\n"


def build_bundled(pushed_bases, key, registry, work: Path, recipe_file: str, tag: str, **options):
    """The bundled recipe ``recipe_file``, pinned to the pushed Spark base, built into
    ``work/out``."""
    remote, digest = pushed_bases["spark"]
    recipe = copy_recipe(RECIPE_DIR, work / "recipe", remote, digest, recipe_file)
    result = backends.build(
        BuildOptions(
            recipe=recipe,
            key=key,
            output_dir=work / "out",
            tag=f"ppml-test/spark-encrypted-csv:{tag}",
            registry_auth=registry.auth_file,
            date="2026-11-01",
            **options,
        )
    )
    return recipe, result


@pytest.fixture(scope="module")
def encrypted_build(pushed_bases, key, registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("encrypted")
    recipe, result = build_bundled(
        pushed_bases,
        key,
        registry,
        work,
        "recipe.test-key.yaml",
        "test-key",
        manifest=ManifestOptions(allow_insecure_manifest=True),
    )
    return recipe, result, work


def _dirs(tmp_path: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        path = tmp_path / name
        path.mkdir()
        path.chmod(0o777)
        made.append(path)
    return made


def _volumes(data_in: Path, data_out: Path) -> dict:
    # Read-write even for the input: Gramine 1.9 opens every encrypted file read-write
    # (libos/src/fs/libos_fs_encrypted.c, encrypted_file_internal_open: PAL_ACCESS_RDWR), so on
    # a read-only volume the enclave finds no input at all.
    return {
        "volumes": {
            str(data_in): {"bind": "/data/in", "mode": "rw"},
            str(data_out): {"bind": "/data/out", "mode": "rw"},
        }
    }


def pf_crypt(docker_client, image: str, mounts: dict[Path, str], *args: str):
    """Gramine's own gramine-sgx-pf-crypt, from the image's Gramine; (exit code, output)."""
    container = docker_client.containers.run(
        image,
        ["gramine-sgx-pf-crypt", *args],
        entrypoint=[],
        user="root",
        network_mode="none",
        volumes={str(host): {"bind": inside, "mode": "rw"} for host, inside in mounts.items()},
        detach=True,
    )
    try:
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs().decode("utf-8", "replace")
    finally:
        container.remove(force=True)


def test_the_job_reads_and_writes_encrypted_files_under_gramine_direct(
    encrypted_build, docker_client, tmp_path, capsys
):
    recipe, result, _ = encrypted_build
    data_out, native_out = _dirs(tmp_path, "out", "native-out")
    data_in = tmp_path / "in"
    key_file = tmp_path / "test.key"
    key_file.write_bytes(TEST_KEY)
    args = ["--key", str(key_file), "--recipe", str(recipe)]
    assert (
        main(
            ["encrypt", str(RECIPE_DIR / "data"), str(data_in), *args, "--enclave-path", "/data/in"]
        )
        == 0
    )
    assert b"order_id" not in (data_in / "orders.csv").read_bytes()

    run = run_direct(docker_client, result.image, NAME, extra_args=_volumes(data_in, data_out))
    output = run.stdout + run.stderr
    assert run.exit_code == 0, output[-4000:]
    assert "ROWS orders 800" in run.stdout and "ROWS summary 20" in run.stdout, output[-3000:]
    sealed = (data_out / "summary.csv").read_bytes()
    assert b"region" not in sealed and len(sealed) % 4096 == 0  # the host sees ciphertext

    # Gramine wrote it: our decrypt reads it, at the path the enclave wrote it to.
    capsys.readouterr()
    decrypted = tmp_path / "decrypted"
    assert (
        main(["decrypt", str(data_out), str(decrypted), *args, "--enclave-path", "/data/out"]) == 0
    )
    assert "(bound to /data/out/summary.csv)" in capsys.readouterr().out
    assert (decrypted / "summary.csv").read_text() == expected_summary()

    # The plaintext run: the same image without the LibOS, on the plaintext input.
    plain_in = tmp_path / "plain-in"
    shutil.copytree(RECIPE_DIR / "data", plain_in)
    native = run_native(
        docker_client,
        result.image,
        load_recipe(recipe),
        extra_args=_volumes(plain_in, native_out),
    )
    assert native.exit_code == 0, native.stderr[-3000:]
    assert (native_out / "summary.csv").read_bytes() == (decrypted / "summary.csv").read_bytes()
    print(f"\nspark-encrypted-csv: gramine-direct {run.seconds:.1f} s")


def test_gramine_and_ppml_build_read_each_others_files_and_refuse_the_same_damage(
    encrypted_build, docker_client, tmp_path, capsys
):
    _, result, _ = encrypted_build
    image = result.image
    work = tmp_path / "w"
    work.mkdir()
    (work / "k").write_bytes(TEST_KEY)
    plain = work / "plain"
    plain.mkdir()
    (plain / "small.txt").write_bytes(b"three thousand bytes fit in the metadata node\n")
    (plain / "large.bin").write_bytes(bytes(range(256)) * 2048)  # 512 KiB: two MHT nodes
    key = ["--key", str(work / "k")]

    # ours -> Gramine's
    assert main(["encrypt", str(plain), str(work / "ours"), *key, "--bound-path", "/w/ours"]) == 0
    status, log = pf_crypt(
        docker_client,
        image,
        {work: "/w"},
        "decrypt",
        "-w",
        "/w/k",
        "-i",
        "/w/ours",
        "-o",
        "/w/ours-by-gramine",
        "-V",
    )
    assert status == 0, log
    for name in ("small.txt", "large.bin"):
        assert (work / "ours-by-gramine" / name).read_bytes() == (plain / name).read_bytes()

    # Gramine's -> ours
    status, log = pf_crypt(
        docker_client,
        image,
        {work: "/w"},
        "encrypt",
        "-w",
        "/w/k",
        "-i",
        "/w/plain",
        "-o",
        "/w/theirs",
    )
    assert status == 0, log
    assert (
        main(
            [
                "decrypt",
                str(work / "theirs"),
                str(work / "theirs-by-us"),
                *key,
                "--bound-path",
                "/w/theirs",
            ]
        )
        == 0
    )
    for name in ("small.txt", "large.bin"):
        assert (work / "theirs-by-us" / name).read_bytes() == (plain / name).read_bytes()

    # The same damage, refused by both: one byte of a data node, a truncation, a rename. Each
    # file is damaged where it was encrypted for, so only the damage can give it away.
    def sealed_at(case: str, source: str) -> Path:
        target = work / case / source
        assert (
            main(
                [
                    "encrypt",
                    str(plain / source),
                    str(target),
                    *key,
                    "--bound-path",
                    f"/w/{case}/{source}",
                ]
            )
            == 0
        )
        return target

    flipped = sealed_at("flipped", "large.bin")
    data = bytearray(flipped.read_bytes())
    data[3 * 4096 + 100] ^= 1  # the second data node
    flipped.write_bytes(data)
    short = sealed_at("short", "large.bin")
    short.write_bytes(short.read_bytes()[:-4096])
    renamed = sealed_at("renamed", "small.txt").rename(work / "renamed/other.txt")
    for path, ours_says in (
        (flipped, "fails its MAC"),
        (short, "truncated"),
        (renamed, "renamed or moved"),
    ):
        inside = "/w/" + path.relative_to(work).as_posix()
        status, log = pf_crypt(
            docker_client,
            image,
            {work: "/w"},
            "decrypt",
            "-w",
            "/w/k",
            "-i",
            inside,
            "-o",
            inside + ".out",
            "-V",
        )
        assert status != 0, f"Gramine accepted {inside}: {log}"
        capsys.readouterr()
        out = path.with_name(path.name + ".ours")
        code = main(["decrypt", str(path), str(out), *key, "--bound-path", inside])
        err = capsys.readouterr().err
        assert code == 2 and ours_says in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_the_libos_refuses_a_tampered_input(encrypted_build, docker_client, tmp_path):
    recipe, result, _ = encrypted_build
    (data_out,) = _dirs(tmp_path, "out")
    data_in = tmp_path / "in"
    key_file = tmp_path / "test.key"
    key_file.write_bytes(TEST_KEY)
    assert (
        main(
            [
                "encrypt",
                str(RECIPE_DIR / "data"),
                str(data_in),
                "--key",
                str(key_file),
                "--bound-path",
                "/data/in",
            ]
        )
        == 0
    )
    sealed = bytearray((data_in / "orders.csv").read_bytes())
    sealed[2 * 4096 + 7] ^= 0x40  # the first data node
    (data_in / "orders.csv").write_bytes(sealed)
    run = run_direct(docker_client, result.image, NAME, extra_args=_volumes(data_in, data_out))
    assert run.exit_code != 0
    assert "ROWS summary" not in run.stdout
    assert not (data_out / "summary.csv").exists()


def test_the_provisioned_recipe_loads_gramines_client_and_starts_nothing_without_a_key(
    pushed_bases, key, registry, docker_client, tmp_path
):
    """recipe.yaml on the real base: Gramine's libsecret_prov_attest.so (and what it links) is
    trusted and preloaded, reads the host's SECRET_PROVISION_SERVERS, and with no key server
    reachable ends the process before the app runs: no output, nothing written."""
    _, result = build_bundled(pushed_bases, key, registry, tmp_path, "recipe.yaml", "provisioned")
    manifest = next((tmp_path / "out").glob("*.manifest.sgx")).read_text()
    assert "insecure__keys" not in manifest and TEST_KEY.hex() not in manifest
    record = json.loads((tmp_path / "out/measurement.json").read_text())
    assert record["encryption_keys"] == {"data": "secret-provisioning"}
    assert record["secret_provisioning"]["key"] == "data"

    data_in, data_out = _dirs(tmp_path, "in", "out-dir")
    extra = _volumes(data_in, data_out)
    extra["environment"] = {"SECRET_PROVISION_SERVERS": "127.0.0.1:4433"}  # nothing listens
    run = run_direct(docker_client, result.image, "spark-encrypted-csv", extra_args=extra)
    output = run.stdout + run.stderr
    assert run.exit_code != 0, output[-3000:]
    assert "Secret provisioning failed, terminating the whole process" in output, output[-3000:]
    assert "could not connect to any of the servers" in output, output[-3000:]
    assert "ROWS" not in output and "not trusted" not in output.lower(), output[-3000:]
    assert list(data_out.iterdir()) == []
