"""How the enclave starts the app, decided at build time.

Gramine runs one program with the argv the signed manifest fixes, and on Gramine 1.9 a running
JVM must not start child processes: under gramine-direct the fork checkpoints the JVM while its
threads run (libos/src/libos_checkpoint.c, send_memory_on_stream restores page protections from
a stale snapshot) and under SGX every child is a new enclave. Launcher scripts that compute the
JVM command at run time cannot run there either: Spark's bash ``spark-submit``/``spark-class``
read the launcher's output through ``< <(...)``, a /dev/fd path Gramine cannot reopen. So:

- ``exec``: the command runs as written (``java ...``, ``python3 job.py``);
- ``spark-jvm``: ``spark-submit ... app.jar ARGS`` runs the JVM directly, with the command
  Spark's own launcher (``org.apache.spark.launcher.Main``, as ``spark-class`` runs it) computes
  for those arguments in the app image at build time;
- ``pyspark``: ``spark-submit ... job.py ARGS`` runs Python first, as ``pyspark`` does: the
  job's Python starts the JVM through ``$SPARK_HOME/bin/spark-submit`` (pyspark/java_gateway.py),
  which in the enclave is ppml-build's wrapper that execs the launcher-computed JVM command, with
  spark-submit's options in ``PYSPARK_SUBMIT_ARGS``. Spark would otherwise make the JVM spawn
  the Python driver (PythonRunner).

Pure: the recipe in, a ``LaunchPlan`` out. The build computes the launcher's output in the image
(``support_stage_lines``) and ``launcher_command`` reads it back for the manifest's argv.

Longer than most: the launch forms (JVM, PySpark, PyFlink, Flink) share their rules, and the
support-stage lines that install the launcher must change with them.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ManifestError, PlanError
from ..image.rootfs import RootFS, RootFSError, resolve
from ..recipe import Recipe
from ..record import IN_IMAGE_DIR

# Where ppml-build's in-enclave support files live in the image (trusted, except launch inputs).
SUPPORT_DIR = IN_IMAGE_DIR
LAUNCH_DIR = f"{SUPPORT_DIR}/launch"
# A cluster role's script (plan/roles.py): the program of that role's enclave.
ROLE_DIR = f"{SUPPORT_DIR}/roles"
PPML_LAUNCHER = f"{SUPPORT_DIR}/bin/ppml-launch.py"
SPARK_SUBMIT_WRAPPER = f"{SUPPORT_DIR}/bin/spark-submit"
ENCLAVE_HOSTS = f"{SUPPORT_DIR}/etc/hosts"
JDK_SUPPORT_JAR = f"{SUPPORT_DIR}/lib/ppml-enclave-jdk.jar"
HADOOP_SUPPORT_JAR = f"{SUPPORT_DIR}/lib/ppml-enclave-hadoop.jar"
# Spark's launcher output as org.apache.spark.launcher.Main prints it (``\0\n``, then the
# command NUL-separated), and for the PySpark form also one argument per line, for the wrapper.
SPARK_JVM_COMMAND = f"{LAUNCH_DIR}/spark-jvm.cmd"
PYSPARK_JVM_COMMAND = f"{LAUNCH_DIR}/pyspark-jvm.cmd"
PYSPARK_JVM_ARGS = f"{LAUNCH_DIR}/pyspark-jvm.args"
SPARK_JVM_ARGS = f"{LAUNCH_DIR}/spark-jvm.args"  # the same, for a Spark driver's role script
# The arguments each was computed for (NUL-separated), so a render can tell a stale one.
LAUNCH_INPUT_SUFFIX = ".input"
SUPPORT_TRUSTED = (
    f"{SUPPORT_DIR}/bin/",
    f"{SUPPORT_DIR}/etc/",
    f"{SUPPORT_DIR}/lib/",
    f"{LAUNCH_DIR}/",
    f"{ROLE_DIR}/",
)

SPARK_SUBMIT_CLASS = "org.apache.spark.deploy.SparkSubmit"
PYSPARK_SHELL_RESOURCE = "pyspark-shell"  # SparkSubmitCommandBuilder.PYSPARK_SHELL_RESOURCE
NIO_LOCAL_FS = "org.ppmlbuild.enclave.hadoop.NioLocalFileSystem"
NO_CHILD_PROCESSES = "org.ppmlbuild.enclave.NoChildProcesses"

# spark-submit's options that take a value and its switches (Spark 4.3
# launcher/src/main/java/org/apache/spark/launcher/SparkSubmitOptionParser.java); the first
# argument that is neither is the primary resource.
_SPARK_SUBMIT_SWITCHES = frozenset(
    {
        "--help",
        "-h",
        "--supervise",
        "--usage-error",
        "--verbose",
        "-v",
        "--version",
        "--load-spark-defaults",
    }
)
_SPARK_SUBMIT_OPTS = frozenset(
    {
        "--archives",
        "--class",
        "--conf",
        "-c",
        "--deploy-mode",
        "--driver-class-path",
        "--driver-cores",
        "--driver-default-class-path",
        "--driver-java-options",
        "--driver-library-path",
        "--driver-memory",
        "--exclude-packages",
        "--executor-cores",
        "--executor-memory",
        "--extra-properties-file",
        "--files",
        "--jars",
        "--keytab",
        "--kill",
        "--master",
        "--name",
        "--num-executors",
        "--packages",
        "--principal",
        "--properties-file",
        "--proxy-user",
        "--py-files",
        "--queue",
        "--remote",
        "--repositories",
        "--status",
        "--total-executor-cores",
    }
)

LaunchForm = Literal["exec", "spark-jvm", "pyspark"]


@dataclass(frozen=True)
class SparkSubmit:
    """``spark-submit OPTIONS RESOURCE ARGS`` taken apart."""

    options: tuple[str, ...]
    resource: str
    app_args: tuple[str, ...]


def parse_spark_submit(argv: list[str]) -> SparkSubmit | None:
    """The parts of a spark-submit command line; None if argv[0] is not spark-submit."""
    if posixpath.basename(argv[0]) != "spark-submit":
        return None
    index = 1
    while index < len(argv):
        token = argv[index]
        name = token.split("=", 1)[0] if token.startswith("--") else token
        if name in _SPARK_SUBMIT_SWITCHES:
            index += 1
        elif name in _SPARK_SUBMIT_OPTS:
            index += 1 if "=" in token and token.startswith("--") else 2
        elif token.startswith("-"):
            raise PlanError(
                f"app.command: spark-submit option {token!r} is not one Spark 4 "
                "knows (SparkSubmitOptionParser); check the spelling"
            )
        else:
            return SparkSubmit(tuple(argv[1:index]), token, tuple(argv[index + 1 :]))
    raise PlanError(
        "app.command: spark-submit has no application (app.jar or job.py) after its options"
    )


@dataclass(frozen=True)
class LaunchPlan:
    form: LaunchForm
    # What Gramine runs. Empty for "spark-jvm" until the launcher's output is known.
    argv: tuple[str, ...]
    # What the build runs Spark's launcher with (SparkSubmit's arguments); () if nothing.
    spark_launcher_args: tuple[str, ...] = ()
    # Where the launcher's output goes in the image.
    spark_launcher_output: str | None = None
    # Where its JVM command is also kept one argument per line, for a shell that execs it (the
    # PySpark wrapper, a Spark driver's role script); the enclave then runs ``argv``.
    jvm_args_lines: str | None = None
    # loader.env only the enclave gets (never the image's ENV: run-native keeps spark-submit).
    env: dict[str, str] = field(default_factory=dict)
    # Appended to JAVA_TOOL_OPTIONS in the manifest: flags for every JVM in the enclave.
    java_options: tuple[str, ...] = ()
    # Python starts the JVM: two processes share the enclave and exchange files.
    python_first: bool = False
    # The app is one process: Gramine may refuse every fork (sys.disallow_subprocesses).
    single_process: bool = False
    # Support jars to build into the image (in-image paths).
    support_jars: tuple[str, ...] = ()
    # What the manifest must mount over the image: in-enclave path -> in-image source.
    file_mounts: dict[str, str] = field(default_factory=dict)
    # Per-process in-enclave memory, and directories the app's processes share (encrypted
    # with a key ppml-launch.py makes for each run), after the recipe's files.tmpfs/scratch.
    tmpfs: tuple[str, ...] = ()
    scratch: tuple[str, ...] = ()
    # Occlum: the in-image script `occlum run` is given, with no arguments (the fixed command).
    occlum_entry: str | None = None
    # A cluster role's parameters (plan/roles.py): the only variables the host may set, each
    # checked by the role script before the command is built.
    passthrough: tuple[str, ...] = ()
    # Host files the enclave may read unhashed (sgx.allowed_files), after the recipe's own.
    allowed_files: tuple[str, ...] = ()


# Every JVM in an enclave:
JVM_ENCLAVE_OPTIONS = (
    # Netty's native epoll transport needs timerfd_create, which Gramine 1.9 does not implement
    # (libos/src/arch/x86_64/libos_table.c has no timerfd_*): Spark's RPC event loops fail.
    "-Dio.netty.transport.noNative=true",
    # hsperfdata is a MAP_SHARED file in java.io.tmpdir that nothing in an enclave reads; it
    # would cost an encrypted scratch file and a shared mapping per JVM.
    "-XX:-UsePerfData",
)
# A JVM that shares the enclave with Python: refuse starting programs in the JVM itself, since
# Gramine's sys.disallow_subprocesses would also stop Python from starting the JVM.
SHARED_ENCLAVE_JVM_OPTIONS = (
    f"-Xbootclasspath/a:{JDK_SUPPORT_JAR}",
    f"-Djava.security.manager={NO_CHILD_PROCESSES}",
)


def _is_python(program: str) -> bool:
    return posixpath.basename(program).startswith("python")


def _is_java(program: str) -> bool:
    return posixpath.basename(program) == "java"


def spark_enclave_options(options: tuple[str, ...]) -> tuple[str, ...]:
    """spark-submit options plus what Spark needs in an enclave: Hadoop's local file system
    without chmod processes (NioLocalFileSystem, from the support jar on the driver's class
    path; local mode runs the executors in the driver JVM)."""
    out = list(options)
    class_path_at = None
    index = 0
    while index < len(out):
        token = out[index]
        if token == "--driver-class-path" and index + 1 < len(out):
            class_path_at = index + 1
            index += 2
            continue
        if token.startswith("--driver-class-path="):
            out[index : index + 1] = ["--driver-class-path", token.split("=", 1)[1]]
            class_path_at = index + 1
            index += 2
            continue
        index += 1
    if class_path_at is None:
        out += ["--driver-class-path", HADOOP_SUPPORT_JAR]
    else:
        out[class_path_at] = f"{out[class_path_at]}:{HADOOP_SUPPORT_JAR}"
    out += ["--conf", f"spark.hadoop.fs.file.impl={NIO_LOCAL_FS}"]
    # Gramine writes the app's stderr to the host's stdout (its console handle is host fd 1:
    # pal/src/host/linux-sgx/pal_console.c), so Spark's console progress bar, drawn with
    # carriage returns on stderr, would run into the job's own output lines.
    if not any(token.startswith("spark.ui.showConsoleProgress=") for token in options):
        out += ["--conf", "spark.ui.showConsoleProgress=false"]
    return tuple(out)


def _with_scratch(recipe: Recipe, launch: LaunchPlan) -> LaunchPlan:
    """Where /tmp and the recipe's scratch directories go. Gramine 1.9 gives every process its
    own tmpfs (libos/src/fs/tmpfs), so an app whose processes exchange files (PySpark's
    gateway writes its connection file to a tempfile.mkdtemp() directory the Python side
    reads) needs a shared, still protected, directory: an encrypted mount."""
    files = recipe.files
    tmpfs, scratch = list(files.tmpfs), list(files.scratch)
    both = sorted(set(tmpfs) & set(scratch))
    if both:
        raise PlanError(f"files.tmpfs and files.scratch both list {', '.join(both)}; keep one")
    if launch.python_first:
        if "/tmp" in tmpfs:
            raise PlanError(
                "files.tmpfs: /tmp: this app's Python and JVM processes exchange "
                "files through /tmp, and Gramine gives each process its own tmpfs; "
                "list /tmp under files.scratch instead"
            )
        if "/tmp" not in scratch:
            scratch.insert(0, "/tmp")
    elif "/tmp" not in scratch and "/tmp" not in tmpfs:
        tmpfs.insert(0, "/tmp")
    if scratch and not launch.python_first:
        raise PlanError(
            f"files.scratch: {scratch[0]}: scratch directories are shared by an "
            "app's processes, and this app runs as one process; use files.tmpfs"
        )
    return dataclasses.replace(launch, tmpfs=tuple(tmpfs), scratch=tuple(scratch))


def plan_launch(recipe: Recipe) -> LaunchPlan:
    """How the enclave starts ``recipe``'s command (pure)."""
    if recipe.libos.type == "occlum":
        return _occlum_launch(recipe)
    # A passthrough of what the launch sets (JAVA_TOOL_OPTIONS, ...) is refused by
    # plan/sizing.py (_check_passthrough), with the plan's other variables.
    return _with_scratch(recipe, _launch_form(recipe))


