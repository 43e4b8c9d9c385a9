"""A cluster role's fixed command and the cluster parameters the host may supply (issue 14).

A role's enclave runs one command fixed at build time. What only the cluster knows at run time
(the driver's address, the executor's id and cores, the pod's IP...) comes from the host as
environment variables, and only those named here: the role script, a trusted file of the image,
checks each one against its rule before it builds the command line, and stops the role with
one line and exit 2 on a malformed value. Nothing else the host sets reaches the command: no
host argument, no extra JVM flag (Spark's ``SPARK_JAVA_OPT_*``, ``JAVA_TOOL_OPTIONS``), no
``--class``.

Spark's executor, as Spark 4's Kubernetes image starts it (resource-managers/kubernetes/docker/
src/main/dockerfiles/spark/entrypoint.sh, the ``executor`` branch) with the variables its
Kubernetes backend sets on the pod (BasicExecutorFeatureStep): ``KubernetesExecutorBackend
--driver-url $SPARK_DRIVER_URL --executor-id $SPARK_EXECUTOR_ID --cores $SPARK_EXECUTOR_CORES
--app-id $SPARK_APPLICATION_ID --hostname $SPARK_EXECUTOR_POD_IP --resourceProfileId
$SPARK_RESOURCE_PROFILE_ID --podName $SPARK_EXECUTOR_POD_NAME``, and ``_SPARK_AUTH_SECRET``
(SecurityManager.ENV_AUTH_SECRET) for ``spark.authenticate``. Its heap is the role's plan, not
the host's ``SPARK_EXECUTOR_MEMORY``.

The script uses shell builtins only (``case``, ``[``, ``exec``): no process is started, which
Gramine 1.9 under a running JVM and Occlum (no fork) both need. Pure: recipe and plan in, text out.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..recipe import Recipe
from ..record import IN_IMAGE_DIR
from ..units import MiB
from .jvm import _flink_memory
from .launch import JVM_ENCLAVE_OPTIONS
from .model import FLINK_DEFAULT_PROCESS_SIZE, Plan

ROLE_DIR = f"{IN_IMAGE_DIR}/roles"
ROLE_SHELL = "/bin/sh"
# The roles whose command is a fixed template here (the others start from app.command).
SCRIPTED_ROLES = ("executor", "taskmanager")


def role_script_path(role: str) -> str:
    """Where a role's script is in the image: the program its enclave runs."""
    return f"{ROLE_DIR}/{role}.sh"


EXIT_BAD_PARAMETER = 2
SPARK_EXECUTOR_BACKEND = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
DRIVER_ENDPOINT = "CoarseGrainedScheduler"  # CoarseGrainedSchedulerBackend.ENDPOINT_NAME


@dataclass(frozen=True)
class ClusterParameter:
    """One host-supplied value: its variable, its rule (a kind below) and what it is."""

    name: str
    rule: str
    meaning: str
    secret: bool = False


# The rules, as the script checks them and `plan` explains them.
RULES = {
    "driver-url": f"spark://{DRIVER_ENDPOINT}@HOST:PORT (HOST letters, digits, '.', '-')",
    "id": "a whole number from 1 to 99999999 (Spark's driver reads executor ids as numbers)",
    "cores": "a whole number from 1 to the cores the enclave was sized for",
    "count": "a whole number from 0 to 99999999",
    "app-id": "1 to 128 letters, digits, '.', '_' or '-'",
    "host": "an IPv4 address or host name (letters, digits, '.', '-'; at most 253)",
    "pod-name": "a Kubernetes name: 1 to 253 lowercase letters, digits, '.' or '-'",
    "secret": "1 to 4096 printable characters, no spaces (never printed)",
}

SPARK_EXECUTOR_PARAMETERS = (
    ClusterParameter("SPARK_DRIVER_URL", "driver-url", "the driver's scheduler endpoint"),
    ClusterParameter("SPARK_EXECUTOR_ID", "id", "this executor's id"),
    ClusterParameter("SPARK_EXECUTOR_CORES", "cores", "task slots of this executor"),
    ClusterParameter("SPARK_APPLICATION_ID", "app-id", "the application's id"),
    ClusterParameter("SPARK_EXECUTOR_POD_IP", "host", "the address this executor binds"),
    ClusterParameter("SPARK_RESOURCE_PROFILE_ID", "count", "the resource profile (0: default)"),
    ClusterParameter("SPARK_EXECUTOR_POD_NAME", "pod-name", "the executor pod's name"),
    ClusterParameter("_SPARK_AUTH_SECRET", "secret", "spark.authenticate's secret", secret=True),
)


FLINK_TASKMANAGER_PARAMETERS = (
    ClusterParameter("FLINK_JOBMANAGER_HOST", "host", "the JobManager's RPC address"),
    ClusterParameter("FLINK_TASKMANAGER_HOST", "host", "the address this TaskManager binds"),
    ClusterParameter(
        "FLINK_TASKMANAGER_RESOURCE_ID", "pod-name", "this TaskManager's resource id (pod name)"
    ),
)
FLINK_TASKMANAGER_RUNNER = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
FLINK_JOBMANAGER_RPC_PORT = 6123  # Flink's default jobmanager.rpc.port


