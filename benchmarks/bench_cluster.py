#!/usr/bin/env python3
"""Cluster roles: the bundled jobs on a multi-container cluster, role enclaves native vs direct.

Needs root, dockerd, the local registry with the Spark and Flink Gramine bases (127.0.0.1:5000,
`ppml-build base bootstrap`) and a signing key (default /tmp/keys/k.pem). It builds the bundled
pyspark-sql-agg and flink-java-wordcount as cluster recipes (temporary copies with `cluster:`;
WordCount with parallelism 2) into ppml-bench/<name>-cluster:latest. Then it runs each cluster
twice per round, the way tests/integration/test_cluster_direct.py does:

- Spark: a standalone Master with no workers (native in both modes: it stands in for the
  Kubernetes API server), the driver (waiting for both executors' cores), two executors;
- Flink: a JobManager in application mode (the job's main()), two TaskManagers.

Every role runs its role's command: "native" runs the role script in the image (`/bin/sh
/ppml/roles/ROLE.sh`, no LibOS), "direct" runs `gramine-direct /ppml/NAME-ROLE` with the
signed role manifest (Gramine's LibOS, no SGX).

Figures, by Docker's clocks (State.StartedAt, FinishedAt, log timestamps):
- *wall*: the driver's container start to its exit, the JobManager's to its job's end (it
  stays up after, as the Kubernetes operator needs);
- *role startup*, per role: its container start to the log line saying it is up: the driver's
  application registered with the Master (the Master's "Registered app"), the JobManager's
  "Rest endpoint listening at", each executor's "Successfully registered with driver", each
  TaskManager's registration at the JobManager ("Registering TaskManager with ResourceID
  <id>");
- the ratio direct / native of each. No target is set in the issue: this reports them.

    .venv/bin/python benchmarks/bench_cluster.py                 # both clusters, 2 rounds
    .venv/bin/python benchmarks/bench_cluster.py --only flink --rounds 1

The best (minimum) of the rounds is shown; --json prints every round. Exit 0 with figures, 1
when a run or a build fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_direct import epoch

from ppml_build.image.engine import connect
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions
from ppml_build.plan.roles import SPARK_DRIVER_PORT, role_script_path

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_KEY = Path("/tmp/keys/k.pem")
REGISTRY = "127.0.0.1:5000"
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
SPARK, FLINK = "pyspark-sql-agg", "flink-java-wordcount"
# The log line that says a worker registered: the executor's own (Spark logs INFO to the
# console), the JobManager's for a TaskManager (whose JVM logs only errors to the console).
REGISTERED = {
    "executor": "Successfully registered with driver",
    "taskmanager": "Registering TaskManager with ResourceID {resource_id} ",
}
DIRECT = {"security_opt": ["seccomp=unconfined"]}
# The job's scheduling settings for this cluster, as tests/integration/test_cluster_direct.py
# has them (and explains); restated since a benchmark runs without the tests' modules.
STANDALONE_CONF = [
    "--conf", "spark.cores.max=2",
    "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
    "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=600s",
    "--conf", "spark.shuffle.readHostLocalDisk=false",
]  # fmt: skip


class RunFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_cluster(kind: str, name: str, key: Path, work: Path) -> str:
    """The bundled recipe as a cluster recipe, built with this checkout's builder."""
    copy = work / name
    shutil.copytree(PROJECT / "recipes" / kind / name, copy)
    recipe = copy / "recipe.yaml"
    text = recipe.read_text()
    if kind == "flink":
        text = text.replace(
            "org.ppmlbuild.examples.StreamingWordCount]",
            "org.ppmlbuild.examples.StreamingWordCount, '2']",
        )
        roles = "[jobmanager, taskmanager]"
    else:
        # The job's scheduling settings for this cluster (as test_cluster_direct.py has them).
        text = text.replace(", /app/job.py]", ", " + ", ".join(STANDALONE_CONF) + ", /app/job.py]")
        roles = "[driver, executor]"
    recipe.write_text(text + f"\ncluster:\n  roles: {roles}\n")
    tag = f"ppml-bench/{name}-cluster:latest"
    backends.build(BuildOptions(recipe=recipe, key=key, output_dir=work / f"{name}-out", tag=tag))
    return tag