def _launch_form(recipe: Recipe) -> LaunchPlan:
    argv = list(recipe.app.command)
    if recipe.app.insecure_host_argv:
        return LaunchPlan("exec", tuple(argv))
    jvm_kind = recipe.kind in ("spark", "flink", "java")
    submit = parse_spark_submit(argv) if recipe.kind == "spark" else None

    if submit is not None and submit.resource.endswith(".py"):
        options = spark_enclave_options(submit.options)
        submit_args = options + (PYSPARK_SHELL_RESOURCE,)
        return LaunchPlan(
            "pyspark",
            (recipe.runtime.python, PPML_LAUNCHER, submit.resource) + submit.app_args,
            spark_launcher_args=submit_args,
            spark_launcher_output=PYSPARK_JVM_COMMAND,
            jvm_args_lines=PYSPARK_JVM_ARGS,
            env={
                "PYSPARK_SUBMIT_ARGS": shlex.join(submit_args),
                # spark-submit exports it for PySpark's Python workers (bin/spark-submit).
                "PYTHONHASHSEED": "0",
            },
            java_options=JVM_ENCLAVE_OPTIONS + SHARED_ENCLAVE_JVM_OPTIONS,
            python_first=True,
            support_jars=(JDK_SUPPORT_JAR, HADOOP_SUPPORT_JAR),
            file_mounts={f"{recipe.runtime.spark_home}/bin/spark-submit": SPARK_SUBMIT_WRAPPER},
        )
    if submit is not None:
        options = spark_enclave_options(submit.options)
        return LaunchPlan(
            "spark-jvm",
            (),
            spark_launcher_args=options + (submit.resource,) + submit.app_args,
            spark_launcher_output=SPARK_JVM_COMMAND,
            java_options=JVM_ENCLAVE_OPTIONS,
            single_process=True,
            support_jars=(HADOOP_SUPPORT_JAR,),
        )
    if jvm_kind and _is_python(argv[0]):
        # PyFlink (or PySpark started by its own Python): Python starts the JVM itself.
        return LaunchPlan(
            "exec",
            (argv[0], PPML_LAUNCHER, *argv[1:]),
            java_options=JVM_ENCLAVE_OPTIONS + SHARED_ENCLAVE_JVM_OPTIONS,
            python_first=True,
            support_jars=(JDK_SUPPORT_JAR,),
        )
    if jvm_kind and _is_java(argv[0]):
        return LaunchPlan(
            "exec", tuple(argv), java_options=JVM_ENCLAVE_OPTIONS, single_process=True
        )
    return LaunchPlan("exec", tuple(argv))


