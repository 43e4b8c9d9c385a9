"""The JVM settings a recipe asks for (heap, stacks, Spark and Flink memory) and the ones the
planner pins, read from its flags, ``--conf`` and environment."""

from __future__ import annotations

import re
import shlex

from ..errors import PlanError
from ..recipe import Recipe
from ..units import (
    JVM_SIZE_PATTERN,
    GiB,
    KiB,
    MiB,
    Size,
    human,
    parse_size,
    parse_spark_size,
)
from .model import SPARK_DEFAULT_MEMORY, JvmSettings

# ---------------------------------------------------------------------------------------------
# Reading the flags the app runs with

_XMX = re.compile(rf"^-Xmx({JVM_SIZE_PATTERN})$")
_XSS = re.compile(rf"^-Xss({JVM_SIZE_PATTERN})$")
_XX_SIZE = re.compile(
    r"^-XX:(MaxMetaspaceSize|MaxDirectMemorySize|ReservedCodeCacheSize|"
    rf"ThreadStackSize|CompressedClassSpaceSize)=({JVM_SIZE_PATTERN})$"
)
_XX_CPUS = re.compile(r"^-XX:ActiveProcessorCount=([0-9]+)$")
_LOCAL_MASTER = re.compile(r"^local\[([0-9]+|\*)(?:,[0-9]+)?\]$")


def _jvm_tokens(recipe: Recipe) -> list[tuple[str, str]]:
    """(token, where) for the command line and JAVA_TOOL_OPTIONS; later tokens win, as in java."""
    tokens = [
        (token, "JAVA_TOOL_OPTIONS")
        for token in shlex.split(recipe.app.env.get("JAVA_TOOL_OPTIONS", ""))
    ]
    tokens += [(token, "app.command") for token in recipe.app.command]
    return tokens


def spark_submit_flags(recipe: Recipe) -> dict[str, str]:
    """spark-submit options in app.command that size the JVM (--driver-memory, --conf k=v)."""
    argv = recipe.app.command
    flags: dict[str, str] = {}
    names = {
        "--driver-memory": "spark.driver.memory",
        "--executor-memory": "spark.executor.memory",
        "--executor-cores": "spark.executor.cores",
        "--master": "spark.master",
    }
    for index, token in enumerate(argv):
        value = argv[index + 1] if index + 1 < len(argv) else None
        if token in names and value is not None:
            flags[names[token]] = value
        elif token == "--conf" and value and "=" in value:
            key, _, conf_value = value.partition("=")
            flags[key] = conf_value
        elif token.startswith("--conf=") and "=" in token[7:]:
            key, _, conf_value = token[7:].partition("=")
            flags[key] = conf_value
    return flags


_SPARK_MEMORY_KEYS = (
    "spark.driver.memory",
    "spark.executor.memory",
    "spark.memory.offHeap.size",
    "spark.driver.memoryOverhead",
    "spark.executor.memoryOverhead",
)
_SPARK_COUNT_KEYS = ("spark.executor.cores", "spark.driver.cores")


def check_spark_flags(flags: dict[str, str]) -> None:
    """The sizes and counts of app.command's spark-submit flags are readable (Spark would
    refuse them at run time; the plan needs them now)."""
    for key in _SPARK_MEMORY_KEYS:
        if key in flags:
            try:
                readable = parse_spark_size(flags[key]) > 0
            except ValueError:
                readable = False
            if not readable:
                raise PlanError(
                    f"app.command: {key} = {flags[key]!r} (from --conf or its "
                    "spark-submit flag) is not a size Spark reads; write a whole "
                    "number above 0 with a unit, e.g. 1536m or 2g"
                )
    for key in _SPARK_COUNT_KEYS:
        if key in flags and not _is_count(flags[key]):
            raise PlanError(
                f"app.command: {key} = {flags[key]!r} is not a whole number from 1 to 1024"
            )


def _is_count(text: str, top: int = 1024) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= top


