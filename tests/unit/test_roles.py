"""A cluster role's script: the host's cluster parameters checked, then the fixed command (run
by a real POSIX sh here, with a stand-in java that prints the argv it gets)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ppml_build.plan import make_plan
from ppml_build.plan.executor_pod import EXECUTOR_POD_TEMPLATE, SPARK_AUTH_DRIVER_FILE
from ppml_build.plan.role_script import role_script
from ppml_build.plan.roles import RULES, SPARK_EXECUTOR_BACKEND, role_launch
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


def role_rootfs(directory: Path, recipe, role: str):
    """An image filesystem for ``role``'s enclave: the Spark stand-in, ppml-build's support
    files for its plan, and the role scripts; returns (plan, root)."""
    from rootfs_factory import add_ppml_support, make_spark_rootfs

    from ppml_build.plan.role_script import role_scripts

    plan = make_plan(recipe, role)
    root = add_ppml_support(make_spark_rootfs(directory / "rootfs"), plan)
    for path, text in role_scripts(recipe, {role: plan}).items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    return plan, root


def render_role_manifest(directory: Path, recipe, role: str):
    """``role``'s manifest rendered against its filesystem: (plan, RenderedManifest, TOML)."""
    import tomllib

    from ppml_build.gramine.manifest import render_manifest
    from ppml_build.image.hashing import FileHasher
    from ppml_build.image.rootfs import DirRootFS

    plan, root = role_rootfs(directory, recipe, role)
    rendered = render_manifest(recipe, plan, DirRootFS(root, FileHasher(use_cache=False)))
    return plan, rendered, tomllib.loads(rendered.text)


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
    recipe = load_recipe_text(RECIPE)
    for role in ("driver", "executor"):
        launch = role_launch(recipe, make_plan(recipe, role))
        assert {p.rule for p in launch.parameters} <= set(RULES)


DRIVER = {
    "SPARK_MASTER_URL": "spark://master.spark.svc:7077",
    "SPARK_DRIVER_HOST": "pi-cluster-driver-svc",
    "SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3",
    "_SPARK_AUTH_SECRET": "c2VjcmV0LW5ldmVyLXByaW50ZWQ=",
    "SPARK_KUBERNETES_NAMESPACE": "spark-jobs",
    "SPARK_DRIVER_POD_NAME": "pi-cluster-driver",
    "SPARK_EXECUTOR_IMAGE": "registry.example:5000/ppml/pi@sha256:" + "ab" * 32,
}