# Occlum 0.31 has spawn, vfork and execve but no fork (docs/readthedocs/docs/source/
# binaries_compatibility.md; src/libos/src/syscall/mod.rs marks Fork unsupported). Its
# processes share one enclave and one user space (Occlum.json resource_limits).
OCCLUM_ENTRY_DIR = f"{SUPPORT_DIR}/entry"
# The only program in Occlum.json's entry_points: Occlum takes argv from the host (`occlum run
# PROGRAM ARGS`, src/run/main.c) and does not measure it, so the fixed command lives in this
# script, inside the integrity-protected image (occlum/entry.py writes it).
OCCLUM_ENTRY_SCRIPT = f"{OCCLUM_ENTRY_DIR}/start.sh"
# pyspark/daemon.py forks every Python worker from one daemon; without it Spark spawns each
# worker itself (PythonWorkerFactory, spark.python.use.daemon), which Occlum can do.
PYSPARK_DAEMON_CONF = "spark.python.use.daemon"


def _conf_value(options: tuple[str, ...], key: str) -> str | None:
    """The value spark-submit options give ``--conf KEY=...``, last one winning."""
    value = None
    for index, token in enumerate(options):
        pair = None
        if token in ("--conf", "-c") and index + 1 < len(options):
            pair = options[index + 1]
        elif token.startswith("--conf="):
            pair = token.split("=", 1)[1]
        if pair is not None and pair.split("=", 1)[0] == key:
            value = pair.split("=", 1)[1] if "=" in pair else ""
    return value


