"""Kubernetes deployment files for a signed enclave image.

Pure core: ``render_k8s(recipe, plan, image)`` returns the file texts (name → YAML or shell),
byte-identical for the same inputs; k8s_roles.py does the same for a cluster recipe's roles,
and k8s_files.py (``write_k8s``) is the I/O edge of both.

Every pod that runs the enclave asks the Intel SGX device plugin for:

* ``sgx.intel.com/epc`` = the enclave size in bytes (``sgx.enclave_size`` from the plan),
* ``sgx.intel.com/enclave: 1`` (the plugin mounts /dev/sgx_enclave),
* ``sgx.intel.com/provision: 1`` only for DCAP remote attestation (/dev/sgx_provision), plus the
  aesmd socket from the host, through which Gramine reaches the quoting enclave,

and for memory ≥ enclave + the untrusted host process: EPC pages evicted by the kernel go to
shmem backing charged to the pod's memory cgroup, so the enclave must fit in the pod's memory too.

Longer than most: the deployment files form one bundle (pod spec, SGX device resources,
config, service), checked together against the Kubernetes API models.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from .errors import ImageError, PlanError, PpmlError, RecipeError
from .image.bootstrap.targets import DEFAULT_FLINK_VERSION as BASE_FLINK_VERSION
from .occlum.build import INSTANCE_DIR, occlum_run_command
from .occlum.sizing import occlum_sizing
from .plan import FLINK_DEFAULT_PROCESS_SIZE, SPARK_DEFAULT_MEMORY, Plan, spark_submit_flags
from .plan.pods import (
    AESM_SOCKET,
    SGX_EPC,
    SGX_PROVISION,
    PodSizing,
    k8s_name,
    k8s_yaml,
    pod_document,
    pod_labels,
    pod_resources,
    pod_sizing,
    pod_spec,
)
from .recipe import Recipe
from .recipe.model import is_host_port
from .units import MiB, Size, human, parse_spark_size

# flinkVersion of the FlinkDeployment: the Flink release ppml-build's Flink base installs (base
# bootstrap's one home for it), in the operator's FlinkVersion enum (v2_3 from operator 1.15,
# FlinkVersion.java; 1.13 and 1.14 stop at v2_2: --flink-version v2_2 there).
DEFAULT_FLINK_VERSION = "v{}_{}".format(*BASE_FLINK_VERSION.split(".")[:2])
_FLINK_VERSION_RE = re.compile(r"^v\d+_\d+$")

DRIVER_TEMPLATE = "driver-pod-template.yaml"
EXECUTOR_TEMPLATE = "executor-pod-template.yaml"
SPARK_SUBMIT = "spark-submit.sh"
FLINK_DEPLOYMENT = "flinkdeployment.yaml"
JOB = "job.yaml"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPOSITORY_RE = re.compile(r"^[a-z0-9]+([._:/-][a-zA-Z0-9]+|__[a-z0-9]+|-+[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SPARK_SUBMIT_FLAGS = frozenset(
    {"--verbose", "-v", "--supervise", "--help", "-h", "--version", "--usage-error"}
)


# --------------------------------------------------------------------------------------------
# The image reference


@dataclass(frozen=True)
class ImageRef:
    """``repository[:tag][@sha256:digest]``."""

    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        return (
            self.repository
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )


def parse_image(reference: str, *, allow_tag: bool = False) -> ImageRef:
    """Parse ``--image``; refuse a reference without a digest unless ``allow_tag``.

    A tag can be moved to other bytes after signing, so the pods would run an enclave nobody
    measured; a digest names exactly the image that was built and signed.
    """
    usage = "expected NAME[:TAG]@sha256:<64 hex digits>"
    ref = reference.strip()
    if not ref or any(c.isspace() for c in ref):
        raise ImageError(f"--image {reference!r}: not an image reference ({usage})")
    name, at, digest = ref.partition("@")
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    if not _REPOSITORY_RE.match(name) or (tag is not None and not _TAG_RE.match(tag)):
        raise ImageError(f"--image {reference}: not an image reference ({usage})")
    if at and not _DIGEST_RE.match(digest):
        raise ImageError(
            f"--image {reference}: the digest must be sha256: followed by 64 lowercase hex digits"
        )
    if not at and not allow_tag:
        raise ImageError(
            f"--image {reference}: not pinned by digest; give "
            f"{name}@sha256:<digest> (as pushed by ppml-build build) or pass "
            "--allow-tag"
        )
    return ImageRef(name, tag, digest or None)


# --------------------------------------------------------------------------------------------
# How a container starts the enclave, per LibOS


@dataclass(frozen=True)
class EnclaveStart:
    """The container command that starts the signed enclave, and the EPC it lays out."""

    command: list[str]
    working_dir: str | None
    epc_bytes: int
    epc_source: str  # how epc_bytes was derived, for the header
    description: str  # one sentence for the header and the Flink note


def enclave_start(recipe: Recipe, plan: Plan) -> EnclaveStart:
    """Gramine: ``gramine-sgx NAME`` finds NAME.manifest.sgx and NAME.sig in the image's WORKDIR
    and lays out ``sgx.enclave_size``. Occlum 0.31: ``occlum run`` in the instance directory,
    on the entry script holding the fixed command (occlum/entry.py); the EPC is what sgx_sign
    lays out for Occlum.json's sizes (occlum/sizing.py's estimate, a power of two)."""
    if recipe.libos.type == "occlum":
        entry = plan.launch.occlum_entry
        if entry is None:
            raise RecipeError(
                "app.insecure_host_argv: `ppml-build k8s` starts Occlum enclaves on the "
                "entry script that fixes the command; remove app.insecure_host_argv"
            )
        sizing = occlum_sizing(recipe, plan)
        return EnclaveStart(
            command=occlum_run_command(entry),
            working_dir=INSTANCE_DIR,
            epc_bytes=sizing.enclave_size_estimate,
            epc_source=(
                f"Occlum's enclave, about {human(sizing.enclave_size_estimate)} (user space "
                f"{human(sizing.user_space_needed)} + kernel heap "
                f"{human(sizing.kernel_space_heap_max_size or sizing.kernel_space_heap_size)} "
                f"+ {sizing.max_num_of_threads} threads' areas + LibOS image)"
            ),
            description=(
                f"`occlum run {entry}` in {INSTANCE_DIR}: the entry script in the measured "
                "image holds the command and refuses arguments"
            ),
        )
    return EnclaveStart(
        command=["gramine-sgx", recipe.name],
        working_dir=None,
        epc_bytes=plan.enclave_size,
        epc_source=f"enclave_size {plan.enclave_size_text}",
        description=(
            f"`gramine-sgx {recipe.name}` reads {recipe.name}.manifest.sgx and "
            f"{recipe.name}.sig from the image's WORKDIR"
        ),
    )


def _enclave_container(
    recipe: Recipe,
    image: ImageRef,
    sizing: PodSizing,
    start: EnclaveStart,
    *,
    name: str,
    cpus: int,
) -> dict:
    container: dict = {
        "name": name,
        "image": str(image),
        "imagePullPolicy": "IfNotPresent",
        "command": list(start.command),
    }
    if start.working_dir:
        container["workingDir"] = start.working_dir
    container["resources"] = pod_resources(sizing, cpus)
    if sizing.provision:
        container["volumeMounts"] = [{"name": "aesmd-socket", "mountPath": AESM_SOCKET}]
    if _servers_from_host(recipe):
        # The manifest passes SECRET_PROVISION_SERVERS through: the address is configuration
        # (a ConfigMap), never a key; the enclave trusts the server only through its CA chain.
        container["env"] = [
            {
                "name": "SECRET_PROVISION_SERVERS",
                "valueFrom": {
                    "configMapKeyRef": {"name": secret_prov_config_name(recipe), "key": "servers"}
                },
            }
        ]
    return container


SECRET_PROV_CONFIG = "secret-provisioning.yaml"


def _servers_from_host(recipe: Recipe) -> bool:
    config = recipe.secret_provisioning
    return config is not None and config.servers is None


def secret_prov_config_name(recipe: Recipe) -> str:
    return f"{k8s_name(recipe.name)}-secret-provisioning"


def _secret_prov_config(recipe: Recipe, servers: str | None, header: list[str]) -> str:
    """The ConfigMap the enclave containers read SECRET_PROVISION_SERVERS from."""
    if not servers:
        raise RecipeError(
            "secret_provisioning.servers is left to the host: pass --secret-prov-servers "
            "HOST:PORT (the provisioning server the pods connect to)"
        )
    for server in servers.replace(",", ";").replace(" ", ";").split(";"):
        if server and not is_host_port(server):
            raise RecipeError(
                f"--secret-prov-servers {servers}: {server!r} is not host:port, e.g. kms:4433"
            )
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": secret_prov_config_name(recipe),
            "labels": pod_labels(recipe, "config"),
        },
        "data": {"servers": servers},
    }
    note = [
        "Where the enclaves fetch their encrypted-files key (Gramine's secret provisioning,",
        "after remote attestation). An address only: the key never leaves the server.",
    ]
    return k8s_yaml(header + [""] + note, document)


def _header(
    recipe: Recipe, plan: Plan, sizing: PodSizing, image: ImageRef, start: EnclaveStart
) -> list[str]:
    lines = [
        f"Generated by `ppml-build k8s` from recipe {recipe.name!r} ({recipe.kind}, "
        f"{recipe.libos.type} {recipe.libos.version}); regenerate rather than edit.",
        f"Image: {image}",
        f"{SGX_EPC} = {start.epc_source} = {sizing.enclave_size} bytes; "
        f"max_threads {plan.max_threads}.",
        f"Pod memory {sizing.memory_quantity} = enclave {human(sizing.enclave_size)} + PCMD "
        f"backing {human(sizing.pcmd_backing)} + untrusted host process "
        f"{human(sizing.host_process)}"
        + (
            f" (JVM heap + off-heap {human(sizing.jvm_reserved)} ≤ enclave ≤ pod memory)."
            if sizing.jvm_reserved
            else "."
        ),
    ]
    lines.append(f"The container runs the signed enclave: {start.description}.")
    lines.append("  The image's entrypoint runs the same command, so `command` may be dropped.")
    if sizing.provision:
        lines.append(
            f"DCAP attestation: {SGX_PROVISION} and the host's aesmd socket ({AESM_SOCKET})."
        )
    else:
        lines.append("enclave.remote_attestation is none: no provisioning device, no aesmd.")
    return lines


# --------------------------------------------------------------------------------------------
# Spark


def _spark_value(
    flags: dict[str, str], recipe_value: Size | int | None, key: str, default: Size | str
) -> str:
    """The value the plan sized for, as written: spark-submit flags in app.command >
    resources.spark > Spark's default."""
    value = flags.get(key)
    if value is None and recipe_value is not None:
        value = str(recipe_value)
    return str(default) if value is None else value


