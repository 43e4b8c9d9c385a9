"""The recipe format (``apiVersion: ppml-build/v1``) as pydantic models, field by field.

One model per recipe section, each with its validators beside its fields, so that the format is
read in one place; ``load.py`` turns YAML into these. Longer than most for that reason:
splitting the sections apart would scatter one document's rules.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from ..gramine.overrides import OverrideError, normalise_overrides
from ..sign.constants import gramine_constants
from ..units import MiB, Size, format_gramine_size, is_power_of_two, parse_size, parse_spark_size
from ..versions import DEFAULT_GRAMINE_PREFIX, DEFAULT_GRAMINE_VERSION


class FieldError(ValueError):
    """A check across fields that names the one to fix: ``where`` is its path in the recipe
    (load.py turns it into line:column)."""

    def __init__(self, where: tuple, message: str) -> None:
        super().__init__(message)
        self.where = tuple(where)


API_VERSION = "ppml-build/v1"

# Variables read as a list of words (the JVM's option variables, PySpark's submit arguments):
# split with shlex by plan.py and jvm_children.py, so their quotes must balance.
WORD_LIST_ENV = frozenset(
    {
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "PYSPARK_SUBMIT_ARGS",
        "SPARK_SUBMIT_OPTS",
        "FLINK_ENV_JAVA_OPTS",
    }
)
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _image_path(value: str, *, directory: bool | None = None) -> str:
    """An absolute, normalised in-image path; '..' is refused, not silently folded."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path inside the image, e.g. /opt/app/")
    if any(part == ".." for part in value.split("/")):
        raise ValueError(f"{value!r} must not contain '..'")
    if "\0" in value or "\n" in value:
        raise ValueError(f"{value!r} contains a NUL or newline")
    if directory is True and not value.endswith("/"):
        raise ValueError(f"{value!r} is a directory entry and must end with '/'")
    normal = "/" + posixpath.normpath(value).lstrip("/")  # normpath keeps a leading "//"
    return normal + "/" if value.endswith("/") and normal != "/" else normal


class BaseImage(_Strict):
    image: str = Field(min_length=1, description="registry reference of the base image")
    digest: str | None = Field(default=None, description="pin: sha256:<64 hex>")

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _DIGEST_RE.match(value):
            raise ValueError("must be sha256: followed by 64 lowercase hex digits")
        return value


class LibOS(_Strict):
    type: Literal["gramine", "occlum"] = "gramine"
    version: str = DEFAULT_GRAMINE_VERSION
    prefix: str = DEFAULT_GRAMINE_PREFIX

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = _image_path(value)
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _known_version(self) -> "LibOS":
        from ..versions import LIBOS_VERSIONS

        known = LIBOS_VERSIONS.get(self.type, {})
        if self.version not in known:
            raise ValueError(
                f"{self.type} {self.version!r} is not supported; use one of: "
                + ", ".join(sorted(known))
            )
        return self


def _recipe_relative(value: str) -> str:
    if value.startswith("/") or any(p == ".." for p in Path(value).parts):
        raise ValueError(
            f"{value!r} must be a relative path inside the recipe's directory "
            "(no '..', no absolute path)"
        )
    return value


class AppFile(_Strict):
    """A file or directory of the recipe copied into the image (and trusted)."""

    src: str = Field(min_length=1, description="path on the host, relative to the recipe")
    dest: str = Field(description="absolute path in the image")

    @field_validator("src")
    @classmethod
    def _src(cls, value: str) -> str:
        return _recipe_relative(value)

    @field_validator("dest")
    @classmethod
    def _dest(cls, value: str) -> str:
        return _image_path(value)


