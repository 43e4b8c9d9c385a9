"""The Occlum 0.31 backend's configuration: ``Occlum.json`` and ``copy_bom``'s ``bom.yaml``.

recipe + sizing plan + image filesystem ──▶ two documents, pure (bytes in, bytes out):

* ``Occlum.json`` — what ``occlum build`` turns into ``Enclave.xml`` and ``.Occlum_sys.json``
  (occlum.md §1.2, §2.2). Only keys Occlum 0.31's parser knows are written: its
  ``gen_internal_conf`` silently drops unknown keys, so a typo would be lost, not rejected.
* ``bom.yaml`` — what ``copy_bom -f bom.yaml --root image --include-dir
  /opt/occlum/etc/template`` copies from the build container into the instance's ``image/``:
  the JDK, the Spark/Flink distribution, the app files (pinned by SHA-256) and the glibc
  pieces Occlum does not ship in a new instance. ``copy_bom`` resolves ELF dependencies itself.

Unlike Gramine, Occlum does not take argv from the signed configuration: ``occlum run PATH
ARGS`` chooses them on the host, and ``entry_points`` only pins which directories PATH may
name. Every file of ``image/`` is integrity-protected by the SEFS image MAC, so the bom is this
backend's trusted-file list.

No Jinja template here: both outputs are data structures serialised by ``json``/``yaml``, so
nothing a recipe contains can break their syntax.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ppml_build.errors import ManifestError, RecipeError
from ppml_build.plan import HEADROOM_FRACTION, Plan, Term
from ppml_build.image.programs import find_program, path_env, script_interpreters
from ppml_build.recipe import Recipe
from ppml_build.image.rootfs import MAX_SYMLINK_HOPS, RootFS, RootFSError, resolve, stat_followed
from ppml_build.units import GiB, KiB, MiB, human, next_power_of_two

OCCLUM_VERSION = "0.31"
PAGE = 4 * KiB

# --- sizing constants (see occlum_sizing for how they combine) ------------------------------
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
# Per-TCS SDK areas besides the kernel stack (occlum.md §3.3): three 64K guards, TCS page, two
# 1-page SSA frames (AMX off), two TD/TLS pages.
TCS_AREA = 3 * 64 * KiB + 5 * PAGE
# Estimated loaded size of libocclum-libos.so (code, data, .bss): only used to carve the user
# space out of an explicit enclave.size and to estimate the final enclave size.
LIBOS_IMAGE_ALLOWANCE = 64 * MiB
# Every process gets a brk heap and a main-thread stack from the user space at spawn.
PROCESS_HEAP_SIZE = 64 * MiB     # glibc's main arena; it falls back to mmap when this is full
PROCESS_STACK_SIZE = 8 * MiB     # Linux's default `ulimit -s`: deep Python recursion needs it
# Obsolete since Occlum's VM rewrite (mmap is no longer bounded by it) but still a required key;
# Occlum's own template value, with which BigDL runs multi-GB JVM heaps.
PROCESS_MMAP_SIZE = 100 * MiB
MIN_USER_SPACE = 128 * MiB
# EDMM: memory committed at load (EADDed page by page: more means a slower start); the rest up
# to the max sizes is committed on demand.
EDMM_USER_SPACE_INIT = 256 * MiB
EDMM_KERNEL_HEAP_INIT = 64 * MiB
# What gen_internal_conf raises the EDMM maxima to (occlum.md §2.2), for the size estimate.
EDMM_MIN_KERNEL_HEAP_MAX = 1 * GiB
EDMM_MIN_USER_SPACE_MAX = 16 * GiB
EDMM_SDK_USER_REGION_EXTRA = 1 * GiB
EDMM_MIN_TCS_MAX = 4096

# Plan terms that describe Gramine's LibOS, not the app: Occlum's kernel lives outside the user
# space (kernel heap, per-TCS areas), and headroom is recomputed on the Occlum subtotal.
GRAMINE_ONLY_TERMS = frozenset({"libos_overhead", "headroom"})

# Mount points gen_internal_conf adds itself (/proc, /dev) or that is the root union.
RESERVED_MOUNT_TARGETS = frozenset({"/", "/proc", "/dev"})
MOUNT_TYPES_031 = frozenset({"sefs", "hostfs", "ramfs", "unionfs", "devfs", "procfs", "ext2"})
MOUNT_OPTIONS_031 = frozenset({"MAC", "layers", "temporary", "cache_size", "disk_size", "index"})

# Where the build container has Occlum's glibc; NSS modules are dlopen'ed, so autodep misses them.
OCCLUM_GLIBC_LIB = "/opt/occlum/glibc/lib"
NSS_LIBRARIES = ("libnss_files.so.2",)
ETC_FILES = ("/etc/group", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd")
LIBRARY_PATH = (OCCLUM_GLIBC_LIB, "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu")

_OCCLUM_SIZE_UNITS = (("KB", KiB), ("MB", MiB), ("GB", GiB), ("TB", 1024 * GiB), ("B", 1))


# ---------------------------------------------------------------------------------------------
# Sizes in Occlum's syntax

def format_occlum_size(value: int) -> str:
    """Bytes as Occlum writes them: the largest exact of GB/MB/KB, else ``<n>B`` ("32MB")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ManifestError(f"cannot write {value!r} as an Occlum size")
    for suffix, unit in (("GB", GiB), ("MB", MiB), ("KB", KiB)):
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return f"{value}B"


