"""A cluster role's script: the host's cluster parameters checked, then the fixed command (run
by a real POSIX sh here, with a stand-in java that prints the argv it gets)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ppml_build.plan import make_plan
from ppml_build.plan.roles import RULES, SPARK_EXECUTOR_BACKEND, role_launch, role_script
from ppml_build.recipe import load_recipe_text

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: pi-cluster
base: {image: "r/x:1"}
app:
  command: [/opt/spark/bin/spark-submit, --class, Pi, /app/pi.jar]
resources:
  spark: {spark.executor.memory: 3g, spark.executor.cores: 2}
cluster: {roles: [driver, executor]}
"""
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
GOOD = {
    "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@127.0.0.1:7078",
    "SPARK_EXECUTOR_ID": "2",
    "SPARK_EXECUTOR_CORES": "2",
    "SPARK_APPLICATION_ID": "app-20261202182400-0000",
    "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
    "SPARK_RESOURCE_PROFILE_ID": "0",
    "SPARK_EXECUTOR_POD_NAME": "pi-cluster-exec-2",
    "_SPARK_AUTH_SECRET": "c2VjcmV0LW5ldmVyLXByaW50ZWQ=",
}


@pytest.fixture(scope="module")
def launch():
    recipe = load_recipe_text(RECIPE)
    return role_launch(recipe, make_plan(recipe, "executor"))


def runnable_script(launch, directory: Path) -> Path:
    """The role script, with java replaced by a stand-in that prints its argv a line each."""
    fake = directory / "java"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" "$a"; done\n')
    fake.chmod(0o755)
    path = directory / f"{launch.role}.sh"
    path.write_text(role_script(launch).replace(JAVA, str(fake)))
    path.chmod(0o755)
    return path


@pytest.fixture
def script(launch, tmp_path) -> Path:
    return runnable_script(launch, tmp_path)


def run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(script), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_executor_runs_sparks_kubernetes_backend_with_exactly_the_checked_values(
    launch, script
):
    ran = run(script, GOOD)
    assert ran.returncode == 0, ran.stderr
    argv = [line[1:-1] for line in ran.stdout.splitlines()]
    assert argv[argv.index(SPARK_EXECUTOR_BACKEND) + 1 :] == [
        "--driver-url", GOOD["SPARK_DRIVER_URL"],
        "--executor-id", "2",
        "--cores", "2",
        "--app-id", GOOD["SPARK_APPLICATION_ID"],
        "--hostname", "127.0.0.1",
        "--resourceProfileId", "0",
        "--podName", "pi-cluster-exec-2",
    ]  # fmt: skip
    # the heap is the role's plan (3g), authentication and encryption fixed
    assert {"-Xms3072m", "-Xmx3072m", "-Dspark.authenticate=true"} <= set(argv)
    assert "-Dspark.network.crypto.enabled=true" in argv


@pytest.mark.parametrize(
    "name, value",
    [
        ("SPARK_DRIVER_URL", "spark://Other@127.0.0.1:7078"),
        ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@127.0.0.1:99999"),
        ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@evil host:7078"),
        ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@h:7078 --class Evil"),
        ("SPARK_EXECUTOR_ID", "one"),
        ("SPARK_EXECUTOR_ID", "0"),
        ("SPARK_EXECUTOR_CORES", "3"),  # more than the enclave was sized for
        ("SPARK_EXECUTOR_CORES", "-1"),
        ("SPARK_APPLICATION_ID", "app;rm -rf /"),
        ("SPARK_EXECUTOR_POD_IP", "-Dspark.x=1"),
        ("SPARK_RESOURCE_PROFILE_ID", "1e3"),
        ("SPARK_EXECUTOR_POD_NAME", "Exec_2"),
        ("_SPARK_AUTH_SECRET", "with space"),
        ("_SPARK_AUTH_SECRET", ""),
    ],
)
def test_a_malformed_cluster_parameter_stops_the_role_in_one_line(script, name, value):
    ran = run(script, {**GOOD, name: value})
    assert ran.returncode == 2 and ran.stdout == ""
    assert ran.stderr.count("\n") == 1 and f"{name} must be" in ran.stderr
    assert value not in ran.stderr or not value  # the value itself is never echoed