def role_entry(mode: str, name: str, role: str) -> list[str]:
    if mode == "direct":
        return ["gramine-direct", f"/ppml/{name}-{role}"]
    return ["/bin/sh", role_script_path(role)]


def started_finished(container) -> tuple[float, float | None]:
    container.reload()
    state = container.attrs["State"]
    finished = state.get("FinishedAt", "")
    done = None if finished.startswith("0001-") else epoch(finished)
    return epoch(state["StartedAt"]), done


def registered_after(container, marker: str, log_of=None) -> float | None:
    """Seconds from the container's start to ``marker`` in its log (or ``log_of``'s)."""
    start, _ = started_finished(container)
    source = log_of or container
    for line in source.logs(timestamps=True).decode("utf-8", "replace").splitlines():
        stamp, _, text = line.partition(" ")
        if marker in text:
            return epoch(stamp) - start
    return None


def run_spark(client, image: str, mode: str) -> dict:
    master_port, master_ui = free_port(), free_port()
    secret = "bench-" + "ef" * 16
    host = {"network_mode": "host", "detach": True, "command": []}
    extra = DIRECT if mode == "direct" else {}
    containers = []
    try:
        master = client.containers.run(
            image, entrypoint=[JAVA, "-Xmx256m", "-Dspark.authenticate=true",
                               f"-Dspark.authenticate.secret={secret}", "-cp",
                               "/opt/spark/jars/*", "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(master_port),
                               "--webui-port", str(master_ui)], **host)  # fmt: skip
        containers.append(master)
        driver_env = {
            "SPARK_MASTER_URL": f"spark://127.0.0.1:{master_port}",
            "SPARK_DRIVER_HOST": "127.0.0.1",
            "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
            "_SPARK_AUTH_SECRET": secret,
            # what a k8s:// master needs; a standalone one ignores them
            "SPARK_KUBERNETES_NAMESPACE": "default",
            "SPARK_DRIVER_POD_NAME": "bench-driver",
            "SPARK_EXECUTOR_IMAGE": image,
        }
        driver = client.containers.run(
            image, entrypoint=role_entry(mode, SPARK, "driver"), environment=driver_env,
            **host, **extra)  # fmt: skip
        containers.append(driver)
        app_id, deadline = None, time.monotonic() + 180
        while app_id is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{master_ui}/json/") as reply:
                    apps = json.load(reply).get("activeapps", [])
                app_id = apps[0]["id"] if apps else None
            except OSError:
                continue
        if app_id is None:
            raise RunFailed("spark: the master never saw the driver's application")
        executors = []
        for executor_id in ("1", "2"):
            env = {
                "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{SPARK_DRIVER_PORT}",
                "SPARK_EXECUTOR_ID": executor_id,
                "SPARK_EXECUTOR_CORES": "1",
                "SPARK_APPLICATION_ID": app_id,
                "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
                "SPARK_RESOURCE_PROFILE_ID": "0",
                "SPARK_EXECUTOR_POD_NAME": f"bench-exec-{executor_id}",
                "_SPARK_AUTH_SECRET": secret,
            }
            executors.append(client.containers.run(
                image, entrypoint=role_entry(mode, SPARK, "executor"), environment=env,
                **host, **extra))  # fmt: skip
        containers += executors
        result = finish(driver, executors, "executor")
        result["main_startup"] = registered_after(driver, "Registered app ", log_of=master)
        return result
    finally:
        for container in containers:
            container.remove(force=True)


def run_flink(client, image: str, mode: str) -> dict:
    host = {"network_mode": "host", "detach": True, "command": []}
    extra = DIRECT if mode == "direct" else {}
    containers = []
    try:
        jobmanager = client.containers.run(
            image, entrypoint=role_entry(mode, FLINK, "jobmanager"),
            environment={"FLINK_JOBMANAGER_HOST": "127.0.0.1",
                         "FLINK_JOBMANAGER_BIND_HOST": "127.0.0.1"}, **host, **extra)  # fmt: skip
        containers.append(jobmanager)
        taskmanagers = []
        for index in (1, 2):
            env = {
                "FLINK_JOBMANAGER_HOST": "127.0.0.1",
                "FLINK_TASKMANAGER_HOST": "127.0.0.1",
                "FLINK_TASKMANAGER_RESOURCE_ID": f"bench-taskmanager-{index}",
            }
            taskmanagers.append(client.containers.run(
                image, entrypoint=role_entry(mode, FLINK, "taskmanager"), environment=env,
                **host, **extra))  # fmt: skip
        containers += taskmanagers
        result = finish(jobmanager, taskmanagers, "taskmanager")
        result["main_startup"] = registered_after(jobmanager, "Rest endpoint listening at")
        return result
    finally:
        for container in containers:
            container.remove(force=True)