def parse_occlum_size(text: str) -> int:
    """Occlum 0.31's ``parse_memory_size``: trim, first matching suffix of KB/MB/GB/TB/B (powers
    of 1024, upper case), then a whole number. ValueError for anything it would refuse."""
    if not isinstance(text, str):
        raise ValueError(f"an Occlum size is a string, got {type(text).__name__}")
    stripped = text.strip()
    for suffix, unit in _OCCLUM_SIZE_UNITS:
        if stripped.endswith(suffix):
            number = stripped[: -len(suffix)].strip()
            if not number.isascii() or not number.isdigit():
                raise ValueError(f"{text!r}: Occlum needs a whole number before {suffix}")
            return int(number) * unit
    raise ValueError(f"{text!r}: Occlum sizes end in KB, MB, GB, TB or B (e.g. 32MB)")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ---------------------------------------------------------------------------------------------
# Sizing: the plan's numbers → Occlum's resource_limits and process defaults

@dataclass(frozen=True)
class OcclumSizing:
    """resource_limits/process values in bytes, and how the user space was derived."""

    user_space_size: int          # non-EDMM: the static user space; EDMM: committed at load
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
    user_space_needed: int        # what the app needs (before an explicit enclave.size cap)
    enclave_size_estimate: int    # what sgx_sign will likely lay out (a power of two)
    warnings: list[str] = field(default_factory=list)

    def resource_limits(self) -> dict[str, Any]:
        limits: dict[str, Any] = {
            "kernel_space_heap_size": format_occlum_size(self.kernel_space_heap_size)}
        if self.kernel_space_heap_max_size is not None:
            limits["kernel_space_heap_max_size"] = format_occlum_size(
                self.kernel_space_heap_max_size)
        limits["kernel_space_stack_size"] = format_occlum_size(self.kernel_space_stack_size)
        limits["user_space_size"] = format_occlum_size(self.user_space_size)
        if self.user_space_max_size is not None:
            limits["user_space_max_size"] = format_occlum_size(self.user_space_max_size)
        limits["max_num_of_threads"] = self.max_num_of_threads
        return limits

    def process(self) -> dict[str, str]:
        return {"default_stack_size": format_occlum_size(self.default_stack_size),
                "default_heap_size": format_occlum_size(self.default_heap_size),
                "default_mmap_size": format_occlum_size(self.default_mmap_size)}


def uses_python(recipe: Recipe) -> bool:
    return recipe.kind == "python" or any(arg.endswith(".py") for arg in recipe.app.command)


