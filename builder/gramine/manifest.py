"""Render the Gramine 1.9 manifest for a recipe against an image filesystem.

recipe + plan + image filesystem ──Jinja2 (manifest_templates/gramine/)──▶ TOML
──tomllib──▶ dict ──expand and hash sgx.trusted_files──▶ Gramine's defaults ──▶ key check
──tomli_w──▶ the manifest text. The text is what gets measured, so the same inputs always give
the same bytes: no timestamps, no host paths, sorted directory walks.
"""

from __future__ import annotations

import posixpath
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import tomli_w

from ..errors import ManifestError
from ..image.programs import find_program, path_env, script_interpreters
from ..image.rootfs import RootFS, RootFSError, resolve, stat_followed
from ..plan import Plan
from ..plan.launch import ENCLAVE_HOSTS, SUPPORT_TRUSTED, launch_argv
from ..recipe import Recipe
from ..recipe.model import SCRATCH_KEY_NAME
from ..versions import gramine_version
from .overrides import (
    ManifestOptions,
    check_guarded,
    guarded_recipe_fields,
    merge_overrides,
    recipe_manifest_keys,
    toml_string,
)
from .schema import apply_gramine_defaults, check_manifest
from .trusted import TrustedFile, expand_trusted_file_list, tree_entries_without

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "manifest_templates"


def _template_root() -> Path:
    """manifest_templates/ in a checkout, or ppml_build/manifest_templates when installed."""
    if TEMPLATES_DIR.is_dir():
        return TEMPLATES_DIR
    from importlib.resources import files

    return Path(str(files("ppml_build.manifest_templates")))