def _spark_primary_resource(argv: list[str]) -> tuple[str | None, list[str]]:
    """The application file and its arguments in a spark-submit command line."""
    index = 1
    while index < len(argv):
        token = argv[index]
        if token in _SPARK_SUBMIT_FLAGS or (token.startswith("--") and "=" in token):
            index += 1
        elif token.startswith("-"):
            index += 2
        else:
            return token, argv[index + 1 :]
    return None, []


def _spark_mib(value: str, where: str) -> int:
    """A Spark memory setting in MiB (Spark reads a number without a unit as MiB)."""
    try:
        return parse_spark_size(value) // MiB
    except ValueError:
        raise RecipeError(f"{where}: {value!r} is not a size; write e.g. 4g") from None


def spark_conf(
    recipe: Recipe, image: ImageRef, sizing: PodSizing, template_dir: str = "$HERE"
) -> dict[str, str]:
    """The spark-submit ``--conf`` values for cluster mode with ppml-build's pod templates."""
    flags = spark_submit_flags(recipe)
    spark = recipe.resources.spark
    driver_memory = _spark_value(
        flags, spark.driver_memory, "spark.driver.memory", SPARK_DEFAULT_MEMORY
    )
    executor_memory = _spark_value(
        flags, spark.executor_memory, "spark.executor.memory", SPARK_DEFAULT_MEMORY
    )
    executor_cores = _spark_value(
        flags, spark.executor_cores, "spark.executor.cores", str(sizing.cpus)
    )
    memory_mib = sizing.memory // MiB
    driver_mib = _spark_mib(driver_memory, "spark.driver.memory")
    executor_mib = _spark_mib(executor_memory, "spark.executor.memory")
    for key, mib in (("spark.driver.memory", driver_mib), ("spark.executor.memory", executor_mib)):
        if mib * MiB > sizing.enclave_size:
            raise PlanError(
                f"{key} {human(mib * MiB)} does not fit the "
                f"{human(sizing.enclave_size)} enclave; raise enclave.size or set it "
                "to auto"
            )
    conf: dict[str, str] = {}
    conf["spark.kubernetes.container.image"] = str(image)
    conf["spark.kubernetes.container.image.pullPolicy"] = "IfNotPresent"
    conf["spark.kubernetes.driver.podTemplateFile"] = f"{template_dir}/{DRIVER_TEMPLATE}"
    conf["spark.kubernetes.executor.podTemplateFile"] = f"{template_dir}/{EXECUTOR_TEMPLATE}"
    conf["spark.kubernetes.driver.podTemplateContainerName"] = "spark-kubernetes-driver"
    conf["spark.kubernetes.executor.podTemplateContainerName"] = "spark-kubernetes-executor"
    conf["spark.driver.memory"] = driver_memory
    conf["spark.executor.memory"] = executor_memory
    conf["spark.driver.cores"] = str(sizing.cpus)
    conf["spark.executor.cores"] = executor_cores
    # Spark overwrites the templates' memory with memory + memoryOverhead; these overheads make
    # that sum the pod memory the enclave needs.
    conf["spark.driver.memoryOverhead"] = f"{memory_mib - driver_mib}m"
    conf["spark.executor.memoryOverhead"] = f"{memory_mib - executor_mib}m"
    return conf


