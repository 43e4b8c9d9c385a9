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

The driver runs in client mode as a Kubernetes driver pod runs it (entrypoint.sh's ``driver``
branch), its master, addresses and secret from the host; the JobManager in application mode as
the Flink image's ``standalone-job`` starts it; the TaskManager as ``taskmanager.sh`` would.
role_script.py writes the script. Pure: recipe and plan in, commands out.

Longer than most: four roles of two engines, each with the JVM flags its engine's own scripts
would pass (listed here, since no host flag reaches the JVM), and one rule table they share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from dataclasses import dataclass

from ..errors import PlanError
from ..recipe import Recipe
from ..units import MiB
from .executor_pod import (
    EXECUTOR_CONTAINER,
    EXECUTOR_POD_TEMPLATE,
    SERVICE_ACCOUNT_DIR,
    SPARK_AUTH_DRIVER_FILE,
    SPARK_AUTH_SECRET_DIR,
    executor_pod_conf,
)
from .jvm import _flink_jobmanager_memory, _flink_memory
from .launch import (
    HADOOP_SUPPORT_JAR,
    JVM_ENCLAVE_OPTIONS,
    PPML_LAUNCHER,
    PYSPARK_SHELL_RESOURCE,
    ROLE_DIR,
    SPARK_JVM_ARGS,
    LaunchPlan,
    SparkSubmit,
    parse_spark_submit,
    spark_enclave_options,
)
from .model import FLINK_DEFAULT_PROCESS_SIZE, FLINK_JOBMANAGER_PROCESS_SIZE, Plan

ROLE_SHELL = "/bin/sh"


def enclave_name(recipe: Recipe, role: str | None) -> str:
    """The enclave's file name stem in /ppml: the app's name, or ``<name>-<role>``."""
    return recipe.name if role is None else f"{recipe.name}-{role}"


# The first argument each role's container gets from its engine on Kubernetes: Spark's
# submission side (entrypoint.sh's driver/executor branches), the Flink operator in standalone
# mode (CmdStandaloneJobManagerDecorator: standalone-job; ...TaskManagerDecorator: taskmanager).
ROLE_ENTRY_WORDS = {
    "driver": ("driver",),
    "executor": ("executor",),
    "jobmanager": ("standalone-job", "jobmanager"),
    "taskmanager": ("taskmanager",),
}
# The container entry of a cluster image: it starts the enclave of the role its first argument
# names (role_script.entry_script), outside any enclave.
ENTRY_SCRIPT = f"{ROLE_DIR}/entry.sh"


def role_script_path(role: str) -> str:
    """Where a role's script is in the image: the program its enclave runs."""
    return f"{ROLE_DIR}/{role}.sh"


# What Spark 4.3 gives every JVM it starts on Java 17 (launcher/src/main/java/org/apache/spark/
# launcher/JavaModuleOptions.java; SparkContext.supplementJavaModuleOptions adds them to
# spark.executor.extraJavaOptions, which reach a Kubernetes executor as SPARK_JAVA_OPT_*): fixed
# here, since no host-supplied flag reaches the executor's JVM.
SPARK_JAVA_MODULE_OPTIONS = (
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-modules=jdk.incubator.vector",
    *(
        f"--add-opens=java.base/{package}=ALL-UNNAMED"
        for package in (
            "java.lang",
            "java.lang.invoke",
            "java.lang.reflect",
            "java.io",
            "java.net",
            "java.nio",
            "java.util",
            "java.util.concurrent",
            "java.util.concurrent.atomic",
            "jdk.internal.ref",
            "sun.nio.ch",
            "sun.nio.cs",
            "sun.security.action",
            "sun.util.calendar",
        )
    ),  # fmt: skip
    "--add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.type=pooled",
    "-Dio.netty.handler.ssl.defaultEndpointVerificationAlgorithm=NONE",
    "--sun-misc-unsafe-memory-access=allow",
    "--enable-native-access=ALL-UNNAMED",
)
# What Flink 2.3's shipped conf/config.yaml gives every JVM on Java 17 (env.java.opts.all, which
# bin/config.sh puts on the JobManager's and TaskManager's command lines).
FLINK_JAVA17_OPTIONS = (
    *(
        f"--add-exports={module}=ALL-UNNAMED"
        for module in (
            "java.rmi/sun.rmi.registry",
            "jdk.compiler/com.sun.tools.javac.api",
            "jdk.compiler/com.sun.tools.javac.file",
            "jdk.compiler/com.sun.tools.javac.parser",
            "jdk.compiler/com.sun.tools.javac.tree",
            "jdk.compiler/com.sun.tools.javac.util",
            "java.security.jgss/sun.security.krb5",
        )
    ),  # fmt: skip
    *(
        f"--add-opens=java.base/{package}=ALL-UNNAMED"
        for package in (
            "java.lang",
            "java.net",
            "java.io",
            "java.nio",
            "sun.nio.ch",
            "java.lang.reflect",
            "java.text",
            "java.time",
            "java.util",
            "java.util.concurrent",
            "java.util.concurrent.atomic",
            "java.util.concurrent.locks",
        )
    ),  # fmt: skip
)

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
    "master": "spark://HOST:PORT or k8s://https://HOST:PORT (HOST as for a host)",
    "namespace": "a Kubernetes namespace: 1 to 63 lowercase letters, digits or '-'",
    "image": "an image reference: 1 to 512 letters, digits, '.', '/', ':', '@', '_' or '-'",
    # Spark makes its secrets as hex (Utils.createSecret); base64 fits too. A narrow alphabet,
    # since the driver's secret travels in PYSPARK_SUBMIT_ARGS, which PySpark shlex-splits.
    "secret": "1 to 4096 letters, digits, '+', '/', '=', '.', '_' or '-' (never printed)",
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


