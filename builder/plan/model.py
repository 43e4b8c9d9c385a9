"""The plan: what the enclave is sized for, each term with its reason, and its constants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..units import (
    GiB,
    MiB,
    Size,
    format_gramine_size,
    human,
)
from .launch import LaunchPlan

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
# Flink's shipped config.yaml: jobmanager.memory.process.size: 1600m
FLINK_JOBMANAGER_PROCESS_SIZE = Size(1600 * MiB, "1600m")


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
    # The cluster role this enclave is sized for (recipe.cluster.roles); None: the whole job.
    role: str | None = None

    @property
    def enclave_size_text(self) -> str:
        return format_gramine_size(self.enclave_size)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "role": self.role,
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
