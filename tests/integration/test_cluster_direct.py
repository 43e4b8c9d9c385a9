"""A cluster recipe built for real, its role enclaves run under Gramine's own LibOS.

`ppml-build build` on a cluster recipe makes one image with an enclave per role, each with its
own signed manifest (/ppml/<name>-<role>.manifest.sgx, .sig) and record. Here the bundled Flink
WordCount, as a cluster (parallelism 2), runs on a JobManager and two TaskManagers in separate
containers on 127.0.0.1, each `gramine-direct /ppml/<name>-<role>`: the signed role manifest
exactly as built, with only its cluster parameters from the host. In application mode the
JobManager runs the job's main(), so the job's RESULT lines are its output. The bundled PySpark
job runs the same way on a driver and two executors.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from test_build import copy_recipe
from test_recipes import EXPECTED, answer
from test_roles_native import free_port, start_standalone_master

from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions
from ppml_build.plan.executor_pod import EXECUTOR_POD_TEMPLATE, SPARK_AUTH_SECRET_KEY
from ppml_build.plan.roles import SPARK_DRIVER_PORT

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parents[2]
WORDCOUNT = "flink-java-wordcount"
JOB_CLASS = "org.ppmlbuild.examples.StreamingWordCount"
DIRECT = {"network_mode": "host", "security_opt": ["seccomp=unconfined"], "detach": True}


def build_as_cluster(
    work: Path, base: tuple[str, str], kind: str, name: str, edit, roles: str, key, registry
):
    """The bundled recipe ``name`` copied to ``work`` on the pushed base, its text changed by
    ``edit``, with ``cluster: roles``, built: (recipe path, BuildResult)."""
    remote, digest = base
    recipe = copy_recipe(PROJECT / "recipes" / kind / name, work / name, remote, digest)
    recipe.write_text(edit(recipe.read_text()) + f"\ncluster:\n  roles: {roles}\n")
    result = backends.build(
        BuildOptions(
            recipe=recipe,
            key=key,
            output_dir=work / "out",
            tag=f"ppml-test/{name}-cluster:direct",
            registry_auth=registry.auth_file,
            date="2026-11-01",
        )
    )
    return recipe, result


@pytest.fixture(scope="module")
def flink_cluster_build(pushed_bases, key, registry, tmp_path_factory):
    """The bundled WordCount as a cluster recipe: parallelism 2, one slot per TaskManager."""

    def parallelism_2(text: str) -> str:
        changed = text.replace(f"            {JOB_CLASS}]", f"            {JOB_CLASS}, '2']")
        assert "'2']" in changed
        return changed

    return build_as_cluster(
        tmp_path_factory.mktemp("cluster"), pushed_bases["flink"], "flink", WORDCOUNT,
        parallelism_2, "[jobmanager, taskmanager]", key, registry,
    )  # fmt: skip


def test_the_cluster_build_records_an_enclave_per_role(flink_cluster_build, docker_client):
    _, result = flink_cluster_build
    record = result.record
    assert record["schema"] == "ppml-build/cluster/v1"
    assert list(record["roles"]) == ["jobmanager", "taskmanager"]
    assert len({role["mrenclave"] for role in record["roles"].values()}) == 2
    role = record["roles"]["taskmanager"]
    own = json.loads((result.output_dir / role["record"]).read_text())
    labels = docker_client.images.get(result.image).labels
    assert own["mrenclave"] == role["mrenclave"] == labels["ppml.role.taskmanager.mrenclave"]
    assert "ppml.mrenclave" not in labels  # no single identity for the whole image
    # `docker run IMAGE ROLE` starts that role's enclave, as its pods do on Kubernetes
    config = docker_client.images.get(result.image).attrs["Config"]
    assert config["Entrypoint"] == ["/ppml/roles/entry.sh"] and not config["Cmd"]
    manifest = tomllib.loads(
        (result.output_dir / f"{WORDCOUNT}-taskmanager.manifest.sgx").read_text()
    )
    env = manifest["loader"]["env"]
    passthrough = {name for name, value in env.items() if value == {"passthrough": True}}
    assert manifest["loader"]["argv"] == ["/bin/sh", "/ppml/roles/taskmanager.sh"]
    assert passthrough == {
        "FLINK_JOBMANAGER_HOST",
        "FLINK_TASKMANAGER_HOST",
        "FLINK_TASKMANAGER_RESOURCE_ID",
    }, env


def test_verify_checks_every_role_of_the_cluster_image(flink_cluster_build, capsys):
    """verify recomputes each role's MRENCLAVE from the image and compares it with the cluster
    record and that role's labels; the policies `policy` writes from the record pass too."""
    from ppml_build.cli import main

    _, result = flink_cluster_build
    record = result.output_dir / "measurement.json"
    policies = result.output_dir / "cluster-policies"
    policies.mkdir()
    assert main(["policy", str(record), "--format", "gramine-ratls", "-o", str(policies)]) == 0
    capsys.readouterr()
    code = main(
        ["verify", result.image, "--record", str(record),
         "--policy", str(policies / "jobmanager-ra-tls.env"),
         "--policy", str(policies / "taskmanager-ra-tls.env")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "role jobmanager:" in out and "role taskmanager:" in out
    assert out.splitlines()[-1].startswith("verified: 2 roles"), out[-2000:]
    for role in ("jobmanager", "taskmanager"):
        assert result.record["roles"][role]["mrenclave"] in out.splitlines()[-1]


def taskmanager(docker_client, image: str, resource_id: str, jobmanager: str, **env):
    return docker_client.containers.run(
        image,
        entrypoint=["gramine-direct", f"/ppml/{WORDCOUNT}-taskmanager"],
        command=[],
        environment={
            "FLINK_JOBMANAGER_HOST": jobmanager,
            "FLINK_TASKMANAGER_HOST": "127.0.0.1",
            "FLINK_TASKMANAGER_RESOURCE_ID": resource_id,
            **env,
        },
        **DIRECT,
    )


def failure_report(jobmanager: str, taskmanagers: list[str]) -> str:
    """The JobManager's errors and each TaskManager's last lines (Gramine's refusals there)."""
    errors = [line for line in jobmanager.splitlines() if "ERROR" in line or "Exception" in line]
    parts = ["jobmanager: " + "\n".join(errors[:12])]
    parts += [f"taskmanager {i}: " + log[-1500:] for i, log in enumerate(taskmanagers, 1)]
    return "\n".join(parts)


# What this machine has instead of a cluster: no SGX (gramine-direct for gramine-sgx, which the
# container entry takes from PPML_GRAMINE_LOADER) and no cluster DNS (a Service name is
# 127.0.0.1, where every pod here listens). Everything else is the generated files' own.
NO_SGX = {"PPML_GRAMINE_LOADER": "gramine-direct"}
HERE = "127.0.0.1"


def pod_env(template: dict, pod_name: str, services: set[str]) -> dict[str, str]:
    """A pod template's container env as Kubernetes would fill it in for pod ``pod_name``."""
    (container,) = template["spec"]["containers"]
    return resolve_env(container, pod_name, services)


def resolve_env(
    container: dict, pod_name: str, services: set[str], secret: str | None = None
) -> dict[str, str]:
    """A container's env as Kubernetes fills it in for pod ``pod_name`` in namespace default:
    the pod's own fields, literals (a Service name is 127.0.0.1) and, given ``secret``, the
    test's Secret holding it under SPARK_AUTH_SECRET_KEY."""
    env = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        field = source.get("fieldRef", {}).get("fieldPath")
        if field is not None:
            env[item["name"]] = {
                "status.podIP": HERE, "metadata.name": pod_name, "metadata.namespace": "default"
            }[field]  # fmt: skip
        elif "secretKeyRef" in source and secret is not None:
            assert source["secretKeyRef"]["key"] == SPARK_AUTH_SECRET_KEY, item
            env[item["name"]] = secret
        else:
            assert "valueFrom" not in item, item  # only the pod's own fields, and literals
            env[item["name"]] = HERE if item["value"] in services else item["value"]
    return env


def flink_deployment(recipe: Path, image: str, out: Path) -> dict:
    """`ppml-build k8s` for the cluster recipe: its FlinkDeployment."""
    import yaml

    from ppml_build.k8s_files import write_k8s

    write_k8s(recipe, image, out, allow_tag=True)
    return yaml.safe_load((out / "flinkdeployment.yaml").read_text())


def job_state(rest: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{rest}/jobs/overview", timeout=5) as reply:
            jobs = json.load(reply).get("jobs", [])
    except OSError:
        return None
    return jobs[0]["state"] if jobs else None


def test_wordcount_runs_as_its_flinkdeployment_says_on_jobmanager_and_taskmanager_enclaves(
    flink_cluster_build, docker_client, tmp_path
):
    """Each container is what the Flink operator (standalone mode) makes of `ppml-build k8s`'s
    FlinkDeployment: command kubernetes.entry.path, args `standalone-job --job-classname CLASS
    ARGS` (CmdStandaloneJobManagerDecorator) or `taskmanager`, env the pod template's. The
    entry starts each role's enclave under gramine-direct; the job's id is the one the
    deployment configures (the operator looks for it)."""
    recipe, result = flink_cluster_build
    spec = flink_deployment(recipe, result.image, tmp_path / "k8s")["spec"]
    entry = [spec["flinkConfiguration"]["kubernetes.entry.path"]]
    job = spec["job"]
    services = {spec["jobManager"]["podTemplate"]["spec"]["containers"][0]["env"][0]["value"]}
    containers = []
    try:
        jobmanager = docker_client.containers.run(
            result.image,
            entrypoint=entry,
            command=["standalone-job", "--job-classname", job["entryClass"], *job["args"]],
            environment={
                **pod_env(spec["jobManager"]["podTemplate"], "wc-jobmanager", services),
                **NO_SGX,
            },
            **DIRECT,
        )
        containers.append(jobmanager)
        # An extra variable the host sets is not on the role's list: it never reaches the JVM.
        injected = {"JAVA_TOOL_OPTIONS": "-Dppml.injected=yes"}
        assert spec["taskManager"]["replicas"] == 2
        for index in (1, 2):
            env = pod_env(spec["taskManager"]["podTemplate"], f"wc-taskmanager-{index}", services)
            containers.append(
                docker_client.containers.run(
                    result.image,
                    entrypoint=entry,
                    command=["taskmanager"],
                    environment={**env, **NO_SGX, **injected},
                    **DIRECT,
                )
            )
        # The JobManager stays up when the job ends, as the operator needs.
        deadline, state = time.monotonic() + 600, None
        while time.monotonic() < deadline and state not in ("FINISHED", "FAILED", "CANCELED"):
            time.sleep(2)
            jobmanager.reload()
            assert jobmanager.status == "running", jobmanager.logs().decode()[-3000:]
            state = job_state(f"http://{HERE}:8081")
        out = jobmanager.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        tm_logs = [c.logs().decode("utf-8", "replace") for c in containers[1:]]
        assert state == "FINISHED", failure_report(out, tm_logs)
        assert answer(out) == EXPECTED[WORDCOUNT](), out[-3000:]
        with urllib.request.urlopen(f"http://{HERE}:8081/jobs/overview", timeout=5) as reply:
            (listed,) = json.load(reply)["jobs"]
        assert listed["jid"] == spec["flinkConfiguration"]["$internal.pipeline.job-id"]
        deployed = [line for line in out.splitlines() if "Deploying" in line]
        for index in (1, 2):
            assert any(f"wc-taskmanager-{index} @" in line for line in deployed), deployed
        for log in tm_logs:
            # The JVM names the JAVA_TOOL_OPTIONS it got: the manifest's, not the host's.
            picked = [line for line in log.splitlines() if "Picked up JAVA_TOOL_OPTIONS" in line]
            assert picked and "-Dio.netty.transport.noNative=true" in picked[0], log[:2000]
            assert "ppml.injected" not in log
    finally:
        for container in containers:
            container.remove(force=True)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("FLINK_JOBMANAGER_HOST", "jm;touch /tmp/x"), ("FLINK_TASKMANAGER_RESOURCE_ID", "TM_1")],
)
def test_a_malformed_cluster_parameter_stops_the_role_enclave(
    flink_cluster_build, docker_client, variable, value
):
    _, result = flink_cluster_build
    container = taskmanager(
        docker_client, result.image, "wc-taskmanager-1", "127.0.0.1", **{variable: value}
    )
    try:
        status = container.wait(timeout=300)
        lines = [
            line
            for line in container.logs().decode("utf-8", "replace").splitlines()
            if line.startswith("ppml-build taskmanager:")
        ]
        assert status["StatusCode"] == 2
        assert len(lines) == 1 and lines[0].startswith(f"ppml-build taskmanager: {variable} must")
    finally:
        container.remove(force=True)


SQL_AGG = "pyspark-sql-agg"
# The job's own scheduling settings for this cluster, in the recipe's command (so signed):
# wait for both executors' cores (2 each: spark.executor.cores) before the first task, so both
# run tasks. Every executor here has the address 127.0.0.1 (on Kubernetes each pod has its
# own): without readHostLocalDisk off, one reads another's shuffle files from its own disk, as
# if they shared a host.
STANDALONE_CONF = [
    "--conf", "spark.cores.max=4",
    "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
    "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=600s",
    "--conf", "spark.shuffle.readHostLocalDisk=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def spark_cluster_build(pushed_bases, key, registry, tmp_path_factory):
    """The bundled PySpark SQL job (the README's demo) as a cluster recipe."""

    def standalone_scheduling(text: str) -> str:
        changed = text.replace(
            ", /app/job.py]", ", " + ", ".join(STANDALONE_CONF) + ", /app/job.py]"
        )
        assert all(conf in changed for conf in STANDALONE_CONF)
        return changed

    return build_as_cluster(
        tmp_path_factory.mktemp("spark-cluster"), pushed_bases["spark"], "spark", SQL_AGG,
        standalone_scheduling, "[driver, executor]", key, registry,
    )  # fmt: skip


def master_app_id(port: int, deadline: float) -> str | None:
    """The application the standalone Master accepted, from its web UI's JSON."""
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=5) as reply:
                apps = json.load(reply).get("activeapps", [])
        except OSError:
            continue
        if apps:
            return apps[0]["id"]
    return None


def spark_k8s_files(recipe: Path, image: str, out: Path) -> dict:
    """`ppml-build k8s` for the cluster recipe: its documents by file name."""
    import yaml

    from ppml_build.k8s_files import write_k8s

    write_k8s(recipe, image, out, allow_tag=True)
    return {path.name: yaml.safe_load(path.read_text()) for path in out.glob("*.yaml")}


def driver_conf(recipe: Path) -> dict[str, str]:
    """The --conf values of the driver's signed command (its role script's)."""
    from ppml_build.pipeline.stages import load_and_plan_build
    from ppml_build.plan.roles import role_launch

    loaded, _, plans = load_and_plan_build(recipe)
    launch = role_launch(loaded, plans["driver"], plans)
    (words,) = [words for name, words in launch.env_words if name == "PYSPARK_SUBMIT_ARGS"]
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--conf")


def executor_pod_env(
    template_env: dict, conf: dict, driver_host: str, executor_id: str, app_id: str
) -> dict[str, str]:
    """What Spark 4.3.0's Kubernetes backend sets on an executor pod's container
    (BasicExecutorFeatureStep, LocalDirsFeatureStep: the variables of
    org.apache.spark.deploy.k8s.Constants it names) over the template's env. Those not on the
    executor role's list (SPARK_JAVA_OPT_*, SPARK_EXECUTOR_MEMORY...) never reach its JVM."""
    java_opts = [
        f"-Dspark.driver.port={SPARK_DRIVER_PORT}",
        *(f"-D{key}={value}" for key, value in conf.items() if key.startswith("spark.auth")
          and key != "spark.authenticate.secret"),
        "-Dspark.network.crypto.enabled=true",
    ]  # fmt: skip
    return {
        **template_env,
        "SPARK_USER": "root",
        "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@{driver_host}:{SPARK_DRIVER_PORT}",
        "SPARK_EXECUTOR_CORES": conf["spark.executor.cores"],
        "SPARK_EXECUTOR_MEMORY": conf["spark.executor.memory"],
        "SPARK_APPLICATION_ID": app_id,
        "SPARK_CONF_DIR": "/opt/spark/conf",
        "SPARK_EXECUTOR_ID": executor_id,
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_IP": HERE,
        "SPARK_EXECUTOR_POD_NAME": f"{SQL_AGG}-exec-{executor_id}",
        **{f"SPARK_JAVA_OPT_{index}": opt for index, opt in enumerate(java_opts)},
        "SPARK_LOCAL_DIRS": f"/var/data/spark-{executor_id}",
    }


def test_the_sql_job_runs_as_its_k8s_files_say_on_a_driver_and_two_executor_enclaves(
    spark_cluster_build, docker_client, tmp_path
):
    """Every container is a pod of `ppml-build k8s`'s files: the driver as driver-pod.yaml says
    (the image's entry with `driver`, its env), each executor as Spark's Kubernetes backend
    makes a pod of the image's executor template (the entry with `executor`; the template's env
    and the backend's variables). Each role runs under gramine-direct with its signed manifest.

    No Kubernetes API server here, so the one change to the driver's pod is its master: a
    standalone Master with no workers (native; it stands in for the API server and is not one
    of the app's roles) accepts the driver's app. The driver accepts executors that register
    themselves (CoarseGrainedSchedulerBackend checks only for a duplicate or excluded id). A
    Service name is 127.0.0.1, where every pod here listens."""
    recipe, result = spark_cluster_build
    files = spark_k8s_files(recipe, result.image, tmp_path / "k8s")
    pod = files["driver-pod.yaml"]
    (driver_spec,) = pod["spec"]["containers"]
    template = yaml_of_image_file(docker_client, result.image, EXECUTOR_POD_TEMPLATE)
    assert template == files["executor-pod-template.yaml"]
    (executor_spec,) = template["spec"]["containers"]
    services = {files["driver-service.yaml"]["metadata"]["name"]}
    conf = driver_conf(recipe)
    master_port, master_ui = free_port(), free_port()
    secret = "ppml-test-" + "cd" * 16
    run = docker_client.containers.run
    containers = []
    try:
        containers.append(
            start_standalone_master(docker_client, result.image, master_port, master_ui, secret)
        )
        driver_env = resolve_env(driver_spec, pod["metadata"]["name"], services, secret)
        assert driver_env["SPARK_MASTER_URL"].startswith("k8s://https://")
        driver_env["SPARK_MASTER_URL"] = f"spark://{HERE}:{master_port}"  # the stand-in
        assert "command" not in driver_spec  # the image's entry
        driver = run(
            result.image,
            command=driver_spec["args"],
            environment={**driver_env, **NO_SGX},
            **DIRECT,
        )
        containers.append(driver)
        app_id = master_app_id(master_ui, time.monotonic() + 300)
        assert app_id, driver.logs().decode("utf-8", "replace")[-3000:]
        template_env = resolve_env(executor_spec, "unused", services, secret)
        for executor_id in ("1", "2"):
            env = executor_pod_env(
                template_env, conf, driver_env["SPARK_DRIVER_HOST"], executor_id, app_id
            )
            assert env["SPARK_DRIVER_URL"].endswith(f"@{HERE}:{SPARK_DRIVER_PORT}")
            # BasicExecutorFeatureStep: args `executor`, no command (the image's entry)
            containers.append(
                run(result.image, command=["executor"], environment={**env, **NO_SGX}, **DIRECT)
            )
        status = driver.wait(timeout=900)
        out = driver.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        executor_logs = [c.logs().decode("utf-8", "replace") for c in containers[2:]]
        assert status["StatusCode"] == 0, failure_report(
            driver.logs().decode("utf-8", "replace"), executor_logs
        )
        assert answer(out) == EXPECTED[SQL_AGG](), out[-3000:]
        for log in [out, *executor_logs]:
            assert secret not in log
        for log in executor_logs:
            assert re.search(r"Running task \S+ in stage", log), log[-3000:]
    finally:
        for container in containers:
            container.remove(force=True)


def yaml_of_image_file(docker_client, image: str, path: str) -> dict:
    """A YAML file of the image, read by a container that only prints it."""
    import yaml

    text = docker_client.containers.run(
        image, entrypoint=["cat", path], command=[], network_mode="none", remove=True
    )
    return yaml.safe_load(text)


def test_verify_checks_the_spark_cluster_image_and_the_driver_trusts_the_executor_template(
    spark_cluster_build, capsys
):
    """The executors' pod template, which the driver enclave hands Spark, is one of the driver's
    trusted files (hashed, so a host cannot swap it), and verify recomputes both roles."""
    from ppml_build.cli import main

    _, result = spark_cluster_build
    trusted = (result.output_dir / "roles" / "driver" / "trusted-files.json").read_text()
    assert EXECUTOR_POD_TEMPLATE in trusted
    code = main(["verify", result.image, "--record", str(result.output_dir / "measurement.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1].startswith("verified: 2 roles"), out[-2000:]


def test_a_driver_enclave_with_a_host_chosen_master_refuses_to_start(
    spark_cluster_build, docker_client
):
    """local[*] would run the whole job in the driver: not a cluster parameter Spark's
    Kubernetes backend or a standalone master gives, so the role script stops it."""
    _, result = spark_cluster_build
    container = docker_client.containers.run(
        result.image,
        entrypoint=["gramine-direct", f"/ppml/{SQL_AGG}-driver"],
        command=[],
        environment={
            "SPARK_MASTER_URL": "local[*]",
            "SPARK_DRIVER_HOST": "127.0.0.1",
            "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
            "_SPARK_AUTH_SECRET": "ppml-test-secret",
        },
        **DIRECT,
    )
    try:
        status = container.wait(timeout=300)
        lines = [
            line
            for line in container.logs().decode("utf-8", "replace").splitlines()
            if line.startswith("ppml-build driver:")
        ]
        assert status["StatusCode"] == 2
        assert len(lines) == 1 and lines[0].startswith("ppml-build driver: SPARK_MASTER_URL must")
    finally:
        container.remove(force=True)