# The driver as a cluster role: where its cluster manager is, the address executors reach it at
# (on Kubernetes the driver's Service, DriverServiceFeatureStep) and the one it binds (the pod
# IP: entrypoint.sh passes spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS), and the secret
# spark.authenticate shares with the executors (a standalone master needs it in the driver's
# conf: SecurityManager.initializeAuth).
# On Kubernetes it also needs its namespace, its pod's name (the executors' owner) and the image
# its executor pods run: none is known when the image is built, and a standalone master ignores
# them (executor_pod.py says how the secret reaches each side).
SPARK_DRIVER_PARAMETERS = (
    ClusterParameter("SPARK_MASTER_URL", "master", "the cluster manager the driver asks"),
    ClusterParameter("SPARK_DRIVER_HOST", "host", "the address executors reach the driver at"),
    ClusterParameter("SPARK_DRIVER_BIND_ADDRESS", "host", "the address the driver binds"),
    ClusterParameter("_SPARK_AUTH_SECRET", "secret", "spark.authenticate's secret", secret=True),
    ClusterParameter(
        "SPARK_KUBERNETES_NAMESPACE", "namespace", "the namespace of the executor pods"
    ),
    ClusterParameter("SPARK_DRIVER_POD_NAME", "pod-name", "the driver pod's name"),
    ClusterParameter("SPARK_EXECUTOR_IMAGE", "image", "the image of the executor pods"),
)
# Host files the driver reads on Kubernetes (allowed, not hashed: the host provides them either
# way): the Secret's file with spark.authenticate's secret, and the service account's token and
# CA, with which it creates executor pods.
SPARK_DRIVER_HOST_FILES = (f"{SPARK_AUTH_SECRET_DIR}/", f"{SERVICE_ACCOUNT_DIR}/")
# The ports a Kubernetes driver pod exposes (Spark's Constants.DEFAULT_DRIVER_PORT and
# DEFAULT_BLOCKMANAGER_PORT): fixed, so executors and Services know them in advance.
SPARK_DRIVER_PORT = 7078
SPARK_DRIVER_BLOCK_MANAGER_PORT = 7079

# The JobManager advertises the address TaskManagers reach it at (Pekko drops messages sent to
# any other spelling of it: on Kubernetes the operator's Service name) and binds its pod's IP
# (a headless Service name resolves only once the pod is Ready).
FLINK_JOBMANAGER_PARAMETERS = (
    ClusterParameter(
        "FLINK_JOBMANAGER_HOST", "host", "the address TaskManagers reach the JobManager at"
    ),
    ClusterParameter("FLINK_JOBMANAGER_BIND_HOST", "host", "the address the JobManager binds"),
)

