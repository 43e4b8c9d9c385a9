"""`ppml-build k8s` for a cluster recipe: each role's pod starts that role's enclave, with
exactly the role's cluster parameters from the pod and nothing else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes.client import V1Pod, V1Role, V1RoleBinding, V1Secret, V1Service, V1ServiceAccount
from test_k8s import IMAGE, assert_valid, assert_valid_flink, containers
from test_roles import FLINK as ROLES_FLINK
from test_roles import RECIPE as ROLES_SPARK

from ppml_build.cli import main
from ppml_build.k8s import parse_image
from ppml_build.k8s_roles import OPERATOR_CONF_DIR, render_cluster_k8s
from ppml_build.plan import make_plan
from ppml_build.plan.executor_pod import EXECUTOR_POD_TEMPLATE, SPARK_AUTH_DRIVER_FILE
from ppml_build.plan.pods import SGX_EPC, pod_sizing
from ppml_build.plan.role_script import entry_script, role_script, role_scripts
from ppml_build.plan.roles import (
    ENTRY_SCRIPT,
    ROLE_PARAMETERS,
    flink_job_id,
    role_launch,
)
from ppml_build.recipe import load_recipe_text

# The roles' Flink recipe, its job given an argument (parallelism 2).
FLINK = ROLES_FLINK.replace("Main]", "Main, '2']")


def plans_for(text: str) -> tuple:
    recipe = load_recipe_text(text)
    return recipe, {role: make_plan(recipe, role) for role in recipe.cluster.roles}


def test_the_flinkdeployment_starts_each_roles_enclave_with_its_parameters_only():
    recipe, plans = plans_for(FLINK)
    bundle = render_cluster_k8s(recipe, plans, parse_image(IMAGE), replicas=3)
    document = yaml.safe_load(bundle.files["flinkdeployment.yaml"])
    deployment = assert_valid_flink(document)
    spec = document["spec"]
    conf = spec["flinkConfiguration"]
    assert deployment.spec.mode == "standalone"
    # the operator runs kubernetes.entry.path in every pod; its ConfigMap stays off the image's
    # hashed configuration
    assert conf["kubernetes.entry.path"] == ENTRY_SCRIPT
    assert not conf["kubernetes.flink.conf.dir"].startswith("/opt/flink/")
    assert conf["kubernetes.flink.conf.dir"] == OPERATOR_CONF_DIR
    # the operator finds the job by the id the JobManager's fixed command gives it
    jm_argv = role_launch(recipe, plans["jobmanager"]).argv
    assert jm_argv[jm_argv.index("--job-id") + 1] == conf["$internal.pipeline.job-id"]
    assert conf["$internal.pipeline.job-id"] == flink_job_id(recipe)
    assert spec["job"] == {
        "entryClass": "Main",
        "args": ["2"],
        "upgradeMode": "stateless",
        "state": "running",
    }  # no jarURI: the operator would mount an empty usrlib over the job's class path
    assert spec["taskManager"]["replicas"] == 3
    assert conf["taskmanager.memory.process.size"] == "4096m"  # what the enclave was sized for
    assert conf["taskmanager.numberOfTaskSlots"] == "2"
    for role, key in (("jobmanager", "jobManager"), ("taskmanager", "taskManager")):
        (container,) = containers(spec[key]["podTemplate"])
        assert container["name"] == "flink-main-container"
        assert "command" not in container and "args" not in container  # the operator's
        names = [item["name"] for item in container["env"]]
        assert names == [parameter.name for parameter in ROLE_PARAMETERS[role]]
        limits = container["resources"]["limits"]
        assert limits[SGX_EPC] == str(plans[role].enclave_size)
        # Flink limits the pod to process size x factor: enough for the enclave
        process = int(conf[f"{role}.memory.process.size"].rstrip("m"))
        factor = float(conf[f"kubernetes.{role}.memory.limit-factor"])
        assert process * factor * 2**20 >= int(limits["memory"].rstrip("Mi")) * 2**20
    tm_env = {
        item["name"]: item for item in containers(spec["taskManager"]["podTemplate"])[0]["env"]
    }
    jm_env = {
        item["name"]: item for item in containers(spec["jobManager"]["podTemplate"])[0]["env"]
    }
    # one spelling of the JobManager's address on both sides: the operator's Service
    assert tm_env["FLINK_JOBMANAGER_HOST"] == jm_env["FLINK_JOBMANAGER_HOST"]
    assert jm_env["FLINK_JOBMANAGER_HOST"]["value"] == document["metadata"]["name"]
    assert tm_env["FLINK_TASKMANAGER_RESOURCE_ID"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.name"
    }
    assert jm_env["FLINK_JOBMANAGER_BIND_HOST"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "status.podIP"
    }


def run_entry(tmp_path: Path, roles: list[str], *args: str, loader: str | None = None):
    """The image's container entry, with a stand-in loader that prints its argv."""
    recipe, _ = plans_for(FLINK)
    fake = tmp_path / "gramine-sgx"
    fake.write_text('#!/bin/sh\nprintf "[%s]\\n" "$0" "$@"\n')
    fake.chmod(0o755)
    script = tmp_path / "entry.sh"
    script.write_text(entry_script(recipe, roles))
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    if loader is not None:
        env["PPML_GRAMINE_LOADER"] = loader
    return subprocess.run(
        ["/bin/sh", str(script), *args], env=env, capture_output=True, text=True, check=False
    )


