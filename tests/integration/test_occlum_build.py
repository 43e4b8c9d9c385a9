"""The Occlum build end to end: real engine, real registry with auth, the Spark base.

THE OCCLUM HERE IS A STAND-IN (tests/standin/occlum, TEST ONLY): Occlum's image cannot be pulled
or installed on this machine. Its `occlum build` checks its arguments and the key, then copies a
pre-signed enclave to where Occlum writes build/lib/libocclum-libos.signed.so. That enclave is
written at test time by tests/sdk_enclave_factory.py in the form the Intel SDK's sgx_sign leaves
it (.note.sgxmeta carrying metadata_t and the SIGSTRUCT), signed with a key made for this module,
which the builds pass as --key; it is debuggable (DisableDebug=0: ATTRIBUTEMASK leaves DEBUG
free), so the recipe says enclave.debug: true; it is not EDMM and its ISVPRODID/ISVSVN are 0/0.

Everything of ours is real: Occlum.json and bom.yaml from the image's filesystem (the bom's
SHA-256 pins are checked against the build container's files by the stand-in copy_bom), the
container orchestration (read-only key mount, no network, commit), the native SIGSTRUCT read,
the record, the labels — and the record must name exactly that enclave's MRENCLAVE and MRSIGNER.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sdk_enclave_factory import Metadata, sdk_signed_elf
from sdk_sample_key import lookalike_private_pem
from sigstruct_reference import signed_sigstruct

from ppml_build.cli import main
from ppml_build.errors import ImageError, VerificationError
from ppml_build.image import app_layer, engine
from ppml_build.image.docker_build import build_image
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions
from ppml_build.recipe import load_recipe
from ppml_build.sign import keys
from ppml_build.sign.sigstruct import Sigstruct

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parents[2]
SPARK_RECIPE = PROJECT / "recipes/spark/pyspark-sql-agg"
STANDIN_DIR = PROJECT / "tests/standin/occlum"
STANDIN_TAG = "ppml-test/spark-occlum-standin:0.31"
INSTANCE = "/ppml/occlum_instance"
SIGNED = f"{INSTANCE}/build/lib/libocclum-libos.signed.so"
# The stand-in's pre-signed enclave: its MRENCLAVE, date and metadata (8M, metadata 2.1).
STANDIN_MRENCLAVE = hashlib.sha256(b"stand-in libocclum-libos.signed.so").hexdigest()
STANDIN_DATE = "2025-03-04"


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory) -> Path:
    """The enclave key these builds pass as --key; it signed the stand-in's enclave."""
    path = tmp_path_factory.mktemp("occlum-key") / "enclave-key.pem"
    path.write_bytes(keys.private_key_pem(keys.generate_key()))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def signer_mrsigner(signing_key) -> str:
    return keys.mrsigner_of(keys.load_private_key(signing_key.read_bytes()).public_key()).hex()


@pytest.fixture(scope="module")
def standin_enclave(signing_key) -> bytes:
    """What `occlum build` + sgx_sign would leave for a debuggable, non-EDMM, ISV 0/0 recipe,
    signed with --key (tests/sdk_enclave_factory.py, tests/sigstruct_reference.py)."""
    key = keys.load_private_key(signing_key.read_bytes())
    css = signed_sigstruct(key, enclave_hash=bytes.fromhex(STANDIN_MRENCLAVE), date=(2025, 3, 4))
    return sdk_signed_elf(Metadata(css, version=(2, 1), enclave_size=0x800000))


@pytest.fixture(scope="module")
def occlum_base(docker_client, registry, spark_base, standin_enclave, tmp_path_factory):
    """TEST ONLY stand-in "Occlum base": the Spark base + the stand-in occlum/copy_bom and the
    pre-signed enclave, pushed to the auth registry. Returns (reference, digest)."""
    return push_standin_base(
        docker_client,
        registry,
        base=spark_base.reference,
        enclave=standin_enclave,
        tag=STANDIN_TAG,
        context=tmp_path_factory.mktemp("occlum-standin"),
    )


