"""How the enclave starts the job (launch.py): decided from the recipe, computed in the image,
read back into the manifest; and the in-enclave wrapper and launcher themselves, run for real."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ppml_build.errors import ManifestError, PlanError
from ppml_build.plan import launch as L
from ppml_build.plan import make_plan
from ppml_build.recipe import load_recipe_text

SUPPORT = L.SUPPORT_SOURCES


def recipe(
    command: str, kind: str = "spark", files: str = "", env: str = "", runtime: str = ""
) -> object:
    return load_recipe_text(f"""\
apiVersion: ppml-build/v1
kind: {kind}
name: demo
base: {{image: "127.0.0.1:5000/ppml/spark:1"}}
app:
  command: {command}
{env}{runtime}{files}""")


def test_spark_submit_is_taken_apart_like_sparks_own_option_parser():
    parsed = L.parse_spark_submit(
        [
            "/opt/spark/bin/spark-submit",
            "--master",
            "local[2]",
            "--conf=spark.x=1",
            "-v",
            "--class",
            "a.B",
            "app.jar",
            "--x",
        ]
    )
    assert parsed.options == ("--master", "local[2]", "--conf=spark.x=1", "-v", "--class", "a.B")
    assert parsed.resource == "app.jar" and parsed.app_args == ("--x",)
    assert L.parse_spark_submit(["java", "-jar", "x"]) is None
    with pytest.raises(PlanError, match="option '--maste' is not one Spark 4 knows"):
        L.parse_spark_submit(["spark-submit", "--maste", "local", "a.jar"])
    with pytest.raises(PlanError, match="no application"):
        L.parse_spark_submit(["spark-submit", "--master", "local"])


def test_pyspark_runs_python_first_with_the_submit_options_in_the_environment():
    plan = make_plan(
        recipe(
            '[spark-submit, --master, "local[2]", --driver-class-path, /x.jar, /app/job.py, in.csv]'
        )
    )
    launch = plan.launch
    assert launch.form == "pyspark" and launch.python_first and not launch.single_process
    assert launch.argv == ("/usr/bin/python3", L.PPML_LAUNCHER, "/app/job.py", "in.csv")
    submit = shlex.split(launch.env["PYSPARK_SUBMIT_ARGS"])
    assert submit[-1] == "pyspark-shell" and tuple(submit) == launch.spark_launcher_args
    # The user's class path keeps its place; the support jar joins it.
    assert submit[submit.index("--driver-class-path") + 1] == f"/x.jar:{L.HADOOP_SUPPORT_JAR}"
    assert f"spark.hadoop.fs.file.impl={L.NIO_LOCAL_FS}" in submit
    assert "spark.ui.showConsoleProgress=false" in submit
    assert launch.env["PYTHONHASHSEED"] == "0"
    assert f"-Djava.security.manager={L.NO_CHILD_PROCESSES}" in launch.java_options
    assert launch.file_mounts == {"/opt/spark/bin/spark-submit": L.SPARK_SUBMIT_WRAPPER}
    assert launch.scratch == ("/tmp",) and launch.tmpfs == ()


def test_a_jar_job_runs_the_jvm_directly_as_one_process():
    launch = make_plan(
        recipe("[spark-submit, --master, \"local[2]\", --class, a.Main, /app/a.jar, '7']")
    ).launch
    assert launch.form == "spark-jvm" and launch.single_process and not launch.python_first
    assert launch.argv == ()  # known once Spark's launcher ran in the image
    assert launch.spark_launcher_args[-2:] == ("/app/a.jar", "7")
    assert not any("security.manager" in flag for flag in launch.java_options)
    assert launch.tmpfs == ("/tmp",) and launch.scratch == ()


def test_java_and_pyflink_commands():
    java = make_plan(recipe("[java, -Xmx1g, -cp, /a.jar, Main]", kind="flink")).launch
    assert java.form == "exec" and java.single_process and java.argv[0] == "java"
    pyflink = make_plan(recipe("[/opt/pyflink/bin/python3, /app/job.py]", kind="flink")).launch
    assert pyflink.python_first and not pyflink.single_process
    assert pyflink.argv == ("/opt/pyflink/bin/python3", L.PPML_LAUNCHER, "/app/job.py")
    plain = make_plan(recipe("[/usr/bin/python3, /app/x.py]", kind="python")).launch
    assert plain.argv == ("/usr/bin/python3", "/app/x.py") and not plain.java_options


def test_scratch_and_tmpfs_rules_name_the_fix():
    with pytest.raises(PlanError, match="list /tmp under files.scratch instead"):
        make_plan(recipe("[spark-submit, /app/job.py]", files="files: {tmpfs: [/tmp]}\n"))
    with pytest.raises(PlanError, match="this app runs as one process; use files.tmpfs"):
        make_plan(recipe("[java, Main]", kind="java", files="files: {scratch: [/work]}\n"))
    with pytest.raises(PlanError, match="both list /w"):
        make_plan(
            recipe("[spark-submit, /app/job.py]", files="files: {scratch: [/w], tmpfs: [/w]}\n")
        )
    ok = make_plan(
        recipe(
            "[spark-submit, /app/job.py]",
            files="files: {scratch: [/tmp, /work], tmpfs: [/cache]}\n",
        )
    ).launch
    assert ok.scratch == ("/tmp", "/work") and ok.tmpfs == ("/cache",)


def test_the_host_may_not_replace_the_enclaves_jvm_flags():
    with pytest.raises(PlanError, match="JAVA_TOOL_OPTIONS is set by ppml-build"):
        make_plan(
            recipe("[java, Main]", kind="java", env="  passthrough_env: [JAVA_TOOL_OPTIONS]\n")
        )


def test_the_support_stage_passes_recipe_values_as_arguments_never_as_script_text():
    hostile = "local[2]'; touch /pwned; echo '"
    rec = recipe(f'[spark-submit, --master, "{hostile}", /app/job.py]')
    lines = L.support_stage_lines(rec, make_plan(rec).launch, "app")
    assert lines[0] == "FROM app AS ppml-support"
    runs = [json.loads(line[len("RUN ") :]) for line in lines if line.startswith("RUN [")]
    launcher = runs[-1]
    assert launcher[:2] == ["/bin/sh", "-ec"] and hostile not in launcher[2]
    assert hostile in launcher[3:]
    compile_steps = [r for r in runs if "jdk.compiler" in r[2]]
    assert len(compile_steps) == 2 and all(
        "--date 2026-01-01T00:00:00Z" in r[2] for r in compile_steps
    )


def test_launcher_output_is_read_as_spark_class_reads_it():
    args = ("--master", "local[2]", "/app/a.jar")
    launch = L.LaunchPlan(
        "spark-jvm", (), spark_launcher_args=args, spark_launcher_output=L.SPARK_JVM_COMMAND
    )
    command = [
        "/usr/lib/jvm/x/bin/java",
        "-cp",
        "/opt/spark/jars/*",
        "-Xmx1g",
        L.SPARK_SUBMIT_CLASS,
        *args,
    ]
    raw = b"a warning the launcher printed\n\0\n" + b"".join(a.encode() + b"\0" for a in command)
    assert L.launcher_command(raw, "x") == tuple(command)
    L.check_launcher_input(launch, b"".join(a.encode() + b"\0" for a in args), "x")
    with pytest.raises(ManifestError, match="other spark-submit arguments"):
        L.check_launcher_input(launch, b"--master\0local[4]\0/app/a.jar\0", "x")
    with pytest.raises(ManifestError, match="asks for environment variables"):
        L.launcher_command(b"\0\nenv\0X=1\0java\0" + L.SPARK_SUBMIT_CLASS.encode() + b"\0", "x")
    with pytest.raises(ManifestError, match="printed no java command"):
        L.launcher_command(b"Error: no such class\n", "x")
    lines = "".join(a + "\n" for a in command).encode()
    L.check_jvm_args_lines(tuple(command), lines, "x")
    with pytest.raises(ManifestError, match="newline"):
        L.check_jvm_args_lines(tuple(command) + ("a\nb",), lines, "x")


def run_wrapper(tmp_path: Path, jvm_args: list[str], pyspark_args: list[str]) -> list[str]:
    """ppml-build's spark-submit wrapper, run by the real /bin/sh, with `exec` pointed at a
    program that prints its argv one per line."""
    args_file = tmp_path / "pyspark-jvm.args"
    args_file.write_text("".join(a + "\n" for a in jvm_args))
    script = (SUPPORT / "bin/spark-submit").read_text().replace(L.PYSPARK_JVM_ARGS, str(args_file))
    wrapper = tmp_path / "spark-submit"
    wrapper.write_text(script)
    printer = tmp_path / "java"
    printer.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done\n')
    printer.chmod(0o755)
    out = subprocess.run(
        ["/bin/sh", str(wrapper), *pyspark_args], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def test_the_spark_submit_wrapper_execs_the_precomputed_jvm_with_pysparks_arguments(tmp_path):
    java = str(tmp_path / "java")
    jvm = [
        java,
        "-cp",
        "/opt/spark/jars/*",
        "-Xmx1g",
        L.SPARK_SUBMIT_CLASS,
        "--master",
        "local[2]",
        "pyspark-shell",
    ]
    got = run_wrapper(
        tmp_path, jvm, ["--conf", "spark.app.name=a b", "--master", "local[2]", "pyspark-shell"]
    )
    # Everything up to SparkSubmit from the image, then exactly what PySpark passed.
    assert got == [
        "-cp",
        "/opt/spark/jars/*",
        "-Xmx1g",
        L.SPARK_SUBMIT_CLASS,
        "--conf",
        "spark.app.name=a b",
        "--master",
        "local[2]",
        "pyspark-shell",
    ]


def test_the_launcher_keys_the_scratch_mount_and_runs_the_script_in_its_process(tmp_path):
    key = tmp_path / "keys" / "ppml-scratch"
    key.parent.mkdir()
    key.write_bytes(b"")  # Gramine lists the key once a mount names it
    job = tmp_path / "app" / "job.py"
    job.parent.mkdir()
    (job.parent / "helper.py").write_text("VALUE = 'from the job directory'\n")
    job.write_text("import os, sys, helper\nprint(sys.argv, helper.VALUE, os.getpid(), __name__)\n")
    launcher = (SUPPORT / "bin/ppml-launch.py").read_text().replace(L.PPML_LAUNCHER, "x")
    launcher = launcher.replace('"/dev/attestation/keys/ppml-scratch"', repr(str(key)))
    (tmp_path / "launch.py").write_text(launcher)
    out = subprocess.run(
        [sys.executable, str(tmp_path / "launch.py"), str(job), "in.csv"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(" ")
    assert out[0:2] == [f"['{job}',", "'in.csv']"]
    assert "from the job directory" in " ".join(out) and out[-1].strip() == "__main__"
    assert len(key.read_bytes()) == 16
    # No scratch mount: no key to set, and the job still runs.
    key.unlink()
    subprocess.run(
        [sys.executable, str(tmp_path / "launch.py"), str(job)], check=True, capture_output=True
    )
    assert not key.exists()


@pytest.mark.skipif(not shutil.which("javac"), reason="needs a JDK (javac) on the host")
def test_the_security_manager_refuses_starting_programs_and_nothing_else(tmp_path):
    """The JVM-side guard, compiled and installed as launch.py installs it (boot class path
    plus -Djava.security.manager): ProcessBuilder.start is refused before any fork, files and
    sockets still work."""
    classes = tmp_path / "classes"
    sources = sorted(str(p) for p in (SUPPORT / "java").rglob("*.java"))
    subprocess.run(
        ["javac", "-nowarn", "-d", str(classes), *sources], check=True, capture_output=True
    )
    (tmp_path / "Probe.java").write_text(
        "public class Probe { public static void main(String[] a) throws Exception {\n"
        '  java.nio.file.Files.writeString(java.nio.file.Path.of(a[0]), "ok");\n'
        '  try (var s = new java.net.ServerSocket(0)) { System.out.println("socket ok"); }\n'
        '  try { new ProcessBuilder("true").start(); System.out.println("forked"); }\n'
        "  catch (SecurityException e) { System.out.println(e.getMessage()); } } }\n"
    )
    out = subprocess.run(
        [
            "java",
            f"-Xbootclasspath/a:{classes}",
            f"-Djava.security.manager={L.NO_CHILD_PROCESSES}",
            str(tmp_path / "Probe.java"),
            str(tmp_path / "written"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "socket ok" and (tmp_path / "written").read_text() == "ok"
    assert out[1] == (
        "ppml-build: starting 'true' from the JVM is refused in this enclave "
        "(a running JVM must not fork under Gramine)"
    )


def test_plan_says_how_the_enclave_starts_the_job(capsys, tmp_path):
    from ppml_build.cli import main

    path = tmp_path / "recipe.yaml"
    path.write_text("""\
apiVersion: ppml-build/v1
kind: spark
name: demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  command: [spark-submit, --master, "local[2]", /app/job.py]
""")
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "launch: Python first (/usr/bin/python3 /ppml/bin/ppml-launch.py /app/job.py)" in out
    assert "processes: 2, Python and the JVM it starts; the JVM may start none" in out
    assert "scratch: /tmp (shared by the app's processes; encrypted" in out
    path.write_text(path.read_text().replace("/app/job.py]", "--class, a.B, /app/a.jar]"))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "launch: the JVM directly, with the command Spark's launcher computes" in out
    assert "processes: 1; the LibOS refuses every fork (sys.disallow_subprocesses)" in out
