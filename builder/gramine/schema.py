"""Which manifest keys Gramine 1.9 accepts, and of what type.

Gramine's ``gramine-manifest --check`` (graminelibos/manifest_check.py, a voluptuous schema with
PREVENT_EXTRA) rejects unknown keys, so a manifest with one typo fails at build time on the
user's machine. We check the same rules before we sign, from this table (written from
Gramine 1.9's Documentation/manifest-syntax.rst and the schema's key list).
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ManifestError
from ..units import format_gramine_size
from ..versions import DEFAULT_GRAMINE_VERSION, GramineVersion, gramine_version

STR, INT, BOOL = str, int, bool


class OneOf:
    def __init__(self, *values: str) -> None:
        self.values = values


class ListOf:
    def __init__(self, item: Any) -> None:
        self.item = item


class DictOf:
    """A table whose keys are free-form (env names, key names) with values of one shape."""

    def __init__(self, value: Any) -> None:
        self.value = value


class AnyOf:
    def __init__(self, *shapes: Any) -> None:
        self.shapes = shapes


ANY = object()

_MOUNT = {
    "type": OneOf("chroot", "encrypted", "tmpfs", "untrusted_shm"),
    "path": STR,
    "uri": STR,
    "key_name": STR,
    "enable_recovery": BOOL,
}
_FEATURE3 = OneOf("unspecified", "disabled", "required")
_FEATURE2 = OneOf("disabled", "required")

GRAMINE_1_9: dict[str, Any] = {
    "fs": {
        "mounts": ListOf(_MOUNT),
        "root": {"type": STR, "uri": STR},
        "start_dir": STR,
        "insecure__keys": DictOf(STR),
    },
    "libos": {"entrypoint": STR, "check_invalid_pointers": BOOL},
    "loader": {
        "entrypoint": {"uri": STR, "sha256": STR},
        "argv": ListOf(STR),
        "argv_src_file": STR,
        "env": DictOf(AnyOf(STR, {"value": STR}, {"passthrough": BOOL})),
        "env_src_file": STR,
        "gid": INT,
        "uid": INT,
        "insecure__use_cmdline_argv": BOOL,
        "insecure__use_host_env": BOOL,
        "insecure__disable_aslr": BOOL,
        "log_file": STR,
        "log_level": OneOf("none", "error", "warning", "debug", "trace", "all"),
    },
    "sgx": {
        "allowed_files": ListOf(STR),
        "cpu_features": {
            "avx": _FEATURE3,
            "avx512": _FEATURE3,
            "amx": _FEATURE3,
            "mpx": _FEATURE2,
            "pkru": _FEATURE2,
        },
        "debug": BOOL,
        "edmm_enable": BOOL,
        "enable_stats": BOOL,
        "enclave_size": STR,
        "file_check_policy": OneOf("strict", "allow_all_but_log"),
        "insecure__allow_memfaults_without_exinfo": BOOL,
        "insecure__rpc_thread_num": INT,
        "isvprodid": INT,
        "isvsvn": INT,
        "max_threads": INT,
        "preheat_enclave": BOOL,
        "profile": {
            "enable": OneOf("none", "main", "all"),
            "mode": OneOf("aex", "ocall_inner", "ocall_outer"),
            "with_stack": BOOL,
            "frequency": INT,
        },
        "remote_attestation": OneOf("none", "dcap"),
        "seal_key": {"flags_mask": STR, "xfrm_mask": STR, "misc_mask": STR},
        "trusted_files": ListOf(AnyOf(STR, {"uri": STR, "sha256": STR})),
        "use_exinfo": BOOL,
        "vtune_profile": BOOL,
    },
    "sys": {
        "allowed_ioctls": ListOf({"request_code": INT, "struct": STR}),
        "brk": {"max_size": STR},
        "disallow_subprocesses": BOOL,
        "enable_extra_runtime_domain_names_conf": BOOL,
        "enable_sigterm_injection": BOOL,
        "experimental__enable_flock": BOOL,
        "insecure__allow_eventfd": BOOL,
        "ioctl_structs": DictOf(ANY),
        "debug__mock_syscalls": ListOf({"name": STR, "return": INT}),
        "stack": {"size": STR},
        "fds": {"limit": INT},
    },
}

# The schemas by name (versions.py's GramineVersion.schema).
SCHEMAS: dict[str, dict[str, Any]] = {"gramine-1.9": GRAMINE_1_9}

# Required keys (graminelibos' schema): a manifest without them is rejected.
REQUIRED = [
    ("fs",),
    ("fs", "mounts"),
    ("libos",),
    ("libos", "entrypoint"),
    ("loader",),
    ("loader", "entrypoint"),
    ("loader", "entrypoint", "uri"),
]


def _matches(value: Any, shape: Any, version: str) -> bool:
    try:
        _check(value, shape, (), version)
        return True
    except ManifestError:
        return False


def _name(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out or "(top level)"


def _check(value: Any, shape: Any, path: tuple, version: str = DEFAULT_GRAMINE_VERSION) -> None:
    """ManifestError for the first part of ``value`` that ``shape`` (Gramine ``version``'s
    schema, or a part of it) refuses."""
    if shape is ANY:
        return
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise ManifestError(f"{_name(path)}: expected a table")
        for key, item in value.items():
            if key not in shape:
                raise ManifestError(
                    f"{_name(path + (key,))}: Gramine {version} does not accept "
                    "this key (its manifest check rejects unknown keys)"
                )
            _check(item, shape[key], path + (key,), version)
        return
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            raise ManifestError(f"{_name(path)}: expected an array")
        for index, item in enumerate(value):
            _check(item, shape.item, path + (index,), version)
        return
    if isinstance(shape, DictOf):
        if not isinstance(value, dict):
            raise ManifestError(f"{_name(path)}: expected a table")
        for key, item in value.items():
            _check(item, shape.value, path + (key,), version)
        return
    if isinstance(shape, AnyOf):
        if not any(_matches(value, option, version) for option in shape.shapes):
            raise ManifestError(f"{_name(path)}: value {value!r} has the wrong shape")
        return
    if isinstance(shape, OneOf):
        if value not in shape.values:
            raise ManifestError(
                f"{_name(path)}: must be one of {', '.join(shape.values)}, got {value!r}"
            )
        return
    if shape is INT and isinstance(value, bool) or not isinstance(value, shape):
        raise ManifestError(f"{_name(path)}: expected {shape.__name__}, got {type(value).__name__}")


def schema_of(version: str = DEFAULT_GRAMINE_VERSION) -> dict[str, Any]:
    """The manifest keys Gramine ``version`` accepts."""
    return SCHEMAS[gramine_version(version).schema]


def check_manifest(manifest: dict, version: str = DEFAULT_GRAMINE_VERSION) -> None:
    """Raise ManifestError naming the first key Gramine ``version`` would reject."""
    _check(manifest, schema_of(version), (), version)
    for path in REQUIRED:
        node: Any = manifest
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise ManifestError(f"{_name(path)}: required by Gramine {version} but missing")
            node = node[part]
    for index, mount in enumerate(manifest["fs"]["mounts"]):
        kind = mount.get("type", "chroot")
        if kind != "tmpfs" and "uri" not in mount:
            raise ManifestError(f"fs.mounts[{index}].uri: required for a {kind} mount")
        if "path" not in mount:
            raise ManifestError(f"fs.mounts[{index}].path: required")


def apply_gramine_defaults(
    manifest: dict[str, Any], *, source: str = "manifest", version: str = DEFAULT_GRAMINE_VERSION
) -> dict[str, Any]:
    """A copy with the keys Gramine's ``Manifest`` constructor inserts (Gramine 1.9
    ``python/graminelibos/manifest.py``, ``Manifest.__init__``).

    These end up in the .manifest.sgx and so in MRENCLAVE; order matters for the bytes, so the
    keys are added with ``setdefault`` in Gramine's order. ``loader.entrypoint.sha256`` is filled
    in later by :func:`finalize_manifest` (it needs the filesystem).
    """
    defaults: GramineVersion = gramine_version(version)
    manifest = copy.deepcopy(manifest)
    sgx = manifest.setdefault("sgx", {})
    if not isinstance(sgx, dict):
        raise ManifestError(f"{source}: sgx must be a table; write sgx.<key> = ... settings")
    sgx.setdefault("trusted_files", [])
    sgx.setdefault("max_threads", defaults.default_max_threads)
    sgx.setdefault("isvprodid", 0)
    sgx.setdefault("isvsvn", 0)
    sgx.setdefault("remote_attestation", "none")
    sgx.setdefault("debug", False)
    sgx.setdefault("enable_stats", False)
    sgx.setdefault("edmm_enable", False)
    sgx.setdefault(
        "enclave_size",
        format_gramine_size(defaults.enclave_size_default(sgx["edmm_enable"] is True)),
    )
    sgx.setdefault("use_exinfo", False)
    features = sgx.setdefault("cpu_features", {})
    if not isinstance(features, dict):
        raise ManifestError(
            f'{source}: sgx.cpu_features must be a table such as {{ avx = "required" }}'
        )
    features.setdefault("avx", "unspecified")
    features.setdefault("avx512", "unspecified")
    features.setdefault("amx", "unspecified")
    features.setdefault("mpx", "disabled")
    features.setdefault("pkru", "disabled")

    if not isinstance(sgx["trusted_files"], list):
        raise ManifestError(
            f'{source}: sgx.trusted_files must be a list of "file:..." URIs or '
            "{uri, sha256} tables (the sgx.trusted_files.<name> syntax was removed "
            "in Gramine 1.2)"
        )
    for entry in sgx["trusted_files"]:
        if not (isinstance(entry, str) or isinstance(entry, dict) and "uri" in entry):
            raise ManifestError(
                f"{source}: sgx.trusted_files: unknown entry format {entry!r}; "
                'write "file:/path" or { uri = "file:/path", sha256 = "..." }'
            )

    loader = manifest.setdefault("loader", {})
    if not isinstance(loader, dict):
        raise ManifestError(f"{source}: loader must be a table")
    entrypoint = loader.setdefault("entrypoint", {})
    if isinstance(entrypoint, str):
        raise ManifestError(
            f"{source}: loader.entrypoint = {entrypoint!r}: the string form was "
            'removed in Gramine 1.9; write loader.entrypoint.uri = "file:..." '
            "(or leave it out for Gramine's libsysdb.so)"
        )
    if not isinstance(entrypoint, dict):
        raise ManifestError(f"{source}: loader.entrypoint must be a table with uri and sha256")
    entrypoint.setdefault("uri", f"file:{defaults.prefix}{defaults.libsysdb}")
    return manifest
