"""The bundled Occlum recipes (recipe.occlum.yaml beside spark-java-pi and flink-java-wordcount),
built and started natively exactly as their Occlum entry would start them.

THE OCCLUM HERE IS A STAND-IN (tests/standin/occlum, TEST ONLY; see test_occlum_build.py):
Occlum cannot be built or run on this machine. What is real: Spark's launcher run at build
time in the app image, the entry script and Occlum.json/bom.yaml ppml-build writes, the build
container, the committed image. The job then runs natively in that image the way `occlum run
/ppml/entry/start.sh` would start it: the same program, no arguments, and exactly Occlum.json's
env.default (nothing from the host: `env -i`), from `/` as Occlum's first process, with the
hostname `localhost` as `run-direct` gives the Gramine jobs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_occlum_build import (  # noqa: F401 (fixtures)
    file_from_image,
    push_standin_base,
    signing_key,
    standin_enclave,
)
from test_recipes import flink_java_wordcount_lines, spark_java_pi_lines

from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parents[2]
ENTRY = "/ppml/entry/start.sh"
OCCLUM_RUN = ["/opt/occlum/build/bin/occlum", "run", ENTRY]
RECIPES = {
    "spark-java-pi-occlum": ("spark/spark-java-pi", "spark", spark_java_pi_lines),
    "flink-java-wordcount-occlum": (
        "flink/flink-java-wordcount",
        "flink",
        flink_java_wordcount_lines,
    ),
}


def answer(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("RESULT ", "UPDATES "))]


def standin_recipe(source: Path, target: Path, base: str) -> Path:
    """The bundled recipe.occlum.yaml on the stand-in base, with the stand-in enclave's
    attributes (debuggable, ISV 0/0): nothing else changes."""
    shutil.copytree(source, target)
    path = target / "recipe.occlum.yaml"
    text = path.read_text()
    text = re.sub(r"(?m)^  image: .*$", f"  image: {base}", text)
    text = re.sub(r"(?m)^  debug: \w+", "  debug: true", text)
    text = re.sub(r"(?m)^  isv_(prod_id|svn): \d+", r"  isv_\1: 0", text)
    path.write_text(text)
    return path


@pytest.fixture(scope="module", params=sorted(RECIPES))
def built(
    request,
    docker_client,
    registry,
    spark_base,
    flink_base,
    standin_enclave,  # noqa: F811 (the fixture imported above)
    signing_key,  # noqa: F811
    tmp_path_factory,
):
    name = request.param
    source, engine_name, expected = RECIPES[name]
    base = spark_base if engine_name == "spark" else flink_base
    remote, _ = push_standin_base(
        docker_client,
        registry,
        base=base.reference,
        enclave=standin_enclave,
        tag=f"ppml-test/{engine_name}-occlum-standin:0.31",
        context=tmp_path_factory.mktemp(f"standin-{engine_name}"),
    )

    work = tmp_path_factory.mktemp(name)
    recipe = standin_recipe(PROJECT / "recipes" / source, work / "recipe", remote)
    tag = f"ppml-test/{name}:it"
    result = backends.build(
        BuildOptions(
            recipe=recipe,
            key=signing_key,
            output_dir=work / "out",
            tag=tag,
            registry_auth=registry.auth_file,
        )
    )
    occlum_json = json.loads((work / "out" / "Occlum.json").read_text())
    return {
        "name": name,
        "tag": tag,
        "out": work / "out",
        "occlum_json": occlum_json,
        "expected": expected,
        "result": result,
        "recipe": recipe,
    }


def run_as_occlum_would(client, image: str, env_default: list[str], *host_args: str):
    """`occlum run /ppml/entry/start.sh ARGS` natively: exactly env.default, no host env."""
    container = client.containers.create(
        image,
        entrypoint=["/usr/bin/env", "-i", *env_default, ENTRY, *host_args],
        command=[],
        working_dir="/",
        network_mode="none",
        # Occlum gives the enclave the host's hostname and /etc/hosts (src/libos/src/entry.rs,
        # HOSTNAME_STR/HOSTS_STR); with no network the engine's /etc/hosts names localhost only,
        # and Flink's MiniCluster resolves the hostname (InetAddress.getLocalHost).
        hostname="localhost",
    )
    try:
        container.start()
        code = container.wait(timeout=300)["StatusCode"]
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    return code, stdout, stderr


def test_the_job_prints_its_exact_answer_started_as_its_occlum_entry(built, docker_client):
    from unit.test_occlum_config import OcclumJson031  # the independent 0.31 schema model

    doc = built["occlum_json"]
    OcclumJson031.model_validate(doc)
    assert doc["entry_points"] == ["/ppml/entry"]
    config = docker_client.api.inspect_image(built["tag"])["Config"]
    assert config["Entrypoint"] == OCCLUM_RUN and not config["Cmd"]
    code, stdout, stderr = run_as_occlum_would(docker_client, built["tag"], doc["env"]["default"])
    assert code == 0, stderr[-3000:]
    assert answer(stdout) == built["expected"](), stdout[-3000:]


def test_the_entry_script_is_the_one_the_bom_pinned_and_holds_the_jvm_command(built, docker_client):
    script = file_from_image(docker_client, built["tag"], ENTRY).decode()
    in_instance = file_from_image(
        docker_client, built["tag"], f"/ppml/occlum_instance/image{ENTRY}"
    ).decode()
    assert in_instance == script  # what copy_bom put into the measured image
    bom = (built["out"] / "bom.yaml").read_text()
    assert f"name: {ENTRY}" in bom
    exec_line = script.split("\nexec ", 1)[1]
    assert exec_line.startswith("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    if built["name"].startswith("spark"):
        # Spark's launcher computed it in the image at build time: no bash spark-submit.
        assert "org.apache.spark.deploy.SparkSubmit" in exec_line
        assert "org.ppmlbuild.examples.GridPi" in exec_line
        assert "spark-submit" not in exec_line
    else:
        assert "org.ppmlbuild.examples.StreamingWordCount" in exec_line
    env = dict(item.split("=", 1) for item in built["occlum_json"]["env"]["default"])
    assert "-XX:-UseCompressedOops" in env["JAVA_TOOL_OPTIONS"].split()
    assert "-Dos.name=Linux" in env["JAVA_TOOL_OPTIONS"].split()


def test_a_host_argument_stops_the_enclave_before_the_jvm(built, docker_client):
    doc = built["occlum_json"]
    code, stdout, stderr = run_as_occlum_would(
        docker_client, built["tag"], doc["env"]["default"], "--class", "Evil"
    )
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and "fixed at build time" in stderr


def test_k8s_pods_start_the_enclave_exactly_as_the_image_does(built, docker_client, tmp_path):
    from ppml_build.k8s_files import write_k8s

    digest = "sha256:" + "0" * 64
    summary = write_k8s(
        built["recipe"],
        f"127.0.0.1:5000/ppml/{built['name']}@{digest}",
        tmp_path / "k8s",
    )
    config = docker_client.api.inspect_image(built["tag"])["Config"]
    seen = 0
    for path in summary["files"]:
        text = Path(path).read_text()
        for block in re.findall(r"command:\n((?:\s+- .*\n)+)", text):
            command = [line.strip()[2:] for line in block.strip().splitlines()]
            assert command == config["Entrypoint"]
            seen += 1
        assert text.count("workingDir: /ppml/occlum_instance") == text.count("command:")
    assert config["WorkingDir"] == "/ppml/occlum_instance" and seen >= 2