def _master(options: tuple[str, ...]) -> str:
    for index, token in enumerate(options):
        if token == "--master" and index + 1 < len(options):
            return options[index + 1]
        if token.startswith("--master="):
            return token.split("=", 1)[1]
    return _conf_value(options, "spark.master") or ""


def _occlum_launch(recipe: Recipe) -> LaunchPlan:
    """Occlum: the command is fixed in the entry script; spark-submit (a bash script that
    forks) becomes the JVM command Spark's launcher computes at build time, as for Gramine."""
    argv = list(recipe.app.command)
    files = dict(tmpfs=tuple(recipe.files.tmpfs), scratch=tuple(recipe.files.scratch))
    if recipe.app.insecure_host_argv:
        return LaunchPlan("exec", tuple(argv), **files)
    entry = {"occlum_entry": OCCLUM_ENTRY_SCRIPT, **files}
    if recipe.kind in ("spark", "flink") and _is_python(argv[0]):
        # pyspark/java_gateway.py and pyflink_gateway_server.py start the JVM with
        # subprocess.Popen(preexec_fn=...), and CPython uses vfork only without a preexec_fn
        # (Modules/_posixsubprocess.c): that is a fork, which Occlum 0.31 does not have.
        hint = (
            "start the job with spark-submit ... job.py (the JVM then spawns Python)"
            if recipe.kind == "spark"
            else "run PyFlink jobs with libos.type: gramine"
        )
        raise PlanError(
            f"app.command[0]: {argv[0]}: PySpark/PyFlink start their JVM from Python with a "
            f"fork (subprocess.Popen with preexec_fn), and Occlum 0.31 has no fork; {hint}"
        )
    submit = parse_spark_submit(argv) if recipe.kind == "spark" else None
    if submit is None:
        return LaunchPlan("exec", tuple(argv), **entry)
    master = _master(submit.options)
    if master.startswith("local-cluster"):
        # Each Worker of local-cluster[N,C,M] starts executor JVMs as child processes
        # (deploy/worker/ExecutorRunner): in Occlum they would share the one user space sized
        # for this JVM.
        raise PlanError(
            f"app.command: --master {master} starts executor JVMs as child processes, which "
            "share the one Occlum user space sized for this JVM; use local[N]"
        )
    options = spark_enclave_options(submit.options)
    python = submit.resource.endswith(".py")
    if python:
        daemon = _conf_value(submit.options, PYSPARK_DAEMON_CONF)
        if daemon is not None and daemon.strip().lower() != "false":
            raise PlanError(
                f"app.command: --conf {PYSPARK_DAEMON_CONF}={daemon}: pyspark's worker daemon "
                "forks its workers, and Occlum 0.31 has no fork; remove it"
            )
        if daemon is None:
            options += ("--conf", f"{PYSPARK_DAEMON_CONF}=false")
    return LaunchPlan(
        "spark-jvm",
        (),
        spark_launcher_args=options + (submit.resource,) + submit.app_args,
        spark_launcher_output=SPARK_JVM_COMMAND,
        support_jars=(HADOOP_SUPPORT_JAR,),
        **entry,
    )


