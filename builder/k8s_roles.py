"""Kubernetes files for a cluster recipe's image: each role's pod starts that role's enclave.

Pure core: ``render_cluster_k8s(recipe, plans, image)`` returns the file texts; k8s_files.py's
``write_k8s`` writes them. Every pod runs the image's container entry (plan/roles.py
ENTRY_SCRIPT) with the first argument its engine gives the role, and supplies exactly that
role's cluster parameters (roles.ROLE_PARAMETERS) as environment variables, from the pod
(``fieldRef``), from a fixed Service name, or from a Secret: never anything else, since the
role's signed manifest lets in no other variable and no argument.

Flink: a FlinkDeployment in standalone mode (flink-kubernetes-operator 1.13,
flink-kubernetes-standalone's CmdStandalone*Decorator): the operator replaces the container's
command with ``kubernetes.entry.path`` and gives ``standalone-job ...`` to the JobManager and
``taskmanager`` to the TaskManagers, creates the TaskManager Deployment itself
(``taskManager.replicas``), mounts its ConfigMap over ``kubernetes.flink.conf.dir`` (moved here
off the image's trusted /opt/flink/conf) and finds the job by ``$internal.pipeline.job-id``,
which the JobManager's command fixes too (roles.flink_job_id).
"""

from __future__ import annotations

import copy

from .errors import RecipeError
from .k8s import (
    AESM_SOCKET,
    DEFAULT_FLINK_VERSION,
    ImageRef,
    K8sBundle,
    PodSizing,
    _labels,
    _pod,
    _pod_spec,
    _resources,
    _yaml,
    k8s_name,
    pod_sizing,
)
from .plan import FLINK_DEFAULT_PROCESS_SIZE, Plan
from .plan.model import FLINK_JOBMANAGER_PROCESS_SIZE
from .plan.roles import (
    ENTRY_SCRIPT,
    ROLE_PARAMETERS,
    enclave_name,
    flink_job_id,
    java_main,
)
from .recipe import Recipe
from .units import MiB

FLINK_DEPLOYMENT = "flinkdeployment.yaml"
FLINK_MAIN_CONTAINER = "flink-main-container"  # the operator's main container
# Where the operator's ConfigMap goes instead of $FLINK_HOME/conf, whose files the enclaves
# hash: a mount there would change them, and the enclave would refuse to read them.
OPERATOR_CONF_DIR = "/opt/flink-operator-conf"
DEFAULT_REPLICAS = 2
ENGINE_ROLES = {"spark": ("driver", "executor"), "flink": ("jobmanager", "taskmanager")}

