"""Kubernetes deployment files: valid against the Kubernetes API, sized from the enclave plan."""

from __future__ import annotations

import copy
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Literal

import pytest
import yaml
from kubernetes.client import ApiClient, V1Job, V1Pod
from pydantic import BaseModel, ConfigDict, Field

from ppml_build.cli import main
from ppml_build.errors import ImageError, PlanError, RecipeError
from ppml_build.k8s import parse_image, render_k8s
from ppml_build.plan import make_plan
from ppml_build.plan.pods import AESM_SOCKET, SGX_ENCLAVE, SGX_EPC, SGX_PROVISION, k8s_name
from ppml_build.recipe import load_recipe_text

MiB = 1 << 20
GiB = 1 << 30
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/ppml/app@{DIGEST}"
REPO = Path(__file__).resolve().parents[2]
SPARK_RECIPE = REPO / "recipes" / "spark" / "pyspark-sql-agg" / "recipe.yaml"
FLINK_RECIPE = REPO / "recipes" / "flink" / "pyflink-table" / "recipe.yaml"


def recipe(
    kind="spark", command="[/opt/spark/bin/spark-submit, /app/job.py]", extra="", name="demo"
):
    return load_recipe_text(f"""\
apiVersion: ppml-build/v1
kind: {kind}
name: {name}
base: {{image: "r/x:1"}}
app:
  command: {command}
{extra}""")


def bundle_for(rec, image=IMAGE, **kwargs):
    return render_k8s(rec, make_plan(rec), parse_image(image), **kwargs)


def load(bundle, name):
    return yaml.safe_load(bundle.files[name])


def mib(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2]) * MiB


# --- schema checks ---------------------------------------------------------------------------


def roundtrip(model, document: dict) -> dict:
    """Deserialize with the Kubernetes client's OpenAPI models and serialize again.

    The models drop keys they do not know, so a misspelt field comes back missing."""
    return ApiClient().sanitize_for_serialization(model.from_dict(document))


def assert_valid(model, document: dict) -> None:
    assert roundtrip(model, document) == document


class _Crd(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Fields of flinkdeployments.flink.apache.org v1beta1 (apache/flink-kubernetes-operator CRD)
# that we emit or might; podTemplate is checked against the Kubernetes Pod model.
class FlinkResource(_Crd):
    cpu: float | None = None
    memory: str | None = None
    ephemeralStorage: str | None = None


class FlinkRole(_Crd):
    podTemplate: dict | None = None
    replicas: int | None = None
    resource: FlinkResource | None = None


class FlinkJob(_Crd):
    jarURI: str | None = None
    entryClass: str | None = None
    args: list[str] | None = None
    parallelism: int | None = None
    state: Literal["running", "suspended"] | None = None
    upgradeMode: Literal["last-state", "savepoint", "stateless"] | None = None


class FlinkSpec(_Crd):
    image: str | None = None
    imagePullPolicy: str | None = None
    flinkVersion: str | None = Field(default=None, pattern=r"^v\d+_\d+$")
    serviceAccount: str | None = None
    flinkConfiguration: dict[str, str] | None = None
    mode: Literal["native", "standalone"] | None = None
    podTemplate: dict | None = None
    job: FlinkJob | None = None
    jobManager: FlinkRole | None = None
    taskManager: FlinkRole | None = None
    logConfiguration: dict[str, str] | None = None


class FlinkMetadata(_Crd):
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=45)
    namespace: str | None = None
    labels: dict[str, str] | None = None


class FlinkDeployment(_Crd):
    apiVersion: Literal["flink.apache.org/v1beta1"]
    kind: Literal["FlinkDeployment"]
    metadata: FlinkMetadata
    spec: FlinkSpec


def assert_valid_flink(document: dict) -> FlinkDeployment:
    deployment = FlinkDeployment.model_validate(document)
    for role in ("jobManager", "taskManager"):
        assert_valid(V1Pod, document["spec"][role]["podTemplate"])
    return deployment


def containers(pod: dict) -> list[dict]:
    return pod["spec"]["containers"]