def _spark_submit_script(recipe: Recipe, conf: dict[str, str]) -> str:
    resource, app_args = _spark_primary_resource(recipe.app.command)
    lines = [
        "#!/bin/sh",
        f"# Generated by `ppml-build k8s` for recipe {recipe.name!r}: submit it to Kubernetes",
        "# in cluster mode with the SGX pod templates next to this script.",
        "#   K8S_MASTER=https://<api-server>:6443 ./spark-submit.sh",
        "# K8S_NAMESPACE (default: default) and SPARK_SERVICE_ACCOUNT (default: spark) are",
        "# optional. Inside the pods the enclave runs app.command as signed; arguments Spark adds",
        "# are not seen by the enclave.",
        "set -eu",
        'HERE=$(cd "$(dirname "$0")" && pwd)',
        'exec "${SPARK_HOME:-/opt/spark}/bin/spark-submit" \\',
        '  --master "k8s://${K8S_MASTER:?set K8S_MASTER to the API server URL, '
        'e.g. https://10.0.0.1:6443}" \\',
        "  --deploy-mode cluster \\",
        f"  --name {shlex.quote(k8s_name(recipe.name))} \\",
        '  --conf "spark.kubernetes.namespace=${K8S_NAMESPACE:-default}" \\',
        '  --conf "spark.kubernetes.authenticate.driver.serviceAccountName='
        '${SPARK_SERVICE_ACCOUNT:-spark}" \\',
    ]
    for key, value in conf.items():
        if value.startswith("$HERE/"):
            lines.append(f'  --conf "{key}={value}" \\')  # "$HERE" expands; names are plain
        else:
            lines.append(f"  --conf {shlex.quote(f'{key}={value}')} \\")
    if resource is None:
        lines.append(
            '  "${APP_RESOURCE:?set APP_RESOURCE to the application, '
            'e.g. local:///app/job.py}" "$@"'
        )
    else:
        local = resource if "://" in resource else f"local://{resource}"
        lines.append("  " + " ".join(shlex.quote(part) for part in [local, *app_args]) + ' "$@"')
    return "\n".join(lines) + "\n"