def test_the_jvm_driver_runs_the_launchers_command_with_the_checked_cluster_values(tmp_path):
    """A JVM driver: the JVM command Spark's launcher computed (kept one argument a line in the
    image), then SparkSubmit's arguments: app.command's, less its --master, plus the cluster's."""
    recipe = load_recipe_text(RECIPE)
    launch = role_launch(recipe, make_plan(recipe, "driver"))
    script = runnable_script(launch, tmp_path)
    lines = tmp_path / "spark-jvm.args"  # the launcher's command, its java the stand-in
    lines.write_text(f"{tmp_path}/java\n-Xmx1g\norg.apache.spark.deploy.SparkSubmit\n--stale\n")
    script.write_text(script.read_text().replace(launch.argv_prefix_lines, str(lines)))
    ran = run(script, DRIVER)
    assert ran.returncode == 0, ran.stderr
    argv = [line[1:-1] for line in ran.stdout.splitlines()]
    submit = argv[argv.index("org.apache.spark.deploy.SparkSubmit") + 1 :]
    assert argv[:2] == ["-Xmx1g", "org.apache.spark.deploy.SparkSubmit"]  # java itself ran
    assert "--stale" not in submit and submit[-1] == "/app/pi.jar"
    assert submit[submit.index("--class") + 1] == "Pi"
    assert submit[submit.index("--master") + 1] == "spark://master.spark.svc:7077"
    conf = dict(submit[i + 1].split("=", 1) for i, a in enumerate(submit) if a == "--conf")
    assert conf["spark.driver.host"] == "pi-cluster-driver-svc"
    assert conf["spark.driver.bindAddress"] == "10.1.2.3"
    assert conf["spark.authenticate"] == conf["spark.network.crypto.enabled"] == "true"
    assert conf["spark.authenticate.secret"] == DRIVER["_SPARK_AUTH_SECRET"]
    assert conf["spark.driver.port"] == "7078"
    # What a k8s:// master needs, from the checked values or fixed; no ConfigMap over the
    # executors' trusted conf, and the secret from the Secret's file (executor_pod.py)
    assert conf["spark.kubernetes.namespace"] == "spark-jobs"
    assert conf["spark.kubernetes.driver.pod.name"] == "pi-cluster-driver"
    assert conf["spark.kubernetes.executor.container.image"] == DRIVER["SPARK_EXECUTOR_IMAGE"]
    assert conf["spark.kubernetes.executor.podTemplateFile"] == EXECUTOR_POD_TEMPLATE
    assert conf["spark.kubernetes.executor.disableConfigMap"] == "true"
    assert (
        conf["spark.authenticate.secret.driver.file"]
        == conf["spark.authenticate.secret.executor.file"]
        == SPARK_AUTH_DRIVER_FILE
    )
    for name, bad in (
        ("SPARK_MASTER_URL", "local[*]"),
        ("SPARK_MASTER_URL", "spark://h:7077 --conf spark.x=1"),
        ("SPARK_MASTER_URL", "k8s://http://api:443"),
        ("_SPARK_AUTH_SECRET", "a'b"),
        ("SPARK_KUBERNETES_NAMESPACE", "Spark"),
        ("SPARK_KUBERNETES_NAMESPACE", "a" * 64),
        ("SPARK_DRIVER_POD_NAME", "driver pod"),
        ("SPARK_EXECUTOR_IMAGE", "img --conf=x"),
        ("SPARK_EXECUTOR_IMAGE", "-image"),
    ):
        refused = run(script, {**DRIVER, name: bad})
        assert refused.returncode == 2 and refused.stdout == "", refused
        assert f"ppml-build driver: {name} must be" in refused.stderr


PYSPARK = RECIPE.replace(
    "[/opt/spark/bin/spark-submit, --class, Pi, /app/pi.jar]",
    "[/opt/spark/bin/spark-submit, --master, 'local[2]', --conf, 'spark.app.name=a b',"
    " /app/job.py, '--rows', '10']",
)


def test_the_pyspark_driver_hands_python_the_submit_args_with_the_checked_values(tmp_path):
    """A PySpark driver: its script exports PYSPARK_SUBMIT_ARGS (PySpark shlex-splits it into
    SparkSubmit's arguments) and execs the job's Python; local[2] is gone."""
    import shlex

    recipe = load_recipe_text(PYSPARK)
    plan = make_plan(recipe, "driver")
    assert "PYSPARK_SUBMIT_ARGS" not in plan.launch.env  # the script sets it, with the values
    launch = role_launch(recipe, plan)
    python = tmp_path / "python3"
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$PYSPARK_SUBMIT_ARGS" "$@"\n')
    python.chmod(0o755)
    script = tmp_path / "driver.sh"
    script.write_text(role_script(launch).replace(recipe.runtime.python, str(python)))
    script.chmod(0o755)
    ran = run(script, DRIVER)
    assert ran.returncode == 0, ran.stderr
    submit_args, *argv = ran.stdout.splitlines()
    assert argv == ["/ppml/bin/ppml-launch.py", "/app/job.py", "--rows", "10"]
    words = shlex.split(submit_args)
    assert "local[2]" not in words and words[-1] == "pyspark-shell"
    assert words[words.index("--master") + 1] == DRIVER["SPARK_MASTER_URL"]
    assert "spark.app.name=a b" in words  # the recipe's own words stay whole
    assert f"spark.authenticate.secret={DRIVER['_SPARK_AUTH_SECRET']}" in words


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


