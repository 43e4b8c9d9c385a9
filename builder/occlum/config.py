"""The Occlum 0.31 backend's configuration: ``Occlum.json``, and both documents together.

recipe + sizing plan + image filesystem ──▶ ``Occlum.json`` (here) and ``bom.yaml``
(``bom.py``), pure (bytes in, bytes out):

* ``Occlum.json`` — what ``occlum build`` turns into ``Enclave.xml`` and ``.Occlum_sys.json``
  (Occlum tools/gen_internal_conf/src/main.rs, ``OcclumConfiguration`` and ``main``). Only keys
  Occlum 0.31's parser knows are written: gen_internal_conf silently drops unknown keys, so a
  typo would be lost, not rejected. Its sizes come from ``sizing.py``.

Unlike Gramine, Occlum does not take argv from the signed configuration: ``occlum run PATH
ARGS`` chooses them on the host, and ``entry_points`` only pins which directories PATH may
name; what may run is what ``bom.yaml`` puts into the integrity-protected image. So the command
is fixed in an entry script in that image (``entry.py``), the only program under entry_points.

No Jinja template here: both outputs are data structures serialised by ``json``/``yaml``, so
nothing a recipe contains can break their syntax.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ManifestError, RecipeError
from ..image.programs import find_program, path_env, script_interpreters
from ..image.rootfs import RootFS, RootFSError, resolve
from ..plan import Plan
from ..plan.launch import launch_argv
from ..recipe import Recipe
from ..units import parse_occlum_size
from ..versions import OCCLUM_VERSION, occlum_version
from .bom import OCCLUM_GLIBC_LIB, build_bom, dumps_bom, select_image_content
from .entry import ENTRY_SHELL, entry_script
from .sizing import PAGE, OcclumSizing, occlum_sizing

# Mount points gen_internal_conf adds itself (/proc, /dev) or that is the root union.
RESERVED_MOUNT_TARGETS = frozenset({"/", "/proc", "/dev"})

LIBRARY_PATH = (OCCLUM_GLIBC_LIB, "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu")


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
        if recipe.uses_python:
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
            raise RecipeError(
                f"app.env.{name}: contains a NUL byte, which Occlum's environment "
                "(C strings) cannot carry; remove it"
            )
    return env


def _mounts(recipe: Recipe) -> list[dict[str, Any]]:
    """The root union (image SEFS + writable container SEFS) and the recipe's mounts."""
    root = {
        "target": "/",
        "type": "unionfs",
        "options": {
            "layers": [
                # `occlum build` fills MAC with the image's root MAC; its presence marks this layer as
                # the integrity-protected image.
                {
                    "target": "/",
                    "type": "sefs",
                    "source": "./build/mount/__ROOT",
                    "options": {"MAC": ""},
                },
                {"target": "/", "type": "sefs", "source": "./run/mount/__ROOT"},
            ]
        },
    }
    mounts: dict[str, tuple[str, dict[str, Any]]] = {}

    def add(target: str, field_name: str, mount: dict[str, Any]) -> None:
        if target in RESERVED_MOUNT_TARGETS:
            raise RecipeError(
                f"{field_name}: {target} is mounted by Occlum itself; choose another path"
            )
        if target in mounts:
            raise RecipeError(
                f"{field_name}: {target} is already mounted by {mounts[target][0]}; keep one"
            )
        mounts[target] = (field_name, mount)

    for index, path in enumerate(recipe.files.tmpfs or ["/tmp"]):
        target = path.rstrip("/") or "/"
        add(target, f"files.tmpfs[{index}]", {"target": target, "type": "ramfs"})
    for index, path in enumerate(recipe.files.allowed):
        if not path.endswith("/"):
            raise RecipeError(
                f"files.allowed[{index}]: {path} is a file; Occlum 0.31 passes "
                "host data in by mounting directories (hostfs): give its "
                "directory, ending in '/'"
            )
        target = path.rstrip("/") or "/"
        # Untrusted, unencrypted: the container's directory of the same path.
        add(
            target,
            f"files.allowed[{index}]",
            {"target": target, "type": "hostfs", "source": target},
        )
    for index, enc in enumerate(recipe.files.encrypted):
        if enc.key_name != "default":
            raise RecipeError(
                f"files.encrypted[{index}].key_name: Occlum 0.31 cannot choose a key per mount "
                "(every SEFS uses the instance's image key, or the enclave's sealing key when "
                "there is none); remove key_name or use libos.type: gramine"
            )
        target = enc.path.rstrip("/") or "/"
        source = enc.uri[len("file:") :].rstrip("/") or "/"
        add(
            target,
            f"files.encrypted[{index}]",
            {"target": target, "type": "sefs", "source": source},
        )
    # A parent mount must come before the mounts inside it; sorting the paths does that.
    return [root] + [mounts[target][1] for target in sorted(mounts)]


