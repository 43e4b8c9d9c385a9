"""A cluster role's script started for real, natively (no LibOS yet): the Flink TaskManager's
fixed command registers with a JobManager in another container, on 127.0.0.1.

The JobManager here is a plain session entrypoint started by the test (its own role script is
not written yet); the TaskManager is exactly `/bin/sh /ppml/roles/taskmanager.sh` with only its
three cluster parameters in the environment.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from ppml_build.plan import make_plan
from ppml_build.plan.role_script import role_script
from ppml_build.plan.roles import role_launch
from ppml_build.recipe import load_recipe_text

pytestmark = pytest.mark.docker

JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
RECIPE = """\
apiVersion: ppml-build/v1
kind: flink
name: wc-cluster
base: {image: "r/x:1"}
app:
  command: [java, -cp, "/opt/flink/lib/*", Main]
resources:
  cpus: 1
  flink: {taskmanager.memory.process.size: 1728m, taskmanager.numberOfTaskSlots: 1}
cluster: {roles: [jobmanager, taskmanager]}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_standalone_master(docker_client, image: str, port: int, ui_port: int, secret: str):
    """A standalone Spark Master with no workers on 127.0.0.1 (it stands in for the Kubernetes
    API server), sharing spark.authenticate's secret with the driver it accepts."""
    return docker_client.containers.run(
        image,
        entrypoint=[JAVA, "-Xmx256m", "-Dspark.authenticate=true",
                    f"-Dspark.authenticate.secret={secret}", "-cp", "/opt/spark/jars/*",
                    "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(port), "--webui-port", str(ui_port)],
        command=[], network_mode="host", detach=True,
    )  # fmt: skip


def test_the_taskmanager_role_script_registers_with_a_jobmanager(
    docker_client, flink_base, tmp_path
):
    recipe = load_recipe_text(RECIPE)
    script = role_script(role_launch(recipe, make_plan(recipe, "taskmanager")))
    (tmp_path / "taskmanager.sh").write_text(script)
    rest = free_port()
    containers = []
    try:
        containers.append(
            docker_client.containers.run(
                flink_base.reference,
                entrypoint=[JAVA, "-Xmx512m", "-cp", "/opt/flink/lib/*",
                            "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                            "--configDir", "/opt/flink/conf",
                            "-D", "jobmanager.rpc.address=127.0.0.1",
                            "-D", "jobmanager.bind-host=127.0.0.1",
                            "-D", f"rest.port={rest}", "-D", "rest.bind-address=127.0.0.1"],
                command=[], network_mode="host", detach=True,
            )
        )  # fmt: skip
        containers.append(
            docker_client.containers.run(
                flink_base.reference,
                entrypoint=["/bin/sh", "/ppml/roles/taskmanager.sh"],
                command=[],
                environment={
                    "FLINK_JOBMANAGER_HOST": "127.0.0.1",
                    "FLINK_TASKMANAGER_HOST": "127.0.0.1",
                    "FLINK_TASKMANAGER_RESOURCE_ID": "wc-taskmanager-1",
                },
                volumes={str(tmp_path): {"bind": "/ppml/roles", "mode": "ro"}},
                network_mode="host",
                detach=True,
            )
        )
        deadline, found = time.monotonic() + 120, []
        while time.monotonic() < deadline and not found:
            time.sleep(2)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{rest}/taskmanagers", timeout=5
                ) as r:
                    found = [tm["id"] for tm in json.load(r)["taskmanagers"]]
            except OSError:
                continue
        logs = containers[1].logs().decode("utf-8", "replace")
        assert found == ["wc-taskmanager-1"], logs[-3000:]
    finally:
        for container in containers:
            container.remove(force=True)


SPARK_RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: pi-cluster
base: {image: "r/x:1"}
app:
  command: [/opt/spark/bin/spark-submit, /app/job.py]
resources:
  spark: {spark.executor.memory: 512m, spark.executor.cores: 1}
cluster: {roles: [driver, executor]}
"""
# The driver: waits for two executors, runs a JVM-only job (no Python workers), and prints how
# many tasks each executor ran, from its own REST API.
DRIVER_JOB = """\
import json, sys, time, urllib.request
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
print("APPID", sc.applicationId, flush=True)
deadline = time.time() + 180
while sc._jsc.sc().getExecutorMemoryStatus().size() < 3 and time.time() < deadline:
    time.sleep(1)
