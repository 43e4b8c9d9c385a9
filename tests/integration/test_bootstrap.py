"""``ppml-build base bootstrap``: images that work, labelled for what they are, cached by input hash.

The first run on a machine is slow (debootstrap, pip downloads of pyspark/apache-flink); every
later run must reuse the tagged images and finish in seconds.
"""

from __future__ import annotations

import json
import time

import pytest

from ppml_build.cli import main
from ppml_build.image import bootstrap, engine

pytestmark = pytest.mark.docker

GRAMINE_PREFIX = "/usr/lib/x86_64-linux-gnu/gramine"
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"


def _run_cli(capsys, *args: str) -> dict:
    code = main(["base", "bootstrap", *args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _labels(client, reference: str) -> dict:
    return client.images.get(reference).labels


def _run(client, image: str, command: list[str], **kwargs) -> str:
    """Run a throw-away container with no network at all; its combined output."""
    out = client.containers.run(
        image,
        command,
        network_mode="none",
        hostname="localhost",
        remove=True,
        stderr=True,
        **kwargs,
    )
    return out.decode("utf-8", "replace")


def test_second_run_reuses_local_and_registry_copies(docker_client, registry, debian_base, capsys):
    args = (
        "--only",
        "debian",
        "--registry",
        registry.address,
        "--registry-auth",
        str(registry.auth_file),
    )
    first = _run_cli(capsys, *args)
    (image,) = first["images"]
    assert image["action"] == "reused" and image["input_hash"] == debian_base.input_hash
    assert image["registry_reference"] == f"{registry.address}/ppml/debian-base:bookworm"
    assert image["repo_digest"].startswith("sha256:")

    started = time.monotonic()
    second = _run_cli(capsys, *args)
    elapsed = time.monotonic() - started
    (again,) = second["images"]
    assert again["action"] == "reused"
    assert again["pushed"] is False  # already in the registry with that digest: nothing sent
    assert again["repo_digest"] == image["repo_digest"]
    assert elapsed < 20, f"a cached bootstrap took {elapsed:.1f}s"


def test_image_in_registry_is_pulled_instead_of_rebuilt(
    docker_client, registry, standin_base, capsys
):
    args = (
        "--only",
        "standin",
        "--registry",
        registry.address,
        "--registry-auth",
        str(registry.auth_file),
    )
    pushed = {i["name"]: i for i in _run_cli(capsys, *args)["images"]}["standin"]
    assert pushed["action"] == "reused"
    docker_client.api.remove_image(
        standin_base.reference
    )  # untag; the registry tag keeps the image

    pulled = {i["name"]: i for i in _run_cli(capsys, *args)["images"]}["standin"]
    assert pulled["action"] == "pulled"
    assert pulled["image_id"] == standin_base.image_id
    assert (
        _labels(docker_client, standin_base.reference)[bootstrap.INPUT_HASH_LABEL]
        == standin_base.input_hash
    )


def test_debian_base_carries_its_input_hash_and_no_package_cache(docker_client, debian_base):
    labels = _labels(docker_client, debian_base.reference)
    assert labels[bootstrap.INPUT_HASH_LABEL] == debian_base.input_hash
    assert labels["org.opencontainers.image.version"] == "bookworm"
    fs = engine.export_image_rootfs(
        docker_client, debian_base.reference, keep=lambda p: p == "/usr/lib/os-release"
    )
    assert b"VERSION_CODENAME=bookworm" in fs.read_bytes("/usr/lib/os-release")
    assert fs.lstat("/usr/bin/apt-get").kind == "file"
    assert not [n for n in fs.listdir("/var/cache/apt/archives") if n.endswith(".deb")]


def test_standin_base_is_labelled_and_has_gramine_package_paths(
    docker_client, standin_base, tmp_path
):
    labels = _labels(docker_client, standin_base.reference)
    assert labels[bootstrap.STANDIN_LABEL] == "true"
    assert (
        labels["ppml.libos"] == "gramine"
        and "TEST ONLY" in labels["org.opencontainers.image.description"]
    )

    libpal = f"{GRAMINE_PREFIX}/sgx/libpal.so"
    fs = engine.export_image_rootfs(
        docker_client, standin_base.reference, keep=lambda p: p == libpal
    )
    host = bootstrap.build_standin_binaries(bootstrap.PROJECT_ROOT, tmp_path)
    assert fs.read_bytes(libpal) == (host / "libpal.so").read_bytes()
    assert fs.lstat(f"{GRAMINE_PREFIX}/libsysdb.so").kind == "file"
    glibc = fs.listdir(f"{GRAMINE_PREFIX}/runtime/glibc")
    assert {"ld-linux-x86-64.so.2", "libc.so.6", "libpthread.so.0"} <= set(glibc)
    for name in glibc:
        assert fs.lstat(f"{GRAMINE_PREFIX}/runtime/glibc/{name}").kind == "file"


def test_spark_job_runs_in_the_spark_base(docker_client, spark_base):
    labels = _labels(docker_client, spark_base.reference)
    assert (
        labels["ppml.framework"] == "spark"
        and labels["ppml.framework.version"] == bootstrap.DEFAULT_SPARK_VERSION
    )
    job = (
        "from pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.master('local[1]').appName('ppml-smoke').getOrCreate()\n"
        "print('RESULT', s.range(1000).selectExpr('sum(id) AS total').collect()[0]['total'])\n"
        "s.stop()\n"
    )
    out = _run(
        docker_client,
        spark_base.reference,
        ["python3", "-c", job],
        environment={"SPARK_LOCAL_IP": "127.0.0.1"},
    )
    assert "RESULT 499500" in out, out[-2000:]
    env = _run(
        docker_client,
        spark_base.reference,
        ["sh", "-c", "echo $SPARK_HOME $JAVA_HOME; readlink -f $(command -v java)"],
    )
    assert env.split()[:2] == ["/opt/spark", JAVA_HOME]
    assert env.split()[2].startswith(JAVA_HOME)


def test_flink_base_runs_a_job(docker_client, flink_base):
    labels = _labels(docker_client, flink_base.reference)
    assert (
        labels["ppml.framework"] == "flink"
        and labels["ppml.framework.version"] == bootstrap.DEFAULT_FLINK_VERSION
    )
    job = (
        "from pyflink.table import EnvironmentSettings, TableEnvironment\n"
        "t = TableEnvironment.create(EnvironmentSettings.in_batch_mode())\n"
        "t.get_config().set('parallelism.default', '1')\n"
        "rows = list(t.execute_sql('SELECT SUM(x) FROM (VALUES (1), (2), (39)) AS v(x)').collect())\n"
        "print('RESULT', rows[0][0])\n"
    )
    out = _run(docker_client, flink_base.reference, ["python3", "-c", job])
    assert "RESULT 42" in out, out[-2000:]
    home = _run(
        docker_client, flink_base.reference, ["sh", "-c", "echo $FLINK_HOME; ls $FLINK_HOME/lib"]
    )
    assert home.startswith("/opt/flink\n") and "flink-dist" in home
