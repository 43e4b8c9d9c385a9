"""Enclave sizing: the plan a user sees for the JVM settings their app runs with."""

from __future__ import annotations

import json

import pytest

from ppml_build.cli import main
from ppml_build.errors import PlanError
from ppml_build.plan import format_plan, make_plan
from ppml_build.recipe import load_recipe_text

GiB = 1 << 30
MiB = 1 << 20


def recipe(kind="java", command="[java, -cp, /app/app.jar, Main]", extra=""):
    return load_recipe_text(f"""\
apiVersion: ppml-build/v1
kind: {kind}
name: demo
base: {{image: "r/x:1"}}
app:
  command: {command}
{extra}""")


def term(plan, name):
    return next(t for t in plan.memory_terms if t.name == name)


def test_xmx_in_command_sizes_the_enclave_without_repeating_it():
    plan = make_plan(recipe(command="[java, -Xmx8g, -cp, /app/app.jar, Main]"))
    assert term(plan, "jvm_heap").value == 8 * GiB
    assert "-Xmx8g in app.command" in term(plan, "jvm_heap").source
    assert plan.enclave_size == 16 * GiB
    assert plan.enclave_size >= plan.enclave_size_estimate > 8 * GiB
    assert plan.dominant_term == "jvm_heap"
    assert sum(t.value for t in plan.memory_terms) == plan.enclave_size_estimate


def test_java_tool_options_and_last_flag_wins():
    plan = make_plan(
        recipe(
            command="[java, -Xmx2g, Main]",
            extra="""\
  env:
    JAVA_TOOL_OPTIONS: "-Xmx30g -Xss4m -XX:MaxDirectMemorySize=1g -XX:ActiveProcessorCount=16"
""",
        )
    )
    # the command line comes after JAVA_TOOL_OPTIONS, as the JVM reads them
    assert term(plan, "jvm_heap").value == 2 * GiB
    assert term(plan, "jvm_direct_memory").value == 1 * GiB
    assert plan.jvm.thread_stack == 4 * MiB and plan.jvm.cpus == 16
    # What the user's flags set stays theirs; the plan pins the rest of what it sized for.
    pinned = plan.extra_env["JAVA_TOOL_OPTIONS"].split()
    assert pinned[:4] == [
        "-Xmx30g",
        "-Xss4m",
        "-XX:MaxDirectMemorySize=1g",
        "-XX:ActiveProcessorCount=16",
    ]
    assert pinned[4:] == [
        "-XX:MaxMetaspaceSize=256m",
        "-XX:CompressedClassSpaceSize=204m",
        "-XX:ReservedCodeCacheSize=240m",
    ]
    assert term(plan, "thread_stacks").value == plan.max_threads * 4 * MiB


def test_cpus_are_pinned_and_drive_gc_and_jit_threads():
    small = make_plan(recipe(extra="resources: {cpus: 2}\n"))
    big = make_plan(recipe(extra="resources: {cpus: 64}\n"))
    assert small.extra_env["JAVA_TOOL_OPTIONS"].split()[0] == "-XX:ActiveProcessorCount=2"
    gc = {t.name: t.count for t in big.thread_terms}
    # G1 on 64 CPUs: 8 + 56*5/8 = 43 parallel workers
    assert gc["gc"] == 43 + (43 + 2) // 4 + 43 + 2
    assert gc["jit"] == 18  # HotSpot: log2(64)=6, log2(6)=2 (integer logs): 6*2*3/2
    assert big.max_threads > small.max_threads


def test_spark_takes_the_larger_of_driver_and_executor_memory():
    plan = make_plan(
        recipe(
            "spark",
            "[/opt/spark/bin/spark-submit, --master, 'local[4]', job.py]",
            """\
resources:
  spark: {spark.driver.memory: 2g, spark.executor.memory: 6g, spark.executor.cores: 3}
""",
        )
    )
    assert term(plan, "jvm_heap").value == 6 * GiB
    assert plan.jvm.cpus == 4  # local[4] in the command wins over executor cores
    assert {t.name: t.count for t in plan.thread_terms}["spark_tasks"] == 4


def test_spark_flags_on_the_command_line():
    plan = make_plan(
        recipe(
            "spark", "[spark-submit, --driver-memory, 12g, --conf, spark.executor.cores=2, job.py]"
        )
    )
    assert term(plan, "jvm_heap").value == 12 * GiB
    assert plan.enclave_size == 32 * GiB