class App(_Strict):
    files: list[AppFile] = Field(default_factory=list)
    workdir: str = "/app"
    command: list[str] = Field(min_length=1, description="argv; becomes the trusted loader.argv")
    env: dict[str, str] = Field(default_factory=dict)
    passthrough_env: list[str] = Field(default_factory=list)
    insecure_host_argv: StrictBool = Field(
        default=False, description="take argv from the host at run time (INSECURE)"
    )

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        return _image_path(value)

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("the program (first element) must not be empty")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        for name in WORD_LIST_ENV & set(value):
            try:
                shlex.split(value[name])
            except ValueError as err:  # "No closing quotation", "No escaped character"
                raise ValueError(
                    f"{name}: {err}; the JVM and ppml-build split it into words "
                    "as a shell would, so balance the quotes"
                ) from None
        return value

    @field_validator("passthrough_env")
    @classmethod
    def _passthrough(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return value

    @model_validator(mode="after")
    def _no_double_env(self) -> "App":
        both = sorted(set(self.env) & set(self.passthrough_env))
        if both:
            raise ValueError(
                f"{', '.join(both)} is both set in app.env and passed through from "
                "the host; keep one"
            )
        return self


class Runtime(_Strict):
    """Where the runtimes live inside the base image (defaults: ppml-build's base images)."""

    java_home: str = "/usr/lib/jvm/java-17-openjdk-amd64"
    spark_home: str = "/opt/spark"
    flink_home: str = "/opt/flink"
    python: str = "/usr/bin/python3"

    @field_validator("java_home", "spark_home", "flink_home", "python")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _image_path(value).rstrip("/") or "/"


def _memory_size(value: Any, *, spark: bool = False) -> Size | None:
    """A memory size as written ("2g", "1728m", 4096), parsed once: its bytes as the runtime
    that reads it counts them (``spark``: a bare number is MiB), and its text as written."""
    if value is None:
        return None
    size = parse_size(value)
    if size == 0:
        raise ValueError(
            "a size of 0 leaves it to a default the enclave cannot be sized "
            "for; give the size, e.g. 512m"
        )
    text = str(value)
    return Size(parse_spark_size(text) if spark else size, text)


# A JVM flag's or Flink's size (a bare number is bytes), and a Spark setting's (MiB).
MemorySize = Annotated[Size | None, PlainValidator(_memory_size)]
SparkMemorySize = Annotated[Size | None, PlainValidator(partial(_memory_size, spark=True))]


class SparkResources(_Strict):
    driver_memory: SparkMemorySize = Field(default=None, alias="spark.driver.memory")
    executor_memory: SparkMemorySize = Field(default=None, alias="spark.executor.memory")
    executor_cores: StrictInt | None = Field(
        default=None, alias="spark.executor.cores", ge=1, le=1024
    )
    offheap_size: SparkMemorySize = Field(default=None, alias="spark.memory.offHeap.size")
    driver_cores: StrictInt | None = Field(default=None, alias="spark.driver.cores", ge=1, le=1024)


class FlinkResources(_Strict):
    process_size: MemorySize = Field(default=None, alias="taskmanager.memory.process.size")
    jobmanager_process_size: MemorySize = Field(
        default=None, alias="jobmanager.memory.process.size"
    )
    task_slots: StrictInt | None = Field(
        default=None, alias="taskmanager.numberOfTaskSlots", ge=1, le=1024
    )


class JvmResources(_Strict):
    heap: MemorySize = None
    metaspace: MemorySize = None
    direct_memory: MemorySize = None
    code_cache: MemorySize = None
    thread_stack: MemorySize = None


class Resources(_Strict):
    cpus: StrictInt | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="CPUs the JVM may use (pinned via ActiveProcessorCount)",
    )
    jvm: JvmResources = Field(default_factory=JvmResources)
    spark: SparkResources = Field(default_factory=SparkResources)
    flink: FlinkResources = Field(default_factory=FlinkResources)
    app_threads: StrictInt = Field(
        default=0, ge=0, le=4096, description="extra threads the application itself starts"
    )