def pod_templates(bundle) -> list[dict]:
    if "flinkdeployment.yaml" in bundle.files:
        spec = load(bundle, "flinkdeployment.yaml")["spec"]
        return [spec["jobManager"]["podTemplate"], spec["taskManager"]["podTemplate"]]
    if "job.yaml" in bundle.files:
        return [load(bundle, "job.yaml")["spec"]["template"]]
    return [load(bundle, "driver-pod-template.yaml"), load(bundle, "executor-pod-template.yaml")]


def spark_submit_confs(script: str) -> dict[str, str]:
    words = shlex.split(script.replace("\\\n", " "), comments=True)
    confs = {}
    for index, word in enumerate(words):
        if word == "--conf":
            key, _, value = words[index + 1].partition("=")
            confs[key] = value
    return confs


# --- Kubernetes schema -----------------------------------------------------------------------


def test_spark_pod_templates_are_valid_pods():
    bundle = bundle_for(recipe())
    driver = load(bundle, "driver-pod-template.yaml")
    executor = load(bundle, "executor-pod-template.yaml")
    assert_valid(V1Pod, driver)
    assert_valid(V1Pod, executor)
    assert containers(driver)[0]["name"] == "spark-kubernetes-driver"
    assert containers(executor)[0]["name"] == "spark-kubernetes-executor"


@pytest.mark.parametrize(
    "path, typo",
    [
        (("spec", "containers", 0), ("volumeMounts", "volumeMount")),
        (("spec", "containers", 0, "resources"), ("limits", "limit")),
        (("spec", "volumes", 0), ("hostPath", "hostpath")),
        (("spec",), ("containers", "container")),
    ],
)
def test_a_misspelt_field_fails_the_schema_check(path, typo):
    pod = load(bundle_for(recipe()), "driver-pod-template.yaml")
    broken = copy.deepcopy(pod)
    node = broken
    for part in path:
        node = node[part]
    node[typo[1]] = node.pop(typo[0])
    with pytest.raises((AssertionError, ValueError)):
        assert_valid(V1Pod, broken)


def test_a_misspelt_flink_field_fails_the_schema_check():
    document = load(
        bundle_for(recipe("flink", "[/usr/bin/python3, /app/job.py]")), "flinkdeployment.yaml"
    )
    assert_valid_flink(document)
    broken = copy.deepcopy(document)
    broken["spec"]["taskManager"]["resources"] = broken["spec"]["taskManager"].pop("resource")
    with pytest.raises((AssertionError, ValueError)):
        assert_valid_flink(broken)


def test_flink_deployment_matches_the_operator_crd_and_the_recipe():
    rec = recipe(
        "flink",
        "[/usr/bin/python3, /app/job.py]",
        """\
resources:
  cpus: 4
  flink: {taskmanager.memory.process.size: 4096m, taskmanager.numberOfTaskSlots: 3}
""",
        name="pyflink_table.v2",
    )
    plan = make_plan(rec)
    bundle = render_k8s(rec, plan, parse_image(IMAGE))
    assert list(bundle.files) == ["flinkdeployment.yaml"]
    document = load(bundle, "flinkdeployment.yaml")
    deployment = assert_valid_flink(document)
    assert deployment.metadata.name == "pyflink-table-v2"
    assert deployment.spec.image == IMAGE
    # the Flink release of ppml-build's Flink base (2.3.0), in the operator's FlinkVersion enum
    assert deployment.spec.flinkVersion == "v2_3"
    assert deployment.spec.flinkConfiguration == {
        "taskmanager.memory.process.size": "4096m",
        "taskmanager.numberOfTaskSlots": "3",
    }
    for role in (deployment.spec.jobManager, deployment.spec.taskManager):
        (container,) = containers(role.podTemplate)
        assert container["name"] == "flink-main-container"  # the operator's main container
        assert container["resources"]["limits"][SGX_EPC] == str(plan.enclave_size)
        assert container["command"] == ["gramine-sgx", "pyflink_table.v2"]
        # the operator makes resource.memory the container's memory: it must hold the enclave
        assert role.resource.memory == container["resources"]["limits"]["memory"][:-2] + "m"
        assert mib(container["resources"]["limits"]["memory"]) >= plan.enclave_size
        assert role.resource.cpu == 4
    assert any("kubernetes.entry.path" in warning for warning in bundle.warnings)