FLINK_TASKMANAGER_PARAMETERS = (
    ClusterParameter("FLINK_JOBMANAGER_HOST", "host", "the JobManager's RPC address"),
    ClusterParameter("FLINK_TASKMANAGER_HOST", "host", "the address this TaskManager binds"),
    ClusterParameter(
        "FLINK_TASKMANAGER_RESOURCE_ID", "pod-name", "this TaskManager's resource id (pod name)"
    ),
)
# Each scripted role's parameters: its manifest passes exactly these through (loader.env).
ROLE_PARAMETERS = {
    "driver": SPARK_DRIVER_PARAMETERS,
    "executor": SPARK_EXECUTOR_PARAMETERS,
    "jobmanager": FLINK_JOBMANAGER_PARAMETERS,
    "taskmanager": FLINK_TASKMANAGER_PARAMETERS,
}
FLINK_SHADED_NETTY = "org.apache.flink.shaded.netty4.io.netty"
FLINK_TASKMANAGER_RUNNER = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
# What the Flink image's docker-entrypoint.sh runs for standalone-job (application mode): the
# job's main() runs in the JobManager, which then deploys its tasks to the TaskManagers.
FLINK_APPLICATION_ENTRYPOINT = (
    "org.apache.flink.container.entrypoint.StandaloneApplicationClusterEntryPoint"
)
# Flink's defaults, which the Kubernetes operator also gives its pods: fixed, so TaskManagers
# and Services know them in advance.
FLINK_JOBMANAGER_RPC_PORT = 6123  # jobmanager.rpc.port
FLINK_BLOB_SERVER_PORT = 6124  # blob.server.port (random by default; a pod needs it fixed)
FLINK_REST_PORT = 8081  # rest.port


def role_launch_plan(recipe: Recipe, role: str, launch: LaunchPlan) -> LaunchPlan:
    """How a role's enclave starts: its role script, with only the role's parameters from the
    host. ``launch`` is the app's own (plan_launch). Pure."""
    passthrough = tuple(parameter.name for parameter in ROLE_PARAMETERS[role])
    script = (ROLE_SHELL, role_script_path(role))
    if role == "driver":
        launch = dataclasses.replace(launch, allowed_files=SPARK_DRIVER_HOST_FILES)
        if launch.form == "pyspark":
            # The script exports PYSPARK_SUBMIT_ARGS itself, with the checked parameters in it.
            env = {k: v for k, v in launch.env.items() if k != "PYSPARK_SUBMIT_ARGS"}
            return dataclasses.replace(launch, argv=script, env=env, passthrough=passthrough)
        if launch.form == "spark-jvm":
            # The script execs the JVM command Spark's launcher computed (one argument a line).
            return dataclasses.replace(
                launch, argv=script, jvm_args_lines=SPARK_JVM_ARGS, passthrough=passthrough
            )
        raise PlanError(
            "cluster.roles: driver: app.command must be spark-submit ... (app.jar or job.py): "
            "the driver's enclave runs what Spark's launcher computes for it"
        )
    # One JVM that starts nothing: its own in-memory tmpfs serves every scratch directory (no
    # key to make, which ppml-launch.py would do), and /tmp (Spark's local dirs) is one.
    return LaunchPlan(
        "exec",
        script,
        java_options=JVM_ENCLAVE_OPTIONS,
        single_process=True,
        tmpfs=tuple(dict.fromkeys((*launch.tmpfs, *launch.scratch, "/tmp"))),
        passthrough=passthrough,
        support_jars=(HADOOP_SUPPORT_JAR,) if role == "executor" else (),
    )


@dataclass(frozen=True)
class RoleLaunch:
    """A role's fixed command; ``$NAME`` words are filled from checked cluster parameters."""

    role: str
    script: str  # in-image path of the role script (the enclave's program)
    parameters: tuple[ClusterParameter, ...]
    argv: tuple[str, ...]
    max_cores: int
    # Variables the script exports before the exec, each a word list that the program
    # shlex-splits again (PYSPARK_SUBMIT_ARGS); ``$NAME`` words as in argv.
    env_words: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # A file whose lines, up to Spark's SparkSubmit class, come before argv: the JVM command
    # Spark's launcher computed at build time (a trusted file of the image).
    argv_prefix_lines: str | None = None