def _enclave_size(value: Any) -> Size | None:
    """``auto`` (None: the plan sizes it) or a power of two within Gramine's limits, written
    back in Gramine's spelling for messages ("16g" is "16G")."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("must be 'auto' or a size such as 16G")
    try:
        size = parse_size(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a size; write 'auto' or e.g. 16G") from None
    if not is_power_of_two(size):
        raise ValueError(f"must be a power of two, e.g. 16G (got {value})")
    # The field cannot see libos: the default Gramine's limits hold for every recipe.
    limit = gramine_constants(DEFAULT_GRAMINE_VERSION).max_enclave_size
    if size > limit:
        raise ValueError(f"must be at most {format_gramine_size(limit)} (Gramine's limit)")
    if size < 1 * MiB:
        raise ValueError("must be at least 1M; write e.g. 256M")
    return Size(size, format_gramine_size(size))


class Enclave(_Strict):
    size: Annotated[Size | None, PlainValidator(_enclave_size)] = None  # None: auto
    max_threads: int | Literal["auto"] = "auto"
    # Strict: a wrong type here changes what the enclave is (debug: "yes" is not a yes).
    edmm: StrictBool = False
    debug: StrictBool = False
    isv_prod_id: StrictInt = Field(default=0, ge=0, le=0xFFFF)
    isv_svn: StrictInt = Field(default=0, ge=0, le=0xFFFF)
    remote_attestation: Literal["dcap", "none"] = "dcap"

    @field_validator("max_threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        if value == "auto":
            return value
        # As for size: the default Gramine's limit.
        limit = gramine_constants(DEFAULT_GRAMINE_VERSION).max_threads_limit
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be 'auto' or a whole number from 1 to {limit}")
        if not 1 <= value <= limit:
            raise ValueError(f"must be from 1 to {limit} (Gramine's limit), got {value}")
        return value

    @property
    def size_bytes(self) -> int | None:
        """The explicit enclave size in bytes; None for auto."""
        return None if self.size is None else self.size.bytes


class EncryptedMount(_Strict):
    path: str
    uri: str
    key_name: str = Field(default="default", min_length=1)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _image_path(value)

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not value.startswith("file:/"):
            raise ValueError("must be a file: URI with an absolute path, e.g. file:/data/enc")
        _image_path(value[len("file:") :])
        return value


# files.scratch mounts are keyed with this name; ppml-launch.py writes
# /dev/attestation/keys/<this> afresh for every run (plan/support/bin/ppml-launch.py).
SCRATCH_KEY_NAME = "ppml-scratch"
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEX_KEY_RE = re.compile(r"^[0-9a-fA-F]{32}$")


class EncryptionKey(_Strict):
    """Where an encrypted mount's key comes from before the app opens its files.

    ``secret-provisioning``: Gramine's RA-TLS secret provisioning puts it in
    /dev/attestation/keys/<name> once the enclave has attested (secret_prov_attest.c);
    ``app``: the app writes that file itself; ``insecure-test-key``: the key is written into the
    manifest (``fs.insecure__keys``), for tests only, behind --allow-insecure-manifest."""

    source: Literal["secret-provisioning", "app", "insecure-test-key"]
    insecure_test_key: str | None = Field(
        default=None, description="32 hex digits; only with source insecure-test-key"
    )

    @field_validator("insecure_test_key")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX_KEY_RE.match(value):
            raise ValueError("must be 32 hex digits (a 16-byte AES-GCM key)")
        return value

    @model_validator(mode="after")
    def _test_key_only_for_tests(self) -> "EncryptionKey":
        if (self.source == "insecure-test-key") != (self.insecure_test_key is not None):
            raise ValueError("insecure_test_key goes with source insecure-test-key, and only there")
        return self


def is_host_port(server: str) -> bool:
    """``host:port`` as SECRET_PROVISION_SERVERS lists them (';'-separated, so none inside)."""
    host, _, port = server.rpartition(":")
    return (
        bool(host)
        and port.isdigit()
        and 0 < int(port) < 65536
        and not any(ch in server for ch in ",; \t")
    )


class SecretProvisioning(_Strict):
    """Gramine's secret_prov_attest.so, preloaded: attests to a provisioning server before the
    app starts and receives the key (Documentation/attestation.rst, "Secret Provisioning")."""

    servers: list[str] | None = Field(
        default=None,
        description="host:port of the provisioning servers, fixed in the manifest; "
        "omit to let the host set SECRET_PROVISION_SERVERS at run time",
    )
    ca_chain: str = Field(
        description="in-image path of the CA certificate(s) the server's certificate must "
        "chain to (trusted, so the host cannot swap the server)"
    )

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("list at least one host:port, or leave servers out")
        for server in value:
            if not is_host_port(server):
                raise ValueError(f"{server!r}: expected host:port, e.g. kms.example.com:4433")
        return value

    @field_validator("ca_chain")
    @classmethod
    def _ca(cls, value: str) -> str:
        return _image_path(value)


class Files(_Strict):
    trusted: list[str] = Field(default_factory=list)
    allowed: list[str] = Field(default_factory=list)
    encrypted: list[EncryptedMount] = Field(default_factory=list)
    # Where each key_name of ``encrypted`` comes from.
    keys: dict[str, EncryptionKey] = Field(default_factory=dict)
    # In-enclave memory, one per process (Gramine gives each process its own tmpfs).
    tmpfs: list[str] = Field(default_factory=list)
    # Directories the app's processes share (PySpark's Python and JVM): encrypted mounts over
    # the image's directories, keyed afresh for every run of the enclave.
    scratch: list[str] = Field(default_factory=list)

    @field_validator("trusted", "allowed", "tmpfs", "scratch")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [_image_path(item) for item in value]

    @field_validator("keys")
    @classmethod
    def _key_names(cls, value: dict[str, EncryptionKey]) -> dict[str, EncryptionKey]:
        for name in value:
            if not _KEY_NAME_RE.match(name):
                raise ValueError(f"{name!r}: key names are letters, digits, '.', '_', '-'")
            if name == SCRATCH_KEY_NAME:
                raise ValueError(f"{name!r} is ppml-build's own (files.scratch); pick another")
        provisioned = [n for n, key in value.items() if key.source == "secret-provisioning"]
        if len(provisioned) > 1:
            raise ValueError(
                f"{', '.join(provisioned)}: Gramine's secret provisioning sets one key per "
                "enclave (SECRET_PROVISION_SET_KEY, tools/sgx/ra-tls/secret_prov_attest.c); "
                "use one key name for the provisioned mounts"
            )
        return value

    def keys_from(self, source: str) -> dict[str, EncryptionKey]:
        return {name: key for name, key in self.keys.items() if key.source == source}

    @property
    def provisioned_key(self) -> str | None:
        """The one key secret provisioning delivers (SECRET_PROVISION_SET_KEY), if any."""
        return next(iter(self.keys_from("secret-provisioning")), None)


_DEB_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")


class BuildSource(AppFile):
    """A file or directory of the recipe copied into the build stage (never the final image);
    same fields and checks as an app file, dest being a path in the build stage."""


class BuildOutput(_Strict):
    """What the build stage hands to the app image: a file, or a directory's contents.

    A directory is written with a trailing '/' on both sides (``/build/lib/`` → ``/app/lib/``),
    as ``COPY --from`` copies a directory's contents.
    """

    src: str = Field(description="absolute path in the build stage")
    dest: str = Field(description="absolute path in the app image (a trusted file)")

    @field_validator("src", "dest")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _image_path(value)

    @model_validator(mode="after")
    def _same_kind(self) -> "BuildOutput":
        if self.src.endswith("/") != self.dest.endswith("/"):
            raise ValueError(
                f"src {self.src!r} and dest {self.dest!r} must both end with '/' "
                "(a directory's contents) or neither (one file)"
            )
        if self.dest == "/":
            raise ValueError("dest must not be the image root; name a directory, e.g. /app/lib/")
        return self

    @property
    def is_dir(self) -> bool:
        return self.src.endswith("/")


class BuildStage(_Strict):
    """A build stage FROM the base image: compile the app from source at build time.

    Its packages, sources, steps and any CA bundle stay in the stage; only ``outputs`` are
    copied into the app image (and trusted in the manifest).
    """

    packages: list[str] = Field(
        default_factory=list, description="Debian packages for the build stage only"
    )
    sources: list[BuildSource] = Field(default_factory=list)
    steps: list[str] = Field(default_factory=list, description="shell commands, in order")
    outputs: list[BuildOutput] = Field(default_factory=list, validate_default=True)

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[BuildOutput]) -> list[BuildOutput]:
        if not value:
            raise ValueError(
                "list at least one output: what the build stage hands to the app "
                "image, e.g. {src: /build/app.jar, dest: /app/app.jar}"
            )
        return value

    @field_validator("packages")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        for name in value:
            if not isinstance(name, str) or not _DEB_PACKAGE_RE.match(name):
                raise ValueError(
                    f"{name!r} is not a Debian package name (e.g. "
                    "openjdk-17-jdk-headless, or name=version)"
                )
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[str]) -> list[str]:
        for index, step in enumerate(value):
            if not step.strip():
                raise ValueError(f"step {index} is empty; remove it")
            if "\0" in step:
                raise ValueError(f"step {index} contains a NUL byte")
        return value


# Each engine's cluster roles, each its own enclave (plan/sizing.py sizes them one by one).
CLUSTER_ROLES = {"spark": ("driver", "executor"), "flink": ("jobmanager", "taskmanager")}


class Cluster(_Strict):
    """The app as a cluster: which of its engine's roles get an enclave each."""

    roles: list[Literal["driver", "executor", "jobmanager", "taskmanager"]] = Field(
        min_length=1, description="spark: driver, executor; flink: jobmanager, taskmanager"
    )