@pytest.mark.parametrize(
    "kind, command",
    [
        ("java", "[java, -Xmx2g, -cp, /app/app.jar, Main]"),
        ("python", "[/usr/bin/python3, /app/main.py]"),
    ],
)
def test_java_and_python_apps_get_a_job_with_the_same_sgx_resources(kind, command):
    rec = recipe(kind, command)
    plan = make_plan(rec)
    bundle = render_k8s(rec, plan, parse_image(IMAGE))
    job = load(bundle, "job.yaml")
    assert_valid(V1Job, job)
    assert job["spec"]["backoffLimit"] == 0
    template = job["spec"]["template"]
    assert template["spec"]["restartPolicy"] == "Never"
    limits = containers(template)[0]["resources"]["limits"]
    assert limits[SGX_EPC] == str(plan.enclave_size)
    assert limits[SGX_ENCLAVE] == "1" and limits[SGX_PROVISION] == "1"


# --- numbers from the plan -------------------------------------------------------------------


@pytest.mark.parametrize(
    "rec",
    [
        recipe(extra="resources:\n  spark: {spark.driver.memory: 6g, spark.executor.memory: 3g}\n"),
        recipe(extra="enclave: {size: 32G, remote_attestation: none}\n"),
        recipe("flink", "[/usr/bin/python3, /app/job.py]"),
        recipe("java", "[java, -Xmx12g, Main]", "enclave: {max_threads: 1024}\n"),
    ],
    ids=["spark-6g", "spark-32G-explicit", "flink", "java-12g"],
)
def test_epc_and_memory_follow_the_plan(rec):
    plan = make_plan(rec)
    bundle = render_k8s(rec, plan, parse_image(IMAGE))
    heap = plan.jvm.heap
    off_heap = plan.jvm.direct_memory + plan.jvm.metaspace + plan.jvm.code_cache
    for pod in pod_templates(bundle):
        resources = containers(pod)[0]["resources"]
        requests, limits = resources["requests"], resources["limits"]
        assert int(limits[SGX_EPC]) == int(requests[SGX_EPC]) == plan.enclave_size
        assert limits[SGX_ENCLAVE] == requests[SGX_ENCLAVE] == "1"
        assert requests["memory"] == limits["memory"]
        memory = mib(requests["memory"])
        assert heap + off_heap <= plan.enclave_size
        # the pod holds the enclave and the untrusted host process, a small margin only
        assert plan.enclave_size + 256 * MiB <= memory <= plan.enclave_size * 1.1 + 1 * GiB
        assert int(requests["cpu"]) >= 1 and "cpu" not in limits
    assert bundle.sizing.memory == mib(requests["memory"])


def test_spark_submit_conf_carries_the_recipe_values():
    rec = recipe(
        extra="""\
resources:
  cpus: 3
  spark: {spark.driver.memory: 2g, spark.executor.memory: 5g, spark.executor.cores: 4}
"""
    )
    plan = make_plan(rec)
    bundle = render_k8s(rec, plan, parse_image(IMAGE))
    confs = spark_submit_confs(bundle.files["spark-submit.sh"])
    assert confs["spark.driver.memory"] == "2g"
    assert confs["spark.executor.memory"] == "5g"
    assert confs["spark.executor.cores"] == "4"
    assert confs["spark.driver.cores"] == "3"
    assert confs["spark.kubernetes.container.image"] == IMAGE
    assert confs["spark.kubernetes.driver.podTemplateFile"] == "$HERE/driver-pod-template.yaml"
    assert confs["spark.kubernetes.executor.podTemplateFile"] == "$HERE/executor-pod-template.yaml"
    # Spark asks for memory + memoryOverhead: exactly the pod memory of the templates
    pod_memory = mib(
        containers(load(bundle, "executor-pod-template.yaml"))[0]["resources"]["requests"]["memory"]
    )
    assert (2048 + int(confs["spark.driver.memoryOverhead"][:-1])) * MiB == pod_memory
    assert (5120 + int(confs["spark.executor.memoryOverhead"][:-1])) * MiB == pod_memory
    # the executor pod asks for the executor's cores, the driver pod for the JVM's
    assert (
        containers(load(bundle, "executor-pod-template.yaml"))[0]["resources"]["requests"]["cpu"]
        == "4"
    )
    assert plan.jvm.heap == 5 * GiB <= plan.enclave_size
    assert bundle.files["spark-submit.sh"].rstrip().endswith('local:///app/job.py "$@"')