def role_launch(
    recipe: Recipe, plan: Plan, plans: dict[str, Plan] | None = None
) -> RoleLaunch | None:
    """The role script's command for ``plan.role``; None for a plan without a role. ``plans``:
    every role's plan (the driver's configuration sizes its Kubernetes executor pods)."""
    if plan.jvm is None or plan.role is None:
        return None
    if plan.role == "driver":
        executor = (plans or {}).get("executor")
        return _spark_driver(recipe, plan, executor if executor and executor.jvm else None)
    build = {
        "executor": _spark_executor,
        "jobmanager": _flink_jobmanager,
        "taskmanager": _flink_taskmanager,
    }[plan.role]
    return build(recipe, plan)


def _driver_submit_options(
    submit: SparkSubmit, executor_conf: tuple[tuple[str, str], ...]
) -> tuple[str, ...]:
    """The driver's spark-submit options: app.command's without --master and --deploy-mode
    (the cluster decides them), ppml-build's enclave options, the fixed ports and security,
    what a Kubernetes master needs (a standalone one ignores it), and the checked cluster
    parameters."""
    kept: list[str] = []
    options = list(submit.options)
    while options:
        token = options.pop(0)
        name = token.split("=", 1)[0]
        if name in ("--master", "--deploy-mode"):
            if "=" not in token and options:
                options.pop(0)
            continue
        kept.append(token)
    return (
        *spark_enclave_options(tuple(kept)),
        "--master",
        "$SPARK_MASTER_URL",
        "--deploy-mode",
        "client",
        *_conf(
            ("spark.driver.port", str(SPARK_DRIVER_PORT)),
            ("spark.driver.blockManager.port", str(SPARK_DRIVER_BLOCK_MANAGER_PORT)),
            ("spark.driver.host", "$SPARK_DRIVER_HOST"),
            ("spark.driver.bindAddress", "$SPARK_DRIVER_BIND_ADDRESS"),
            ("spark.authenticate", "true"),
            ("spark.authenticate.secret", "$_SPARK_AUTH_SECRET"),
            ("spark.network.crypto.enabled", "true"),
            # Kubernetes: the secret from the driver's Secret file, so that Spark writes none
            # into the executor pods (executor_pod.py); executors from the image's template
            # with no ConfigMap over their trusted conf; the API server through the pod's
            # service account.
            ("spark.authenticate.secret.driver.file", SPARK_AUTH_DRIVER_FILE),
            ("spark.authenticate.secret.executor.file", SPARK_AUTH_DRIVER_FILE),
            ("spark.kubernetes.namespace", "$SPARK_KUBERNETES_NAMESPACE"),
            ("spark.kubernetes.driver.pod.name", "$SPARK_DRIVER_POD_NAME"),
            ("spark.kubernetes.executor.container.image", "$SPARK_EXECUTOR_IMAGE"),
            ("spark.kubernetes.executor.podTemplateFile", EXECUTOR_POD_TEMPLATE),
            ("spark.kubernetes.executor.podTemplateContainerName", EXECUTOR_CONTAINER),
            ("spark.kubernetes.executor.disableConfigMap", "true"),
            ("spark.kubernetes.authenticate.caCertFile", f"{SERVICE_ACCOUNT_DIR}/ca.crt"),
            ("spark.kubernetes.authenticate.oauthTokenFile", f"{SERVICE_ACCOUNT_DIR}/token"),
            *executor_conf,
        ),
    )


def _conf(*pairs: tuple[str, str]) -> list[str]:
    return [word for key, value in pairs for word in ("--conf", f"{key}={value}")]


def _spark_driver(recipe: Recipe, plan: Plan, executor: Plan | None) -> RoleLaunch:
    """The driver in client mode, as a Kubernetes driver pod runs it. A PySpark driver: the
    script exports PYSPARK_SUBMIT_ARGS with the checked parameters and execs the job's Python
    (through ppml-launch.py, as the local enclave does), which starts the driver JVM through
    ppml-build's spark-submit wrapper (launch.py). A JVM driver: the script execs the JVM
    command Spark's launcher computed at build time, then SparkSubmit's arguments."""
    jvm = plan.jvm
    submit = parse_spark_submit(list(recipe.app.command))
    assert jvm is not None and submit is not None  # role_launch_plan checks
    options = _driver_submit_options(
        submit, executor_pod_conf(recipe, executor) if executor is not None else ()
    )
    common = ("driver", role_script_path("driver"), SPARK_DRIVER_PARAMETERS)
    if plan.launch.form == "pyspark":
        python = (recipe.runtime.python, PPML_LAUNCHER, submit.resource, *submit.app_args)
        submit_args = (*options, PYSPARK_SHELL_RESOURCE)
        return RoleLaunch(
            *common, python, jvm.cpus, env_words=(("PYSPARK_SUBMIT_ARGS", submit_args),)
        )
    return RoleLaunch(
        *common,
        (*options, submit.resource, *submit.app_args),
        jvm.cpus,
        argv_prefix_lines=plan.launch.jvm_args_lines,
    )