@dataclass(frozen=True)
class RoleLaunch:
    """A role's fixed command; ``$NAME`` words are filled from checked cluster parameters."""

    role: str
    script: str  # in-image path of the role script (the enclave's program)
    parameters: tuple[ClusterParameter, ...]
    argv: tuple[str, ...]
    max_cores: int


def role_launch(recipe: Recipe, plan: Plan) -> RoleLaunch | None:
    """The role script's command for ``plan.role``; None where the role's command is not a
    fixed template yet (the driver and the JobManager start from the app's own command)."""
    if plan.jvm is None:
        return None
    if plan.role == "executor":
        return _spark_executor(recipe, plan)
    if plan.role == "taskmanager":
        return _flink_taskmanager(recipe, plan)
    return None


def _spark_executor(recipe: Recipe, plan: Plan) -> RoleLaunch:
    runtime, jvm = recipe.runtime, plan.jvm
    assert jvm is not None
    heap = f"{jvm.heap // MiB}m"
    argv = (
        f"{runtime.java_home}/bin/java",
        *JVM_ENCLAVE_OPTIONS,
        # Executors authenticate to the driver and encrypt their RPC and shuffle traffic:
        # fixed here, since no host-supplied -D flag reaches this JVM.
        "-Dspark.authenticate=true",
        "-Dspark.network.crypto.enabled=true",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-cp",
        f"{runtime.spark_home}/conf:{runtime.spark_home}/jars/*",
        SPARK_EXECUTOR_BACKEND,
        "--driver-url",
        "$SPARK_DRIVER_URL",
        "--executor-id",
        "$SPARK_EXECUTOR_ID",
        "--cores",
        "$SPARK_EXECUTOR_CORES",
        "--app-id",
        "$SPARK_APPLICATION_ID",
        "--hostname",
        "$SPARK_EXECUTOR_POD_IP",
        "--resourceProfileId",
        "$SPARK_RESOURCE_PROFILE_ID",
        "--podName",
        "$SPARK_EXECUTOR_POD_NAME",
    )
    return RoleLaunch(
        "executor", f"{ROLE_DIR}/executor.sh", SPARK_EXECUTOR_PARAMETERS, argv, jvm.cpus
    )


def _class_path(recipe: Recipe) -> str | None:
    command = recipe.app.command
    for index, token in enumerate(command[:-1]):
        if token in ("-cp", "-classpath", "--class-path"):
            return command[index + 1]
    return None


def _flink_taskmanager(recipe: Recipe, plan: Plan) -> RoleLaunch:
    """TaskManagerRunner as bin/taskmanager.sh would start it, with the memory components
    BashJavaUtils would compute (every one must be given when the script is not used) from the
    role's planned process size; the job's class path is app.command's (the job jar on it)."""
    runtime, jvm = recipe.runtime, plan.jvm
    assert jvm is not None
    flink = recipe.resources.flink
    process = (flink.process_size or FLINK_DEFAULT_PROCESS_SIZE).bytes
    model = _flink_memory(process)

    def size(key: str) -> str:
        return f"{model[key]}b"

    dynamic = {
        "taskmanager.cpu.cores": f"{jvm.cpus}.0",
        "taskmanager.numberOfTaskSlots": str(flink.task_slots or 1),
        "taskmanager.memory.framework.heap.size": size("framework_heap"),
        "taskmanager.memory.task.heap.size": size("task_heap"),
        "taskmanager.memory.framework.off-heap.size": size("framework_off_heap"),
        "taskmanager.memory.task.off-heap.size": "0b",
        "taskmanager.memory.network.min": size("network"),
        "taskmanager.memory.network.max": size("network"),
        "taskmanager.memory.managed.size": size("managed"),
        "taskmanager.memory.jvm-metaspace.size": size("metaspace"),
        "taskmanager.memory.jvm-overhead.min": size("overhead"),
        "taskmanager.memory.jvm-overhead.max": size("overhead"),
        "jobmanager.rpc.port": str(FLINK_JOBMANAGER_RPC_PORT),
        "jobmanager.rpc.address": "$FLINK_JOBMANAGER_HOST",
        "taskmanager.host": "$FLINK_TASKMANAGER_HOST",
        "taskmanager.bind-host": "$FLINK_TASKMANAGER_HOST",
        "taskmanager.resource-id": "$FLINK_TASKMANAGER_RESOURCE_ID",
    }
    argv = [
        f"{runtime.java_home}/bin/java",
        *JVM_ENCLAVE_OPTIONS,
        "-XX:+UseG1GC",  # what taskmanager.sh adds
        f"-Xmx{model['heap']}",
        f"-Xms{model['heap']}",
        f"-XX:MaxDirectMemorySize={model['direct']}",
        f"-XX:MaxMetaspaceSize={model['metaspace']}",
        "-cp",
        _class_path(recipe) or f"{runtime.flink_home}/lib/*",
        FLINK_TASKMANAGER_RUNNER,
        "--configDir",
        f"{runtime.flink_home}/conf",
    ]
    for key, value in dynamic.items():
        argv += ["-D", f"{key}={value}"]
    return RoleLaunch(
        "taskmanager",
        role_script_path("taskmanager"),
        FLINK_TASKMANAGER_PARAMETERS,
        tuple(argv),
        jvm.cpus,
    )


