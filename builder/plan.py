"""Enclave sizing: derive ``sgx.enclave_size`` and ``sgx.max_threads`` from the workload.

Every number is a named term with where it came from, so a user can see why the plan says 32G.
The JVM flags the app really runs with (``app.command`` and ``JAVA_TOOL_OPTIONS``) win over the
recipe's ``resources``, which win over per-kind defaults.

Under Gramine every mmap'ed range (Java heap reservation, thread stacks, glibc malloc arenas)
takes enclave address space, so those reservations are what we size for, not resident memory.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import asdict, dataclass, field

from .errors import PlanError
from .gramine.launch import LaunchPlan, describe_launch, plan_launch
from .gramine.overrides import (
    INSECURE_FLAG,
    flatten_overrides,
    guarded_overrides,
    guarded_recipe_fields,
    toml_literal,
)
from .recipe import Recipe
from .sign.constants import GramineSgxConstants, gramine_constants
from .units import (
    JVM_SIZE_PATTERN,
    GiB,
    KiB,
    MiB,
    Size,
    format_gramine_size,
    format_jvm_size,
    human,
    next_power_of_two,
    parse_size,
    parse_spark_size,
    round_up,
)
from .versions import DEFAULT_GRAMINE_VERSION

# Gramine's own helper threads (IPC, async events, TLS handshake) — why its docs say "at least 4".
GRAMINE_HELPER_THREADS = 3
# LibOS + PAL internal memory (its own heap, page tables of the LibOS VMA tracker, loaded ELFs).
LIBOS_BASE_OVERHEAD = 192 * MiB
GLIBC_ARENA_SIZE = 64 * MiB  # HEAP_MAX_SIZE on 64-bit glibc
DEFAULT_MALLOC_ARENA_MAX = 4
HEADROOM_FRACTION = 0.25
THREAD_MARGIN = 1.25
MIN_ENCLAVE_SIZE = 256 * MiB
# What Spark and Flink use when nothing sets them (Spark's spark.driver.memory and
# spark.executor.memory; Flink's taskmanager.memory.process.size), as they spell them.
SPARK_DEFAULT_MEMORY = Size(1 * GiB, "1g")
FLINK_DEFAULT_PROCESS_SIZE = Size(1728 * MiB, "1728m")


@dataclass
class Term:
    name: str
    value: int
    source: str

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "bytes": self.value,
            "human": human(self.value),
            "source": self.source,
        }


@dataclass
class ThreadTerm:
    name: str
    count: int
    source: str


@dataclass
class JvmSettings:
    """What the JVM will run with, after reading flags, resources and defaults."""

    heap: int
    heap_source: str
    metaspace: int
    metaspace_source: str
    code_cache: int
    code_cache_source: str
    direct_memory: int
    direct_memory_source: str
    thread_stack: int
    thread_stack_source: str
    cpus: int
    cpus_source: str
    cpus_pinned_by_flag: bool
    # Sizes the app's own JVM flags set (heap, metaspace, ...): the rest the plan pins itself.
    set_by_flags: tuple[str, ...] = ()
    class_space: int = 0
    class_space_source: str = ""


@dataclass
class Plan:
    kind: str
    enclave_size: int
    enclave_size_estimate: int
    memory_terms: list[Term]
    dominant_term: str
    max_threads: int
    max_threads_estimate: int
    thread_terms: list[ThreadTerm]
    jvm: JvmSettings | None
    malloc_arena_max: int
    extra_env: dict[str, str] = field(default_factory=dict)  # env the manifest must add
    warnings: list[str] = field(default_factory=list)
    enclave_size_explicit: bool = False
    max_threads_explicit: bool = False
    # The recipe's manifest: keys, dotted → value (merged into the Gramine manifest as given).
    recipe_manifest: dict = field(default_factory=dict)
    recipe_manifest_guarded: dict[str, str] = field(default_factory=dict)  # key → CLI flag
    # How the enclave starts the app (launch.py): decided once, read by the build and render.
    launch: LaunchPlan = field(default_factory=lambda: LaunchPlan("exec", ()))

    @property
    def enclave_size_text(self) -> str:
        return format_gramine_size(self.enclave_size)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "enclave_size": self.enclave_size_text,
            "enclave_size_bytes": self.enclave_size,
            "enclave_size_estimate_bytes": self.enclave_size_estimate,
            "enclave_size_explicit": self.enclave_size_explicit,
            "dominant_term": self.dominant_term,
            "memory_terms": [term.as_dict() for term in self.memory_terms],
            "max_threads": self.max_threads,
            "max_threads_estimate": self.max_threads_estimate,
            "max_threads_explicit": self.max_threads_explicit,
            "thread_terms": [asdict(term) for term in self.thread_terms],
            "jvm": asdict(self.jvm) if self.jvm else None,
            "malloc_arena_max": self.malloc_arena_max,
            "extra_env": self.extra_env,
            "warnings": self.warnings,
            "recipe_manifest": self.recipe_manifest,
            "recipe_manifest_guarded": self.recipe_manifest_guarded,
            "launch": {
                "form": self.launch.form,
                "argv": list(self.launch.argv),
                "spark_launcher_args": list(self.launch.spark_launcher_args),
                "env": self.launch.env,
                "java_options": list(self.launch.java_options),
                "python_first": self.launch.python_first,
                "single_process": self.launch.single_process,
            },
        }


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
        # One image serves driver and executor pods, so size for the larger JVM.
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
            if value is not None
        ]
        if candidates:
            heap, name = max(candidates)
            heap_source = f"{name} (the larger of driver and executor memory)"
        elif jvm_res.heap:
            heap, heap_source = jvm_res.heap.bytes, "resources.jvm.heap"
        else:
            heap = SPARK_DEFAULT_MEMORY.bytes
            heap_source = f"Spark's default spark.driver.memory ({SPARK_DEFAULT_MEMORY})"
    elif recipe.kind == "flink" and flink_model is not None:
        heap, heap_source = flink_model["heap"], "Flink memory model: task heap + framework heap"
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
        direct_default = (flink_model["direct"], "Flink memory model: network + framework off-heap")
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


# ---------------------------------------------------------------------------------------------


def gramine_layout(recipe: Recipe) -> GramineSgxConstants:
    """The Gramine layout whose limits and per-thread cost the plan sizes with: the recipe's
    release's, or the default release's for Occlum (occlum/sizing.py maps the plan onto
    Occlum's own model)."""
    gramine = recipe.libos.type == "gramine"
    return gramine_constants(recipe.libos.version if gramine else DEFAULT_GRAMINE_VERSION)


def _thread_terms(
    recipe: Recipe, jvm: JvmSettings | None, spark_flags: dict[str, str]
) -> list[ThreadTerm]:
    terms = [
        ThreadTerm(
            "gramine_helpers",
            GRAMINE_HELPER_THREADS,
            "Gramine IPC, async-event and TLS-handshake helper threads",
        )
    ]
    if jvm is not None:
        terms += [
            ThreadTerm(
                "jvm_internal",
                12,
                "VM thread, reference handler, finalizer, signal "
                "dispatcher, service, cleaner, notification, attach listener…",
            ),
            ThreadTerm(
                "gc", _gc_threads(jvm.cpus), f"G1 workers, marking, refinement for {jvm.cpus} CPUs"
            ),
            ThreadTerm(
                "jit",
                _jit_compiler_threads(jvm.cpus),
                f"C1/C2 compiler threads for {jvm.cpus} CPUs",
            ),
        ]
    if recipe.kind == "spark":
        cores = jvm.cpus if jvm else 4
        terms += [
            ThreadTerm("spark_tasks", cores, "one task thread per core"),
            ThreadTerm(
                "spark_rpc_netty",
                2 * min(cores, 8) + 8,
                "dispatcher event loops, netty RPC/shuffle client and server threads",
            ),
            ThreadTerm(
                "spark_services",
                40,
                "listener bus, block manager, heartbeater, "
                "context cleaner, broadcast, Jetty UI pool, scheduler timers",
            ),
        ]
    elif recipe.kind == "flink":
        slots = recipe.resources.flink.task_slots or 1
        cpus = jvm.cpus if jvm else 4
        terms += [
            ThreadTerm(
                "flink_tasks",
                4 * slots,
                "per slot: task, mailbox, output flusher, source/timer threads",
            ),
            ThreadTerm("flink_rpc", 2 * cpus + 16, f"Pekko dispatchers and netty for {cpus} CPUs"),
            ThreadTerm(
                "flink_services",
                60,
                "mini-cluster: dispatcher, resource manager, job "
                "master, blob server, heartbeat, metrics, REST endpoint pools",
            ),
        ]
    elif recipe.kind == "python":
        terms.append(ThreadTerm("python", 4, "interpreter main thread and a few helpers"))
    if recipe.resources.app_threads:
        terms.append(
            ThreadTerm("app_threads", recipe.resources.app_threads, "resources.app_threads")
        )
    return terms


def jvm_pinning_flags(jvm: JvmSettings) -> list[str]:
    """The flags that make the JVM keep to what the plan sized for.

    Without them the plan's numbers are hopes: metaspace is unlimited by default, direct
    memory defaults to -Xmx, and the compressed class space reserves 1G; under Gramine every
    reservation takes enclave address space. GC and JIT threads follow the CPUs the JVM sees,
    so those are pinned too (a 128-core host would otherwise start 100+ GC threads and run
    out of TCS slots). Sizes the app's own flags set are left alone.
    """
    flags = []
    if not jvm.cpus_pinned_by_flag:
        flags.append(f"-XX:ActiveProcessorCount={jvm.cpus}")
    for key, flag, value in (
        ("metaspace", "MaxMetaspaceSize", jvm.metaspace),
        ("class_space", "CompressedClassSpaceSize", jvm.class_space),
        ("direct_memory", "MaxDirectMemorySize", jvm.direct_memory),
        ("code_cache", "ReservedCodeCacheSize", jvm.code_cache),
    ):
        if key not in jvm.set_by_flags:
            flags.append(f"-XX:{flag}={format_jvm_size(value)}")
    return flags


def make_plan(recipe: Recipe) -> Plan:
    """Size the enclave for ``recipe``. Pure: no files, no Docker."""
    warnings: list[str] = []
    launch = plan_launch(recipe)
    is_jvm = recipe.kind in ("spark", "flink", "java")
    spark_flags = spark_submit_flags(recipe) if recipe.kind == "spark" else {}
    check_spark_flags(spark_flags)

    gramine = gramine_layout(recipe)
    flink_model = None
    if recipe.kind == "flink":
        process = recipe.resources.flink.process_size or FLINK_DEFAULT_PROCESS_SIZE
        flink_model = _flink_memory(process.bytes)

    jvm = _resolve_jvm(recipe, warnings, flink_model, spark_flags) if is_jvm else None

    extra_env: dict[str, str] = {}
    arena_text = recipe.app.env.get("MALLOC_ARENA_MAX")
    if arena_text is not None:
        if not _is_count(arena_text):  # glibc's tunable starts at 1 (malloc/arena.c)
            raise PlanError(
                f"app.env.MALLOC_ARENA_MAX: {arena_text!r} must be a whole number from 1 to 1024"
            )
        arenas = int(arena_text)
        arena_source = "app.env.MALLOC_ARENA_MAX"
    else:
        arenas = DEFAULT_MALLOC_ARENA_MAX
        extra_env["MALLOC_ARENA_MAX"] = str(arenas)
        arena_source = (
            "MALLOC_ARENA_MAX=4 set by ppml-build (glibc's default of 8 per CPU reserves 64M each)"
        )

    # Thread count first: stacks scale with it.
    thread_terms = _thread_terms(recipe, jvm, spark_flags)
    thread_estimate = sum(term.count for term in thread_terms)
    threads_needed = min(
        gramine.max_threads_limit, round_up(math.ceil(thread_estimate * THREAD_MARGIN), 8)
    )
    explicit_threads = recipe.enclave.max_threads != "auto"
    max_threads = recipe.enclave.max_threads if explicit_threads else threads_needed
    if explicit_threads and max_threads < thread_estimate:
        warnings.append(
            f"enclave.max_threads {max_threads} is below the estimated "
            f"{thread_estimate} threads; expect 'no available TCS pages' errors"
        )

    if jvm is not None:
        pinned = jvm_pinning_flags(jvm)
        if pinned:
            extra_env["JAVA_TOOL_OPTIONS"] = " ".join(
                filter(None, [recipe.app.env.get("JAVA_TOOL_OPTIONS", ""), *pinned])
            )

    terms: list[Term] = []
    if jvm is not None:
        terms += [
            Term("jvm_heap", jvm.heap, jvm.heap_source),
            Term("jvm_metaspace", jvm.metaspace, jvm.metaspace_source),
            Term("jvm_class_space", jvm.class_space, jvm.class_space_source),
            Term("jvm_code_cache", jvm.code_cache, jvm.code_cache_source),
            Term("jvm_direct_memory", jvm.direct_memory, jvm.direct_memory_source),
            Term(
                "jvm_native",
                jvm.heap // 10 + 64 * MiB,
                "GC structures (~10% of heap) + class data sharing, symbol tables",
            ),
        ]
        if flink_model is not None:
            terms += [
                Term(
                    "flink_managed_memory",
                    flink_model["managed"],
                    "Flink managed memory (0.4 of total Flink memory, off-heap)",
                ),
                Term(
                    "flink_jvm_overhead",
                    flink_model["overhead"],
                    "Flink jvm-overhead (0.1 of process size, 192m..1g)",
                ),
            ]
        stack = jvm.thread_stack
        stack_source = f"{max_threads} threads × {human(stack)} ({jvm.thread_stack_source})"
    else:
        stack = 8 * MiB
        stack_source = f"{max_threads} threads × 8M (glibc default stack)"
        if recipe.kind == "python":
            terms.append(
                Term(
                    "python_heap",
                    512 * MiB,
                    "assumed 512M for the interpreter and the app; set enclave.size to override",
                )
            )
    terms += [
        Term("thread_stacks", max_threads * stack, stack_source),
        Term("glibc_arenas", arenas * GLIBC_ARENA_SIZE, f"{arenas} × 64M ({arena_source})"),
        Term(
            "libos_overhead",
            LIBOS_BASE_OVERHEAD + max_threads * gramine.bytes_per_thread,
            f"Gramine LibOS/PAL memory ({human(LIBOS_BASE_OVERHEAD)}) + {max_threads} × "
            f"{human(gramine.bytes_per_thread)} per-thread SGX areas",
        ),
    ]
    subtotal = sum(term.value for term in terms)
    terms.append(
        Term(
            "headroom",
            int(subtotal * HEADROOM_FRACTION),
            "25% for fragmentation, mmap'ed files and the LibOS page cache",
        )
    )
    estimate = sum(term.value for term in terms)
    size_needed = max(MIN_ENCLAVE_SIZE, next_power_of_two(estimate))
    if size_needed > gramine.max_enclave_size:
        raise PlanError(
            f"the app needs about {human(estimate)} of enclave memory, more than "
            f"Gramine's {format_gramine_size(gramine.max_enclave_size)}; lower the "
            "heap or executor memory"
        )

    explicit_size = recipe.enclave.size_bytes
    enclave_size = explicit_size if explicit_size is not None else size_needed
    if explicit_size is not None and explicit_size < estimate:
        warnings.append(
            f"enclave.size {recipe.enclave.size} is below the estimated "
            f"{human(estimate)}; the plan would choose "
            f"{format_gramine_size(size_needed)}"
        )
    if recipe.libos.type == "gramine" and recipe.enclave.edmm and explicit_size is None:
        warnings.append(
            "EDMM is on: the free heap is not added at start, but sgx.enclave_size "
            "still bounds the address space"
        )
    if recipe.app.insecure_host_argv:
        warnings.append(
            "INSECURE: app.insecure_host_argv lets the host choose the command line "
            "(loader.insecure__use_cmdline_argv); the measured argv is not enforced"
        )
    if recipe.enclave.debug:
        warnings.append(
            "enclave.debug is true: a debug enclave's memory can be read by the host; "
            "never use it in production"
        )

    dominant = max((term for term in terms if term.name != "headroom"), key=lambda t: t.value)
    _check_passthrough(recipe, extra_env, launch)
    for item in guarded_recipe_fields(recipe.files.allowed, recipe.app.passthrough_env):
        warnings.append(
            f"{item.key}: {toml_literal(item.value)} needs {item.flag} to build: {item.reason}"
        )
    return Plan(
        kind=recipe.kind,
        enclave_size=enclave_size,
        enclave_size_estimate=estimate,
        memory_terms=terms,
        dominant_term=dominant.name,
        max_threads=max_threads,
        max_threads_estimate=thread_estimate,
        thread_terms=thread_terms,
        jvm=jvm,
        malloc_arena_max=arenas,
        extra_env=extra_env,
        warnings=warnings,
        enclave_size_explicit=explicit_size is not None,
        max_threads_explicit=explicit_threads,
        launch=launch,
        recipe_manifest=flatten_overrides(recipe.manifest),
        recipe_manifest_guarded={
            item.key: item.flag for item in guarded_overrides(recipe.manifest, recipe.kind)
        },
    )


def _check_passthrough(recipe: Recipe, extra_env: dict[str, str], launch) -> None:
    """A variable the plan itself sets cannot also come from the host: the host's value would
    replace what the enclave was sized and launched with."""
    planned = set(extra_env) | set(launch.env)
    if launch.java_options or recipe.kind in ("spark", "flink", "java"):
        planned.add("JAVA_TOOL_OPTIONS")
    for index, name in enumerate(recipe.app.passthrough_env):
        if name in planned:
            raise PlanError(
                f"app.passthrough_env[{index}]: {name} is set by ppml-build "
                f"(see `ppml-build plan`); a host value would replace it. Remove it, "
                f"or set it in app.env"
            )


def format_plan(plan: Plan) -> str:
    """The human-readable derivation printed by ``ppml-build plan``."""
    lines = [
        f"enclave_size = {plan.enclave_size_text}"
        + (
            " (from the recipe)"
            if plan.enclave_size_explicit
            else f" (next power of two ≥ {human(plan.enclave_size_estimate)})"
        ),
        f"  dominated by {plan.dominant_term}",
    ]
    width = max(len(term.name) for term in plan.memory_terms)
    for term in plan.memory_terms:
        lines.append(f"  {term.name:<{width}}  {human(term.value):>7}  {term.source}")
    lines.append(
        f"max_threads = {plan.max_threads}"
        + (
            " (from the recipe)"
            if plan.max_threads_explicit
            else f" (estimate {plan.max_threads_estimate} × {THREAD_MARGIN}, rounded up to 8)"
        )
    )
    width = max(len(term.name) for term in plan.thread_terms)
    for thread in plan.thread_terms:
        lines.append(f"  {thread.name:<{width}}  {thread.count:>7}  {thread.source}")
    for name, value in plan.extra_env.items():
        lines.append(f"env {name}={value} (added by ppml-build)")
    lines += describe_launch(plan.launch)
    for key, value in plan.recipe_manifest.items():
        flag = plan.recipe_manifest_guarded.get(key)
        note = f" ({'INSECURE, ' if flag == INSECURE_FLAG else ''}needs {flag})" if flag else ""
        lines.append(f"manifest key from the recipe: {key} = {toml_literal(value)}{note}")
    for warning in plan.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
