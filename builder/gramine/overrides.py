"""The recipe's ``manifest:`` escape hatch: Gramine 1.9 manifest keys the recipe does not model.

GSC and BigDL let users add manifest keys (``sgx.preheat_enclave``, ``sys.stack.size``,
``sys.allowed_ioctls``, ...); so does the recipe, dotted (``sgx.preheat_enclave: true``) or
nested (``sys: {stack: {size: 2M}}``), under three rules:

* One home per fact: a key the recipe sets from one of its own fields (``sgx.enclave_size`` from
  ``enclave.size``, ``loader.argv`` from ``app.command``, ...) is refused, naming that field.
* Keys and values are checked against Gramine 1.9's manifest schema (schema.py, written
  from python/graminelibos/manifest_check.py) when the recipe is read, so a typo fails
  ``ppml-build validate`` at its line and column instead of a build.
* Keys that weaken the enclave (``insecure__*``, ``sgx.debug``, ``allow_all_but_log``, a whole
  allowed directory tree, EXINFO off under a JVM) need a CLI flag, and then say so as warnings.

Pure functions, no I/O: manifest.render_manifest() merges the keys into the parsed template
output before sgx.trusted_files is expanded and hashed.

Longer than most: normalising, schema-checking and guarding ``manifest:`` keys are one set of
rules over one tree; split, each part would need the others' tables.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import tomli_w

from ..errors import ManifestError

# _check is the schema walk check_manifest uses; reused so a key is judged by the same rules.
from .schema import ANY, BOOL, INT, STR, DictOf, _check, schema_of
from .uris import covers_whole_filesystem

INSECURE_FLAG = "--allow-insecure-manifest"
JVM_EXINFO_FLAG = "--allow-jvm-without-exinfo"
JVM_KINDS = ("spark", "flink", "java")

# Facts the recipe already states: the manifest key is written from this recipe field.
OWNED: dict[tuple[str, ...], str] = {
    ("sgx", "enclave_size"): "enclave.size",
    ("sgx", "max_threads"): "enclave.max_threads",
    ("sgx", "edmm_enable"): "enclave.edmm",
    ("sgx", "isvprodid"): "enclave.isv_prod_id",
    ("sgx", "isvsvn"): "enclave.isv_svn",
    ("sgx", "remote_attestation"): "enclave.remote_attestation",
    ("loader", "argv"): "app.command",
    ("loader", "entrypoint"): "app.command",  # Gramine's libsysdb.so under libos.prefix
    ("libos", "entrypoint"): "app.command",
    # Gramine refuses either beside loader.argv, which the recipe always sets
    # ("Options loader.argv, loader.argv_src_file, and loader.insecure__use_cmdline_argv are
    # mutually exclusive", pal/src/pal_main.c).
    ("loader", "argv_src_file"): "app.command",
    ("loader", "insecure__use_cmdline_argv"): "app.insecure_host_argv",
    ("loader", "env"): "app.env or app.passthrough_env",
    ("fs", "root"): "app.workdir",  # the image is the root; app.workdir the start directory
    ("fs", "start_dir"): "app.workdir",
}

# Lists the recipe's entries are appended to; any other list or scalar replaces the template's.
APPENDED = {
    ("sgx", "trusted_files"),
    ("sgx", "allowed_files"),
    ("fs", "mounts"),
    ("sys", "allowed_ioctls"),
}

# Keys Gramine's schema marks Required() inside list items (manifest_check.py); our schema
# table does not model item-level requirements, so they are checked here.
_REQUIRED_ITEM_KEYS = {
    ("fs", "mounts"): ("path",),
    ("sys", "allowed_ioctls"): ("request_code",),
    ("sys", "debug__mock_syscalls"): ("name",),
}

_PLAIN_SHAPES = {
    STR: 'a string (sizes too, e.g. "2M")',
    INT: "a whole number",
    BOOL: "true or false",
}
_INT64 = (-(2**63), 2**63 - 1)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ManifestOptions:
    """What the CLI allowed for the recipe's ``manifest:`` keys, resolved once."""

    allow_insecure_manifest: bool = False
    allow_jvm_without_exinfo: bool = False