def _render_spark(
    recipe: Recipe,
    plan: Plan,
    image: ImageRef,
    sizing: PodSizing,
    start: EnclaveStart,
    header: list[str],
    warnings: list[str],
) -> tuple[dict[str, str], dict[str, str]]:
    conf = spark_conf(recipe, image, sizing)
    executor_cores = int(conf["spark.executor.cores"])
    driver = pod_document(
        recipe,
        "driver",
        pod_spec(
            [
                _enclave_container(
                    recipe, image, sizing, start, name="spark-kubernetes-driver", cpus=sizing.cpus
                )
            ],
            sizing,
        ),
    )
    executor = pod_document(
        recipe,
        "executor",
        pod_spec(
            [
                _enclave_container(
                    recipe,
                    image,
                    sizing,
                    start,
                    name="spark-kubernetes-executor",
                    cpus=executor_cores,
                )
            ],
            sizing,
        ),
    )
    note = [
        "Spark pod template: spark-submit.sh points spark.kubernetes.*.podTemplateFile here.",
        "Spark sets the memory to spark.*.memory + spark.*.memoryOverhead (= the value below)"
        " and keeps the SGX resources.",
    ]
    files = {
        DRIVER_TEMPLATE: k8s_yaml(header + [""] + note, driver),
        EXECUTOR_TEMPLATE: k8s_yaml(header + [""] + note, executor),
        SPARK_SUBMIT: _spark_submit_script(recipe, conf),
    }
    master = spark_submit_flags(recipe).get("spark.master", "")
    if master.startswith("local"):
        warnings.append(
            f"app.command runs Spark with --master {master}, fixed in the signed "
            "manifest: the driver pod runs the whole job in its enclave and no "
            "executor pods start"
        )
    return files, conf