def describe_launch(launch: LaunchPlan) -> list[str]:
    """What ``ppml-build plan`` says about how the enclave starts the job."""
    if launch.form == "spark-jvm":
        start = (
            "the JVM directly, with the command Spark's launcher computes for "
            "app.command in the image at build time"
        )
    elif launch.form == "pyspark":
        start = (
            f"Python first ({' '.join(launch.argv)}); it starts the JVM through "
            "ppml-build's spark-submit wrapper, with the command Spark's launcher "
            "computes at build time"
        )
    else:
        start = " ".join(launch.argv) or "the host's argv (INSECURE)"
    lines = [f"launch: {start}"]
    if launch.occlum_entry:
        lines.append(
            f"entry: occlum run {launch.occlum_entry} (no host arguments: the script, in the "
            "measured image, execs the fixed command)"
        )
    if launch.single_process:
        lines.append("processes: 1; the LibOS refuses every fork (sys.disallow_subprocesses)")
    elif launch.python_first:
        lines.append(
            "processes: 2, Python and the JVM it starts; the JVM may start none "
            f"({NO_CHILD_PROCESSES})"
        )
    for path in launch.scratch:
        lines.append(
            f"scratch: {path} (shared by the app's processes; encrypted, keyed "
            "afresh for every run)"
        )
    for path in launch.tmpfs:
        where = "an Occlum ramfs" if launch.occlum_entry else "one per process"
        lines.append(f"tmpfs: {path} (in enclave memory, {where})")
    if launch.java_options:
        lines.append("JVM flags in the enclave: " + " ".join(launch.java_options))
    return lines