def _spark_executor(recipe: Recipe, plan: Plan) -> RoleLaunch:
    runtime, jvm = recipe.runtime, plan.jvm
    assert jvm is not None
    heap = f"{jvm.heap // MiB}m"
    argv = (
        f"{runtime.java_home}/bin/java",
        *JVM_ENCLAVE_OPTIONS,
        *SPARK_JAVA_MODULE_OPTIONS,
        # Executors authenticate to the driver and encrypt their RPC and shuffle traffic:
        # fixed here, since no host-supplied -D flag reaches this JVM.
        "-Dspark.authenticate=true",
        "-Dspark.network.crypto.enabled=true",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-cp",
        # ppml-build's Hadoop local file system first, for the driver's fs.file.impl (launch.py)
        f"{HADOOP_SUPPORT_JAR}:{runtime.spark_home}/conf:{runtime.spark_home}/jars/*",
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
        "executor", role_script_path("executor"), SPARK_EXECUTOR_PARAMETERS, argv, jvm.cpus
    )


# java's options that take the next word as their value (the java launcher's own help).
_JAVA_VALUE_OPTIONS = frozenset(
    {
        "-cp",
        "-classpath",
        "--class-path",
        "-p",
        "--module-path",
        "--upgrade-module-path",
        "--add-modules",
        "--add-opens",
        "--add-exports",
        "--add-reads",
        "--patch-module",
        "--limit-modules",
        "--enable-native-access",
    }
)


@dataclass(frozen=True)
class JavaMain:
    """``java OPTIONS CLASS ARGS`` taken apart: what a Flink role keeps of app.command."""

    class_path: str | None
    main_class: str
    args: tuple[str, ...]


def java_main(recipe: Recipe) -> JavaMain:
    """The class path, main class and arguments of app.command (``java ... CLASS ARGS``)."""
    command = list(recipe.app.command)
    class_path = None
    index = 1
    while index < len(command):
        token = command[index]
        if token in ("-jar", "--module", "-m"):
            raise PlanError(
                f"app.command: {token}: a Flink cluster role runs the job's main class on its "
                "own command line; give -cp JOB.jar:/opt/flink/lib/* MAIN_CLASS ARGS instead"
            )
        if token in _JAVA_VALUE_OPTIONS and index + 1 < len(command):
            if token in ("-cp", "-classpath", "--class-path"):
                class_path = command[index + 1]
            index += 2
            continue
        if not token.startswith("-"):
            return JavaMain(class_path, token, tuple(command[index + 1 :]))
        index += 1
    raise PlanError(
        "app.command: no main class after java's options; a Flink cluster recipe's command is "
        "java -cp JOB.jar:/opt/flink/lib/* MAIN_CLASS ARGS"
    )


def _flink_console_logging(flink_home: str, role: str) -> tuple[str, ...]:
    """Logs on the console, as the Flink image's docker-entrypoint.sh gives a container
    (flink-console.sh: log4j-console.properties; its file appender writes to log.file)."""
    return (
        f"-Dlog.file=/tmp/flink-{role}.log",
        f"-Dlog4j.configurationFile=file:{flink_home}/conf/log4j-console.properties",
    )