def test_spark_flags_in_the_command_win_as_in_the_plan():
    rec = recipe(
        command="[/opt/spark/bin/spark-submit, --driver-memory, 4g, --conf, "
        "spark.executor.cores=6, /app/job.py, --rows, '10']",
        extra="resources:\n  spark: {spark.driver.memory: 1g}\n",
    )
    plan = make_plan(rec)
    confs = render_k8s(rec, plan, parse_image(IMAGE)).spark_conf
    assert confs["spark.driver.memory"] == "4g" and plan.jvm.heap == 4 * GiB
    assert confs["spark.executor.cores"] == "6"
    assert confs["spark.executor.memory"] == "1g"  # Spark's default


def test_explicit_enclave_smaller_than_the_jvm_is_refused():
    rec = recipe(extra="resources:\n  spark: {spark.driver.memory: 6g}\nenclave: {size: 4G}\n")
    with pytest.raises(PlanError, match="enclave.size 4G is smaller than the JVM"):
        bundle_for(rec)


# --- attestation and image -------------------------------------------------------------------


def test_provisioning_and_aesmd_only_with_dcap():
    dcap = bundle_for(recipe(extra="enclave: {remote_attestation: dcap}\n"))
    none = bundle_for(recipe(extra="enclave: {remote_attestation: none}\n"))
    for pod in pod_templates(dcap):
        container = containers(pod)[0]
        assert container["resources"]["requests"][SGX_PROVISION] == "1"
        assert container["resources"]["limits"][SGX_PROVISION] == "1"
        assert container["volumeMounts"] == [{"name": "aesmd-socket", "mountPath": AESM_SOCKET}]
        assert pod["spec"]["volumes"] == [
            {"name": "aesmd-socket", "hostPath": {"path": AESM_SOCKET, "type": "Socket"}}
        ]
    for pod in pod_templates(none):
        assert_valid(V1Pod, pod)
        container = containers(pod)[0]
        assert SGX_PROVISION not in container["resources"]["requests"]
        assert SGX_PROVISION not in container["resources"]["limits"]
        assert "volumeMounts" not in container and "volumes" not in pod["spec"]
        assert container["resources"]["limits"][SGX_ENCLAVE] == "1"


def test_image_must_be_pinned_by_digest():
    assert str(parse_image(IMAGE)) == IMAGE
    tagged = f"reg.example.com:5000/team/app:1.2@{DIGEST}"
    assert parse_image(tagged).digest == DIGEST and parse_image(tagged).tag == "1.2"
    with pytest.raises(ImageError, match="not pinned by digest.*--allow-tag"):
        parse_image("reg.example.com/team/app:1.2")
    assert parse_image("reg.example.com/team/app:1.2", allow_tag=True).digest is None
    for bad in (
        "reg/app@sha256:abc",
        "reg/app@md5:" + "a" * 32,
        "Reg/App@" + DIGEST,
        "reg/app:@" + DIGEST,
        "reg app@" + DIGEST,
        "",
    ):
        with pytest.raises(ImageError):
            parse_image(bad, allow_tag=True)


def test_every_container_runs_the_signed_enclave_from_the_pinned_image():
    rec = recipe(name="sql-agg")
    bundle = bundle_for(rec)
    for pod in pod_templates(bundle):
        container = containers(pod)[0]
        assert container["image"] == IMAGE
        assert container["command"] == ["gramine-sgx", "sql-agg"]
    header = bundle.files["driver-pod-template.yaml"].split("apiVersion:")[0]
    assert "`gramine-sgx sql-agg`" in header and "The image's entrypoint runs the same" in header


