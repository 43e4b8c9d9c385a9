"""``sgx.enclave_size`` and ``sgx.max_threads`` from the workload, and the plan printed."""

from __future__ import annotations

import math

from ..errors import PlanError
from ..gramine.overrides import (
    INSECURE_FLAG,
    flatten_overrides,
    guarded_overrides,
    guarded_recipe_fields,
    toml_literal,
)
from ..recipe import Recipe
from ..sign.constants import GramineSgxConstants, gramine_constants
from ..units import (
    MiB,
    format_gramine_size,
    format_jvm_size,
    human,
    next_power_of_two,
    round_up,
)
from ..versions import DEFAULT_GRAMINE_VERSION
from .jvm import (
    _flink_jobmanager_memory,
    _flink_memory,
    _gc_threads,
    _is_count,
    _jit_compiler_threads,
    _resolve_jvm,
    check_spark_flags,
    spark_submit_flags,
)
from .launch import describe_launch, plan_launch
from .model import (
    DEFAULT_MALLOC_ARENA_MAX,
    FLINK_DEFAULT_PROCESS_SIZE,
    FLINK_JOBMANAGER_PROCESS_SIZE,
    GLIBC_ARENA_SIZE,
    GRAMINE_HELPER_THREADS,
    HEADROOM_FRACTION,
    LIBOS_BASE_OVERHEAD,
    MIN_ENCLAVE_SIZE,
    THREAD_MARGIN,
    JvmSettings,
    Plan,
    Term,
    ThreadTerm,
)
from .roles import role_launch_plan

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


# Every JVM under Occlum 0.31 (the flags Occlum's own demos/java/run_java_on_occlum.sh and
# demos/netty_ut pass to every `occlum run java`, at v0.31.0):
OCCLUM_JVM_OPTIONS = (
    # With compressed oops HotSpot asks mmap for its heap at fixed low addresses, which
    # Occlum's pre-reserved user space cannot give: each attempt fails slowly (occlum/occlum
    # #986: hello world with -Xmx512m took over 80 s; the flag came with commit 2c8c999d).
    "-XX:-UseCompressedOops",
    # Occlum's uname reports sysname "Occlum" (src/libos/src/misc/uname.rs), and the JDK takes
    # os.name from it: Hadoop's Shell, Netty and the JDK's own code would miss their Linux paths.
    "-Dos.name=Linux",
)


def _occlum_jvm_options(recipe: Recipe) -> list[str]:
    """OCCLUM_JVM_OPTIONS less what the app's own JAVA_TOOL_OPTIONS already decides."""

    def setting(flag: str) -> str:  # -XX:+X and -XX:-X, -Dname=a and -Dname=b: one setting
        return flag.split("=", 1)[0].replace("-XX:+", "-XX:-")

    decided = {setting(flag) for flag in recipe.app.env.get("JAVA_TOOL_OPTIONS", "").split()}
    return [flag for flag in OCCLUM_JVM_OPTIONS if setting(flag) not in decided]


def make_plan(recipe: Recipe, role: str | None = None) -> Plan:
    """Size the enclave for ``recipe`` or, with ``role``, for that cluster role's enclave
    (recipe.cluster.roles): its own JVM's memory and cores. Pure: no files, no Docker."""
    warnings: list[str] = []
    launch = plan_launch(recipe)
    if role is not None:
        launch = role_launch_plan(recipe, role, launch)
    is_jvm = recipe.kind in ("spark", "flink", "java")
    spark_flags = spark_submit_flags(recipe) if recipe.kind == "spark" else {}
    check_spark_flags(spark_flags)

    gramine = gramine_layout(recipe)
    flink_model = None
    if recipe.kind == "flink" and role == "jobmanager":
        process = recipe.resources.flink.jobmanager_process_size or FLINK_JOBMANAGER_PROCESS_SIZE
        flink_model = _flink_jobmanager_memory(process.bytes)
    elif recipe.kind == "flink":
        process = recipe.resources.flink.process_size or FLINK_DEFAULT_PROCESS_SIZE
        flink_model = _flink_memory(process.bytes)

    jvm = _resolve_jvm(recipe, warnings, flink_model, spark_flags, role) if is_jvm else None

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
        if recipe.libos.type == "occlum":
            pinned += _occlum_jvm_options(recipe)
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
        if flink_model is not None and flink_model["managed"]:
            terms += [
                Term(
                    "flink_managed_memory",
                    flink_model["managed"],
                    "Flink managed memory (0.4 of total Flink memory, off-heap)",
                ),
            ]
        if flink_model is not None:
            terms.append(
                Term(
                    "flink_jvm_overhead",
                    flink_model["overhead"],
                    "Flink jvm-overhead (0.1 of process size, 192m..1g)",
                )
            )
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
        role=role,
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
    lines = [f"role: {plan.role} (its own enclave)"] if plan.role else []
    lines += [
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