def test_a_missing_parameter_or_a_host_argument_stops_the_role(script):
    env = dict(GOOD)
    del env["SPARK_EXECUTOR_ID"]
    ran = run(script, env)
    assert ran.returncode == 2 and "SPARK_EXECUTOR_ID is not set" in ran.stderr
    ran = run(script, GOOD, "--class", "Evil")
    assert ran.returncode == 2 and ran.stdout == "" and "takes no arguments" in ran.stderr


def test_host_jvm_flags_never_become_arguments(script):
    ran = run(
        script, {**GOOD, "SPARK_JAVA_OPT_0": "-Dspark.evil=1", "SPARK_EXECUTOR_MEMORY": "64g"}
    )
    assert ran.returncode == 0
    assert "-Dspark.evil=1" not in ran.stdout and "64g" not in ran.stdout


def test_every_rule_is_explained():
    assert {
        p.rule
        for p in role_launch(
            load_recipe_text(RECIPE), make_plan(load_recipe_text(RECIPE), "executor")
        ).parameters
    } <= set(RULES)
    assert (
        role_launch(load_recipe_text(RECIPE), make_plan(load_recipe_text(RECIPE), "driver")) is None
    )


FLINK = """\
apiVersion: ppml-build/v1
kind: flink
name: wc-cluster
base: {image: "r/x:1"}
app:
  command: [java, -cp, "/app/wc.jar:/opt/flink/lib/*", Main]
resources:
  cpus: 2
  flink: {taskmanager.memory.process.size: 4096m, taskmanager.numberOfTaskSlots: 2}
cluster: {roles: [jobmanager, taskmanager]}
"""


def test_the_taskmanager_gets_every_memory_component_of_its_planned_process_size(tmp_path):
    recipe = load_recipe_text(FLINK)
    script = runnable_script(role_launch(recipe, make_plan(recipe, "taskmanager")), tmp_path)
    env = {
        "FLINK_JOBMANAGER_HOST": "jm.flink.svc",
        "FLINK_TASKMANAGER_HOST": "10.1.2.3",
        "FLINK_TASKMANAGER_RESOURCE_ID": "wc-taskmanager-1-1",
    }
    ran = run(script, env)
    assert ran.returncode == 0, ran.stderr
    argv = [line[1:-1] for line in ran.stdout.splitlines()]
    assert argv[argv.index("-cp") + 1] == "/app/wc.jar:/opt/flink/lib/*"  # the job jar too
    dynamic = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-D")
    assert dynamic["jobmanager.rpc.address"] == "jm.flink.svc"
    assert dynamic["taskmanager.host"] == dynamic["taskmanager.bind-host"] == "10.1.2.3"
    assert dynamic["taskmanager.resource-id"] == "wc-taskmanager-1-1"
    assert dynamic["taskmanager.numberOfTaskSlots"] == "2"
    parts = [
        "framework.heap.size", "task.heap.size", "framework.off-heap.size", "task.off-heap.size",
        "network.max", "managed.size", "jvm-metaspace.size", "jvm-overhead.max",
    ]  # fmt: skip
    total = sum(int(dynamic[f"taskmanager.memory.{p}"].rstrip("b")) for p in parts)
    assert total == 4096 * 2**20  # Flink accepts the components: they add up to the process
    assert dynamic["taskmanager.memory.network.min"] == dynamic["taskmanager.memory.network.max"]
    for name, bad in (
        ("FLINK_JOBMANAGER_HOST", "jm;evil"),
        ("FLINK_TASKMANAGER_RESOURCE_ID", "TM 1"),
    ):
        refused = run(script, {**env, name: bad})
        assert refused.returncode == 2 and f"{name} must be" in refused.stderr