def _process_count(recipe: Recipe, plan: Plan) -> tuple[int, str]:
    """Processes that each take a brk heap and a main stack from the user space."""
    count, parts = 0, []
    if recipe.kind in ("java", "spark", "flink"):
        count, parts = 1, ["1 JVM"]
    if uses_python(recipe):
        # The Python driver, plus one worker per core the JVM runs tasks on (PySpark workers,
        # PyFlink UDF runners).
        workers = plan.jvm.cpus if plan.jvm is not None else 0
        count += 1 + workers
        parts.append(f"1 Python driver + {workers} Python workers" if workers else
                     "1 Python interpreter")
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
    terms.append(Term("occlum_process_areas",
                      processes * (PROCESS_HEAP_SIZE + PROCESS_STACK_SIZE),
                      f"{process_source} × ({human(PROCESS_HEAP_SIZE)} brk heap + "
                      f"{human(PROCESS_STACK_SIZE)} main stack)"))
    subtotal = sum(term.value for term in terms)
    terms.append(Term("headroom", int(subtotal * HEADROOM_FRACTION),
                      "25% for fragmentation and mmap'ed files"))
    needed = _round_up(sum(term.value for term in terms), SIZE_GRANULE)

    kernel_heap = _round_up(KERNEL_HEAP_BASE + threads * KERNEL_HEAP_PER_THREAD, SIZE_GRANULE)
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
                f"{human(needed + outside_user_space)}) or set it to auto")
        if user_space < needed:
            warnings.append(f"enclave.size {recipe.enclave.size} leaves a {human(user_space)} "
                            f"Occlum user space; the app needs about {human(needed)}")
    else:
        user_space = needed

    edmm = recipe.enclave.edmm
    if edmm:
        sizing_user = min(user_space, EDMM_USER_SPACE_INIT)
        sizing_user_max: int | None = user_space
        heap_init = min(kernel_heap, EDMM_KERNEL_HEAP_INIT)
        heap_max: int | None = kernel_heap
        # gen_internal_conf raises the maxima and adds the SDK's bookkeeping region (§2.2).
        estimate = (LIBOS_IMAGE_ALLOWANCE + max(kernel_heap, EDMM_MIN_KERNEL_HEAP_MAX)
                    + max(threads, EDMM_MIN_TCS_MAX) * per_thread + sizing_user
                    + max(user_space, EDMM_MIN_USER_SPACE_MAX) + EDMM_SDK_USER_REGION_EXTRA)
    else:
        sizing_user, sizing_user_max = user_space, None
        heap_init, heap_max = kernel_heap, None
        estimate = outside_user_space + user_space
    return OcclumSizing(
        user_space_size=sizing_user, user_space_max_size=sizing_user_max,
        kernel_space_heap_size=heap_init, kernel_space_heap_max_size=heap_max,
        kernel_space_stack_size=KERNEL_STACK_SIZE, max_num_of_threads=threads,
        default_stack_size=PROCESS_STACK_SIZE, default_heap_size=PROCESS_HEAP_SIZE,
        default_mmap_size=PROCESS_MMAP_SIZE, edmm=edmm, user_space_terms=terms,
        user_space_needed=needed, enclave_size_estimate=next_power_of_two(estimate),
        warnings=warnings)


# ---------------------------------------------------------------------------------------------
# Occlum.json

def trusted_env(recipe: Recipe, plan: Plan) -> dict[str, str]:
    """env.default: kind defaults, then what the plan adds, then the recipe's own app.env
    (which wins, except where the plan already merged it, as for JAVA_TOOL_OPTIONS)."""
    runtime = recipe.runtime
    library_path = list(LIBRARY_PATH)
    env = {"OCCLUM": "yes", "LANG": "C.UTF-8", "HOME": "/root", "PATH": path_env(recipe)}
    if recipe.kind in ("java", "spark", "flink"):
        env["JAVA_HOME"] = runtime.java_home
        library_path += [f"{runtime.java_home}/lib/server", f"{runtime.java_home}/lib"]
    if recipe.kind == "spark":
        env["SPARK_HOME"] = runtime.spark_home
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        if uses_python(recipe):
            env["PYSPARK_PYTHON"] = runtime.python
    if recipe.kind == "flink":
        env["FLINK_HOME"] = runtime.flink_home
        env["FLINK_CONF_DIR"] = f"{runtime.flink_home}/conf"
    env["LD_LIBRARY_PATH"] = ":".join(library_path)
    env.update(plan.extra_env)
    for name, value in recipe.app.env.items():
        if name not in plan.extra_env:
            env[name] = value
    for name, value in env.items():
        if "\0" in value:
            raise RecipeError(f"app.env.{name}: contains a NUL byte, which Occlum's environment "
                              "(C strings) cannot carry; remove it")
    return env