def test_the_executor_manifest_runs_its_role_script_with_only_its_parameters(tmp_path):
    """The role's enclave: argv is the role script, the host may set exactly its cluster
    parameters, the script is a trusted file, and nothing pins the executor to loopback."""
    from ppml_build.plan.roles import SPARK_EXECUTOR_PARAMETERS

    recipe = load_recipe_text(RECIPE)
    plan, rendered, manifest = render_role_manifest(tmp_path, recipe, "executor")
    env = manifest["loader"]["env"]
    assert manifest["loader"]["argv"] == ["/bin/sh", "/ppml/roles/executor.sh"]
    assert manifest["libos"]["entrypoint"] == "/usr/bin/dash"
    assert {name for name, value in env.items() if isinstance(value, dict)} == {
        parameter.name for parameter in SPARK_EXECUTOR_PARAMETERS
    }
    assert "SPARK_LOCAL_IP" not in env
    trusted = {tf.uri for tf in rendered.trusted_files}
    assert {"file:/ppml/roles/executor.sh", "file:/usr/bin/dash"} <= trusted, sorted(trusted)


@pytest.mark.parametrize("recipe_text", [RECIPE, PYSPARK], ids=["jvm", "pyspark"])
def test_the_driver_manifest_runs_its_role_script_with_only_its_parameters(tmp_path, recipe_text):
    """The driver's enclave: argv is its role script, the host may set exactly its
    parameters, and the script and the launcher's command it execs are trusted files."""
    from ppml_build.plan.roles import SPARK_DRIVER_PARAMETERS

    recipe = load_recipe_text(recipe_text)
    plan, rendered, manifest = render_role_manifest(tmp_path, recipe, "driver")
    env = manifest["loader"]["env"]
    assert manifest["loader"]["argv"] == ["/bin/sh", "/ppml/roles/driver.sh"]
    assert {name for name, value in env.items() if isinstance(value, dict)} == {
        parameter.name for parameter in SPARK_DRIVER_PARAMETERS
    }
    assert "PYSPARK_SUBMIT_ARGS" not in env and "SPARK_LOCAL_IP" not in env
    trusted = {tf.uri for tf in rendered.trusted_files}
    assert f"file:{plan.launch.jvm_args_lines}" in trusted, sorted(trusted)
    assert "file:/ppml/roles/driver.sh" in trusted
    # on Kubernetes it reads the Secret's file and its service account's token and CA, which
    # the host provides either way: allowed, never hashed; nothing else of the host's
    allowed = manifest["sgx"]["allowed_files"]
    assert "file:/ppml/secrets/spark-auth/" in allowed
    assert "file:/var/run/secrets/kubernetes.io/serviceaccount/" in allowed
    assert not any(uri.startswith("file:/ppml/roles") for uri in allowed)


def test_the_support_stage_writes_each_role_script_from_an_argument():
    import json

    from ppml_build.plan.launch import support_stage_lines
    from ppml_build.plan.role_script import role_scripts

    recipe = load_recipe_text(RECIPE)
    plans = {role: make_plan(recipe, role) for role in ("driver", "executor")}
    scripts = role_scripts(recipe, plans)
    assert sorted(scripts) == [
        "/ppml/roles/driver.sh",
        "/ppml/roles/entry.sh",
        "/ppml/roles/executor-pod-template.yaml",  # the driver's executors on Kubernetes
        "/ppml/roles/executor.sh",
    ]
    lines = support_stage_lines(recipe, plans["executor"].launch, "app", scripts)
    runs = [json.loads(line[len("RUN ") :]) for line in lines if line.startswith("RUN [")]
    written = [run for run in runs if run[-2] == scripts["/ppml/roles/executor.sh"]]
    assert len(written) == 1 and written[0][-3].endswith("/roles/executor.sh")
    assert written[0][-1] == "0755"
    assert "exec " not in written[0][2]  # the script's text is an argument, not shell code
    template = [r for r in runs if r[-2] == scripts["/ppml/roles/executor-pod-template.yaml"]]
    assert len(template) == 1 and template[0][-1] == "0644"


def test_a_cluster_recipe_takes_no_passthrough_env():
    from ppml_build.errors import RecipeError

    text = RECIPE.replace("cluster:", "app_: x\ncluster:").replace("app_: x\n", "")
    text = text.replace("  command:", "  passthrough_env: [RUN_ID]\n  command:")
    with pytest.raises(RecipeError, match=r"app\.passthrough_env: a cluster role's enclave"):
        load_recipe_text(text)