def test_output_is_deterministic_and_names_are_dns_labels():
    rec = recipe(name="9.etl_job")
    first, second = bundle_for(rec), bundle_for(rec)
    assert first.files == second.files
    assert k8s_name("9.etl_job") == "app-9-etl-job"
    assert (
        re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", k8s_name("a" * 64))
        and len(k8s_name("a" * 64)) <= 45
    )
    labels = load(first, "driver-pod-template.yaml")["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "app-9-etl-job"


OCCLUM = 'libos: {type: occlum, version: "0.31"}\n'
OCCLUM_RUN = ["/opt/occlum/build/bin/occlum", "run", "/ppml/entry/start.sh"]
SPARK_TEMPLATES = ["driver-pod-template.yaml", "executor-pod-template.yaml"]


def occlum_epc(rec) -> int:
    from ppml_build.occlum.sizing import occlum_sizing

    return occlum_sizing(rec, make_plan(rec)).enclave_size_estimate


@pytest.mark.parametrize(
    "kind, command, files",
    [
        ("spark", "[/opt/spark/bin/spark-submit, --class, Pi, /app/pi.jar]", SPARK_TEMPLATES),
        (
            "flink",
            "[java, -Xmx1g, -cp, '/app/wc.jar:/opt/flink/lib/*', Main]",
            ["flinkdeployment.yaml"],
        ),
        ("java", "[java, -Xmx2g, -cp, /app/app.jar, Main]", ["job.yaml"]),
    ],
)
def test_occlum_pods_run_occlum_on_the_entry_script_with_the_occlum_enclaves_epc(
    kind, command, files
):
    """Same checks as Gramine's output: valid against the API models (the operator's CRD for
    Flink), SGX resources equal in requests and limits, memory holding the enclave."""
    rec = recipe(kind, command, OCCLUM)
    bundle = bundle_for(rec)
    epc = occlum_epc(rec)
    assert bundle.sizing.enclave_size == epc
    pods = []
    for name in files:
        document = load(bundle, name)
        if name == "flinkdeployment.yaml":
            assert_valid_flink(document)
            pods += [
                document["spec"][role]["podTemplate"] for role in ("jobManager", "taskManager")
            ]
        elif name == "job.yaml":
            assert_valid(V1Job, document)
            pods.append(document["spec"]["template"])
        else:
            assert_valid(V1Pod, document)
            pods.append(document)
        assert "occlum run /ppml/entry/start.sh" in bundle.files[name]  # the header says so
    for pod in pods:
        (container,) = containers(pod)
        assert container["command"] == OCCLUM_RUN
        assert container["workingDir"] == "/ppml/occlum_instance"
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits[SGX_EPC] == requests[SGX_EPC] == str(epc)
        assert limits[SGX_ENCLAVE] == "1"
        assert mib(limits["memory"]) >= epc + 256 * MiB


def test_occlum_with_host_argv_gets_no_k8s_files():
    rec = recipe("java", "[java, -cp, /app/app.jar, Main]", "  insecure_host_argv: true\n" + OCCLUM)
    with pytest.raises(RecipeError, match="remove app.insecure_host_argv"):
        bundle_for(rec)


# --- the spark-submit script, run -------------------------------------------------------------


def test_spark_submit_script_runs_spark_submit_with_the_templates_beside_it(tmp_path):
    out = tmp_path / "out"
    assert main(["k8s", str(SPARK_RECIPE), "--image", IMAGE, "--output-dir", str(out)]) == 0
    script = out / "spark-submit.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    spark_home = tmp_path / "spark"
    (spark_home / "bin").mkdir(parents=True)
    fake = spark_home / "bin" / "spark-submit"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SPARK_HOME": str(spark_home),
        "K8S_MASTER": "https://10.0.0.1:6443",
    }
    run = subprocess.run(
        [str(script), "--extra"], env=env, capture_output=True, text=True, check=True, timeout=30
    )
    args = run.stdout.splitlines()
    assert args[:4] == ["--master", "k8s://https://10.0.0.1:6443", "--deploy-mode", "cluster"]
    assert (
        f"spark.kubernetes.driver.podTemplateFile={out.resolve()}/driver-pod-template.yaml" in args
    )
    assert f"spark.kubernetes.container.image={IMAGE}" in args
    assert "spark.kubernetes.namespace=default" in args
    assert args[-2:] == ["local:///app/job.py", "--extra"]
    missing = subprocess.run(
        [str(script)], env={**env, "K8S_MASTER": ""}, capture_output=True, text=True, timeout=30
    )
    assert missing.returncode != 0 and "K8S_MASTER" in missing.stderr