# --- the build side: computing the launcher's output in the image ------------------------------

SUPPORT_STAGE = "ppml-support"
SUPPORT_CONTEXT_DIR = "ppml-support"  # the build context's copy of SUPPORT_SOURCES
SUPPORT_SOURCES = Path(__file__).resolve().parent / "support"
_STAGE_SRC = "/ppml-support/src"
_STAGE_OUT = "/ppml-support/out"


def _run(script: str, *args: str) -> str:
    """A Dockerfile RUN in exec form: ``sh -ec SCRIPT sh ARGS...`` (no quoting to get wrong)."""
    return "RUN " + json.dumps(["/bin/sh", "-ec", script, "sh", *args])


def support_stage_lines(
    recipe: Recipe,
    launch: LaunchPlan,
    app_stage: str,
    generated: Mapping[str, str] | None = None,
) -> list[str]:
    """``FROM <app stage> AS ppml-support``: the support jars, compiled with the image's own JDK
    (its jdk.compiler module: no download), Spark's launcher output for ``launch``, and the
    ``generated`` files (in-image path under SUPPORT_DIR → text: a cluster's role scripts,
    executable, and the executors' pod template).

    JAVA_TOOL_OPTIONS is unset for these JVMs: the image's options are for the app's JVM.
    """
    java = f"{recipe.runtime.java_home}/bin/java"
    lines = [
        f"FROM {app_stage} AS {SUPPORT_STAGE}",
        "USER root",
        f"COPY {SUPPORT_CONTEXT_DIR}/ {_STAGE_SRC}/",
        _run(
            f"mkdir -p {_STAGE_OUT}/bin {_STAGE_OUT}/etc; "
            f"cp {_STAGE_SRC}/bin/* {_STAGE_OUT}/bin/; "
            f"cp {_STAGE_SRC}/etc/hosts {_STAGE_OUT}/etc/hosts; "
            f"chmod 0755 {_STAGE_OUT}/bin/*; chmod 0644 {_STAGE_OUT}/etc/hosts"
        ),
    ]
    # A fixed entry date and sorted entries keep the jars, and so MRENCLAVE, reproducible.
    jar = (
        f'mkdir -p "$(dirname "$3")"; cd "$2" && env -u JAVA_TOOL_OPTIONS {java} '
        '-m jdk.jartool/sun.tools.jar.Main --create --file "$3" --date 2026-01-01T00:00:00Z '
        "$(find . -type f | LC_ALL=C sort)"
    )
    javac = f"env -u JAVA_TOOL_OPTIONS {java} -m jdk.compiler/com.sun.tools.javac.Main"
    if JDK_SUPPORT_JAR in launch.support_jars:
        lines.append(
            _run(
                f'mkdir -p "$2"; {javac} -encoding UTF-8 -nowarn -d "$2" '
                f'$(find "$1" -name "*.java" | LC_ALL=C sort); {jar}',
                f"{_STAGE_SRC}/java",
                "/ppml-support/classes-jdk",
                _out(JDK_SUPPORT_JAR),
            )
        )
    if HADOOP_SUPPORT_JAR in launch.support_jars:
        spark_home = recipe.runtime.spark_home
        lines.append(
            _run(
                f'mkdir -p "$2"; api=$(ls {spark_home}/jars/hadoop-client-api-*.jar); '
                f'{javac} -encoding UTF-8 -nowarn -cp "$api" -d "$2" '
                f'$(find "$1" -name "*.java" | LC_ALL=C sort); {jar}',
                f"{_STAGE_SRC}/java-hadoop",
                "/ppml-support/classes-hadoop",
                _out(HADOOP_SUPPORT_JAR),
            )
        )
    if launch.spark_launcher_output is not None:
        lines.append(_spark_launcher_run(recipe, launch))
    for path, text in sorted((generated or {}).items()):
        # The text travels as an argument, never inside the script.
        mode = "0755" if path.endswith(".sh") else "0644"
        lines.append(
            _run('mkdir -p "$(dirname "$1")"; printf "%s" "$2" > "$1"; chmod "$3" "$1"',
                 _out(path), text, mode)
        )  # fmt: skip
    return lines