def test_the_jobmanager_runs_the_jobs_main_class_in_application_mode(tmp_path):
    """The JobManager: StandaloneApplicationClusterEntryPoint with app.command's class path,
    main class and arguments, its memory from the role's plan, its addresses from the host."""
    from ppml_build.plan.roles import FLINK_APPLICATION_ENTRYPOINT

    recipe = load_recipe_text(FLINK.replace("Main]", "Main, '2']"))
    plan = make_plan(recipe, "jobmanager")
    script = runnable_script(role_launch(recipe, plan), tmp_path)
    env = {
        "FLINK_JOBMANAGER_HOST": "wc-jobmanager.flink.svc",
        "FLINK_JOBMANAGER_BIND_HOST": "10.1.2.3",
    }
    ran = run(script, env)
    assert ran.returncode == 0, ran.stderr
    argv = [line[1:-1] for line in ran.stdout.splitlines()]
    assert argv[argv.index("-cp") + 1] == "/app/wc.jar:/opt/flink/lib/*"
    assert argv[argv.index("-cp") + 2] == FLINK_APPLICATION_ENTRYPOINT
    assert argv[argv.index("--job-classname") + 1] == "Main" and argv[-1] == "2"
    dynamic = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-D")
    for key in ("jobmanager.rpc.address", "rest.address"):
        assert dynamic[key] == "wc-jobmanager.flink.svc"
    assert dynamic["jobmanager.bind-host"] == dynamic["rest.bind-address"] == "10.1.2.3"
    heap = int(dynamic["jobmanager.memory.heap.size"].rstrip("b"))
    assert f"-Xmx{heap}" in argv and heap == plan.jvm.heap
    refused = run(script, {**env, "FLINK_JOBMANAGER_HOST": "jm --job-classname Evil"})
    assert refused.returncode == 2 and "FLINK_JOBMANAGER_HOST must be" in refused.stderr


def test_a_flink_role_needs_the_jobs_main_class_on_the_command_line():
    from ppml_build.errors import PlanError

    recipe = load_recipe_text(
        FLINK.replace('-cp, "/app/wc.jar:/opt/flink/lib/*", Main', "-jar, /app/wc.jar")
    )
    with pytest.raises(PlanError, match="app.command: -jar: a Flink cluster role"):
        role_launch(recipe, make_plan(recipe, "jobmanager"))


def test_manifest_renders_one_roles_manifest_and_asks_which(tmp_path, capsys, monkeypatch):
    """`ppml-build manifest --role ROLE` writes that role's own manifest, NAME-ROLE.manifest;
    a cluster recipe without --role is one line naming its roles."""
    import tomllib

    from ppml_build.cli import main

    monkeypatch.setenv("PPML_BUILD_CACHE_DIR", str(tmp_path / "cache"))
    recipe = load_recipe_text(RECIPE)
    plan, root = role_rootfs(tmp_path, recipe, "executor")
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    out = tmp_path / "out"
    args = ["manifest", str(path), "--rootfs", str(root), "--output-dir", str(out)]
    assert main([*args, "--role", "executor"]) == 0
    manifest = tomllib.loads((out / "pi-cluster-executor.manifest").read_text())
    assert manifest["loader"]["argv"] == ["/bin/sh", "/ppml/roles/executor.sh"]
    assert manifest["sgx"]["enclave_size"] == plan.enclave_size_text
    capsys.readouterr()
    for extra, needle in (
        ([], "each role (driver, executor) has its own manifest; give --role ROLE"),
        (["--role", "master"], "--role master is not one of them"),
    ):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1


def test_a_cluster_image_starts_the_role_its_first_argument_names():
    from ppml_build.gramine.build import final_dockerfile

    recipe = load_recipe_text(RECIPE)
    dockerfile = final_dockerfile(
        recipe, "sha256:app", ["pi-cluster-driver", "pi-cluster-executor"]
    )
    assert 'ENTRYPOINT ["/ppml/roles/entry.sh"]' in dockerfile
    assert "pi-cluster-executor.sig" in dockerfile and "pi-cluster-driver.sig" in dockerfile