# HotSpot refuses smaller Java thread stacks ("The Java thread stack size specified is too
# small. Specify at least 136k", os_linux_x86.cpp's _java_thread_min_stack_allowed); -Xss0
# would mean "the OS default", a size the plan cannot know.
MIN_JAVA_THREAD_STACK = 136 * KiB


def _size_or_error(text: str, where: str, token: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as err:
        raise PlanError(f"{where}: {token}: {err}") from None
    if value == 0:
        raise PlanError(
            f"{where}: {token}: a size of 0 leaves it to the JVM's or the OS's "
            "default, which the enclave cannot be sized for; give the size"
        )
    return value


def _flink_memory(process_size: int) -> dict[str, int]:
    """Flink's TaskManager memory model (flink-conf defaults) for a given process size."""
    overhead = min(max(int(process_size * 0.1), 192 * MiB), 1 * GiB)
    metaspace = 256 * MiB
    total_flink = process_size - overhead - metaspace
    if total_flink <= 512 * MiB:
        raise PlanError(
            f"taskmanager.memory.process.size {human(process_size)} is too small for "
            "Flink's memory model; use at least 1728m"
        )
    network = min(max(int(total_flink * 0.1), 64 * MiB), 1 * GiB)
    managed = int(total_flink * 0.4)
    framework_heap = framework_offheap = 128 * MiB
    task_heap = total_flink - network - managed - framework_heap - framework_offheap
    return {
        "heap": task_heap + framework_heap,
        "direct": network + framework_offheap,
        "managed": managed,
        "metaspace": metaspace,
        "overhead": overhead,
        # The components taskmanager.sh passes as -D (BashJavaUtils); task off-heap is 0.
        "framework_heap": framework_heap,
        "task_heap": task_heap,
        "framework_off_heap": framework_offheap,
        "network": network,
    }


def _flink_jobmanager_memory(process_size: int) -> dict[str, int]:
    """Flink's JobManager memory model (Flink 2.3 defaults: jvm-overhead 0.1 of the process
    size within 192m..1g, jvm-metaspace 256m, off-heap 128m; the rest is heap, as
    BashJavaUtils computes for jobmanager.sh: 1600m gives a 1g heap)."""
    overhead = min(max(int(process_size * 0.1), 192 * MiB), 1 * GiB)
    metaspace, off_heap = 256 * MiB, 128 * MiB
    heap = process_size - overhead - metaspace - off_heap
    if heap < 128 * MiB:
        raise PlanError(
            f"jobmanager.memory.process.size {human(process_size)} is too small for Flink's "
            "memory model; use at least 1024m"
        )
    return {
        "heap": heap,
        "direct": off_heap,
        "managed": 0,
        "metaspace": metaspace,
        "overhead": overhead,
    }


def _jit_compiler_threads(cpus: int) -> int:
    """HotSpot's CICompilerCount for tiered compilation (integer logs, as in the JVM)."""
    log_n = max(cpus.bit_length() - 1, 0)
    log_log = max(log_n.bit_length() - 1, 0) if log_n else 0
    return max(log_n * log_log * 3 // 2, 2)


def _gc_threads(cpus: int) -> int:
    """G1: parallel workers + concurrent marking + refinement + service threads."""
    parallel = cpus if cpus <= 8 else 8 + (cpus - 8) * 5 // 8
    concurrent = max(1, (parallel + 2) // 4)
    return parallel + concurrent + parallel + 2


def _resolve_jvm(
    recipe: Recipe,
    warnings: list[str],
    flink_model: dict[str, int] | None,
    spark_flags: dict[str, str],
    role: str | None = None,
) -> JvmSettings:
    found: dict[str, tuple[int, str]] = {}
    cpus_flag: tuple[int, str] | None = None
    for token, where in _jvm_tokens(recipe):
        if match := _XMX.match(token):
            found["heap"] = (_size_or_error(match.group(1), where, token), f"{token} in {where}")
        elif match := _XSS.match(token):
            found["thread_stack"] = (
                _size_or_error(match.group(1), where, token),
                f"{token} in {where}",
            )
        elif match := _XX_SIZE.match(token):
            key = {
                "MaxMetaspaceSize": "metaspace",
                "MaxDirectMemorySize": "direct_memory",
                "ReservedCodeCacheSize": "code_cache",
                "ThreadStackSize": "thread_stack",
                "CompressedClassSpaceSize": "class_space",
            }[match.group(1)]
            value = _size_or_error(match.group(2), where, token)
            if match.group(1) == "ThreadStackSize" and match.group(2).isdigit():
                value *= KiB  # -XX:ThreadStackSize is in KiB
            found[key] = (value, f"{token} in {where}")
        elif match := _XX_CPUS.match(token):
            if not _is_count(match.group(1)):
                raise PlanError(f"{where}: {token}: the CPU count must be from 1 to 1024")
            cpus_flag = (int(match.group(1)), f"{token} in {where}")

    jvm_res = recipe.resources.jvm
    spark_res = recipe.resources.spark

    def pick(
        key: str, resource: Size | None, resource_name: str, default: int, default_source: str
    ) -> tuple[int, str]:
        if key in found:
            return found[key]
        if resource is not None:
            return resource.bytes, f"resources.jvm.{resource_name}"
        return default, default_source

    def spark_setting(key: str, resource: Size | None) -> int | None:
        """app.command's spark-submit flag, else the recipe's resources.spark value."""
        if spark_flags.get(key):
            return parse_spark_size(spark_flags[key])
        return None if resource is None else resource.bytes

    # Heap: flags > kind resources > resources.jvm.heap > kind default.
    if "heap" in found:
        heap, heap_source = found["heap"]
    elif recipe.kind == "spark":
        # One enclave for the whole job serves driver and executor pods, so it is sized for
        # the larger JVM; a cluster role's enclave for that role's JVM only.
        candidates = [
            (value, name)
            for value, name in (
                (
                    spark_setting("spark.driver.memory", spark_res.driver_memory),
                    "spark.driver.memory",
                ),
                (
                    spark_setting("spark.executor.memory", spark_res.executor_memory),
                    "spark.executor.memory",
                ),
            )
            if value is not None and role in (None, name.split(".")[1])
        ]
        if candidates:
            heap, name = max(candidates)
            heap_source = (
                f"{name} (the {role}'s JVM)"
                if role
                else f"{name} (the larger of driver and executor memory)"
            )
        elif jvm_res.heap:
            heap, heap_source = jvm_res.heap.bytes, "resources.jvm.heap"
        else:
            heap = SPARK_DEFAULT_MEMORY.bytes
            heap_source = f"Spark's default spark.driver.memory ({SPARK_DEFAULT_MEMORY})"
    elif recipe.kind == "flink" and flink_model is not None:
        heap, heap_source = (
            (flink_model["heap"], "Flink's JobManager memory model: heap")
            if role == "jobmanager"
            else (flink_model["heap"], "Flink memory model: task heap + framework heap")
        )
    elif jvm_res.heap:
        heap, heap_source = jvm_res.heap.bytes, "resources.jvm.heap"
    else:
        heap, heap_source = 1 * GiB, "assumed 1G: set -Xmx or resources.jvm.heap"
        warnings.append(
            "no JVM heap size given: assumed 1G; the JVM's own default is 1/4 of the "
            "machine's memory, which may not fit the enclave. Set -Xmx."
        )

    if flink_model is not None:
        metaspace_default = (flink_model["metaspace"], "Flink's jvm-metaspace default (256m)")
        direct_default = (
            flink_model["direct"],
            "Flink's JobManager off-heap (128m)"
            if role == "jobmanager"
            else "Flink memory model: network + framework off-heap",
        )
    else:
        metaspace_default = (
            256 * MiB,
            "256M, pinned with -XX:MaxMetaspaceSize (the JVM's default is unlimited)",
        )
        direct_value = max(256 * MiB, heap // 4)
        if recipe.kind == "spark" and spark_res.offheap_size:
            direct_value += spark_res.offheap_size.bytes
        direct_default = (
            direct_value,
            "max(256M, heap/4) (+ spark.memory.offHeap.size), "
            "pinned with -XX:MaxDirectMemorySize (the JVM's default is -Xmx)",
        )
    metaspace = pick("metaspace", jvm_res.metaspace, "metaspace", *metaspace_default)
    direct = pick("direct_memory", jvm_res.direct_memory, "direct_memory", *direct_default)
    code_cache = pick(
        "code_cache",
        jvm_res.code_cache,
        "code_cache",
        240 * MiB,
        "HotSpot's default ReservedCodeCacheSize (240M), pinned",
    )
    stack = pick(
        "thread_stack", jvm_res.thread_stack, "thread_stack", 1 * MiB, "HotSpot default -Xss (1M)"
    )
    if stack[0] < MIN_JAVA_THREAD_STACK:
        raise PlanError(
            f"{stack[1]}: a Java thread stack of {human(stack[0])} is below "
            "HotSpot's minimum of 136K; write e.g. -Xss1m"
        )

    if cpus_flag is not None:
        cpus, cpus_source, pinned = cpus_flag[0], cpus_flag[1], True
    elif role == "executor" and (
        spark_flags.get("spark.executor.cores") or spark_res.executor_cores
    ):
        cores = spark_flags.get("spark.executor.cores") or spark_res.executor_cores
        cpus, cpus_source, pinned = int(cores), "spark.executor.cores (the executor's JVM)", False
    elif role == "driver" and (spark_flags.get("spark.driver.cores") or spark_res.driver_cores):
        cores = spark_flags.get("spark.driver.cores") or spark_res.driver_cores
        cpus, cpus_source, pinned = int(cores), "spark.driver.cores (the driver's JVM)", False
    elif recipe.resources.cpus is not None:
        cpus, cpus_source, pinned = recipe.resources.cpus, "resources.cpus", False
    else:
        master = spark_flags.get("spark.master", "")
        local = _LOCAL_MASTER.match(master)
        executor_cores = spark_flags.get("spark.executor.cores") or spark_res.executor_cores
        if local and local.group(1) != "*":
            if not _is_count(local.group(1)):
                raise PlanError(
                    f"app.command: --master {master}: the thread count must be from 1 to 1024"
                )
            cpus, cpus_source = int(local.group(1)), f"--master {master}"
        elif executor_cores:
            cpus, cpus_source = int(executor_cores), "spark.executor.cores"
        elif recipe.kind == "flink" and recipe.resources.flink.task_slots:
            cpus = recipe.resources.flink.task_slots
            cpus_source = "taskmanager.numberOfTaskSlots"
        else:
            cpus, cpus_source = 4, "assumed 4 (set resources.cpus)"
        pinned = False
    if "class_space" in found:
        class_space = found["class_space"]
    else:
        # HotSpot reserves the compressed class space apart from the heap: 1G by default,
        # capped at 80% of MaxMetaspaceSize when that is set (JDK 17
        # src/hotspot/share/memory/metaspace.cpp, Metaspace::ergo_initialize). The plan sets
        # MaxMetaspaceSize, so the cap applies; it is pinned with its own flag as well.
        capped = min(1 * GiB, (metaspace[0] * 8 // 10) // MiB * MiB)
        class_space = (
            capped,
            "80% of MaxMetaspaceSize, HotSpot's cap on CompressedClassSpaceSize (default 1G)",
        )
    return JvmSettings(
        heap,
        heap_source,
        metaspace[0],
        metaspace[1],
        code_cache[0],
        code_cache[1],
        direct[0],
        direct[1],
        stack[0],
        stack[1],
        cpus,
        cpus_source,
        pinned,
        tuple(sorted(found)),
        class_space[0],
        class_space[1],
    )