def test_flink_memory_model_matches_flinks_own_numbers():
    # Flink logs for the default 1728m: JVM heap 512mb (framework 128 + task 384), managed 512mb,
    # direct 256mb (framework 128 + network 128), metaspace 256mb, overhead 192mb.
    plan = make_plan(
        recipe(
            "flink",
            "[/opt/flink/bin/flink, run, job.jar]",
            """\
resources:
  flink: {taskmanager.memory.process.size: 1728m, taskmanager.numberOfTaskSlots: 2}
""",
        )
    )
    assert term(plan, "jvm_heap").value == 512 * MiB
    assert term(plan, "flink_managed_memory").value == 512 * MiB
    assert term(plan, "jvm_direct_memory").value == 256 * MiB
    assert term(plan, "jvm_metaspace").value == 256 * MiB
    assert term(plan, "flink_jvm_overhead").value == 192 * MiB
    assert {t.name: t.count for t in plan.thread_terms}["flink_tasks"] == 8


def test_explicit_values_win_but_warn_when_too_small():
    plan = make_plan(
        recipe(command="[java, -Xmx8g, Main]", extra="enclave: {size: 4G, max_threads: 16}\n")
    )
    assert plan.enclave_size == 4 * GiB and plan.max_threads == 16
    assert any("enclave.size 4G is below the estimated" in w for w in plan.warnings)
    assert any("enclave.max_threads 16 is below" in w for w in plan.warnings)
    roomy = make_plan(recipe(extra="enclave: {size: 64G, max_threads: 4096}\n"))
    assert roomy.warnings == [w for w in roomy.warnings if "below" not in w]


def test_gramine_per_thread_cost_is_the_signers_layout():
    # Gramine 1.9 python/graminelibos/sgx_sign.py, get_memory_areas: per thread 2 SSA frames of
    # 4 pages, a TCS page, a TLS page, a 256K stack and a 64K signal stack = 90 pages.
    plan = make_plan(recipe(extra="enclave: {max_threads: 64}\n"))
    overhead = term(plan, "libos_overhead")
    assert overhead.value == 192 * MiB + 64 * 90 * 4096
    assert overhead.source == ("Gramine LibOS/PAL memory (192M) + 64 × 360K per-thread SGX areas")


def test_too_big_for_gramine():
    with pytest.raises(PlanError, match="more than Gramine's 1024G"):
        make_plan(recipe(command="[java, -Xmx900g, Main]"))