def _zero_id() -> dict[str, str]:
    return {"high": "0x0", "low": "0x0"}


def build_occlum_json(
    recipe: Recipe, plan: Plan, sizing: OcclumSizing, entry_points: list[str]
) -> dict[str, Any]:
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
            "family_id": _zero_id(),  # required by the parser even with KSS off
            "ext_prod_id": _zero_id(),
        },
        "feature": {
            "amx": 0,  # 0: must be disabled (Occlum's default)
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
        raise ManifestError(
            "Occlum.json metadata.debuggable: a debug enclave's memory is "
            "readable by the host; it is only written when the recipe sets "
            "enclave.debug: true"
        )
    for section, keys in (
        (
            "resource_limits",
            (
                "kernel_space_heap_size",
                "kernel_space_heap_max_size",
                "kernel_space_stack_size",
                "user_space_size",
                "user_space_max_size",
            ),
        ),
        ("process", ("default_stack_size", "default_heap_size", "default_mmap_size")),
    ):
        for key in keys:
            if key not in doc.get(section, {}):
                continue
            text = doc[section][key]
            try:
                value = parse_occlum_size(text)
            except ValueError as err:
                raise ManifestError(f"Occlum.json {section}.{key}: {err}") from None
            if value % PAGE:
                raise ManifestError(
                    f"Occlum.json {section}.{key}: {text} is not a multiple "
                    "of 4KB, which sgx_sign requires"
                )
    for point in doc.get("entry_points", []):
        if not point.startswith("/"):
            raise ManifestError(f"Occlum.json entry_points: {point!r} is not absolute")
    occlum = occlum_version(recipe.libos.version)
    for mount in doc.get("mount", []):
        for item in [mount] + list(mount.get("options", {}).get("layers", [])):
            if item["type"] not in occlum.mount_types:
                raise ManifestError(
                    f"Occlum.json mount {item['target']}: type "
                    f"{item['type']!r} does not exist in Occlum {occlum.version}"
                )
            unknown = set(item.get("options", {})) - occlum.mount_options
            if unknown:
                raise ManifestError(
                    f"Occlum.json mount {item['target']}: unknown option(s) "
                    f"{', '.join(sorted(unknown))}"
                )


def dumps_occlum_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Both together


@dataclass(frozen=True)
class RenderedOcclum:
    occlum_json: dict[str, Any]
    occlum_json_text: str
    bom: dict[str, Any]
    bom_text: str
    sizing: OcclumSizing
    image_file_count: int  # regular files the bom puts into image/ (from the rootfs)
    image_bytes: int
    pinned_files: dict[str, str]  # in-image path → sha256 (lowercase) for the bom's hash pins
    warnings: list[str]
    entry_program: str  # what `occlum run` is given
    command: tuple[str, ...]  # what runs in the enclave (the entry script execs it)
    entry_script: str | None = None  # its text, written into the image (None: host argv)


_SHELLS = re.compile(r"^(ba|da|k|z)?sh$")


def _direct_hint(recipe: Recipe) -> str:
    """What spark-submit or a Flink script would have run, as a direct command."""
    if recipe.kind == "spark":
        return (
            f" (for spark-submit: -cp '{recipe.runtime.spark_home}/jars/*' "
            "org.apache.spark.deploy.SparkSubmit and spark-submit's own arguments)"
        )
    if recipe.kind == "flink":
        return (
            f" (for a Flink job: -cp 'APP.jar:{recipe.runtime.flink_home}/lib/*' and the "
            "job's main class, as recipes/flink/flink-java-wordcount does)"
        )
    return ""


def _refuse_shell_scripts(recipe: Recipe, fs: RootFS, program: str) -> None:
    """Occlum 0.31 has no fork(), only vfork and posix_spawn (docs/readthedocs/docs/source/
    binaries_compatibility.md; src/libos/src/syscall/mod.rs: Fork is unsupported), and every
    shell forks for $(...), pipelines and most commands it runs: Flink's bin/ scripts (and
    Spark's spark-class) cannot start their JVM there. Occlum's own Java and Flink demos start
    java directly (demos/java, demos/flink); spark-submit is replaced by the JVM command
    Spark's launcher computes at build time (plan/launch.py)."""
    interpreter = (script_interpreters(fs, program) or [None])[-1]
    if interpreter and _SHELLS.match(posixpath.basename(interpreter)):
        raise RecipeError(
            f"app.command[0]: {program} is a {posixpath.basename(interpreter)} script, and "
            "Occlum has no fork() to run it; start the JVM directly: "
            f"[{recipe.runtime.java_home}/bin/java, -cp, CLASSPATH, MAIN_CLASS, ARGS...]"
            + _direct_hint(recipe)
        )


def render_occlum(recipe: Recipe, plan: Plan, fs: RootFS) -> RenderedOcclum:
    """Occlum.json and bom.yaml for ``recipe`` over the image filesystem ``fs``. Pure given fs."""
    if recipe.libos.type != "occlum":
        raise ManifestError(
            f"libos.type {recipe.libos.type!r}: the Occlum renderer was asked for another LibOS"
        )
    if recipe.libos.version != OCCLUM_VERSION:
        raise RecipeError(
            f'libos.version: Occlum {recipe.libos.version} is not supported; use "{OCCLUM_VERSION}"'
        )
    sizing = occlum_sizing(recipe, plan)
    warnings = list(sizing.warnings)
    launch = plan.launch
    # spark-submit's JVM command as Spark's launcher computed it in the image, or app.command.
    command = launch_argv(launch, fs)
    program = find_program(fs, command[0], path_env(recipe), "app.command[0]")
    command = [program, *command[1:]]
    _refuse_shell_scripts(recipe, fs, program)
    script = None
    extra_files: list[str] = []
    if launch.occlum_entry:
        script = entry_script(command, recipe.app.workdir)
        entry_program = launch.occlum_entry
        extra_files = [ENTRY_SHELL, *launch.support_jars]
    else:
        entry_program = program
        warnings.append(
            "app.insecure_host_argv: Occlum takes argv from the host (`occlum run "
            + program
            + " ...`); only the program's directory is pinned by entry_points"
        )
    # The directory as `occlum run` will name it: the bom puts content at configured paths.
    entry_points = [posixpath.dirname(entry_program)]

    doc = build_occlum_json(recipe, plan, sizing, entry_points)
    check_occlum_json(doc, recipe)

    try:
        selection = select_image_content(
            recipe, fs, program, [mount["target"] for mount in doc["mount"][1:]], extra_files
        )
        real = {path: resolve(fs, path) for path in selection.files}
        by_real = fs.sha256_many(sorted(set(real.values())))
    except RootFSError as err:
        raise ManifestError(f"image filesystem: {err}") from None
    digests = {path: by_real[real[path]] for path in selection.files}
    if script is not None:
        # Not in the app image: the build writes it into the build container before copy_bom.
        data = script.encode("utf-8")
        selection.files[entry_program] = "the Occlum entry script"
        selection.file_count += 1
        selection.byte_count += len(data)
        digests[entry_program] = hashlib.sha256(data).hexdigest()
    warnings += selection.warnings
    bom = build_bom(selection, digests)
    return RenderedOcclum(
        occlum_json=doc,
        occlum_json_text=dumps_occlum_json(doc),
        bom=bom,
        bom_text=dumps_bom(bom, recipe),
        sizing=sizing,
        image_file_count=selection.file_count,
        image_bytes=selection.byte_count,
        pinned_files=digests,
        warnings=warnings,
        entry_program=entry_program,
        command=tuple(command),
        entry_script=script,
    )