class Recipe(_Strict):
    api_version: Literal["ppml-build/v1"] = Field(alias="apiVersion")
    kind: Literal["spark", "flink", "java", "python"]
    name: str
    base: BaseImage
    libos: LibOS = Field(default_factory=LibOS)
    app: App
    runtime: Runtime = Field(default_factory=Runtime)
    resources: Resources = Field(default_factory=Resources)
    enclave: Enclave = Field(default_factory=Enclave)
    files: Files = Field(default_factory=Files)
    secret_provisioning: SecretProvisioning | None = None
    build: BuildStage | None = None
    cluster: Cluster | None = None
    manifest: dict[str, Any] = Field(
        default_factory=dict,
        description="extra Gramine manifest keys the recipe does not "
        "model, dotted or nested (checked and merged by manifest_overrides.py)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                "must be lowercase letters, digits, '.', '_' or '-' (max 64), e.g. spark-sql-agg"
            )
        return value

    @field_validator("manifest", mode="before")
    @classmethod
    def _manifest(cls, value: Any) -> dict[str, Any]:
        return normalise_overrides(value)

    @property
    def uses_python(self) -> bool:
        """The app runs a Python interpreter: kind python, or a .py file in app.command."""
        return self.kind == "python" or any(arg.endswith(".py") for arg in self.app.command)

    @model_validator(mode="after")
    def _every_key_has_a_source(self) -> "Recipe":
        files = self.files
        if self.libos.type != "gramine":
            if files.keys:
                raise FieldError(
                    ("files", "keys"),
                    "Occlum 0.31 keys every encrypted (SEFS) mount with the "
                    "instance's own key; remove files.keys or use libos.type: gramine",
                )
            return self
        for index, mount in enumerate(files.encrypted):
            if mount.key_name not in files.keys:
                raise FieldError(
                    ("files", "encrypted", index, "key_name"),
                    f"{mount.key_name!r} has no source; add "
                    f"files.keys: {{{mount.key_name}: {{source: secret-provisioning}}}} (or "
                    "app, or insecure-test-key for tests)",
                )
        unused = sorted(set(files.keys) - {mount.key_name for mount in files.encrypted})
        if unused:
            raise FieldError(
                ("files", "keys", unused[0]), "no files.encrypted mount uses this key; remove it"
            )
        return self

    @model_validator(mode="after")
    def _provisioning_fits(self) -> "Recipe":
        provisioned = self.files.provisioned_key
        if provisioned and self.secret_provisioning is None:
            raise FieldError(
                ("files", "keys", provisioned, "source"),
                "secret-provisioning needs a secret_provisioning: section (servers, ca_chain)",
            )
        if self.secret_provisioning is not None and not provisioned:
            raise FieldError(
                ("secret_provisioning",),
                "no files.keys entry has source secret-provisioning; remove the section or use it",
            )
        # (Occlum recipes cannot get here with a provisioned key: _every_key_has_a_source
        # refuses files.keys for them.)
        if provisioned and self.enclave.remote_attestation != "dcap":
            raise FieldError(
                ("enclave", "remote_attestation"),
                "secret provisioning attests the enclave first; set it to dcap",
            )
        return self

    @model_validator(mode="after")
    def _roles_fit_the_kind(self) -> "Recipe":
        if self.cluster is None:
            return self
        allowed = CLUSTER_ROLES.get(self.kind)
        if allowed is None:
            raise FieldError(
                ("cluster",),
                f"a {self.kind} app has no cluster roles (spark and flink do); remove cluster:",
            )
        roles = self.cluster.roles
        for index, role in enumerate(roles):
            if role not in allowed:
                raise FieldError(
                    ("cluster", "roles", index),
                    f"{role!r} is not a {self.kind} role; use {' or '.join(allowed)}",
                )
            if role in roles[:index]:
                raise FieldError(("cluster", "roles", index), f"{role!r} is listed twice")
        if self.app.passthrough_env:
            raise FieldError(
                ("app", "passthrough_env"),
                "a cluster role's enclave takes from the host only that role's cluster "
                "parameters (`ppml-build plan` lists them); remove app.passthrough_env",
            )
        return self

    @model_validator(mode="after")
    def _manifest_needs_gramine(self) -> "Recipe":
        if self.manifest and self.libos.type != "gramine":
            raise OverrideError(
                f"manifest: libos.type {self.libos.type!r} has no Gramine "
                "manifest (Occlum.json is generated from the recipe); remove "
                "manifest:"
            )
        return self