def test_plan_json_lists_each_term(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("""\
apiVersion: ppml-build/v1
kind: java
name: demo
base: {image: "r/x:1"}
app: {command: [java, -Xmx8g, Main]}
""")
    assert main(["plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["enclave_size"] == "16G"
    names = [t["name"] for t in data["memory_terms"]]
    assert names[0] == "jvm_heap" and "headroom" in names and "glibc_arenas" in names
    assert sum(t["bytes"] for t in data["memory_terms"]) == data["enclave_size_estimate_bytes"]
    assert data["max_threads"] >= data["max_threads_estimate"]
    assert main(["plan", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("enclave_size = 16G (next power of two ≥ ")
    assert "dominated by jvm_heap" in text


def test_spark_memory_without_unit_is_mib_like_spark():
    plan = make_plan(
        recipe(
            "spark", "[spark-submit, job.py]", "resources:\n  spark: {spark.driver.memory: 2048}\n"
        )
    )
    assert term(plan, "jvm_heap").value == 2 * GiB


def test_the_plan_pins_every_size_it_assumes_and_sizes_the_class_space():
    plan = make_plan(recipe(command="[java, -Xmx2g, Main]"))
    flags = plan.extra_env["JAVA_TOOL_OPTIONS"].split()
    # No JVM default matches the plan's assumptions (metaspace unlimited, direct = -Xmx), so
    # each assumed size becomes a flag, and the class space HotSpot reserves is a term.
    assert {
        "-XX:MaxMetaspaceSize=256m",
        "-XX:MaxDirectMemorySize=512m",
        "-XX:ReservedCodeCacheSize=240m",
        "-XX:CompressedClassSpaceSize=204m",
    } <= set(flags)
    assert term(plan, "jvm_class_space").value == 204 * MiB
    given = make_plan(
        recipe(
            command="[java, -Xmx2g, -XX:MaxMetaspaceSize=512m, "
            "-XX:CompressedClassSpaceSize=64m, Main]"
        )
    )
    assert term(given, "jvm_class_space").value == 64 * MiB
    flags = given.extra_env["JAVA_TOOL_OPTIONS"]
    assert "MaxMetaspaceSize" not in flags and "CompressedClassSpaceSize" not in flags


# --- cluster roles: one enclave per role, each sized for its own JVM --------------------------

CLUSTER_SPARK = """\
apiVersion: ppml-build/v1
kind: spark
name: pi-cluster
base: {image: "r/x:1"}
app:
  command: [/opt/spark/bin/spark-submit, --class, Pi, /app/pi.jar]
resources:
  spark: {spark.driver.memory: 2g, spark.executor.memory: 6g, spark.executor.cores: 3,
          spark.driver.cores: 1}
cluster: {roles: [driver, executor]}
"""

CLUSTER_FLINK = """\
apiVersion: ppml-build/v1
kind: flink
name: wc-cluster
base: {image: "r/x:1"}
app:
  command: [java, -cp, "/app/wc.jar:/opt/flink/lib/*", Main]
resources:
  flink: {taskmanager.memory.process.size: 4096m}
cluster: {roles: [jobmanager, taskmanager]}
"""


def test_each_spark_role_is_sized_for_its_own_jvm():
    from ppml_build.recipe import load_recipe_text

    recipe = load_recipe_text(CLUSTER_SPARK)
    driver, executor = make_plan(recipe, "driver"), make_plan(recipe, "executor")
    assert (driver.role, executor.role) == ("driver", "executor")
    assert driver.jvm.heap == 2 * GiB and "driver" in driver.jvm.heap_source
    assert executor.jvm.heap == 6 * GiB and "executor" in executor.jvm.heap_source
    assert (driver.jvm.cpus, executor.jvm.cpus) == (1, 3)
    assert driver.enclave_size < executor.enclave_size
    # The single-enclave plan is sized for the larger JVM, as before
    assert make_plan(recipe).jvm.heap == 6 * GiB
    assert format_plan(driver).startswith("role: driver (its own enclave)\n")


def test_the_flink_jobmanager_gets_flinks_jobmanager_memory_model():
    from ppml_build.recipe import load_recipe_text

    recipe = load_recipe_text(CLUSTER_FLINK)
    jobmanager, taskmanager = make_plan(recipe, "jobmanager"), make_plan(recipe, "taskmanager")
    # Flink 2.3's defaults: 1600m → 1g heap, 128m off-heap, 256m metaspace, 192m overhead
    assert jobmanager.jvm.heap == 1 * GiB and jobmanager.jvm.direct_memory == 128 * MiB
    assert "flink_managed_memory" not in {t.name for t in jobmanager.memory_terms}
    assert "flink_managed_memory" in {t.name for t in taskmanager.memory_terms}
    assert taskmanager.jvm.heap > jobmanager.jvm.heap


@pytest.mark.parametrize(
    "text, message",
    [
        (CLUSTER_FLINK.replace("jobmanager, taskmanager", "jobmanager, executor"),
         "cluster.roles[1]: 'executor' is not a flink role; use jobmanager or taskmanager"),
        (CLUSTER_SPARK.replace("driver, executor", "driver, driver"),
         "cluster.roles[1]: 'driver' is listed twice"),
        (CLUSTER_SPARK.replace("kind: spark", "kind: java"),
         "cluster: a java app has no cluster roles"),
    ],
)  # fmt: skip
def test_roles_that_do_not_fit_the_engine_are_refused_in_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_plan_shows_every_role_and_k8s_refuses_spark_replicas_before_any_work(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(CLUSTER_SPARK)
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "role: driver (its own enclave)" in out and "role: executor (its own enclave)" in out
    assert main(["plan", str(path), "--json"]) == 0
    roles = json.loads(capsys.readouterr().out)["roles"]
    assert set(roles) == {"driver", "executor"} and roles["executor"]["role"] == "executor"
    assert main(["k8s", str(path), "--image", "r/x@sha256:" + "a" * 64, "--replicas", "3"]) == 2
    err = capsys.readouterr().err
    assert "--replicas: a Spark driver starts spark.executor.instances executors" in err
    assert err.count("\n") == 1
    out_dir = tmp_path / "k8s"
    assert (
        main(["k8s", str(path), "--image", "r/x@sha256:" + "a" * 64, "--output-dir", str(out_dir)])
        == 0
    )
    assert {"driver-pod.yaml", "executor-pod-template.yaml"} <= {p.name for p in out_dir.iterdir()}
    capsys.readouterr()
    # a driver that is not started by spark-submit has no command to fix: one line, no output
    java_driver = tmp_path / "driver.yaml"
    java_driver.write_text(
        CLUSTER_SPARK.replace("[/opt/spark/bin/spark-submit, --class, Pi, /app/pi.jar]",
                              "[java, -cp, /app/pi.jar, Pi]")
    )  # fmt: skip
    assert main(["build", str(java_driver), "--key", str(tmp_path / "no-key.pem")]) == 2
    err = capsys.readouterr().err
    assert "cluster.roles: driver: app.command must be spark-submit" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "ppml-out").exists()