total = spark.range(0, 1000000, numPartitions=8).selectExpr("sum(id) AS s").first()["s"]
print("RESULT", total, flush=True)
url = sc.uiWebUrl + "/api/v1/applications/" + sc.applicationId + "/executors"
for item in json.load(urllib.request.urlopen(url)):
    if item["id"] != "driver":
        print("TASKS", item["id"], item["totalTasks"], flush=True)
spark.stop()
"""


def failure_lines(containers) -> str:
    """The first error lines of every container's log (a JVM's logs run long)."""
    found = []
    for container in containers:
        lines = container.logs().decode("utf-8", "replace").splitlines()
        errors = [line for line in lines if "Exception" in line or "ERROR" in line][:6]
        found.append(f"{container.attrs['Config']['Entrypoint'][-1]}: " + " | ".join(errors))
    return "\n".join(found)


def test_two_executors_from_the_role_script_run_a_drivers_tasks(
    docker_client, spark_base, tmp_path
):
    """No Kubernetes API server: a standalone Master with no workers accepts the driver's app,
    and the driver accepts executors that register themselves (CoarseGrainedSchedulerBackend
    checks only for a duplicate or excluded id), started exactly as Spark's Kubernetes image
    starts them, from the executor role script with only its cluster parameters."""
    recipe = load_recipe_text(SPARK_RECIPE)
    script = role_script(role_launch(recipe, make_plan(recipe, "executor")))
    (tmp_path / "executor.sh").write_text(script)
    (tmp_path / "job.py").write_text(DRIVER_JOB)
    master_port, driver_port, ui_port = free_port(), free_port(), free_port()
    secret = "ppml-test-" + "ab" * 16
    run = docker_client.containers.run
    containers = []
    try:
        containers.append(
            start_standalone_master(
                docker_client, spark_base.reference, master_port, free_port(), secret
            )
        )
        driver = run(
            spark_base.reference,
            entrypoint=["/opt/spark/bin/spark-submit", "--master",
                        f"spark://127.0.0.1:{master_port}",
                        "--conf", "spark.driver.host=127.0.0.1",
                        "--conf", f"spark.driver.port={driver_port}",
                        "--conf", f"spark.ui.port={ui_port}",
                        "--conf", "spark.authenticate=true",
                        "--conf", f"spark.authenticate.secret={secret}",
                        "--conf", "spark.network.crypto.enabled=true",
                        "--conf", "spark.ui.showConsoleProgress=false",
                        # Every executor here has the address 127.0.0.1 (on Kubernetes each pod
                        # has its own): without this, one reads another's shuffle files from
                        # its own disk, as if they shared a host.
                        "--conf", "spark.shuffle.readHostLocalDisk=false",
                        "/job/job.py"],
            command=[], network_mode="host", detach=True,
            volumes={str(tmp_path): {"bind": "/job", "mode": "ro"}},
        )  # fmt: skip
        containers.append(driver)
        app_id = None
        deadline = time.monotonic() + 120
        while app_id is None and time.monotonic() < deadline:
            time.sleep(1)
            for line in driver.logs(stdout=True, stderr=False).decode().splitlines():
                if line.startswith("APPID "):
                    app_id = line.split()[1]
        assert app_id, driver.logs().decode()[-3000:]
        for executor_id in ("1", "2"):
            containers.append(
                run(
                    spark_base.reference,
                    entrypoint=["/bin/sh", "/ppml/roles/executor.sh"],
                    command=[],
                    environment={
                        "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{driver_port}",
                        "SPARK_EXECUTOR_ID": executor_id,
                        "SPARK_EXECUTOR_CORES": "1",
                        "SPARK_APPLICATION_ID": app_id,
                        "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
                        "SPARK_RESOURCE_PROFILE_ID": "0",
                        "SPARK_EXECUTOR_POD_NAME": f"pi-cluster-exec-{executor_id}",
                        "_SPARK_AUTH_SECRET": secret,
                    },
                    volumes={str(tmp_path): {"bind": "/ppml/roles", "mode": "ro"}},
                    network_mode="host",
                    detach=True,
                )
            )
        status = driver.wait(timeout=300)
        out = driver.logs(stdout=True, stderr=False).decode()
        assert status["StatusCode"] == 0, failure_lines(containers)
        assert f"RESULT {sum(range(1000000))}" in out
        tasks = dict(line.split()[1:] for line in out.splitlines() if line.startswith("TASKS "))
        assert set(tasks) == {"1", "2"} and all(int(n) > 0 for n in tasks.values()), out
    finally:
        for container in containers:
            container.remove(force=True)