# --------------------------------------------------------------------------------------------
# Flink


def _render_flink(
    recipe: Recipe,
    plan: Plan,
    image: ImageRef,
    sizing: PodSizing,
    start: EnclaveStart,
    header: list[str],
    warnings: list[str],
    flink_version: str,
) -> dict[str, str]:
    flink = recipe.resources.flink
    # Flink's memory syntax; the operator turns resource.memory into the container's memory.
    resource = {"cpu": sizing.cpus, "memory": f"{sizing.memory // MiB}m"}

    def role(component: str) -> dict:
        template = pod_document(
            recipe,
            component,
            pod_spec(
                [
                    _enclave_container(
                        recipe, image, sizing, start, name="flink-main-container", cpus=sizing.cpus
                    )
                ],
                sizing,
            ),
        )
        return {"resource": dict(resource), "podTemplate": template}

    document = {
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {"name": k8s_name(recipe.name), "labels": pod_labels(recipe, "flink")},
        "spec": {
            "image": str(image),
            "imagePullPolicy": "IfNotPresent",
            "flinkVersion": flink_version,
            "serviceAccount": "flink",
            "flinkConfiguration": {
                "taskmanager.memory.process.size": str(
                    flink.process_size or FLINK_DEFAULT_PROCESS_SIZE
                ),
                "taskmanager.numberOfTaskSlots": str(flink.task_slots or 1),
            },
            "jobManager": role("jobmanager"),
            "taskManager": role("taskmanager"),
        },
    }
    note = [
        "Flink Kubernetes Operator (flink.apache.org/v1beta1), session cluster. resource.memory",
        "sizes the pods for the enclave (the operator makes it the containers' memory); the",
        "enclave was sized for the recipe's taskmanager.memory.process.size below and runs",
        "app.command as signed. The operator starts flink-main-container through",
        f"kubernetes.entry.path, so the image's entry path must start `{shlex.join(start.command)}`.",
    ]
    warnings.append(
        "the Flink operator replaces flink-main-container's command with "
        "kubernetes.entry.path and Flink's start arguments: the image's entry path "
        f"must run `{shlex.join(start.command)}` (the enclave's argv is fixed by the "
        + ("signed manifest)" if recipe.libos.type == "gramine" else "entry script)")
    )
    return {FLINK_DEPLOYMENT: k8s_yaml(header + [""] + note, document)}