POD_IP = {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
POD_NAME = {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def role_env(role: str, values: dict[str, dict]) -> list[dict]:
    """The role's cluster parameters, in the role's order: every one given, nothing else."""
    names = [parameter.name for parameter in ROLE_PARAMETERS[role]]
    assert sorted(names) == sorted(values), (role, sorted(values))
    return [{"name": name, **copy.deepcopy(values[name])} for name in names]


def _container(sizing: PodSizing, env: list[dict], name: str) -> dict:
    container: dict = {
        "name": name,
        "env": env,
        "resources": _resources(sizing, sizing.cpus),
    }
    if sizing.provision:
        container["volumeMounts"] = [{"name": "aesmd-socket", "mountPath": AESM_SOCKET}]
    return container


def _pod_template(recipe: Recipe, role: str, container: dict, sizing: PodSizing) -> dict:
    return _pod(recipe, role, _pod_spec([container], sizing))


def _limit_factor(sizing: PodSizing, process_bytes: int) -> str:
    """Flink sets a pod's memory request to the process size and its limit to size x factor:
    the factor that makes the limit hold the enclave (k8s.pod_sizing), to 4 decimals, up."""
    factor = -(-sizing.memory * 10_000 // process_bytes) / 10_000
    return f"{max(factor, 1.0):.4f}"


def render_flink_cluster(
    recipe: Recipe,
    sizings: dict[str, PodSizing],
    image: ImageRef,
    header: list[str],
    *,
    flink_version: str = DEFAULT_FLINK_VERSION,
    replicas: int = DEFAULT_REPLICAS,
) -> dict[str, str]:
    name = k8s_name(recipe.name)
    flink = recipe.resources.flink
    main = java_main(recipe)
    jobmanager, taskmanager = sizings["jobmanager"], sizings["taskmanager"]
    jm_process = (flink.jobmanager_process_size or FLINK_JOBMANAGER_PROCESS_SIZE).bytes
    tm_process = (flink.process_size or FLINK_DEFAULT_PROCESS_SIZE).bytes
    # The operator's headless Service <name> (ports 6123, 6124) selects the JobManager pod:
    # the one spelling of its address both sides use.
    jobmanager_host = {"value": name}
    jm_env = role_env(
        "jobmanager",
        {"FLINK_JOBMANAGER_HOST": jobmanager_host, "FLINK_JOBMANAGER_BIND_HOST": POD_IP},
    )
    tm_env = role_env(
        "taskmanager",
        {
            "FLINK_JOBMANAGER_HOST": jobmanager_host,
            "FLINK_TASKMANAGER_HOST": POD_IP,
            "FLINK_TASKMANAGER_RESOURCE_ID": POD_NAME,
        },
    )
    configuration = {
        "kubernetes.entry.path": ENTRY_SCRIPT,
        "kubernetes.flink.conf.dir": OPERATOR_CONF_DIR,
        "$internal.pipeline.job-id": flink_job_id(recipe),
        # What each enclave was sized for (its command fixes every memory component); the
        # limit factors make the pods' memory limits hold the enclaves.
        "jobmanager.memory.process.size": f"{jm_process // MiB}m",
        "taskmanager.memory.process.size": f"{tm_process // MiB}m",
        "taskmanager.numberOfTaskSlots": str(flink.task_slots or 1),
        "kubernetes.jobmanager.memory.limit-factor": _limit_factor(jobmanager, jm_process),
        "kubernetes.taskmanager.memory.limit-factor": _limit_factor(taskmanager, tm_process),
    }
    job: dict = {"entryClass": main.main_class, "upgradeMode": "stateless", "state": "running"}
    if main.args:
        job["args"] = list(main.args)
    document = {
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {"name": name, "labels": _labels(recipe, "flink")},
        "spec": {
            "image": str(image),
            "imagePullPolicy": "IfNotPresent",
            "flinkVersion": flink_version,
            "mode": "standalone",
            "serviceAccount": "flink",
            "flinkConfiguration": configuration,
            "job": job,
            "jobManager": {
                "resource": {"cpu": jobmanager.cpus},
                "podTemplate": _pod_template(
                    recipe, "jobmanager", _container(jobmanager, jm_env, FLINK_MAIN_CONTAINER),
                    jobmanager,
                ),
            },
            "taskManager": {
                "replicas": replicas,
                "resource": {"cpu": taskmanager.cpus},
                "podTemplate": _pod_template(
                    recipe, "taskmanager", _container(taskmanager, tm_env, FLINK_MAIN_CONTAINER),
                    taskmanager,
                ),
            },
        },
    }  # fmt: skip
    note = [
        "Flink Kubernetes Operator (flink.apache.org/v1beta1), standalone application cluster.",
        f"Every pod runs {ENTRY_SCRIPT} (kubernetes.entry.path): the operator's first argument",
        f"(standalone-job, taskmanager) picks the enclave, /ppml/{enclave_name(recipe, 'ROLE')}",
        "with its command fixed in its signed manifest; the pod templates give exactly the",
        "role's cluster parameters. The operator's ConfigMap is mounted off the image's",
        f"configuration ({OPERATOR_CONF_DIR}); the job id is the one the JobManager's command",
        "fixes. Memory: each enclave runs the process size below; Flink requests it and limits",
        "the pod to size x limit-factor, what the enclave needs.",
    ]
    return {FLINK_DEPLOYMENT: _yaml(header + [""] + note, document)}


def cluster_header(
    recipe: Recipe, plans: dict[str, Plan], sizings: dict[str, PodSizing], image: ImageRef
) -> list[str]:
    lines = [
        f"Generated by `ppml-build k8s` from cluster recipe {recipe.name!r} ({recipe.kind}, "
        f"{recipe.libos.type} {recipe.libos.version}); regenerate rather than edit.",
        f"Image: {image}",
    ]
    for role, plan in plans.items():
        sizing = sizings[role]
        lines.append(
            f"{role}: enclave /ppml/{enclave_name(recipe, role)}, EPC {plan.enclave_size_text} "
            f"({sizing.enclave_size} bytes), max_threads {plan.max_threads}, pod memory "
            f"{sizing.memory_quantity}, {sizing.cpus} CPUs."
        )
    return lines


def render_cluster_k8s(
    recipe: Recipe,
    plans: dict[str, Plan],
    image: ImageRef,
    *,
    flink_version: str = DEFAULT_FLINK_VERSION,
    replicas: int = DEFAULT_REPLICAS,
    secret_prov_servers: str | None = None,
) -> K8sBundle:
    """Kubernetes files for a cluster recipe's image (every role it lists). Pure."""
    if recipe.secret_provisioning is not None or secret_prov_servers:
        raise RecipeError(
            "secret_provisioning: `ppml-build k8s` writes no secret-provisioning files for "
            "cluster roles yet; remove secret_provisioning (and --secret-prov-servers)"
        )
    needed = ENGINE_ROLES[recipe.kind]
    missing = [role for role in needed if role not in plans]
    if missing:
        raise RecipeError(
            f"cluster.roles: a {recipe.kind} cluster on Kubernetes runs {' and '.join(needed)} "
            f"pods; add {', '.join(missing)} (and build the image again)"
        )
    sizings = {role: pod_sizing(recipe, plan) for role, plan in plans.items()}
    header = cluster_header(recipe, plans, sizings, image)
    warnings = [warning for plan in plans.values() for warning in plan.warnings]
    if recipe.kind == "flink":
        files = render_flink_cluster(
            recipe, sizings, image, header, flink_version=flink_version, replicas=replicas
        )
    else:
        # Spark's Kubernetes backend ignores a host secret for k8s:// masters, writes its own
        # into executor pods in plain text and mounts ConfigMaps over the enclaves' trusted
        # /opt/spark/conf (SecurityManager.initializeAuth, BasicExecutorFeatureStep): the
        # driver's fixed configuration needs more than its four parameters first.
        raise RecipeError(
            "cluster.roles: `ppml-build k8s` writes a FlinkDeployment for Flink cluster "
            "recipes; for Spark it does not write driver and executor pods yet (run them as "
            "tests/integration/test_cluster_direct.py does); remove cluster: for the "
            "single-enclave job's files"
        )
    first = next(iter(sizings.values()))
    return K8sBundle(files, str(image), first, {}, warnings)
