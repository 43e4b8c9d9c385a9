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
from .k8s import DEFAULT_FLINK_VERSION, ImageRef, K8sBundle
from .plan import FLINK_DEFAULT_PROCESS_SIZE, Plan
from .plan.executor_pod import (
    EXECUTOR_POD_TEMPLATE,
    SPARK_AUTH_DRIVER_FILE_KEY,
    SPARK_AUTH_SECRET_DIR,
    SPARK_AUTH_SECRET_KEY,
    executor_pod_template_text,
    spark_auth_secret_name,
    spark_auth_source,
)
from .plan.model import FLINK_JOBMANAGER_PROCESS_SIZE
from .plan.pods import (
    PodSizing,
    enclave_container,
    k8s_name,
    k8s_yaml,
    one_container_pod,
    pod_document,
    pod_labels,
    pod_sizing,
    pod_spec,
)
from .plan.roles import (
    ENTRY_SCRIPT,
    ROLE_PARAMETERS,
    SPARK_DRIVER_BLOCK_MANAGER_PORT,
    SPARK_DRIVER_PORT,
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

SPARK_DRIVER_POD = "driver-pod.yaml"
SPARK_DRIVER_SERVICE = "driver-service.yaml"
SPARK_DRIVER_RBAC = "driver-rbac.yaml"
EXECUTOR_TEMPLATE_FILE = "executor-pod-template.yaml"
SPARK_AUTH_SCRIPT = "spark-auth-secret.sh"
SPARK_DRIVER_CONTAINER = "spark-kubernetes-driver"
# The API server as every pod reaches it (its Service in the default namespace).
KUBERNETES_API_MASTER = "k8s://https://kubernetes.default.svc:443"
SPARK_DRIVER_PORTS = {
    "driver-rpc-port": SPARK_DRIVER_PORT,
    "blockmanager": SPARK_DRIVER_BLOCK_MANAGER_PORT,
    "spark-ui": 4040,
}
ENGINE_ROLES = {"spark": ("driver", "executor"), "flink": ("jobmanager", "taskmanager")}

POD_IP = {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
POD_NAMESPACE = {"valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
POD_NAME = {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def role_env(role: str, values: dict[str, dict]) -> list[dict]:
    """The role's cluster parameters, in the role's order: every one given, nothing else."""
    names = [parameter.name for parameter in ROLE_PARAMETERS[role]]
    assert sorted(names) == sorted(values), (role, sorted(values))
    return [{"name": name, **copy.deepcopy(values[name])} for name in names]


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
    jm_container = enclave_container(jobmanager, jm_env, FLINK_MAIN_CONTAINER)
    tm_container = enclave_container(taskmanager, tm_env, FLINK_MAIN_CONTAINER)
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
        "metadata": {"name": name, "labels": pod_labels(recipe, "flink")},
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
                "podTemplate": one_container_pod(recipe, "jobmanager", jm_container, jobmanager),
            },
            "taskManager": {
                "replicas": replicas,
                "resource": {"cpu": taskmanager.cpus},
                "podTemplate": one_container_pod(recipe, "taskmanager", tm_container, taskmanager),
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
    return {FLINK_DEPLOYMENT: k8s_yaml(header + [""] + note, document)}


# --------------------------------------------------------------------------------------------
# Spark: a driver pod that creates its executor pods


def spark_driver_name(recipe: Recipe) -> str:
    """The driver's pod, Service and service account: one name (≤ 52 characters)."""
    return f"{k8s_name(recipe.name)}-driver"


def render_spark_cluster(
    recipe: Recipe,
    plans: dict[str, Plan],
    sizings: dict[str, PodSizing],
    image: ImageRef,
    header: list[str],
) -> dict[str, str]:
    """The driver as a plain Pod (not spark-submit's cluster mode, which appends arguments and
    mounts a ConfigMap over the driver's trusted /opt/spark/conf: Client.run), its Service and
    RBAC, the Secret's script, and the executors' pod template for reading (the driver enclave
    reads the copy in the image)."""
    name = spark_driver_name(recipe)
    sizing = sizings["driver"]
    labels = pod_labels(recipe, "driver")
    env = role_env(
        "driver",
        {
            "SPARK_MASTER_URL": {"value": KUBERNETES_API_MASTER},
            # executors reach the driver through its Service; it binds its pod's IP
            "SPARK_DRIVER_HOST": {"value": name},
            "SPARK_DRIVER_BIND_ADDRESS": POD_IP,
            "_SPARK_AUTH_SECRET": spark_auth_source(recipe),
            "SPARK_KUBERNETES_NAMESPACE": POD_NAMESPACE,
            "SPARK_DRIVER_POD_NAME": POD_NAME,
            "SPARK_EXECUTOR_IMAGE": {"value": str(image)},
        },
    )
    container = {
        "name": SPARK_DRIVER_CONTAINER,
        "image": str(image),
        "imagePullPolicy": "IfNotPresent",
        "args": ["driver"],  # the image's entry (ENTRY_SCRIPT) starts the driver's enclave
        **enclave_container(sizing, env, SPARK_DRIVER_CONTAINER),
        "ports": [
            {"name": port_name, "containerPort": port}
            for port_name, port in SPARK_DRIVER_PORTS.items()
        ],
    }
    container["volumeMounts"] = [
        {"name": "spark-auth", "mountPath": SPARK_AUTH_SECRET_DIR, "readOnly": True},
        *container.get("volumeMounts", []),
    ]
    spec = pod_spec([container], sizing, serviceAccountName=name, restartPolicy="Never")
    spec["volumes"] = [
        {
            "name": "spark-auth",
            "secret": {
                "secretName": spark_auth_secret_name(recipe),
                "items": [{"key": SPARK_AUTH_DRIVER_FILE_KEY, "path": SPARK_AUTH_DRIVER_FILE_KEY}],
            },
        },
        *spec.get("volumes", []),
    ]
    pod = pod_document(recipe, "driver", spec)
    pod["metadata"]["name"] = name
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "clusterIP": "None",  # headless: executors reach the driver pod itself
            "selector": dict(labels),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port}
                for port_name, port in SPARK_DRIVER_PORTS.items()
            ],
        },
    }
    rbac = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "labels": dict(labels)},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name, "labels": dict(labels)},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["pods", "configmaps", "persistentvolumeclaims"],
                        "verbs": ["create", "get", "list", "watch", "delete", "deletecollection"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "labels": dict(labels)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name}],
            },
        ],
    }
    note = [
        "Spark on Kubernetes: the driver runs in a pod of its own, in client mode, as a driver",
        f"pod runs it. `{ENTRY_SCRIPT} driver` starts its enclave, whose signed command fixes",
        "its configuration. It creates its executor pods from the image's",
        f"{EXECUTOR_POD_TEMPLATE}.",
        f"First run ./{SPARK_AUTH_SCRIPT}, which creates the Secret spark.authenticate shares.",
        f"Then: kubectl apply -f {SPARK_DRIVER_RBAC} -f {SPARK_DRIVER_SERVICE} -f {SPARK_DRIVER_POD}",
    ]
    return {
        SPARK_DRIVER_RBAC: k8s_yaml(header + [""] + note, rbac),
        SPARK_DRIVER_SERVICE: k8s_yaml(header + [""] + note, service),
        SPARK_DRIVER_POD: k8s_yaml(header + [""] + note, pod),
        EXECUTOR_TEMPLATE_FILE: executor_pod_template_text(recipe, plans["executor"]),
        SPARK_AUTH_SCRIPT: spark_auth_script(recipe),
    }