class OverrideError(ValueError):
    """A refused ``manifest:`` entry. ``where`` is its key path as written under ``manifest:``
    (so recipe.py can give the line and column); ``at_key`` points at the key, not its value.
    ``str()`` is the message, starting with ``manifest.<key>:``."""

    def __init__(self, message: str, where: tuple = (), *, at_key: bool = False) -> None:
        super().__init__(message)
        self.where = tuple(where)
        self.at_key = at_key

    @property
    def yaml_path(self) -> tuple:
        return ("manifest",) + self.where + (("<key>",) if self.at_key and self.where else ())


@dataclass(frozen=True)
class Guarded:
    """An override that needs ``flag``: the dotted key, the value, and why."""

    key: str
    value: Any
    flag: str
    reason: str


# --- reading the recipe's table ---------------------------------------------------------------


def dotted(path: tuple) -> str:
    """``sys.stack.size``; a key that is not a bare TOML key is quoted, as TOML would."""
    return ".".join(part if _BARE_KEY.match(part) else toml_string(part) for part in path)


def _written(where: tuple) -> str:
    """How a key was spelled in the recipe: ``sgx.preheat_enclave: …`` or
    ``sgx: {preheat_enclave: …}``."""
    text = "…"
    for index, key in enumerate(reversed(where)):
        text = f"{key}: {text}" if index == 0 else f"{key}: {{{text}}}"
    return text