def _out(in_image: str) -> str:
    return _STAGE_OUT + in_image[len(SUPPORT_DIR) :]


def _spark_launcher_run(recipe: Recipe, launch: LaunchPlan) -> str:
    """Run Spark's launcher as bin/spark-class does: Spark's own load-spark-env.sh first (it
    sets SPARK_CONF_DIR and SPARK_SCALA_VERSION and reads conf/spark-env.sh), then
    ``java -Xmx128m $SPARK_LAUNCHER_OPTS -cp 'jars/*' org.apache.spark.launcher.Main``.
    Recipe values only ever travel as arguments, never inside the script text."""
    runtime = recipe.runtime
    launcher = (
        '. "$SPARK_HOME/bin/load-spark-env.sh"; exec "$JAVA_HOME/bin/java" -Xmx128m '
        '$SPARK_LAUNCHER_OPTS -cp "$SPARK_HOME/jars/*" org.apache.spark.launcher.Main '
        f'{SPARK_SUBMIT_CLASS} "$@"'
    )
    script = (
        'out="$1"; export SPARK_HOME="$2" JAVA_HOME="$3"; shift 3; unset JAVA_TOOL_OPTIONS; '
        'mkdir -p "$(dirname "$out")"; '
        f'printf "%s\\0" "$@" > "$out{LAUNCH_INPUT_SUFFIX}"; '
        f'bash -c \'{launcher}\' bash "$@" > "$out"'
    )
    if launch.jvm_args_lines:
        # The command is the last line (after Main's "\0\n" marker): one argument per line
        # for the shell (launch.check_jvm_args_lines refuses one with a newline in it).
        script += f'; sed -n "\\$p" "$out" | tr "\\000" "\\n" > "{_out(launch.jvm_args_lines)}"'
    return _run(
        script,
        _out(launch.spark_launcher_output or ""),
        runtime.spark_home,
        runtime.java_home,
        *launch.spark_launcher_args,
    )