# --------------------------------------------------------------------------------------------
# java / python: a plain Job


def _render_job(
    recipe: Recipe, image: ImageRef, sizing: PodSizing, start: EnclaveStart, header: list[str]
) -> dict[str, str]:
    template = {
        "metadata": {"labels": pod_labels(recipe, "enclave")},
        "spec": pod_spec(
            [_enclave_container(recipe, image, sizing, start, name="enclave", cpus=sizing.cpus)],
            sizing,
            restartPolicy="Never",
        ),
    }
    document = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": k8s_name(recipe.name), "labels": pod_labels(recipe, "enclave")},
        # A failed enclave run is a finding to look at, not something to retry blindly.
        "spec": {"backoffLimit": 0, "template": template},
    }
    return {JOB: k8s_yaml(header, document)}


# --------------------------------------------------------------------------------------------


@dataclass
class K8sBundle:
    """The generated files (name → text, in writing order) and the numbers behind them."""

    files: dict[str, str]
    image: str
    sizing: PodSizing
    spark_conf: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def mode(self, name: str) -> int:
        return 0o755 if name.endswith(".sh") else 0o644  # spark-submit.sh, spark-auth-secret.sh


def _check_flink_version(flink_version: str) -> None:
    if not _FLINK_VERSION_RE.match(flink_version):
        raise PpmlError(
            f"--flink-version {flink_version!r}: write the operator's spelling, e.g. v1_20 or v2_0"
        )


def render_k8s(
    recipe: Recipe,
    plan: Plan,
    image: ImageRef,
    *,
    flink_version: str = DEFAULT_FLINK_VERSION,
    secret_prov_servers: str | None = None,
) -> K8sBundle:
    """Kubernetes files for ``recipe``'s signed image. Pure: no files, no cluster."""
    _check_flink_version(flink_version)
    start = enclave_start(recipe, plan)
    sizing = pod_sizing(recipe, plan, start.epc_bytes)
    header = _header(recipe, plan, sizing, image, start)
    warnings = list(plan.warnings)
    conf: dict[str, str] = {}
    if recipe.kind == "spark":
        files, conf = _render_spark(recipe, plan, image, sizing, start, header, warnings)
    elif recipe.kind == "flink":
        files = _render_flink(recipe, plan, image, sizing, start, header, warnings, flink_version)
    else:
        files = _render_job(recipe, image, sizing, start, header)
    if _servers_from_host(recipe):
        files = {
            SECRET_PROV_CONFIG: _secret_prov_config(recipe, secret_prov_servers, header),
            **files,
        }
    elif secret_prov_servers:
        raise RecipeError(
            "--secret-prov-servers: the recipe "
            + (
                "fixes secret_provisioning.servers in the signed manifest"
                if recipe.secret_provisioning
                else "has no secret_provisioning"
            )
            + "; drop the option"
        )
    return K8sBundle(files, str(image), sizing, conf, warnings)
