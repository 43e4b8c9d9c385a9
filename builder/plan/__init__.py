"""Enclave sizing: derive ``sgx.enclave_size`` and ``sgx.max_threads`` from the workload.

Every number is a named term with where it came from, so a user can see why the plan says 32G.
The JVM flags the app really runs with (``app.command`` and ``JAVA_TOOL_OPTIONS``) win over the
recipe's ``resources``, which win over per-kind defaults (``jvm.py``); ``sizing.py`` adds the
terms up; ``model.py`` holds the result.

Under Gramine every mmap'ed range (Java heap reservation, thread stacks, glibc malloc arenas)
takes enclave address space, so those reservations are what we size for, not resident memory.
"""

from .jvm import spark_submit_flags
from .model import FLINK_DEFAULT_PROCESS_SIZE, HEADROOM_FRACTION, SPARK_DEFAULT_MEMORY, Plan, Term
from .sizing import format_plan, make_plan

__all__ = [
    "FLINK_DEFAULT_PROCESS_SIZE",
    "HEADROOM_FRACTION",
    "SPARK_DEFAULT_MEMORY",
    "Plan",
    "Term",
    "format_plan",
    "make_plan",
    "spark_submit_flags",
]