def push_standin_base(
    client, registry, *, base: str, enclave: bytes, tag: str, context: Path
) -> tuple[str, str]:
    """The stand-in Occlum files on ``base``, built in ``context`` and pushed to the auth
    registry: (reference, digest)."""
    shutil.copytree(STANDIN_DIR, context, dirs_exist_ok=True)
    (context / "enclave.signed.so").write_bytes(enclave)
    build_image(client, context, tag=tag, buildargs={"BASE": base})
    remote = f"{registry.address}/{tag}"
    client.images.get(tag).tag(remote)
    return remote, engine.push_image(client, remote, auth=registry.auth)


JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
OCCLUM_COMMAND = [
    JAVA,
    "-Xmx1g",
    "-cp",
    "/opt/spark/conf:/opt/spark/jars/*",
    "org.apache.spark.deploy.SparkSubmit",
    "--master",
    "local[2]",
    "--conf",
    "spark.ui.enabled=false",
    "/app/job.py",
]


def occlum_recipe(
    target: Path, base: str, digest: str | None, *, debug: bool = True, edmm: bool = False
) -> Path:
    """The repository's PySpark recipe, switched to Occlum and to the stand-in enclave's ISV
    values."""
    shutil.copytree(SPARK_RECIPE, target)
    path = target / "recipe.yaml"
    text = path.read_text()
    text = re.sub(r"(?m)^libos:\n(  .*\n)+", 'libos: {type: occlum, version: "0.31"}\n', text)
    pin = f"\n  digest: {digest}" if digest else ""
    text = re.sub(r"(?m)^  image: .*$", f"  image: {base}{pin}", text)
    text = re.sub(r"(?m)^  debug: \w+", f"  debug: {str(debug).lower()}", text)
    text = re.sub(r"(?m)^  edmm: \w+", f"  edmm: {str(edmm).lower()}", text)
    text = re.sub(r"(?m)^  isv_(prod_id|svn): \d+", r"  isv_\1: 0", text)
    # Occlum has no fork for spark-submit's bash: the JVM starts directly, as Occlum's demos do
    text, count = re.subn(
        r"(?m)^  command: \[/opt/spark/bin/spark-submit,.*\n(?:            .*\n)*",
        f"  command: {json.dumps(OCCLUM_COMMAND)}\n",
        text,
    )
    assert count == 1
    assert "type: occlum" in text and f"debug: {str(debug).lower()}" in text
    path.write_text(text)
    return path


def key_needles(key: Path) -> list[bytes]:
    """Byte strings of the private key, in every form the build handles it (PEM file as given,
    the PKCS#1 copy that is mounted, raw private numbers in both byte orders)."""
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    numbers = private.private_numbers()
    pems = [key.read_bytes(), keys.private_key_pem(private)]
    lines = {
        line
        for pem in pems
        for line in pem.splitlines()
        if len(line) >= 40 and not line.startswith(b"-----")
    }
    raw = [
        value.to_bytes(size, order)[:48]
        for value, size in (
            (numbers.d, 384),
            (numbers.p, 192),
            (numbers.q, 192),
            (numbers.dmp1, 192),
        )
        for order in ("big", "little")
    ]
    return sorted(lines) + raw


def file_from_image(client, image: str, path: str) -> bytes:
    container = client.containers.create(image, entrypoint=["/nonexistent"], network_mode="none")
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            return archive.extractfile(archive.next()).read()
    finally:
        container.remove(force=True)


def leftover_build_containers(client) -> list:
    return client.containers.list(all=True, filters={"ancestor": STANDIN_TAG})