def _mounts(recipe: Recipe) -> list[dict[str, Any]]:
    """The root union (image SEFS + writable container SEFS) and the recipe's mounts."""
    root = {"target": "/", "type": "unionfs", "options": {"layers": [
        # `occlum build` fills MAC with the image's root MAC; its presence marks this layer as
        # the integrity-protected image.
        {"target": "/", "type": "sefs", "source": "./build/mount/__ROOT",
         "options": {"MAC": ""}},
        {"target": "/", "type": "sefs", "source": "./run/mount/__ROOT"},
    ]}}
    mounts: dict[str, tuple[str, dict[str, Any]]] = {}

    def add(target: str, field_name: str, mount: dict[str, Any]) -> None:
        if target in RESERVED_MOUNT_TARGETS:
            raise RecipeError(f"{field_name}: {target} is mounted by Occlum itself; choose "
                              "another path")
        if target in mounts:
            raise RecipeError(f"{field_name}: {target} is already mounted by "
                              f"{mounts[target][0]}; keep one")
        mounts[target] = (field_name, mount)

    for index, path in enumerate(recipe.files.tmpfs or ["/tmp"]):
        target = path.rstrip("/") or "/"
        add(target, f"files.tmpfs[{index}]", {"target": target, "type": "ramfs"})
    for index, path in enumerate(recipe.files.allowed):
        if not path.endswith("/"):
            raise RecipeError(f"files.allowed[{index}]: {path} is a file; Occlum 0.31 passes "
                              "host data in by mounting directories (hostfs): give its "
                              "directory, ending in '/'")
        target = path.rstrip("/") or "/"
        # Untrusted, unencrypted: the container's directory of the same path.
        add(target, f"files.allowed[{index}]",
            {"target": target, "type": "hostfs", "source": target})
    for index, enc in enumerate(recipe.files.encrypted):
        if enc.key_name != "default":
            raise RecipeError(
                f"files.encrypted[{index}].key_name: Occlum 0.31 cannot choose a key per mount "
                "(every SEFS uses the instance's image key, or the enclave's sealing key when "
                "there is none); remove key_name or use libos.type: gramine")
        target = enc.path.rstrip("/") or "/"
        source = enc.uri[len("file:"):].rstrip("/") or "/"
        add(target, f"files.encrypted[{index}]",
            {"target": target, "type": "sefs", "source": source})
    # A parent mount must come before the mounts inside it; sorting the paths does that.
    return [root] + [mounts[target][1] for target in sorted(mounts)]


def _zero_id() -> dict[str, str]:
    return {"high": "0x0", "low": "0x0"}


def build_occlum_json(recipe: Recipe, plan: Plan, sizing: OcclumSizing,
                      entry_points: list[str]) -> dict[str, Any]:
    """The Occlum.json document (keys in Occlum's template order; no secrets in it)."""
    env = trusted_env(recipe, plan)
    debug = recipe.enclave.debug
    return {
        "resource_limits": sizing.resource_limits(),
        "process": sizing.process(),
        "entry_points": entry_points,
        "env": {
            "default": [f"{name}={env[name]}" for name in sorted(env)],
            # Host variables allowed in (they may override a default): names only.
            "untrusted": sorted(recipe.app.passthrough_env),
        },
        "metadata": {
            "product_id": recipe.enclave.isv_prod_id,
            "version_number": recipe.enclave.isv_svn,
            "debuggable": debug,
            # Occlum's own default (!debuggable), written out so the measured value is visible.
            "disable_log": not debug,
            "enable_kss": False,
            "family_id": _zero_id(),     # required by the parser even with KSS off
            "ext_prod_id": _zero_id(),
        },
        "feature": {
            "amx": 0,                    # 0: must be disabled (Occlum's default)
            "pkru": 0,
            "io_uring": 0,
            "enable_edmm": recipe.enclave.edmm,
            "enable_posix_shm": False,
        },
        "mount": _mounts(recipe),
    }


