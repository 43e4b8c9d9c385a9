"""The bundled jobs under Gramine's own LibOS (gramine-direct) with their signed manifests, and
Gramine's own tools as the judge of what we measured and signed.

- every bundled recipe prints its exact expected answer under `ppml-build run-direct`;
- one byte changed in a trusted file (a later layer) is refused by the LibOS, and by verify;
- `gramine-sgx-sign` from the image's own Gramine, on the same manifest and the image's real
  SGX libpal.so, gives the MRENCLAVE of our record, label and .sig, and the same .sig bytes,
  for the bundled images and for more enclave configurations (size, threads, EDMM, debug).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_build import copy_recipe, file_from_image
from test_recipes import EXPECTED, NAMES, RECIPE_DIRS, answer

from ppml_build.cli import main
from ppml_build.gramine.direct import run_direct
from ppml_build.image.docker_build import build_image
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions, BuildResult
from ppml_build.sign.sigstruct import Sigstruct

pytestmark = pytest.mark.docker

SIGN_DATE = "2026-11-01"


def parquet_volume(tmp_path: Path) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    return {"volumes": {str(out): {"bind": "/data/out", "mode": "rw"}}}


@pytest.mark.parametrize("name", NAMES)
def test_job_prints_its_answer_under_gramine_direct(name, builds, docker_client, tmp_path):
    _, result = builds.get(name)
    extra = parquet_volume(tmp_path) if name == "spark-sql-parquet" else None
    run = run_direct(docker_client, result.image, name, extra_args=extra)
    output = run.stdout + run.stderr  # Gramine writes the app's stderr to stdout as well
    assert run.exit_code == 0, output[-4000:]
    assert answer(run.stdout) == EXPECTED[name](), output[-4000:]
    print(f"\n{name}: gramine-direct {run.seconds:.1f} s")


def test_a_changed_trusted_file_is_refused_by_the_libos_and_by_verify(
    builds, docker_client, capsys
):
    recipe, result = builds.get("spark-java-pi")
    libjava = "/usr/lib/jvm/java-17-openjdk-amd64/lib/libjava.so"
    context = builds.workdir / "tampered"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(
        f'FROM {result.image}\nUSER root\nRUN ["/bin/sh", "-c", "printf x >> {libjava}"]\n'
    )
    tampered = build_image(docker_client, context, tag="ppml-test/tampered:direct", labels={})
    capsys.readouterr()
    code = main(["run-direct", str(recipe), "--image", tampered])
    captured = capsys.readouterr()
    assert code != 0
    # Gramine's own refusal, shown by run-direct's diagnosis run.
    assert f"Hash of trusted file '{libjava}' does not match" in captured.err, captured.err
    code = main(["verify", tampered, "--record", str(result.record_path)])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in out and libjava in out, out


def gramine_sign(docker_client, image: str, name: str, key: Path) -> tuple[str, bytes, bytes]:
    """gramine-sgx-sign from the image's own Gramine on the image's .manifest.sgx and real
    SGX libpal.so, with our key and date: (the MRENCLAVE it prints, its .sig, its
    .manifest.sgx). The key is a test key, mounted read-only into this one container."""
    work = key.parent / f"gramine-sign-{name}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "key").mkdir(parents=True)
    (work / "out").mkdir()
    (work / "out").chmod(0o777)
    shutil.copy(key, work / "key" / "key.pem")
    script = (
        f"cp /ppml/{name}.manifest.sgx /out/in.manifest && "
        "gramine-sgx-sign --manifest /out/in.manifest --output /out/out.manifest.sgx "
        f"--sigfile /out/out.sig --key /key/key.pem --date {SIGN_DATE}"
    )
    output = docker_client.containers.run(
        image,
        entrypoint=["/bin/sh", "-c", script],
        network_mode="none",
        remove=True,
        volumes={
            str(work / "key"): {"bind": "/key", "mode": "ro"},
            str(work / "out"): {"bind": "/out", "mode": "rw"},
        },
    ).decode()
    measured = re.search(r"^\s*([0-9a-f]{64})\s*$", output, re.M)
    assert measured, output[-2000:]
    return (
        measured.group(1),
        (work / "out" / "out.sig").read_bytes(),
        (work / "out" / "out.manifest.sgx").read_bytes(),
    )


def assert_gramine_agrees(docker_client, result: BuildResult, name: str, key: Path):
    theirs, sig_bytes, manifest_sgx = gramine_sign(docker_client, result.image, name, key)
    ours = file_from_image(docker_client, result.image, f"/ppml/{name}.sig")
    label = docker_client.images.get(result.image).labels["ppml.mrenclave"]
    assert theirs == result.record["mrenclave"] == label
    assert Sigstruct.from_bytes(ours).mrenclave.hex() == theirs
    # The signed manifest is already Gramine's fixed point, and the .sig is byte for byte theirs.
    assert manifest_sgx == file_from_image(
        docker_client, result.image, f"/ppml/{name}.manifest.sgx"
    )
    assert sig_bytes == ours


@pytest.mark.parametrize("name", NAMES)
def test_gramine_sgx_sign_gives_our_measurement(name, builds, docker_client, key):
    _, result = builds.get(name)
    assert_gramine_agrees(docker_client, result, name, key)


@pytest.mark.parametrize(
    "enclave",
    [
        {"size": "8G", "max_threads": 200},
        {"edmm": True},
        {"debug": True, "size": "16G", "max_threads": 512},
    ],
    ids=["8G-200-threads", "edmm", "debug-16G-512-threads"],
)
def test_gramine_sgx_sign_agrees_in_other_configurations(
    enclave, pushed_bases, key, registry, docker_client, tmp_path
):
    source = next(d for d in RECIPE_DIRS if d.name == "flink-java-wordcount")
    remote, digest = pushed_bases["flink"]
    recipe = copy_recipe(source, tmp_path / "recipe", remote, digest)
    text = recipe.read_text()
    for field, value in enclave.items():
        rendered = json.dumps(value) if not isinstance(value, str) else value
        text = re.sub(rf"(?m)^  {field}: .*$", f"  {field}: {rendered}", text)
    recipe.write_text(text)
    tag = f"ppml-test/configs:{'-'.join(str(v).lower() for v in enclave.values())}"
    result = backends.build(
        BuildOptions(
            recipe=recipe,
            key=key,
            output_dir=tmp_path / "out",
            tag=tag,
            registry_auth=registry.auth_file,
            date=SIGN_DATE,
        )
    )
    record = result.record
    assert record["edmm"] is bool(enclave.get("edmm"))
    assert record["debug"] is bool(enclave.get("debug"))
    assert record["enclave_size"] == enclave.get("size", record["enclave_size"])
    assert record["max_threads"] == enclave.get("max_threads", record["max_threads"])
    assert_gramine_agrees(docker_client, result, "flink-java-wordcount", key)