def spark_auth_script(recipe: Recipe) -> str:
    """The shell script that creates the Secret with a fresh random value: piped to kubectl,
    never on disk or in a file here. Its data entries, as executor_pod.py explains: the value
    (base64 text, which the Secret's data holds base64-encoded once more), and the bytes whose
    base64 is the value (so the value itself, as data)."""
    name = spark_auth_secret_name(recipe)
    return "\n".join(
        [
            "#!/bin/sh",
            "# Written by ppml-build k8s: creates the Secret spark.authenticate shares between",
            f"# the driver and executor enclaves of {recipe.name!r}, with a fresh random value.",
            "#   K8S_NAMESPACE=<namespace> ./spark-auth-secret.sh   (default: default)",
            "# Nothing is written to disk; kubectl reads the Secret from a pipe.",
            "set -eu",
            "value=$(head -c 32 /dev/urandom | base64 | tr -d '\\n')",
            "data=$(printf '%s' \"$value\" | base64 | tr -d '\\n')",
            "printf '%s\\n' \\",
            "    'apiVersion: v1' 'kind: Secret' 'type: Opaque' 'metadata:' \\",
            f"    '  name: {name}' 'data:' \\",
            f'    "  {SPARK_AUTH_DRIVER_FILE_KEY}: $value" "  {SPARK_AUTH_SECRET_KEY}: $data" \\',
            '    | kubectl -n "${K8S_NAMESPACE:-default}" apply -f -',
            "",
        ]
    )


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
    replicas: int | None = None,
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
            recipe,
            sizings,
            image,
            header,
            flink_version=flink_version,
            replicas=replicas or DEFAULT_REPLICAS,
        )
    else:
        if replicas is not None:
            raise RecipeError(
                "--replicas: a Spark driver starts spark.executor.instances executors (2 by "
                "default), fixed in its signed command: set it in app.command and rebuild"
            )
        files = render_spark_cluster(recipe, plans, sizings, image, header)
    first = next(iter(sizings.values()))
    return K8sBundle(files, str(image), first, {}, warnings)