def normalise_overrides(raw: Any) -> dict[str, Any]:
    """The recipe's ``manifest:`` as one nested table of checked Gramine 1.9 keys.

    Dotted keys are split in Gramine's own tables (as TOML splits them), not in free-form ones
    (``fs.insecure__keys``, ``sys.ioctl_structs``), whose keys are names. Raises OverrideError.
    Idempotent, so a Recipe can be validated again from its own dump.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OverrideError(
            "manifest: must be a mapping of Gramine manifest keys, e.g. {sgx.preheat_enclave: true}"
        )
    tree: dict[str, Any] = {}
    _insert_table(
        tree, raw, (), (), schema_of(), {}
    )  # the default release: the recipe field cannot see libos
    return _without_empty_tables(tree)


def _insert_table(
    target: dict, mapping: dict, path: tuple, where: tuple, shape: Any, origins: dict[tuple, tuple]
) -> None:
    for raw_key, value in mapping.items():
        key_where = where + (raw_key,)
        if not isinstance(raw_key, str):
            raise OverrideError(
                f"manifest.{dotted(path + (str(raw_key),))}: keys must be strings",
                key_where,
                at_key=True,
            )
        node, node_path, node_shape = target, path, shape
        parts = _split_key(raw_key, path, shape, key_where)
        while len(parts) > 1:  # walk the tables a dotted key names
            part = parts.pop(0)
            node_path += (part,)
            node_shape = _child_shape(node_shape, node_path, key_where)
            node = _table_at(node, part, node_path, key_where, origins)
            if isinstance(node_shape, DictOf):
                parts = [".".join(parts)]  # the rest names one entry of a free-form table
        node_path += (parts[0],)
        node_shape = _child_shape(node_shape, node_path, key_where)
        if isinstance(value, dict) and _is_table(node_shape):
            table = _table_at(node, parts[0], node_path, key_where, origins)
            _insert_table(table, value, node_path, key_where, node_shape, origins)
        else:
            _leaf(node, parts[0], value, node_path, node_shape, key_where, origins)


def _table_at(node: dict, key: str, path: tuple, where: tuple, origins: dict[tuple, tuple]) -> dict:
    """The table at ``key``, made when missing: a dotted and a nested spelling share it."""
    if key not in node:
        node[key] = {}
        origins[path] = where
    elif not isinstance(node[key], dict):
        raise _given_twice(path, origins, where)
    return node[key]


def _split_key(raw_key: str, path: tuple, shape: Any, where: tuple) -> list[str]:
    if not isinstance(shape, dict):
        return [raw_key]  # a free-form table: the key is a name, dots and all
    parts = raw_key.split(".")
    if any(not part.strip() for part in parts):
        raise OverrideError(
            f"manifest.{dotted(path + (raw_key,))}: {raw_key!r} is not a "
            "manifest key (empty part between dots)",
            where,
            at_key=True,
        )
    return parts


def _is_table(shape: Any) -> bool:
    return isinstance(shape, (dict, DictOf))


def _child_shape(shape: Any, path: tuple, where: tuple) -> Any:
    """The schema shape of ``path``; refuses keys the recipe owns and keys Gramine rejects."""
    if path in OWNED:
        field = OWNED[path]
        raise OverrideError(
            f"manifest.{dotted(path)}: set from the recipe's {field} (one home "
            f"per fact); change {field} instead",
            where,
            at_key=True,
        )
    if isinstance(shape, dict):
        if path[-1] not in shape:
            raise OverrideError(
                f"manifest.{dotted(path)}: not a Gramine 1.9 manifest key; "
                "check the spelling (Documentation/manifest-syntax.rst)",
                where,
                at_key=True,
            )
        return shape[path[-1]]
    if isinstance(shape, DictOf):
        return shape.value
    if shape is ANY:
        return ANY
    raise OverrideError(
        f"manifest.{dotted(path[:-1])}: is a value in Gramine 1.9, not a table, "
        f"so it has no key {path[-1]!r}",
        where,
        at_key=True,
    )


def _given_twice(path: tuple, origins: dict[tuple, tuple], where: tuple) -> OverrideError:
    first = origins.get(path, where)
    return OverrideError(
        f"manifest.{dotted(path)}: given twice, as {_written(first)} and as "
        f"{_written(where)}; keep one",
        where,
        at_key=True,
    )


def _leaf(
    node: dict,
    key: str,
    value: Any,
    path: tuple,
    shape: Any,
    where: tuple,
    origins: dict[tuple, tuple],
) -> None:
    if key in node:
        raise _given_twice(path, origins, where)
    problem = _toml_problem(value)
    if problem:
        raise OverrideError(f"manifest.{dotted(path)}: {problem}", where)
    wanted = _PLAIN_SHAPES.get(shape) if isinstance(shape, type) else None
    if wanted and (not isinstance(value, shape) or shape is INT and isinstance(value, bool)):
        raise OverrideError(
            f"manifest.{dotted(path)}: must be {wanted}, got {type(value).__name__}", where
        )
    try:
        _check(value, shape, path)
    except ManifestError as err:
        raise OverrideError(f"manifest.{err}", where) from None
    problem = _item_problem(path, value)
    if problem:
        raise OverrideError(f"manifest.{problem}", where)
    node[key] = copy.deepcopy(value)
    origins[path] = where


def _toml_problem(value: Any) -> str | None:
    """Why ``value`` is not a manifest value (str, int, bool, arrays and tables of them)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            return f"{value} does not fit TOML's 64-bit integers"
        return None
    if isinstance(value, str):
        if "\0" in value:
            return "contains a NUL byte (Gramine reads the manifest only up to the first NUL)"
        return None
    if isinstance(value, list):
        return next(filter(None, map(_toml_problem, value)), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"table key {key!r} must be a string"
            problem = _toml_problem(item)
            if problem:
                return problem
        return None
    wanted = "Gramine manifest values are strings, whole numbers, true/false, lists and tables"
    if value is None:
        return f"has no value (null); {wanted}; give one or remove the key"
    if isinstance(value, float):
        return f'{value!r} is a float; {wanted} (write a size as a string, e.g. "2M")'
    if isinstance(value, (datetime.date, datetime.time)):
        return f"{value} is a date or time; {wanted} (quote it to mean a string)"
    return f"a {type(value).__name__} is not allowed; {wanted}"


def _item_problem(path: tuple, value: Any) -> str | None:
    """Rules for list items that gramine-manifest checks and our schema table does not."""
    if not isinstance(value, list):
        return None
    name = dotted(path)
    for index, item in enumerate(value):
        for key in _REQUIRED_ITEM_KEYS.get(path, ()):
            if isinstance(item, dict) and key not in item:
                return f"{name}[{index}].{key}: required (python/graminelibos/manifest_check.py)"
        if path == ("fs", "mounts") and item.get("type", "chroot") != "tmpfs" and "uri" not in item:
            return f"{name}[{index}].uri: required for a {item.get('type', 'chroot')} mount"
        if path == ("sgx", "trusted_files"):
            uri = item.get("uri") if isinstance(item, dict) else item
            if uri is None:
                return f"{name}[{index}].uri: required (python/graminelibos/manifest_check.py)"
            problem = _file_uri_problem(uri)
            if problem:
                return f"{name}[{index}]: {problem}"
    return None


def _file_uri_problem(uri: str) -> str | None:
    """Trusted files are ``file:`` URIs with an absolute in-image path (graminelibos'
    manifest.py expands them under the image root; '..' would leave the path we hash)."""
    if not uri.startswith("file:/"):
        return f'{uri!r} is not a file: URI with an absolute path; write "file:/path"'
    path = uri[len("file:") :]
    if any(part == ".." for part in path.split("/")) or "\n" in path:
        return f"{uri!r} must not contain '..' or a newline"
    return None


def _without_empty_tables(tree: dict) -> dict:
    """An empty table sets nothing; dropping it keeps keys like fs.insecure__keys = {} out of
    the measured manifest."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _without_empty_tables(value)
            if not value:
                continue
        out[key] = value
    return out


# --- showing them -----------------------------------------------------------------------------


def _leaves(tree: dict, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + (key,))
        else:
            yield path + (key,), value


def flatten_overrides(overrides: dict) -> dict[str, Any]:
    """Dotted key → value, sorted: what ``plan`` lists and the record names."""
    return {dotted(path): value for path, value in sorted(_leaves(overrides))}


def recipe_manifest_keys(overrides: dict) -> list[str]:
    return list(flatten_overrides(overrides))


def toml_string(text: str) -> str:
    """A TOML basic string, escaped by tomli_w (JSON's escaping writes characters past U+FFFF
    as surrogate pairs, which TOML refuses)."""
    return tomli_w.dumps({"v": text})[len("v = ") :].rstrip("\n")


def toml_literal(value: Any) -> str:
    """A one-line TOML rendering for messages: ``"2M"``, ``true``, ``[{ request_code = 1 }]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return toml_string(value) if isinstance(value, str) else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return (
            "{ "
            + ", ".join(
                f"{dotted((str(key),))} = {toml_literal(item)}" for key, item in value.items()
            )
            + " }"
        )
    return repr(value)


def describe_overrides(overrides: dict) -> list[str]:
    """``sys.stack.size = "2M"`` lines, one per key the recipe's ``manifest:`` sets."""
    return [f"{key} = {toml_literal(value)}" for key, value in flatten_overrides(overrides).items()]


# --- guarded keys -----------------------------------------------------------------------------


def _widens_allowed(entry: str, is_directory: Callable[[str], bool] | None) -> bool:
    """An allowed entry naming a directory allows everything below it, unverified: Gramine
    matches allowed files by path prefix, with or without a trailing '/'
    (libos/src/fs/chroot/allowed.c)."""
    if entry.endswith("/") or entry in ("file:", "dev:"):
        return True
    if is_directory is not None and entry.startswith("file:/"):
        return is_directory(entry[len("file:") :])
    return False


def guarded_overrides(
    overrides: dict, kind: str, *, is_directory: Callable[[str], bool] | None = None
) -> list[Guarded]:
    """The recipe's keys that need a flag, in the recipe's (sorted) key order.

    ``is_directory`` (an in-image path → bool) lets an allowed entry without a trailing '/'
    that names a directory in the image count as a tree too.
    """
    out = []
    for path, value in sorted(_leaves(overrides)):
        key = dotted(path)
        if any(part.startswith("insecure__") for part in path):
            out.append(
                Guarded(
                    key,
                    value,
                    INSECURE_FLAG,
                    "insecure__ keys turn off a "
                    "protection of Gramine (Documentation/manifest-syntax.rst)",
                )
            )
        elif path == ("sgx", "debug"):
            out.append(
                Guarded(
                    key,
                    value,
                    INSECURE_FLAG,
                    "a debug enclave's memory can be "
                    "read by the host; the recipe's field for it is enclave.debug",
                )
            )
        elif path == ("sgx", "file_check_policy") and value == "allow_all_but_log":
            out.append(
                Guarded(
                    key,
                    value,
                    INSECURE_FLAG,
                    "the enclave may then open any file unverified, with only a log line",
                )
            )
        elif path == ("sgx", "allowed_files"):
            for entry in value:
                if _widens_allowed(entry, is_directory):
                    out.append(
                        Guarded(
                            key,
                            entry,
                            INSECURE_FLAG,
                            "it allows a whole directory "
                            "tree unverified (Gramine matches allowed files by path "
                            "prefix); allow files, or use files.encrypted",
                        )
                    )
        elif path == ("sgx", "use_exinfo") and value is False and kind in JVM_KINDS:
            out.append(
                Guarded(
                    key,
                    value,
                    JVM_EXINFO_FLAG,
                    "the JVM takes deliberate page "
                    "faults (safepoint polls, implicit null checks) and Gramine 1.9 "
                    "ends the enclave at the first one without EXINFO "
                    "(pal/src/host/linux-sgx/pal_exception.c)",
                )
            )
    return out


# Variables that choose what code a process loads: a host value could load a library, a Java
# agent or Python modules of its choosing (from an allowed or encrypted path the enclave
# trusts less than its trusted files) or change the loader's behaviour.
LOADER_ENV = frozenset(
    {
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "LD_BIND_NOW",
        "LD_DEBUG",
        "LD_PROFILE",
        "GLIBC_TUNABLES",
        "MALLOC_ARENA_MAX",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "CLASSPATH",
        "JAVA_HOME",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONSAFEPATH",
        "PYTHONINSPECT",
        "PYTHONNOUSERSITE",
        "PYTHONEXECUTABLE",
        "PYTHONPLATLIBDIR",
        "PYSPARK_PYTHON",
        "PYSPARK_DRIVER_PYTHON",
        "PYSPARK_SUBMIT_ARGS",
        "SPARK_HOME",
        "SPARK_CONF_DIR",
        "SPARK_SUBMIT_OPTS",
        "HADOOP_CONF_DIR",
        "FLINK_HOME",
        "FLINK_CONF_DIR",
        "FLINK_ENV_JAVA_OPTS",
        "FLINK_PLUGINS_DIR",
    }
)


def loads_code(name: str) -> bool:
    """Whether the environment variable ``name`` decides what code gets loaded (LOADER_ENV, or
    any LD_* read by glibc's ld.so)."""
    return name in LOADER_ENV or name.startswith("LD_")


def guarded_recipe_fields(allowed: list[str], passthrough_env: list[str]) -> list[Guarded]:
    """Recipe fields (not manifest: keys) that need --allow-insecure-manifest."""
    out = []
    for path in allowed:
        if covers_whole_filesystem(f"file:{path}"):
            out.append(
                Guarded(
                    "files.allowed",
                    path,
                    INSECURE_FLAG,
                    "it lets the enclave read "
                    "every file of the host's mounts unverified; list the files or "
                    "directories the app reads, or use files.encrypted",
                )
            )
    for name in passthrough_env:
        if loads_code(name):
            out.append(
                Guarded(
                    "app.passthrough_env",
                    name,
                    INSECURE_FLAG,
                    f"{name} decides what "
                    "code the process loads, and the host would choose it; set it "
                    "in app.env (measured) instead",
                )
            )
    return out


def check_guarded(
    overrides: dict,
    kind: str,
    options: ManifestOptions,
    *,
    is_directory: Callable[[str], bool] | None = None,
    fields: list[Guarded] = (),
) -> list[str]:
    """Warning lines for the guarded keys (and recipe ``fields``, from guarded_recipe_fields)
    the flags allow; ManifestError for the first one they do not."""
    allowed = {
        INSECURE_FLAG: options.allow_insecure_manifest,
        JVM_EXINFO_FLAG: options.allow_jvm_without_exinfo,
    }
    warnings = []
    items = [(item.key, item) for item in fields]
    items += [
        (f"manifest.{item.key}", item)
        for item in guarded_overrides(overrides, kind, is_directory=is_directory)
    ]
    for key, item in items:
        if not allowed[item.flag]:
            raise ManifestError(
                f"{key}: {toml_literal(item.value)} is refused without {item.flag}: {item.reason}"
            )
        label = "INSECURE" if item.flag == INSECURE_FLAG else "JVM WITHOUT EXINFO"
        warnings.append(
            f"{label}: {key} = {toml_literal(item.value)} from the recipe ({item.flag})"
        )
    return warnings


# --- merging ----------------------------------------------------------------------------------


def merge_overrides(manifest: dict, overrides: dict) -> dict:
    """A copy of the template's manifest with the recipe's keys: the lists in APPENDED get the
    recipe's entries after the template's, tables merge key by key, anything else replaces."""
    merged = copy.deepcopy(manifest)
    _merge(merged, overrides, ())
    return merged


def _merge(target: dict, overrides: dict, path: tuple) -> None:
    for key, value in overrides.items():
        here = path + (key,)
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value, here)
        elif here in APPENDED and isinstance(current, list):
            current.extend(copy.deepcopy(value))
        else:
            target[key] = copy.deepcopy(value)