def app_stage_copy_line() -> str:
    return f"COPY --from={SUPPORT_STAGE} {_STAGE_OUT}/ {SUPPORT_DIR}/"


# --- the render side: the launcher's output into argv -----------------------------------------


def _split_nul(data: bytes) -> list[str]:
    text = data.decode("utf-8")
    parts = text.split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def check_launcher_input(launch: LaunchPlan, recorded_input: bytes, where: str) -> None:
    """The launcher output in the image was computed for exactly these arguments."""
    if tuple(_split_nul(recorded_input)) != launch.spark_launcher_args:
        raise ManifestError(
            f"{where}: Spark's launcher output in the image was computed for "
            "other spark-submit arguments than app.command's; rebuild the "
            "image with `ppml-build build`"
        )


def launcher_command(output: bytes, where: str) -> tuple[str, ...]:
    """The java command in org.apache.spark.launcher.Main's output: whatever it printed, a
    ``\0\n`` marker, then the arguments NUL-separated (bin/spark-class reads it so)."""
    marker = output.find(b"\0\n")
    argv = _split_nul(output[marker + 2 :]) if marker >= 0 else []
    if argv and argv[0] == "env":
        raise ManifestError(
            f"{where}: Spark's launcher asks for environment variables "
            f"({argv[1] if len(argv) > 1 else ''}); set them in app.env"
        )
    if not argv or SPARK_SUBMIT_CLASS not in argv or posixpath.basename(argv[0]) != "java":
        raise ManifestError(
            f"{where}: Spark's launcher printed no java command for "
            f"{SPARK_SUBMIT_CLASS}; is this a Spark distribution?"
        )
    return tuple(argv)


def check_jvm_args_lines(command: tuple[str, ...], lines: bytes, where: str) -> None:
    """The wrapper reads one argument per line up to SparkSubmit: each must be a whole line."""
    expected = "".join(arg + "\n" for arg in command)
    text = lines.decode("utf-8")
    if any("\n" in arg for arg in command) or text not in (expected, expected + "\n"):
        raise ManifestError(
            f"{where}: the JVM command Spark's launcher computed cannot be "
            "read one argument per line (an argument has a newline in it)"
        )


def launch_argv(launch: LaunchPlan, fs: RootFS) -> list[str]:
    """The argv the enclave runs: the launch plan's, or Spark's launcher output kept in the
    image (read back from the image filesystem ``fs``)."""
    output = launch.spark_launcher_output
    if output is None:
        return list(launch.argv)
    where = f"{output} in the image"
    try:
        raw = fs.read_bytes(resolve(fs, output))
        recorded = fs.read_bytes(resolve(fs, output + LAUNCH_INPUT_SUFFIX))
        lines_path = launch.jvm_args_lines
        lines = fs.read_bytes(resolve(fs, lines_path)) if lines_path else b""
    except (OSError, KeyError, RootFSError):
        raise ManifestError(
            f"{where}: missing; Spark's launcher computes the JVM command "
            "while `ppml-build build` builds the image, so render against an "
            "image it built"
        ) from None
    check_launcher_input(launch, recorded, where)
    command = launcher_command(raw, where)
    if not launch.jvm_args_lines:
        return list(command)
    check_jvm_args_lines(command, lines, f"{launch.jvm_args_lines} in the image")
    return list(launch.argv)