def _check(parameter: ClusterParameter, max_cores: int) -> list[str]:
    """sh lines that stop the role unless ``$v`` (the parameter's value) follows its rule."""
    name, rule = parameter.name, parameter.rule
    bad = f'bad {name} "{RULES[rule]}"'
    number = [
        f'    case $v in ""|*[!0-9]*) {bad} ;; esac',
        f"    [ ${{#v}} -le 8 ] || {bad}",
    ]
    if rule == "driver-url":
        prefix = f"spark://{DRIVER_ENDPOINT}@"
        return [
            f'    case $v in "{prefix}"*:*) ;; *) {bad} ;; esac',
            f'    rest=${{v#"{prefix}"}}; host=${{rest%:*}}; port=${{rest##*:}}',
            f'    case $host in ""|*[!A-Za-z0-9.-]*) {bad} ;; esac',
            f"    [ ${{#host}} -le 253 ] || {bad}",
            f'    case $port in ""|*[!0-9]*) {bad} ;; esac',
            f'    [ ${{#port}} -le 5 ] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || {bad}',
        ]
    if rule == "id":
        return number + [f'    [ "$v" -ge 1 ] || {bad}']
    if rule == "cores":
        return number + [f'    [ "$v" -ge 1 ] && [ "$v" -le {max_cores} ] || {bad}']
    if rule == "count":
        return number
    if rule == "app-id":
        return [
            f'    case $v in ""|*[!A-Za-z0-9._-]*) {bad} ;; esac',
            f"    [ ${{#v}} -le 128 ] || {bad}",
        ]
    if rule == "host":
        return [
            f'    case $v in ""|*[!A-Za-z0-9.-]*|-*) {bad} ;; esac',
            f"    [ ${{#v}} -le 253 ] || {bad}",
        ]
    if rule == "pod-name":
        return [
            f'    case $v in ""|*[!a-z0-9.-]*|-*) {bad} ;; esac',
            f"    [ ${{#v}} -le 253 ] || {bad}",
        ]
    if rule == "secret":
        # printable ASCII without space: [!!-~] is anything outside '!'..'~'
        return [
            f'    case $v in ""|*[!!-~]*) {bad} ;; esac',
            f"    [ ${{#v}} -le 4096 ] || {bad}",
        ]
    raise ValueError(f"no rule {rule!r}")


def role_script(launch: RoleLaunch) -> str:
    """The POSIX sh role script: refuse arguments, check every parameter, exec the command.
    Recipe values are shlex-quoted; a ``$NAME`` word becomes ``"$NAME"`` (one argument)."""
    names = {parameter.name for parameter in launch.parameters}
    lines = [
        f"#!{ROLE_SHELL}",
        f"# Written by ppml-build: the {launch.role} role's fixed command. The host supplies",
        "# only the cluster parameters checked below; shell builtins only (no process started).",
        "LC_ALL=C",
        f'bad() {{ echo "ppml-build {launch.role}: $1 must be $2" >&2; exit {EXIT_BAD_PARAMETER}; }}',
        f'[ "$#" -eq 0 ] || {{ echo "ppml-build {launch.role}: takes no arguments; the host '
        f'supplies only {", ".join(sorted(names))}" >&2; exit {EXIT_BAD_PARAMETER}; }}',
    ]
    for parameter in launch.parameters:
        name = parameter.name
        lines += [
            f'if [ -z "${{{name}+set}}" ]; then',
            f'    echo "ppml-build {launch.role}: {name} is not set" >&2; exit {EXIT_BAD_PARAMETER}',
            "fi",
            f"v=${name}",
            *_check(parameter, launch.max_cores),
        ]
    words = []
    for arg in launch.argv:
        head, sep, name = arg.rpartition("$")
        if sep and name in names:  # "$NAME" or "key=$NAME": the checked value, one word
            words.append((shlex.quote(head) if head else "") + f'"${name}"')
        else:
            words.append(shlex.quote(arg))
    lines += ["unset v rest host port", "exec " + " \\\n    ".join(words)]
    return "\n".join(lines) + "\n"


def describe_role(launch: RoleLaunch) -> list[str]:
    """What ``ppml-build plan`` says about a role's launch."""
    lines = [f"role launch: {ROLE_SHELL} {launch.script}: " + " ".join(launch.argv)]
    for parameter in launch.parameters:
        rule = RULES[parameter.rule].replace(
            "the cores the enclave was sized for", str(launch.max_cores)
        )
        lines.append(f"  host supplies {parameter.name}: {parameter.meaning}; {rule}")
    lines.append("  nothing else from the host reaches the command (no arguments, no JVM flags)")
    return lines