def _flink_jobmanager(recipe: Recipe, plan: Plan) -> RoleLaunch:
    """The JobManager in application mode, as the Flink image's standalone-job starts it: the
    job's main class and arguments from app.command, its memory from the role's plan (the
    components jobmanager.sh would pass), its addresses from FLINK_JOBMANAGER_HOST."""
    runtime, jvm = recipe.runtime, plan.jvm
    assert jvm is not None
    main = java_main(recipe)
    process = recipe.resources.flink.jobmanager_process_size or FLINK_JOBMANAGER_PROCESS_SIZE
    model = _flink_jobmanager_memory(process.bytes)
    dynamic = {
        "jobmanager.memory.heap.size": f"{model['heap']}b",
        "jobmanager.memory.off-heap.size": f"{model['direct']}b",
        "jobmanager.memory.jvm-metaspace.size": f"{model['metaspace']}b",
        "jobmanager.memory.jvm-overhead.min": f"{model['overhead']}b",
        "jobmanager.memory.jvm-overhead.max": f"{model['overhead']}b",
        "jobmanager.rpc.port": str(FLINK_JOBMANAGER_RPC_PORT),
        "blob.server.port": str(FLINK_BLOB_SERVER_PORT),
        "rest.port": str(FLINK_REST_PORT),
        # What the Kubernetes operator needs of an application cluster
        # (FlinkConfigBuilder): the JobManager stays up when the job ends, and reports a
        # failed job instead of exiting.
        "execution.shutdown-on-application-finish": "false",
        "execution.submit-failed-job-on-application-error": "true",
        "jobmanager.rpc.address": "$FLINK_JOBMANAGER_HOST",
        "jobmanager.bind-host": "$FLINK_JOBMANAGER_BIND_HOST",
        "rest.address": "$FLINK_JOBMANAGER_HOST",
        "rest.bind-address": "$FLINK_JOBMANAGER_BIND_HOST",
    }
    argv = [
        f"{runtime.java_home}/bin/java",
        *_flink_jvm_options(runtime.flink_home, "jobmanager"),
        f"-Xmx{model['heap']}",
        f"-Xms{model['heap']}",
        f"-XX:MaxDirectMemorySize={model['direct']}",
        f"-XX:MaxMetaspaceSize={model['metaspace']}",
        "-cp",
        main.class_path or f"{runtime.flink_home}/lib/*",
        FLINK_APPLICATION_ENTRYPOINT,
        "--configDir",
        f"{runtime.flink_home}/conf",
        "--job-classname",
        main.main_class,
        "--job-id",
        flink_job_id(recipe),
    ]
    for key, value in dynamic.items():
        argv += ["-D", f"{key}={value}"]
    argv += main.args
    return RoleLaunch(
        "jobmanager",
        role_script_path("jobmanager"),
        FLINK_JOBMANAGER_PARAMETERS,
        tuple(argv),
        jvm.cpus,
    )


def flink_job_id(recipe: Recipe) -> str:
    """The application's fixed job id: the Kubernetes operator finds the job by the id it
    configured ($internal.pipeline.job-id), and the JobManager's command is fixed, so both
    take this one (32 hex digits, from the recipe's name)."""
    return hashlib.sha256(f"ppml-build flink job {recipe.name}".encode()).hexdigest()[:32]


def _flink_jvm_options(flink_home: str, role: str) -> tuple[str, ...]:
    return (
        *JVM_ENCLAVE_OPTIONS,
        *FLINK_JAVA17_OPTIONS,
        # Flink's own Netty (flink-shaded-netty) reads the relocated name of Netty's switch:
        # without it the shuffle server takes epoll, and Gramine 1.9 has no timerfd_create.
        f"-D{FLINK_SHADED_NETTY}.transport.noNative=true",
        *_flink_console_logging(flink_home, role),
    )


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
        *_flink_jvm_options(runtime.flink_home, "taskmanager"),
        "-XX:+UseG1GC",  # what taskmanager.sh adds
        f"-Xmx{model['heap']}",
        f"-Xms{model['heap']}",
        f"-XX:MaxDirectMemorySize={model['direct']}",
        f"-XX:MaxMetaspaceSize={model['metaspace']}",
        "-cp",
        java_main(recipe).class_path or f"{runtime.flink_home}/lib/*",
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


def describe_role(launch: RoleLaunch) -> list[str]:
    """What ``ppml-build plan`` says about a role's launch."""
    lines = [f"role launch: {ROLE_SHELL} {launch.script}: " + " ".join(launch.argv)]
    lines += [f"  with {name}={shlex.join(words)}" for name, words in launch.env_words]
    for parameter in launch.parameters:
        rule = RULES[parameter.rule].replace(
            "the cores the enclave was sized for", str(launch.max_cores)
        )
        lines.append(f"  host supplies {parameter.name}: {parameter.meaning}; {rule}")
    lines.append("  nothing else from the host reaches the command (no arguments, no JVM flags)")
    return lines