# --- CLI -------------------------------------------------------------------------------------


def test_cli_writes_the_files_and_prints_their_paths(tmp_path, capsys):
    out = tmp_path / "k8s"
    assert main(["k8s", str(FLINK_RECIPE), "--image", IMAGE, "--output-dir", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [str(out / "flinkdeployment.yaml")]
    assert "warning:" in printed.err
    assert_valid_flink(yaml.safe_load((out / "flinkdeployment.yaml").read_text()))
    assert sorted(p.name for p in out.iterdir()) == ["flinkdeployment.yaml"]  # no temp files


def test_cli_default_output_dir_and_json(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.chdir(tmp_path)
    assert main(["k8s", str(SPARK_RECIPE), "--image", IMAGE, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    out = tmp_path / "ppml-out" / "pyspark-sql-agg" / "k8s"
    assert sorted(p.name for p in out.iterdir()) == [
        "driver-pod-template.yaml",
        "executor-pod-template.yaml",
        "spark-submit.sh",
    ]
    assert result["image"] == IMAGE and result["epc_bytes"] == 4 * GiB
    assert result["spark_conf"]["spark.kubernetes.driver.podTemplateFile"] == str(
        out / "driver-pod-template.yaml"
    )
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["k8s", str(SPARK_RECIPE), "--image", IMAGE]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_cli_refuses_an_unpinned_image_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "k8s"
    code = main(
        [
            "k8s",
            str(SPARK_RECIPE),
            "--image",
            "127.0.0.1:5000/ppml/app:latest",
            "--output-dir",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ppml-build: error: --image ")
    assert "sha256" in err and "Traceback" not in err
    assert not out.exists()
    assert (
        main(
            [
                "k8s",
                str(SPARK_RECIPE),
                "--image",
                "127.0.0.1:5000/ppml/app:latest",
                "--allow-tag",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )


def test_cli_bad_recipe_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "recipe.yaml"
    bad.write_text(SPARK_RECIPE.read_text().replace("kind: spark", "kind: sparkk"))
    (tmp_path / "job.py").write_text("print(1)\n")
    out = tmp_path / "k8s"
    assert main(["k8s", str(bad), "--image", IMAGE, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:" in err and "kind" in err
    assert not out.exists()
    too_small = tmp_path / "small.yaml"
    too_small.write_text(SPARK_RECIPE.read_text().replace("size: auto", "size: 1G"))
    assert main(["k8s", str(too_small), "--image", IMAGE, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{too_small}: enclave.size 1G is smaller than the JVM" in err
    assert not out.exists()


def test_cli_flink_version_is_checked_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "k8s"
    assert (
        main(
            [
                "k8s",
                str(FLINK_RECIPE),
                "--image",
                IMAGE,
                "--output-dir",
                str(out),
                "--flink-version",
                "1.20",
            ]
        )
        == 2
    )
    assert "--flink-version '1.20'" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "k8s",
                str(FLINK_RECIPE),
                "--image",
                IMAGE,
                "--output-dir",
                str(out),
                "--flink-version",
                "v1_20",
            ]
        )
        == 0
    )
    assert (
        yaml.safe_load((out / "flinkdeployment.yaml").read_text())["spec"]["flinkVersion"]
        == "v1_20"
    )
