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
from ppml_build.plan.roles import role_launch, role_script
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