# The JobManager stays up when its application ends (what the Kubernetes operator needs):
# the job's end is this line of its log.
JOB_FINISHED = "switched from state RUNNING to FINISHED"


def job_finished_after(jobmanager, timeout: float = 1200) -> float:
    """Seconds from the JobManager's start to its job's end, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        elapsed = registered_after(jobmanager, JOB_FINISHED)
        if elapsed is not None:
            return elapsed
        jobmanager.reload()
        if jobmanager.status != "running":
            tail = jobmanager.logs().decode("utf-8", "replace")[-1500:]
            raise RunFailed(f"flink cluster: the JobManager stopped before its job ended: {tail}")
        time.sleep(1)
    raise RunFailed("flink cluster: the job did not end in time")


def finish(main, workers, role: str) -> dict:
    if role == "taskmanager":
        wall = job_finished_after(main)
    else:
        status = main.wait(timeout=1200)
        if status["StatusCode"] != 0:
            tail = main.logs().decode("utf-8", "replace")[-1500:]
            raise RunFailed(f"{role} cluster: the job exited {status['StatusCode']}: {tail}")
        start, done = started_finished(main)
        wall = done - start
    out = main.logs(stdout=True, stderr=False).decode("utf-8", "replace")
    if role == "taskmanager":
        startups = [
            registered_after(
                worker, REGISTERED[role].format(resource_id=f"bench-taskmanager-{index}"), main
            )
            for index, worker in enumerate(workers, 1)
        ]
    else:
        startups = [registered_after(worker, REGISTERED[role]) for worker in workers]
    return {
        "wall": wall,
        "role_startup": startups,
        "result_lines": sum(line.startswith("RESULT ") for line in out.splitlines()),
    }


def least(values) -> float | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


def ratio(direct: float | None, native: float | None) -> str:
    return f"{direct / native:.2f}x" if direct and native else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", type=Path, default=DEFAULT_KEY)
    parser.add_argument("--only", choices=("spark", "flink"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or not args.key.is_file():
        print("bench_cluster: --rounds must be >= 1 and --key an existing PEM", file=sys.stderr)
        return 2
    out = sys.stderr if args.json else sys.stdout
    client = connect()
    clusters = [("spark", SPARK, run_spark), ("flink", FLINK, run_flink)]
    report: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ppml-bench-cluster-") as work:
            for kind, name, run in clusters:
                if args.only not in (None, kind):
                    continue
                print(f"building {name} as a cluster recipe ...", file=out, flush=True)
                image = build_cluster(kind, name, args.key, Path(work))
                rounds = {"native": [], "direct": []}
                for _ in range(args.rounds):
                    for mode in ("native", "direct"):
                        rounds[mode].append(run(client, image, mode))
                report[name] = rounds
    except RunFailed as err:
        print(f"bench_cluster: {err}", file=sys.stderr)
        return 1
    for name, rounds in report.items():
        main_role, role = ("driver", "executor") if name == SPARK else ("jobmanager", "taskmanager")
        best = {
            mode: {
                "wall": min(r["wall"] for r in runs),
                "main": least(r["main_startup"] for r in runs),
                "startup": least(s for r in runs for s in r["role_startup"]),
            }
            for mode, runs in rounds.items()
        }
        print(f"\n{name}: 1 {main_role}, 2 {role}s, best of {args.rounds}", file=out)
        print(f"  {'':24} {'native':>8} {'direct':>8} {'ratio':>7}", file=out)
        for figure, label in (
            ("wall", "job wall time (s)"),
            ("main", f"{main_role} startup (s)"),
            ("startup", f"{role} startup (s)"),
        ):
            native, direct = best["native"][figure], best["direct"][figure]
            text = [f"{v:8.1f}" if v is not None else f"{'-':>8}" for v in (native, direct)]
            print(f"  {label:24} {text[0]} {text[1]} {ratio(direct, native):>7}", file=out)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