def check_occlum_json(doc: dict[str, Any], recipe: Recipe) -> None:
    """Last line of defence before writing: what we emit must be what the recipe allows and
    what Occlum 0.31 parses. ManifestError (one line) otherwise."""
    metadata = doc.get("metadata", {})
    if metadata.get("debuggable") is not False and not recipe.enclave.debug:
        raise ManifestError("Occlum.json metadata.debuggable: a debug enclave's memory is "
                            "readable by the host; it is only written when the recipe sets "
                            "enclave.debug: true")
    for section, keys in (("resource_limits", ("kernel_space_heap_size",
                                               "kernel_space_heap_max_size",
                                               "kernel_space_stack_size", "user_space_size",
                                               "user_space_max_size")),
                          ("process", ("default_stack_size", "default_heap_size",
                                       "default_mmap_size"))):
        for key in keys:
            if key not in doc.get(section, {}):
                continue
            text = doc[section][key]
            try:
                value = parse_occlum_size(text)
            except ValueError as err:
                raise ManifestError(f"Occlum.json {section}.{key}: {err}") from None
            if value % PAGE:
                raise ManifestError(f"Occlum.json {section}.{key}: {text} is not a multiple "
                                    "of 4KB, which sgx_sign requires")
    for point in doc.get("entry_points", []):
        if not point.startswith("/"):
            raise ManifestError(f"Occlum.json entry_points: {point!r} is not absolute")
    for mount in doc.get("mount", []):
        for item in [mount] + list(mount.get("options", {}).get("layers", [])):
            if item["type"] not in MOUNT_TYPES_031:
                raise ManifestError(f"Occlum.json mount {item['target']}: type "
                                    f"{item['type']!r} does not exist in Occlum 0.31")
            unknown = set(item.get("options", {})) - MOUNT_OPTIONS_031
            if unknown:
                raise ManifestError(f"Occlum.json mount {item['target']}: unknown option(s) "
                                    f"{', '.join(sorted(unknown))}")


def dumps_occlum_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# bom.yaml

@dataclass
class _ImageSelection:
    """What the bom copies, keyed by destination; plus counts for the summary."""

    dirs: dict[str, str] = field(default_factory=dict)     # in-image dir → field that wants it
    files: dict[str, str] = field(default_factory=dict)   # in-image file → field that wants it
    links: dict[str, str] = field(default_factory=dict)   # in-image symlink → its target text
    external_files: list[str] = field(default_factory=list)  # from Occlum's install, not rootfs
    mkdirs: set[str] = field(default_factory=set)
    excludes: set[str] = field(default_factory=set)
    file_count: int = 0
    byte_count: int = 0
    warnings: list[str] = field(default_factory=list)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _is_unsafe_link(depth: int, target: str) -> bool:
    """rsync's --copy-unsafe-links test: absolute, or climbing above the copied tree's top
    (``depth`` = directories between the top and the link)."""
    if target.startswith("/"):
        return True
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _walk_copied_dir(fs: RootFS, given: str, selection: _ImageSelection) -> None:
    """Count what ``rsync -ar --copy-unsafe-links GIVEN/ image/GIVEN`` copies, and exclude the
    dangling unsafe links that would make rsync (and so copy_bom) fail."""
    seen: set[str] = set()
    # (real dir to list, path relative to the copied top, depth below the top)
    stack: list[tuple[str, str, int]] = [(resolve(fs, given), "", 0)]
    while stack:
        real, rel, depth = stack.pop()
        if real in seen:
            continue
        seen.add(real)
        for name in sorted(fs.listdir(real), reverse=True):
            path = posixpath.join(real, name)
            entry = fs.lstat(path)
            rel_path = posixpath.join(rel, name)
            if entry is None:
                continue
            if entry.kind == "dir":
                stack.append((path, rel_path, depth + 1))
            elif entry.kind == "file":
                selection.file_count += 1
                selection.byte_count += entry.size
            elif entry.kind == "symlink" and _is_unsafe_link(depth, entry.link_target or ""):
                # rsync copies what an unsafe link points to (e.g. the JDK's conf/ → /etc/…).
                referent = stat_followed(fs, path)
                if referent is None:
                    selection.excludes.add(f"/{rel_path}")
                    selection.warnings.append(
                        f"{posixpath.join(given, rel_path)} -> {entry.link_target} points "
                        "nowhere in the image; left out of the Occlum image")
                elif referent.kind == "dir":
                    stack.append((resolve(fs, path), rel_path, depth + 1))
                elif referent.kind == "file":
                    selection.file_count += 1
                    selection.byte_count += referent.size


def _python_dirs(fs: RootFS) -> list[str]:
    """The stdlib and dist-packages directories present in the image."""
    found = []
    for base in ("/usr/lib", "/usr/local/lib"):
        try:
            names = sorted(fs.listdir(resolve(fs, base)))
        except (OSError, KeyError):
            continue
        for name in names:
            if name.startswith("python3"):
                entry = stat_followed(fs, posixpath.join(base, name))
                if entry is not None and entry.kind == "dir":
                    found.append(posixpath.join(base, name))
    return found