def toml_value(value: Any) -> str:
    """A TOML literal for a template: strings, numbers, booleans, arrays, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
            + " }"
        )
    raise ManifestError(f"cannot write {type(value).__name__} into a manifest template")


@dataclass(frozen=True)
class RenderedManifest:
    text: str  # exactly what goes into APP.manifest (and is measured after signing)
    manifest: dict
    trusted_files: list[TrustedFile]
    libpal_path: str  # in-image path of the LibOS's libpal.so, for measuring
    recipe_keys: tuple[str, ...] = ()  # dotted keys the recipe's manifest: set, sorted
    warnings: tuple[str, ...] = ()  # guarded manifest: keys a CLI flag let through

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")


def _python_files(fs: RootFS, python: str) -> list[str]:
    """Interpreter plus its stdlib and dist-packages directories that exist in the image."""
    files = []
    entry = stat_followed(fs, python)
    if entry is not None and entry.kind == "file":
        files.append(resolve(fs, python))
    # A virtualenv interpreter (bin/python3 next to ../pyvenv.cfg): its site-packages too.
    venv = posixpath.dirname(posixpath.dirname(python))
    if stat_followed(fs, posixpath.join(venv, "pyvenv.cfg")) is not None:
        files.append(venv.rstrip("/") + "/")
    for base in ("/usr/lib", "/usr/local/lib"):
        try:
            names = sorted(fs.listdir(resolve(fs, base)))
        except (OSError, RootFSError):
            continue
        for name in names:
            if name.startswith("python3"):
                full = posixpath.join(base, name)
                target = stat_followed(fs, full)
                if target is not None and target.kind == "dir":
                    files.append(full + "/")
    return files


# The multiarch library directory is trusted entry by entry, less two trees no enclave loads
# (655 entries in every bundled image, none opened by a bundled job, natively or under
# gramine-direct): Debian's essential perl (perl-base: maintainer scripts) and PAM modules
# (security: nothing logs in inside an enclave). glibc's iconv modules (gconv) stay: a JVM
# opens gconv-modules.cache. A recipe's files.trusted can still name what is left out.
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
MULTIARCH_LEFT_OUT = ("perl-base", "security")


def render_context(recipe: Recipe, plan: Plan, fs: RootFS) -> dict[str, Any]:
    version = gramine_version(recipe.libos.version)
    prefix = recipe.libos.prefix
    runtime = recipe.runtime
    launch = plan.launch
    search_path = path_env(recipe)
    ld_paths = ["/lib", MULTIARCH]
    if recipe.kind in ("java", "spark", "flink"):
        ld_paths += [f"{runtime.java_home}/lib/server", f"{runtime.java_home}/lib"]

    argv = launch_argv(plan.launch, fs)
    # Gramine execs the file itself: the entrypoint is the resolved path.
    entrypoint = resolve(fs, find_program(fs, argv[0], search_path, "app.command[0]"))
    scripts = [entrypoint] + [source for source in launch.file_mounts.values()]
    # Gramine opens a script's interpreter by the path its '#!' line names (e.g. /bin/sh,
    # a link to dash) and checks sgx.trusted_files against that path, unresolved: trust it as
    # named (hashed through the link) and as resolved.
    interpreter_files = []
    for script in scripts:
        for name in script_interpreters(fs, script):
            found = find_program(fs, name, search_path, f"the '#!' line of {script}")
            interpreter_files += sorted({found, resolve(fs, found)})

    present = lambda path: stat_followed(fs, path) is not None  # noqa: E731
    mounts: list[dict[str, str]] = []
    if present(ENCLAVE_HOSTS):
        mounts.append({"path": "/etc/hosts", "uri": f"file:{ENCLAVE_HOSTS}"})
    for path, source in launch.file_mounts.items():
        if not present(source):
            raise ManifestError(
                f"{source}: not in the image; ppml-build's support files are "
                "added by `ppml-build build`"
            )
        mounts.append({"path": path, "uri": f"file:{source}"})
    for path in launch.tmpfs:
        mounts.append({"type": "tmpfs", "path": path})
    for path in launch.scratch:
        entry = stat_followed(fs, path)
        if entry is None or entry.kind != "dir":
            raise ManifestError(
                f"files.scratch: {path} is not a directory in the image; "
                "create it in the base image or the build stage"
            )
        mounts.append(
            {"type": "encrypted", "path": path, "uri": f"file:{path}", "key_name": SCRATCH_KEY_NAME}
        )
    for enc in recipe.files.encrypted:
        mounts.append(
            {"type": "encrypted", "path": enc.path, "uri": enc.uri, "key_name": enc.key_name}
        )

    uses_python = recipe.uses_python
    return {
        "recipe": recipe,
        "plan": plan,
        "launch": launch,
        "runtime": runtime,
        "gramine": {
            "prefix": prefix,
            "libpal": prefix + version.libpal,
            "libsysdb": prefix + version.libsysdb,
            "runtime_glibc": prefix + version.runtime_glibc,
        },
        "entrypoint": entrypoint,
        "argv": argv,
        "python_main": posixpath.basename(argv[0]).startswith("python"),
        "path_env": search_path,
        "ld_library_path": ":".join(ld_paths),
        "mounts": mounts,
        "interpreter_files": interpreter_files,
        "support_files": [path for path in SUPPORT_TRUSTED if present(path)],
        "uses_python": uses_python,
        "python_files": _python_files(fs, runtime.python) if uses_python else [],
        "present": present,
        "multiarch_entries": tree_entries_without(fs, MULTIARCH, MULTIARCH_LEFT_OUT),
    }


# Gramine's secret-provisioning client, at the Debian package's path (tools/sgx/ra-tls/meson.build
# installs it in the libdir; its dependencies, Gramine's mbedTLS, sit beside it).
SECRET_PROV_ATTEST = f"{MULTIARCH}/libsecret_prov_attest.so"


def _apply_key_sources(
    manifest: dict, recipe: Recipe, fs: RootFS, options: ManifestOptions
) -> list[str]:
    """Where files.keys says each encrypted mount's key comes from, in the manifest.

    ``secret-provisioning`` sets what Gramine 1.9's CI-Examples/ra-tls-secret-prov/secret_prov_pf
    manifest sets (LD_PRELOAD of libsecret_prov_attest.so and the SECRET_PROVISION_* variables,
    Documentation/attestation.rst): before main() the library attests, receives a 16-byte key
    and writes it to /dev/attestation/keys/<name>, then unsets SECRET_PROVISION_CONSTRUCTOR so
    the app's child processes do not provision again. ``insecure-test-key`` writes
    fs.insecure__keys (tests only). ``app`` sets nothing: the app writes the key file itself.
    Returns warnings for what a CLI flag let through."""
    env = manifest["loader"].setdefault("env", {})
    warnings: list[str] = []
    test_keys = recipe.files.keys_from("insecure-test-key")
    if test_keys:
        name = next(iter(test_keys))
        if not options.allow_insecure_manifest:
            raise ManifestError(
                f"files.keys.{name}: source insecure-test-key writes the key into the manifest "
                "(fs.insecure__keys), readable by anyone with the image; for tests only, pass "
                "--allow-insecure-manifest, or use source secret-provisioning"
            )
        keys = manifest.setdefault("fs", {}).setdefault("insecure__keys", {})
        for key_name, key in test_keys.items():
            keys[key_name] = str(key.insecure_test_key).lower()
            warnings.append(
                f"INSECURE: files.keys.{key_name}: the key is in the manifest "
                "(fs.insecure__keys); tests only"
            )
    provisioned = recipe.files.provisioned_key
    config = recipe.secret_provisioning
    if provisioned and config is not None:
        for path, what, fix in (
            (
                SECRET_PROV_ATTEST,
                "Gramine's secret-provisioning library",
                "install Gramine with its RA-TLS tools (the Debian package has them)",
            ),
            (
                config.ca_chain,
                "secret_provisioning.ca_chain",
                "copy the CA certificate in with app.files",
            ),
        ):
            found = stat_followed(fs, path)
            if found is None or found.kind != "file":
                raise ManifestError(f"{what}: {path} is not in the image; {fix}")
        preload = env.get("LD_PRELOAD")
        if isinstance(preload, dict):
            raise ManifestError(
                "app.passthrough_env: LD_PRELOAD cannot come from the host when secret "
                "provisioning preloads its library"
            )
        env["LD_PRELOAD"] = ":".join(filter(None, [SECRET_PROV_ATTEST, preload]))
        env["SECRET_PROVISION_CONSTRUCTOR"] = "1"
        env["SECRET_PROVISION_SET_KEY"] = provisioned
        env["SECRET_PROVISION_CA_CHAIN_PATH"] = config.ca_chain
        if config.servers is not None:
            env["SECRET_PROVISION_SERVERS"] = ";".join(config.servers)
        else:  # the host names the server; the trusted CA chain decides whether to trust it
            env["SECRET_PROVISION_SERVERS"] = {"passthrough": True}
    return warnings


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_template_root())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["toml"] = toml_value
    return env


def render_manifest(
    recipe: Recipe, plan: Plan, fs: RootFS, *, options: ManifestOptions = ManifestOptions()
) -> RenderedManifest:
    """The manifest text for ``recipe`` over the image filesystem ``fs``. Pure given ``fs``.

    ``options`` says which guarded keys of the recipe's ``manifest:`` the CLI allowed.
    """
    if recipe.libos.type != "gramine":
        raise ManifestError(
            f"libos.type {recipe.libos.type!r}: the Gramine renderer was asked for another LibOS"
        )
    context = render_context(recipe, plan, fs)
    template_name = f"gramine/{recipe.kind}.toml.j2"
    try:
        rendered = _environment().get_template(template_name).render(context)
    except jinja2.TemplateError as err:
        raise ManifestError(f"{template_name}: {err}") from None
    try:
        manifest = tomllib.loads(rendered)
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(
            f"{template_name} rendered invalid TOML ({err}); a recipe value "
            "may contain characters the template does not escape"
        ) from None

    # The recipe's own values: Python overlays them so a user's env wins over kind defaults.
    env = manifest["loader"].setdefault("env", {})
    for name, value in plan.extra_env.items():
        env[name] = value
    for name, value in recipe.app.env.items():
        if name not in plan.extra_env:
            env[name] = value
    for name in (*recipe.app.passthrough_env, *plan.launch.passthrough):
        env[name] = {"passthrough": True}
    # Only the enclave gets these (launch.py): the image's ENV is run-native's.
    env.update(plan.launch.env)
    if plan.launch.java_options:
        env["JAVA_TOOL_OPTIONS"] = " ".join(
            filter(None, [env.get("JAVA_TOOL_OPTIONS", ""), *plan.launch.java_options])
        )

    key_warnings = _apply_key_sources(manifest, recipe, fs, options)

    # The recipe's manifest: keys (manifest_overrides.py), merged before sgx.trusted_files is
    # expanded so the entries they add are hashed like the others.
    warnings = check_guarded(
        recipe.manifest,
        recipe.kind,
        options,
        is_directory=lambda path: getattr(stat_followed(fs, path), "kind", None) == "dir",
        fields=guarded_recipe_fields(recipe.files.allowed, recipe.app.passthrough_env),
    )
    manifest = merge_overrides(manifest, recipe.manifest)
    warnings = [*key_warnings, *warnings]

    sgx = manifest["sgx"]
    entries = list(sgx.get("trusted_files", []))
    entries += [f"file:{path}" for path in recipe.files.trusted]
    if recipe.secret_provisioning is not None:  # the host must not swap the server's CA
        entries.append(f"file:{recipe.secret_provisioning.ca_chain}")
    entries += [f"file:{item.dest}" for item in recipe.app.files]
    trusted = expand_trusted_file_list(entries, fs)
    sgx["trusted_files"] = [tf.to_manifest() for tf in trusted]
    sgx["allowed_files"] = list(sgx.get("allowed_files", [])) + [
        f"file:{path}" for path in (*recipe.files.allowed, *plan.launch.allowed_files)
    ]

    libsysdb = context["gramine"]["libsysdb"]
    libsysdb_entry = stat_followed(fs, libsysdb)
    if libsysdb_entry is None or libsysdb_entry.kind != "file":
        raise ManifestError(
            f"libos.prefix: {libsysdb} is not in the image; is Gramine "
            f"{recipe.libos.version} installed there? (set libos.prefix)"
        )
    real_libsysdb = resolve(fs, libsysdb)
    manifest["loader"]["entrypoint"]["sha256"] = fs.sha256_many([real_libsysdb])[real_libsysdb]

    manifest = apply_gramine_defaults(manifest, source=recipe.name, version=recipe.libos.version)
    check_manifest(manifest, recipe.libos.version)
    text = tomli_w.dumps(manifest)
    if "\0" in text:
        raise ManifestError(
            "the manifest would contain a NUL byte (Gramine measures up to the "
            "first NUL); remove it from the recipe"
        )
    return RenderedManifest(
        text,
        manifest,
        trusted,
        context["gramine"]["libpal"],
        tuple(recipe_manifest_keys(recipe.manifest)),
        tuple(warnings),
    )
