"""Occlum enclave sizing: the plan's numbers mapped onto Occlum 0.31's memory model.

Gramine has one number (``sgx.enclave_size``) for everything; Occlum splits the enclave into a
user space, a LibOS kernel heap and per-TCS areas (see :func:`occlum_sizing`). The result is in
bytes; ``Occlum.json`` spells it in Occlum's syntax (``units.format_occlum_size``) when written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RecipeError
from ..plan import HEADROOM_FRACTION, Plan, Term
from ..recipe import Recipe
from ..units import KiB, MiB, format_occlum_size, human, next_power_of_two, round_up
from ..versions import occlum_version

PAGE = 4 * KiB

# User space and kernel heap are rounded up to this: readable sizes, a little slack, and
# always page-aligned, which sgx_sign requires.
SIZE_GRANULE = 64 * MiB
# The LibOS kernel heap holds Occlum's own state: VMAs, file tables, SEFS caches and per-thread
# kernel structures. Occlum's Java/Python demos use 64-256MB; BigDL's Spark images 1GB for
# 512 threads. Base + per-thread slope reproduces both ends.
KERNEL_HEAP_BASE = 128 * MiB
KERNEL_HEAP_PER_THREAD = 1 * MiB
# Occlum's template value; the LibOS kernel runs on this stack per TCS (must be page-aligned).
KERNEL_STACK_SIZE = 1 * MiB
# Per-TCS SDK areas besides the kernel stack (Intel SDK sdk/sign_tool/SignTool/
# manage_metadata.cpp, CMetadata::build_layout_table: guard | stack | guard | TCS | SSA | guard
# | TD): three 64K guards, TCS page, two 1-page SSA frames (AMX off), two TD/TLS pages.
TCS_AREA = 3 * 64 * KiB + 5 * PAGE
# Estimated loaded size of libocclum-libos.so (code, data, .bss): only used to carve the user
# space out of an explicit enclave.size and to estimate the final enclave size.
LIBOS_IMAGE_ALLOWANCE = 64 * MiB
# Every process gets a brk heap and a main-thread stack from the user space at spawn.
PROCESS_HEAP_SIZE = 64 * MiB  # glibc's main arena; it falls back to mmap when this is full
PROCESS_STACK_SIZE = 8 * MiB  # Linux's default `ulimit -s`: deep Python recursion needs it
# Obsolete since Occlum's VM rewrite (mmap is no longer bounded by it) but still a required key;
# Occlum's own template value, with which BigDL runs multi-GB JVM heaps.
PROCESS_MMAP_SIZE = 100 * MiB
MIN_USER_SPACE = 128 * MiB
# EDMM: memory committed at load (EADDed page by page: more means a slower start); the rest up
# to the max sizes is committed on demand.
EDMM_USER_SPACE_INIT = 256 * MiB
EDMM_KERNEL_HEAP_INIT = 64 * MiB

# Plan terms that describe Gramine's LibOS, not the app: Occlum's kernel lives outside the user
# space (kernel heap, per-TCS areas), and headroom is recomputed on the Occlum subtotal.
GRAMINE_ONLY_TERMS = frozenset({"libos_overhead", "headroom"})


@dataclass(frozen=True)
class OcclumSizing:
    """resource_limits/process values in bytes, and how the user space was derived."""

    user_space_size: int  # non-EDMM: the static user space; EDMM: committed at load
    user_space_max_size: int | None  # EDMM only: the user space the app may grow to
    kernel_space_heap_size: int
    kernel_space_heap_max_size: int | None  # EDMM only
    kernel_space_stack_size: int
    max_num_of_threads: int
    default_stack_size: int
    default_heap_size: int
    default_mmap_size: int
    edmm: bool
    user_space_terms: list[Term]
    user_space_needed: int  # what the app needs (before an explicit enclave.size cap)
    enclave_size_estimate: int  # what sgx_sign will likely lay out (a power of two)
    warnings: list[str] = field(default_factory=list)

    def resource_limits(self) -> dict[str, Any]:
        limits: dict[str, Any] = {
            "kernel_space_heap_size": format_occlum_size(self.kernel_space_heap_size)
        }
        if self.kernel_space_heap_max_size is not None:
            limits["kernel_space_heap_max_size"] = format_occlum_size(
                self.kernel_space_heap_max_size
            )
        limits["kernel_space_stack_size"] = format_occlum_size(self.kernel_space_stack_size)
        limits["user_space_size"] = format_occlum_size(self.user_space_size)
        if self.user_space_max_size is not None:
            limits["user_space_max_size"] = format_occlum_size(self.user_space_max_size)
        limits["max_num_of_threads"] = self.max_num_of_threads
        return limits

    def process(self) -> dict[str, str]:
        return {
            "default_stack_size": format_occlum_size(self.default_stack_size),
            "default_heap_size": format_occlum_size(self.default_heap_size),
            "default_mmap_size": format_occlum_size(self.default_mmap_size),
        }


def _process_count(recipe: Recipe, plan: Plan) -> tuple[int, str]:
    """Processes that each take a brk heap and a main stack from the user space."""
    count, parts = 0, []
    if recipe.kind in ("java", "spark", "flink"):
        count, parts = 1, ["1 JVM"]
    if recipe.uses_python:
        # The Python driver, plus one worker per core the JVM runs tasks on (PySpark workers,
        # PyFlink UDF runners).
        workers = plan.jvm.cpus if plan.jvm is not None else 0
        count += 1 + workers
        parts.append(
            f"1 Python driver + {workers} Python workers" if workers else "1 Python interpreter"
        )
    return max(count, 1), " + ".join(parts) or "1 process"


def occlum_sizing(recipe: Recipe, plan: Plan) -> OcclumSizing:
    """Map the plan onto Occlum's memory model.

    Gramine has one number (enclave_size) for everything; Occlum splits the enclave into
    * the *user space* (SDK "reserved memory"): every mmap, brk heap and stack of the app's
      processes — so it gets the plan's app terms (JVM heap, metaspace, code cache, direct
      memory, native, thread stacks, glibc arenas), plus each process's brk heap and main
      stack, plus the plan's 25% headroom recomputed on that subtotal;
    * the *kernel heap* (SDK heap): the LibOS's own memory, sized from the thread count;
    * per-TCS areas: ``max_num_of_threads`` × (kernel stack + SDK thread pages).
    The plan's Gramine ``libos_overhead`` term has no place in the user space: its job is done
    by the kernel heap and the per-TCS areas.

    An explicit ``enclave.size`` bounds the whole enclave, as it does for Gramine: the user
    space is what is left after the LibOS image, the kernel heap and the per-TCS areas.
    """
    threads = plan.max_threads
    terms = [term for term in plan.memory_terms if term.name not in GRAMINE_ONLY_TERMS]
    processes, process_source = _process_count(recipe, plan)
    terms.append(
        Term(
            "occlum_process_areas",
            processes * (PROCESS_HEAP_SIZE + PROCESS_STACK_SIZE),
            f"{process_source} × ({human(PROCESS_HEAP_SIZE)} brk heap + "
            f"{human(PROCESS_STACK_SIZE)} main stack)",
        )
    )
    subtotal = sum(term.value for term in terms)
    terms.append(
        Term(
            "headroom", int(subtotal * HEADROOM_FRACTION), "25% for fragmentation and mmap'ed files"
        )
    )
    needed = round_up(sum(term.value for term in terms), SIZE_GRANULE)

    kernel_heap = round_up(KERNEL_HEAP_BASE + threads * KERNEL_HEAP_PER_THREAD, SIZE_GRANULE)
    per_thread = KERNEL_STACK_SIZE + TCS_AREA
    outside_user_space = LIBOS_IMAGE_ALLOWANCE + kernel_heap + threads * per_thread

    warnings: list[str] = []
    explicit = recipe.enclave.size_bytes
    if explicit is not None:
        user_space = (explicit - outside_user_space) // MiB * MiB
        if user_space < MIN_USER_SPACE:
            raise RecipeError(
                f"enclave.size: {recipe.enclave.size} cannot hold Occlum's LibOS "
                f"({human(LIBOS_IMAGE_ALLOWANCE)} image + {human(kernel_heap)} kernel heap + "
                f"{threads} threads × {human(per_thread)}) and a user space of at least "
                f"{human(MIN_USER_SPACE)}; raise enclave.size (the app needs about "
                f"{human(needed + outside_user_space)}) or set it to auto"
            )
        if user_space < needed:
            warnings.append(
                f"enclave.size {recipe.enclave.size} leaves a {human(user_space)} "
                f"Occlum user space; the app needs about {human(needed)}"
            )
    else:
        user_space = needed

    edmm = recipe.enclave.edmm
    if edmm:
        occlum = occlum_version(recipe.libos.version)
        sizing_user = min(user_space, EDMM_USER_SPACE_INIT)
        sizing_user_max: int | None = user_space
        heap_init = min(kernel_heap, EDMM_KERNEL_HEAP_INIT)
        heap_max: int | None = kernel_heap
        # gen_internal_conf raises the maxima and adds the SDK's bookkeeping region (versions.py).
        estimate = (
            LIBOS_IMAGE_ALLOWANCE
            + max(kernel_heap, occlum.edmm_min_kernel_heap_max)
            + max(threads, occlum.edmm_min_tcs_max) * per_thread
            + sizing_user
            + max(user_space, occlum.edmm_min_user_space_max)
            + occlum.edmm_sdk_user_region_extra
        )
    else:
        sizing_user, sizing_user_max = user_space, None
        heap_init, heap_max = kernel_heap, None
        estimate = outside_user_space + user_space
    return OcclumSizing(
        user_space_size=sizing_user,
        user_space_max_size=sizing_user_max,
        kernel_space_heap_size=heap_init,
        kernel_space_heap_max_size=heap_max,
        kernel_space_stack_size=KERNEL_STACK_SIZE,
        max_num_of_threads=threads,
        default_stack_size=PROCESS_STACK_SIZE,
        default_heap_size=PROCESS_HEAP_SIZE,
        default_mmap_size=PROCESS_MMAP_SIZE,
        edmm=edmm,
        user_space_terms=terms,
        user_space_needed=needed,
        enclave_size_estimate=next_power_of_two(estimate),
        warnings=warnings,
    )


def describe_occlum_sizing(sizing: OcclumSizing, plan: Plan) -> list[str]:
    """What ``ppml-build plan`` prints for an Occlum recipe: Occlum.json's sizes, each term."""
    jvm = plan.jvm
    lines = ["Occlum.json resource_limits (Occlum 0.31's memory model, occlum/sizing.py):"]
    if jvm is not None:
        lines.append(
            f"  JVM heap -Xmx{human(jvm.heap)} ({jvm.heap_source}); the JVM's reservations "
            "below are pinned by flags, in the user space"
        )
    user = sizing.user_space_max_size or sizing.user_space_size
    lines.append(
        f"  user_space_size{'_max' if sizing.edmm else ''} = {format_occlum_size(user)} "
        "(every process's mmap, heap and stacks; the sum below rounded up to "
        f"{human(SIZE_GRANULE)})"
    )
    width = max(len(term.name) for term in sizing.user_space_terms)
    for term in sizing.user_space_terms:
        lines.append(f"    {term.name:<{width}}  {human(term.value):>7}  {term.source}")
    heap = sizing.kernel_space_heap_max_size or sizing.kernel_space_heap_size
    lines.append(
        f"  kernel_space_heap_size{'_max' if sizing.edmm else ''} = {format_occlum_size(heap)} "
        f"(the LibOS's own memory: {human(KERNEL_HEAP_BASE)} + {sizing.max_num_of_threads} "
        f"threads × {human(KERNEL_HEAP_PER_THREAD)}, rounded up to {human(SIZE_GRANULE)})"
    )
    lines.append(
        f"  max_num_of_threads = {sizing.max_num_of_threads} (the plan's max_threads: one TCS "
        f"each, {human(KERNEL_STACK_SIZE)} kernel stack + {human(TCS_AREA)} SDK pages)"
    )
    if sizing.edmm:
        lines.append(
            f"  EDMM: {format_occlum_size(sizing.user_space_size)} user space and "
            f"{format_occlum_size(sizing.kernel_space_heap_size)} kernel heap committed at load"
        )
    lines.append(
        f"  enclave ≈ {human(sizing.enclave_size_estimate)} (what sgx_sign lays out: LibOS "
        f"image {human(LIBOS_IMAGE_ALLOWANCE)} + kernel heap + threads + user space, next power "
        "of two)"
    )
    lines += [f"warning: {warning}" for warning in sizing.warnings]
    return lines


def occlum_sizing_dict(sizing: OcclumSizing) -> dict[str, Any]:
    """The same for ``plan --json``."""
    return {
        "resource_limits": sizing.resource_limits(),
        "process": sizing.process(),
        "user_space_terms": [
            {"name": term.name, "bytes": term.value, "source": term.source}
            for term in sizing.user_space_terms
        ],
        "enclave_size_estimate": sizing.enclave_size_estimate,
    }