@pytest.fixture(scope="module")
def built(occlum_base, signing_key, registry, docker_client, tmp_path_factory):
    """One stand-in Occlum build, watched: every build context is kept for the key scan, the
    key's temp dir must be created under a private TMPDIR, and every progress line is kept."""
    remote, digest = occlum_base
    work = tmp_path_factory.mktemp("occlum-build")
    recipe = occlum_recipe(work / "recipe", remote, digest)
    contexts: list[bytes] = []
    real_build_image = app_layer.build_image  # the app layer is built by app_layer.app_image

    def recording_build_image(client, context, **kwargs):
        for path in Path(context).rglob("*"):
            if path.is_file():
                contexts.append(path.read_bytes())
        return real_build_image(client, context, **kwargs)

    said: list[str] = []
    tmp = work / "tmp"
    tmp.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_layer, "build_image", recording_build_image)
        patch.setattr(tempfile, "tempdir", str(tmp))
        result = backends.build(
            BuildOptions(
                recipe=recipe,
                key=signing_key,
                output_dir=work / "out",
                tag="ppml-test/pyspark-occlum:it",
                registry_auth=registry.auth_file,
            ),
            say=said.append,
        )
        leftovers = sorted(p.name for p in tmp.iterdir())
    return {
        "result": result,
        "recipe": recipe,
        "out": work / "out",
        "work": work,
        "contexts": contexts,
        "said": said,
        "tmp_leftovers": leftovers,
        "digest": digest,
    }


def test_record_and_labels_carry_exactly_the_signed_enclaves_values(
    built, docker_client, standin_enclave, signer_mrsigner
):
    out = built["out"]
    record = json.loads((out / "measurement.json").read_text())
    assert record == built["result"].record
    assert record["mrenclave"] == STANDIN_MRENCLAVE
    assert record["mrsigner"] == signer_mrsigner
    assert record["libos"] == {"type": "occlum", "version": "0.31"}
    assert record["edmm"] is False and record["debug"] is True
    assert (record["isv_prod_id"], record["isv_svn"]) == (0, 0)
    assert record["enclave_size"] == "8M" and record["date"] == STANDIN_DATE
    assert record["occlum"]["sdk_metadata_version"] == "2.1"
    assert record["base"]["digest"] == built["digest"]
    assert record["manifest_sha256"] == record["occlum"]["occlum_json_sha256"]
    assert record["image"]["reference"] == "ppml-test/pyspark-occlum:it"

    image = docker_client.images.get("ppml-test/pyspark-occlum:it")
    assert image.id == record["image"]["id"]
    labels = image.labels
    assert labels["ppml.mrenclave"] == STANDIN_MRENCLAVE
    assert labels["ppml.mrsigner"] == signer_mrsigner
    assert labels["ppml.libos"] == "occlum 0.31"
    assert labels["ppml.edmm"] == "false" and labels["ppml.debug"] == "true"
    assert labels["ppml.base.digest"] == built["digest"]
    assert labels["ppml.libos.standin"] == "true"  # inherited: this is the stand-in

    # The enclave in the image is the stand-in's, byte for byte, and the .sig written is the
    # SIGSTRUCT read from it.
    signed = file_from_image(docker_client, image.id, SIGNED)
    assert signed == standin_enclave
    sig = Sigstruct.from_bytes((out / "pyspark-sql-agg.sig").read_bytes())
    assert sig.mrenclave.hex() == STANDIN_MRENCLAVE and sig.mrsigner.hex() == signer_mrsigner
    assert f"MRENCLAVE {STANDIN_MRENCLAVE}" in built["said"]