def _select_image_content(recipe: Recipe, fs: RootFS, program: str) -> _ImageSelection:
    selection = _ImageSelection()
    runtime = recipe.runtime

    def want_dir(path: str, field_name: str, required: bool = True) -> None:
        path = path.rstrip("/") or "/"
        entry = stat_followed(fs, path)
        if entry is None or entry.kind != "dir":
            if required:
                raise ManifestError(f"{field_name}: {path} is not a directory in the image; "
                                    f"fix {field_name} or the base image")
            return
        selection.dirs.setdefault(path, field_name)

    def want_file(path: str, field_name: str, required: bool = True) -> None:
        """The file at ``path``; a symlink is recreated as a link (the java launcher finds its
        JDK through /proc/self/exe) and what it names is wanted in turn."""
        links: dict[str, str] = {}
        current = path
        while True:
            if current in links or len(links) > MAX_SYMLINK_HOPS:
                raise ManifestError(f"{field_name}: {path}: too many levels of symbolic links")
            try:
                parent = resolve(fs, posixpath.dirname(current))
                entry = fs.lstat(posixpath.join(parent, posixpath.basename(current)))
            except RootFSError:
                entry = None
            if entry is not None and entry.kind == "symlink":
                text = entry.link_target or ""
                links[current] = text
                current = text if text.startswith("/") else posixpath.normpath(
                    posixpath.join(posixpath.dirname(current), text))
                continue
            if entry is None or entry.kind != "file":
                if required:
                    raise ManifestError(f"{field_name}: {path} is not a file in the image; "
                                        f"fix {field_name} or the base image")
                return
            selection.links.update(links)
            selection.files.setdefault(current, field_name)
            return

    if recipe.kind in ("java", "spark", "flink"):
        want_dir(runtime.java_home, "runtime.java_home")
    if recipe.kind == "spark":
        want_dir(runtime.spark_home, "runtime.spark_home")
    if recipe.kind == "flink":
        want_dir(runtime.flink_home, "runtime.flink_home")
    if uses_python(recipe):
        want_file(runtime.python, "runtime.python")
        for directory in _python_dirs(fs):
            want_dir(directory, "runtime.python")
    want_file(program, "app.command[0]")
    for index, path in enumerate(recipe.files.trusted):
        if path.endswith("/"):
            want_dir(path, f"files.trusted[{index}]")
        else:
            want_file(path, f"files.trusted[{index}]")
    for index, item in enumerate(recipe.app.files):
        want_file(item.dest, f"app.files[{index}].dest")
    for path in ETC_FILES:
        want_file(path, path, required=False)
    selection.external_files = [posixpath.join(OCCLUM_GLIBC_LIB, name) for name in NSS_LIBRARIES]

    # Drop what a copied directory already brings. Paths as configured, not resolved: the bom
    # copies a directory's content to the path it was asked for.
    top_dirs = [path for path in selection.dirs
                if not any(other != path and _inside(path, other) for other in selection.dirs)]
    selection.dirs = {path: selection.dirs[path] for path in top_dirs}
    selection.files = {path: name for path, name in selection.files.items()
                       if not any(_inside(path, d) for d in top_dirs)}
    selection.links = {path: text for path, text in selection.links.items()
                       if not any(_inside(path, d) for d in top_dirs)}
    for path in sorted(selection.dirs):
        _walk_copied_dir(fs, path, selection)
    for path in selection.files:
        selection.file_count += 1
        selection.byte_count += stat_followed(fs, path).size  # type: ignore[union-attr]

    # Mount points and the working directory must exist in the image to be used.
    for mount in _mounts(recipe)[1:]:
        selection.mkdirs.add(mount["target"])
    selection.mkdirs.add(recipe.app.workdir)
    selection.mkdirs.discard("/")
    return selection


def _add_file(target: dict[str, Any], entry: str | dict[str, Any]) -> None:
    copy = target.setdefault("copy", [])
    if not copy or "files" not in copy[-1]:
        copy.append({"files": []})
    copy[-1]["files"].append(entry)