def test_the_entry_starts_the_named_roles_enclave_and_drops_every_other_argument(tmp_path):
    ran = run_entry(
        tmp_path, ["jobmanager", "taskmanager"], "standalone-job", "--job-classname", "Evil"
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [f"[{tmp_path}/gramine-sgx]", "[/ppml/wc-cluster-jobmanager]"]
    ran = run_entry(tmp_path, ["jobmanager", "taskmanager"], "taskmanager")
    assert ran.stdout.splitlines()[1:] == ["[/ppml/wc-cluster-taskmanager]"]
    for args, loader in ((("bash", "-c", "id"), None), (("taskmanager",), "/bin/sh")):
        refused = run_entry(tmp_path, ["jobmanager", "taskmanager"], *args, loader=loader)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("ppml-build: ")


def test_k8s_for_a_cluster_needs_both_of_its_engines_roles(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(FLINK.replace("[jobmanager, taskmanager]", "[taskmanager]"))
    assert main(["k8s", str(path), "--image", IMAGE, "--output-dir", str(tmp_path / "k8s")]) == 2
    err = capsys.readouterr().err
    assert (
        "a flink cluster on Kubernetes runs jobmanager and taskmanager pods; add jobmanager" in err
    )
    assert err.count("\n") == 1 and not (tmp_path / "k8s").exists()


def test_the_jobmanager_binds_its_pod_and_advertises_the_service(tmp_path):
    recipe, plans = plans_for(FLINK)
    launch = role_launch(recipe, plans["jobmanager"])
    script = tmp_path / "jm.sh"
    java = launch.argv[0]
    script.write_text(role_script(launch).replace(java, "/bin/echo"))
    ran = subprocess.run(
        ["/bin/sh", str(script)],
        env={"FLINK_JOBMANAGER_HOST": "wc-cluster", "FLINK_JOBMANAGER_BIND_HOST": "10.1.2.3"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    words = ran.stdout.split()
    dynamic = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-D")
    assert dynamic["jobmanager.rpc.address"] == dynamic["rest.address"] == "wc-cluster"
    assert dynamic["jobmanager.bind-host"] == dynamic["rest.bind-address"] == "10.1.2.3"
    assert dynamic["execution.shutdown-on-application-finish"] == "false"


@pytest.mark.parametrize("replicas", ["0", "1001"])
def test_replicas_out_of_range_is_one_line(tmp_path, capsys, replicas):
    path = tmp_path / "recipe.yaml"
    path.write_text(FLINK)
    code = main(["k8s", str(path), "--image", IMAGE, "--replicas", replicas])
    assert code == 2
    err = capsys.readouterr().err
    assert "--replicas" in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------------
# Spark: the driver's pod, and the executor pods it creates from the image's template

SPARK_IMAGE = "registry.example:5000/ppml/pi@sha256:" + "ab" * 32


def spark_bundle():
    recipe, plans = plans_for(ROLES_SPARK)
    return recipe, plans, render_cluster_k8s(recipe, plans, parse_image(SPARK_IMAGE))


def test_the_spark_driver_pod_starts_the_driver_enclave_with_its_parameters_only():
    recipe, _, bundle = spark_bundle()
    assert sorted(bundle.files) == [
        "driver-pod.yaml",
        "driver-rbac.yaml",
        "driver-service.yaml",
        "executor-pod-template.yaml",
        "spark-auth-secret.sh",
    ]
    pod = yaml.safe_load(bundle.files["driver-pod.yaml"])
    assert_valid(V1Pod, pod)
    (driver,) = containers(pod)
    # the image's entry picks the driver's enclave; no command, no other argument
    assert "command" not in driver and driver["args"] == ["driver"]
    assert driver["image"] == SPARK_IMAGE
    env = {item["name"]: item for item in driver["env"]}
    assert list(env) == [parameter.name for parameter in ROLE_PARAMETERS["driver"]]
    assert env["SPARK_MASTER_URL"]["value"] == "k8s://https://kubernetes.default.svc:443"
    assert env["SPARK_DRIVER_BIND_ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SPARK_DRIVER_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SPARK_EXECUTOR_IMAGE"]["value"] == SPARK_IMAGE
    # the secret only by reference, never as a value
    assert "value" not in env["_SPARK_AUTH_SECRET"]
    assert env["_SPARK_AUTH_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "pi-cluster-spark-auth",
        "key": "secret",
    }
    # the Secret's file, where the driver's fixed configuration reads it on Kubernetes
    mount = next(m for m in driver["volumeMounts"] if m["name"] == "spark-auth")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "spark-auth")
    assert f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}" == SPARK_AUTH_DRIVER_FILE
    # executors reach the driver at SPARK_DRIVER_HOST: the headless Service of this pod
    service = yaml.safe_load(bundle.files["driver-service.yaml"])
    assert_valid(V1Service, service)
    assert env["SPARK_DRIVER_HOST"]["value"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["port"] for p in service["spec"]["ports"]} >= {7078, 7079}
    rbac = yaml.safe_load(bundle.files["driver-rbac.yaml"])
    account, role, binding = rbac["items"]
    assert_valid(V1ServiceAccount, account)
    assert_valid(V1Role, role)
    assert_valid(V1RoleBinding, binding)
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert "pods" in role["rules"][0]["resources"] and "create" in role["rules"][0]["verbs"]


def test_the_executor_template_is_the_images_and_spark_sizes_its_pods_for_the_enclave():
    recipe, plans, bundle = spark_bundle()
    # the file k8s writes is the one the image carries, where the driver enclave reads it
    in_image = role_scripts(recipe, plans)[EXECUTOR_POD_TEMPLATE]
    assert bundle.files["executor-pod-template.yaml"] == in_image
    template = yaml.safe_load(in_image)
    assert_valid(V1Pod, template)
    (executor,) = containers(template)
    # Spark gives the image and the `executor` argument; the template only the secret's
    # reference and the SGX resources, which Spark keeps
    assert executor["name"] == "spark-kubernetes-executor"
    assert not {"image", "command", "args"} & set(executor)
    assert executor["env"] == [
        {
            "name": "_SPARK_AUTH_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "pi-cluster-spark-auth", "key": "secret"}},
        }
    ]
    sizing = pod_sizing(recipe, plans["executor"])
    assert executor["resources"]["limits"][SGX_EPC] == str(sizing.enclave_size)
    # Spark sets the pod's memory to spark.executor.memory + memoryOverhead
    # (BasicExecutorFeatureStep): the driver's signed configuration makes that the enclave's pod
    submit = role_launch(recipe, plans["driver"], plans).argv
    conf = dict(submit[i + 1].split("=", 1) for i, a in enumerate(submit) if a == "--conf")
    memory = int(conf["spark.executor.memory"][:-1]) + int(
        conf["spark.executor.memoryOverhead"][:-1]
    )
    assert f"{memory}Mi" == sizing.memory_quantity == executor["resources"]["limits"]["memory"]
    assert conf["spark.executor.cores"] == str(plans["executor"].jvm.cpus)
    assert conf["spark.kubernetes.executor.podTemplateFile"] == EXECUTOR_POD_TEMPLATE


def test_the_secret_script_pipes_a_fresh_secret_both_sides_agree_on(tmp_path):
    """Spark's Kubernetes driver takes base64 of its Secret file's bytes
    (SecurityManager.secretKeyFromFile); the executors take _SPARK_AUTH_SECRET: the two data
    entries make them one value. Nothing is written but what kubectl reads from its pipe."""
    import base64

    _, _, bundle = spark_bundle()
    script = tmp_path / "spark-auth-secret.sh"
    script.write_text(bundle.files["spark-auth-secret.sh"])
    assert bundle.mode("spark-auth-secret.sh") == 0o755
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "kubectl").write_text('#!/bin/sh\nprintf "%s " "$@" > "$OUT.args"; cat > "$OUT"\n')
    (fake / "kubectl").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    secrets = []
    for run_number in (1, 2):
        out = tmp_path / f"kubectl-{run_number}"
        ran = subprocess.run(
            ["/bin/sh", str(script)],
            cwd=work,
            env={"PATH": f"{fake}:/usr/bin:/bin", "OUT": str(out), "K8S_NAMESPACE": "jobs"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        assert out.with_suffix(".args").read_text().split() == ["-n", "jobs", "apply", "-f", "-"]
        document = yaml.safe_load(out.read_text())
        assert_valid(V1Secret, document)
        assert document["metadata"]["name"] == "pi-cluster-spark-auth"
        data = document["data"]
        executors = base64.b64decode(data["secret"]).decode()
        driver_file = base64.b64decode(data["driver-file"])
        assert base64.b64encode(driver_file).decode() == executors
        assert len(driver_file) == 32
        # the value passes the roles' secret rule
        assert set(executors) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
        )
        secrets.append(executors)
    assert secrets[0] != secrets[1]
    assert list(work.iterdir()) == []
    assert secrets[0] not in "".join(bundle.files.values())