def test_sigstruct_view_of_the_image_enclave_agrees(built, docker_client, tmp_path, capsys):
    copy = tmp_path / "libocclum-libos.signed.so"
    copy.write_bytes(file_from_image(docker_client, "ppml-test/pyspark-occlum:it", SIGNED))
    capsys.readouterr()
    assert main(["sigstruct-view", str(copy), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["mrenclave"] == built["result"].record["mrenclave"]
    assert view["mrsigner"] == built["result"].record["mrsigner"]


def test_the_image_runs_occlum_run_in_the_instance(built, docker_client):
    config = docker_client.api.inspect_image("ppml-test/pyspark-occlum:it")["Config"]
    # The entry script holds app.command (the host cannot change argv) and refuses arguments
    assert config["Entrypoint"] == ["/opt/occlum/build/bin/occlum", "run", "/ppml/entry/start.sh"]
    assert not config["Cmd"]
    recipe = load_recipe(built["recipe"])
    script = file_from_image(docker_client, "ppml-test/pyspark-occlum:it", "/ppml/entry/start.sh")
    assert script.decode().endswith(
        "exec " + " \\\n    ".join(shlex.quote(a) for a in recipe.app.command) + "\n"
    )
    assert config["WorkingDir"] == INSTANCE
    assert not config.get("Volumes")  # the key mount left no VOLUME behind
    # Run it: the entrypoint reaches `occlum run` (the stand-in refuses; a real one would need
    # --device /dev/sgx_enclave).
    container = docker_client.containers.create("ppml-test/pyspark-occlum:it", network_mode="none")
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 1
        output = container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert "stand-in occlum (TEST ONLY) cannot 'run'" in output


def test_the_key_was_a_readonly_mount_in_a_container_without_network(built, docker_client):
    report = file_from_image(
        docker_client, "ppml-test/pyspark-occlum:it", f"{INSTANCE}/.ppml-standin-report"
    ).decode()
    facts = dict(line.split(": ", 1) for line in report.splitlines() if ": " in line)
    assert facts["sign_key"] == "/run/ppml-signing-key/enclave-key.pem"
    assert facts["sign_key_readable"] == "yes"
    assert facts["sign_key_dir_writable"] == "no"
    assert facts["sign_key_mount"].split(",")[0] == "ro"
    assert facts["network_interfaces"] == "lo"
    assert facts["enable_edmm"] == "N" and facts["sgx_mode"] == "HW"


def test_bom_pins_and_occlum_json_match_the_build_container(built, docker_client):
    from unit.test_occlum_config import OcclumJson031  # the independent 0.31 schema model

    out = built["out"]
    occlum_json = (out / "Occlum.json").read_bytes()
    OcclumJson031.model_validate(json.loads(occlum_json))
    image = "ppml-test/pyspark-occlum:it"
    assert file_from_image(docker_client, image, f"{INSTANCE}/Occlum.json") == occlum_json
    assert (
        file_from_image(docker_client, image, "/ppml/bom.yaml") == (out / "bom.yaml").read_bytes()
    )
    report = file_from_image(docker_client, image, f"{INSTANCE}/.ppml-standin-report").decode()
    verified = int(re.search(r"pinned_files_verified=(\d+)", report).group(1))
    pins = len(re.findall(r"(?m)^\s+hash: ", (out / "bom.yaml").read_text()))
    assert verified == pins >= 3  # the app file, /etc files, the python binary
    job = (built["recipe"].parent / "job.py").read_bytes()
    assert file_from_image(docker_client, image, f"{INSTANCE}/image/app/job.py") == job
    assert (out / "occlum-build.log").read_text().count("ppml-step: ") >= 4


def test_no_key_material_anywhere(built, signing_key, docker_client):
    needles = key_needles(signing_key)

    def scan(blob: bytes, where: str) -> None:
        for needle in needles:
            assert needle not in blob, f"key material found in {where}"

    assert built["contexts"], "the app layer's build context was not seen"
    for index, data in enumerate(built["contexts"]):
        scan(data, f"build context file {index}")
    scan("\n".join(built["said"]).encode(), "progress output")
    for path in built["out"].rglob("*"):
        scan(path.read_bytes(), f"output {path.name}")
    image = "ppml-test/pyspark-occlum:it"
    scan(json.dumps(docker_client.api.history(image)).encode(), "docker history")
    scan(json.dumps(docker_client.api.inspect_image(image)).encode(), "image config")
    saved = b"".join(docker_client.images.get(image).save(named=True))
    scan(saved, "docker save")
    # The scan covers the committed layer: the signed enclave written by the build is in it.
    sig = (built["out"] / "pyspark-sql-agg.sig").read_bytes()
    assert sig in saved
    assert b"occlum-build.sh" in saved
    assert not leftover_build_containers(docker_client)


def test_the_keys_temp_dir_is_gone_after_the_build(built):
    # tempfile.tempdir pointed at work/tmp during the build: the key's dir (and the app
    # context) were made there, and nothing is left.
    assert built["tmp_leftovers"] == []


@pytest.mark.parametrize(
    "debug, edmm, needle",
    [
        (False, False, "the signed enclave is debuggable"),
        (True, True, "signed without EDMM"),
    ],
)
def test_an_enclave_unlike_the_recipe_is_refused_and_nothing_is_left(
    occlum_base, signing_key, registry, docker_client, tmp_path, debug, edmm, needle
):
    remote, digest = occlum_base
    recipe = occlum_recipe(tmp_path / "recipe", remote, digest, debug=debug, edmm=edmm)
    tag = f"ppml-test/pyspark-occlum-refused:{int(debug)}{int(edmm)}"
    with pytest.raises(VerificationError) as err:
        backends.build(
            BuildOptions(
                recipe=recipe,
                key=signing_key,
                output_dir=tmp_path / "out",
                tag=tag,
                registry_auth=registry.auth_file,
            )
        )
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert message.startswith(SIGNED)
    assert not (tmp_path / "out" / "measurement.json").exists()
    assert not docker_client.images.list(name=tag)
    assert not leftover_build_containers(docker_client)
    if edmm:  # the stand-in saw the flag we passed
        log = (tmp_path / "out" / "occlum-build.log").read_text()
        assert "--enable-edmm Y" in log


def test_a_base_without_occlum_fails_in_one_line(
    spark_base, signing_key, registry, tmp_path, docker_client, occlum_base
):
    remote = f"{registry.address}/ppml-test/spark-no-occlum:1"
    docker_client.images.get(spark_base.reference).tag(remote)
    engine.push_image(docker_client, remote, auth=registry.auth)
    recipe = occlum_recipe(tmp_path / "recipe", remote, None)
    with pytest.raises(ImageError) as err:
        backends.build(
            BuildOptions(
                recipe=recipe,
                key=signing_key,
                output_dir=tmp_path / "out",
                tag="ppml-test/no-occlum:it",
                registry_auth=registry.auth_file,
            )
        )
    message = str(err.value)
    assert "has no `occlum`" in message and "\n" not in message
    assert not docker_client.images.list(name="ppml-test/no-occlum")


def test_cli_build_prints_the_summary_and_refusals_exit_1(
    built, occlum_base, signing_key, signer_mrsigner, registry, tmp_path, capsys
):
    remote, digest = occlum_base
    recipe = occlum_recipe(tmp_path / "ok", remote, digest)
    common = ["--key", str(signing_key), "--registry-auth", str(registry.auth_file)]
    capsys.readouterr()
    code = main(
        [
            "build",
            str(recipe),
            *common,
            "--output-dir",
            str(tmp_path / "out"),
            "--tag",
            "ppml-test/pyspark-occlum:cli",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["mrenclave"] == STANDIN_MRENCLAVE and summary["mrsigner"] == signer_mrsigner
    assert summary["image"] == "ppml-test/pyspark-occlum:cli"
    assert summary["stats"]["base_index_cached"] is True  # the module build indexed it

    # Occlum's default key, the SDK sample key (refused by its public half, so a key file with
    # only that half will do), without --insecure-sample-key: refused before any Docker work.
    sample = tmp_path / "Enclave.pem"
    sample.write_bytes(lookalike_private_pem())
    code = main(
        ["build", str(recipe), "--key", str(sample), "--output-dir", str(tmp_path / "out2")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "sample key" in err[0]
    assert not (tmp_path / "out2").exists()

    # A release recipe on a base that signs debuggable enclaves: exit 1, one line.
    release = occlum_recipe(tmp_path / "release", remote, digest, debug=False)
    code = main(["build", str(release), *common, "--output-dir", str(tmp_path / "out3")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    errors = [line for line in err if line.startswith("ppml-build: error: ")]
    assert len(errors) == 1 and "debuggable" in errors[0]
    assert not (tmp_path / "out3" / "measurement.json").exists()