def build_bom(selection: _ImageSelection, digests: dict[str, str]) -> dict[str, Any]:
    """copy_bom's document: one target per destination directory, sorted."""
    targets: dict[str, dict[str, Any]] = {}

    def target(path: str) -> dict[str, Any]:
        return targets.setdefault(path, {"target": path})

    for path in sorted(selection.dirs):
        # "DIR/" copies the contents into image/DIR: symlinks on the way (/opt/spark →
        # spark-3.5.3) are followed, so the app finds the tree at the path it was configured.
        target(path).setdefault("copy", [{"dirs": []}])[0]["dirs"].append(path + "/")
    for path in sorted(selection.files):
        # copy_bom aborts if the build container's file differs from the one checked here.
        _add_file(target(posixpath.dirname(path)),
                  {"name": path, "hash": digests[path].upper()})
    for path in selection.external_files:
        _add_file(target(posixpath.dirname(path)), path)
    for path in sorted(selection.links):
        target(posixpath.dirname(path)).setdefault("createlinks", []).append(
            {"src": selection.links[path], "linkname": posixpath.basename(path)})
    root = target("/")
    if selection.mkdirs:
        root["mkdirs"] = sorted(path.lstrip("/") for path in selection.mkdirs)

    bom: dict[str, Any] = {"includes": ["base.yaml"]}  # Occlum's basic directory layout
    if selection.excludes:
        bom["excludes"] = sorted(selection.excludes)
    ordered = []
    for path in sorted(targets):
        item = targets[path]
        ordered.append({key: item[key] for key in ("target", "mkdirs", "createlinks", "copy")
                        if key in item})
    bom["targets"] = ordered
    return bom


def dumps_bom(bom: dict[str, Any], recipe: Recipe) -> str:
    header = (f"# copy_bom file for {recipe.name} (Occlum {OCCLUM_VERSION}), written by "
              "ppml-build.\n# copy_bom -f bom.yaml --root image --include-dir "
              "/opt/occlum/etc/template\n")
    return header + yaml.safe_dump(bom, sort_keys=False, default_flow_style=False,
                                   allow_unicode=True, width=4096)


# ---------------------------------------------------------------------------------------------
# Both together

@dataclass(frozen=True)
class RenderedOcclum:
    occlum_json: dict[str, Any]
    occlum_json_text: str
    bom: dict[str, Any]
    bom_text: str
    sizing: OcclumSizing
    image_file_count: int    # regular files the bom puts into image/ (from the rootfs)
    image_bytes: int
    pinned_files: dict[str, str]  # in-image path → sha256 (lowercase) for the bom's hash pins
    warnings: list[str]


_SHELLS = re.compile(r"^(ba|da|k|z)?sh$")


def render_occlum(recipe: Recipe, plan: Plan, fs: RootFS) -> RenderedOcclum:
    """Occlum.json and bom.yaml for ``recipe`` over the image filesystem ``fs``. Pure given fs."""
    if recipe.libos.type != "occlum":
        raise ManifestError(f"libos.type {recipe.libos.type!r}: the Occlum renderer was asked "
                            "for another LibOS")
    if recipe.libos.version != OCCLUM_VERSION:
        raise RecipeError(f"libos.version: Occlum {recipe.libos.version} is not supported; "
                          f"use \"{OCCLUM_VERSION}\"")
    sizing = occlum_sizing(recipe, plan)
    warnings = list(sizing.warnings)
    program = find_program(fs, recipe.app.command[0], path_env(recipe), "app.command[0]")
    # The directory as `occlum run` will name it: the bom puts content at configured paths.
    entry_points = [posixpath.dirname(program)]
    warnings.append("Occlum takes argv from the host (`occlum run " + program + " ...`); only "
                    "the program's directory is pinned by entry_points, not app.command")
    interpreter = (script_interpreters(fs, program) or [None])[-1]
    if interpreter and _SHELLS.match(posixpath.basename(interpreter)):
        warnings.append(f"app.command[0] {program} is a {posixpath.basename(interpreter)} "
                        "script; Occlum has no fork(), so scripts that run $(...) or pipelines "
                        "fail: start java (or python) directly")

    doc = build_occlum_json(recipe, plan, sizing, entry_points)
    check_occlum_json(doc, recipe)

    try:
        selection = _select_image_content(recipe, fs, program)
        real = {path: resolve(fs, path) for path in selection.files}
        by_real = fs.sha256_many(sorted(set(real.values())))
    except RootFSError as err:
        raise ManifestError(f"image filesystem: {err}") from None
    digests = {path: by_real[real[path]] for path in selection.files}
    warnings += selection.warnings
    bom = build_bom(selection, digests)
    return RenderedOcclum(
        occlum_json=doc, occlum_json_text=dumps_occlum_json(doc), bom=bom,
        bom_text=dumps_bom(bom, recipe), sizing=sizing,
        image_file_count=selection.file_count, image_bytes=selection.byte_count,
        pinned_files=digests, warnings=warnings)
