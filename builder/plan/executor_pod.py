"""Spark's executor pods on Kubernetes, as a cluster image's driver enclave asks for them.

A driver with a ``k8s://`` master creates its executor pods itself (Spark 4.3.0,
resource-managers/kubernetes: ExecutorPodsAllocator, BasicExecutorFeatureStep), from the pod
template at ``spark.kubernetes.executor.podTemplateFile``. The driver's configuration is fixed
in its signed command, so the template is a trusted file of the image (EXECUTOR_POD_TEMPLATE,
under the trusted /ppml/roles), rendered here from the executor role's plan, and
``k8s_roles.py`` writes the same text beside the driver's pod for reading.

The secret ``spark.authenticate`` shares. With a ``k8s://`` master, SecurityManager.
initializeAuth ignores ``spark.authenticate.secret`` and makes its own secret, which
BasicExecutorFeatureStep then writes into every executor pod as a plain value. It does neither
when ``spark.authenticate.secret.driver.file`` and ``...executor.file`` are both set: the
driver's secret is then base64 of that file's bytes (SecurityManager.secretKeyFromFile).

So one Kubernetes Secret holds the value both sides use:
- SPARK_AUTH_SECRET_KEY is the value itself. Executors (and the driver, under a standalone
  master, which takes ``spark.authenticate.secret``) get it as ``_SPARK_AUTH_SECRET`` from a
  ``secretKeyRef``. An executor reads that variable before any file
  (SecurityManager.getSecretKey).
- SPARK_AUTH_DRIVER_FILE_KEY holds the bytes whose base64 is that value. A Secret's ``data``
  is base64 already, so its data entry is the value as it is. The driver's pod mounts it at
  SPARK_AUTH_DRIVER_FILE.

Pure: plans in, a document out.
"""

from __future__ import annotations

from ..recipe import Recipe
from ..units import MiB
from .launch import ROLE_DIR
from .model import Plan
from .pods import enclave_container, k8s_name, k8s_yaml, one_container_pod, pod_sizing

EXECUTOR_POD_TEMPLATE = f"{ROLE_DIR}/executor-pod-template.yaml"
EXECUTOR_CONTAINER = (
    "spark-kubernetes-executor"  # spark.kubernetes.executor.podTemplateContainerName
)
SPARK_AUTH_SECRET_DIR = "/ppml/secrets/spark-auth"
SPARK_AUTH_SECRET_KEY = "secret"
SPARK_AUTH_DRIVER_FILE_KEY = "driver-file"
SPARK_AUTH_DRIVER_FILE = f"{SPARK_AUTH_SECRET_DIR}/{SPARK_AUTH_DRIVER_FILE_KEY}"
# Where Kubernetes mounts a pod's service account token (the driver creates executor pods with
# it) and the API server's CA.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def spark_auth_secret_name(recipe: Recipe) -> str:
    """The Kubernetes Secret with spark.authenticate's secret: fixed in the executors' template,
    so in the image."""
    return f"{k8s_name(recipe.name)}-spark-auth"


def spark_auth_source(recipe: Recipe) -> dict:
    """Where ``_SPARK_AUTH_SECRET`` comes from: the Secret, a reference, never the value."""
    return {
        "valueFrom": {
            "secretKeyRef": {"name": spark_auth_secret_name(recipe), "key": SPARK_AUTH_SECRET_KEY}
        }
    }


def executor_pod_template(recipe: Recipe, executor: Plan) -> dict:
    """The executor pod template the driver enclave gives Spark. Spark adds the image, the
    ``executor`` argument, the memory (spark.executor.memory + memoryOverhead, below) and its
    variables; the template adds the secret's reference and the SGX resources it keeps."""
    sizing = pod_sizing(recipe, executor)
    env = [{"name": "_SPARK_AUTH_SECRET", **spark_auth_source(recipe)}]
    container = enclave_container(sizing, env, EXECUTOR_CONTAINER)
    return one_container_pod(recipe, "executor", container, sizing)


def executor_pod_template_text(recipe: Recipe, executor: Plan) -> str:
    header = [
        f"The executor pod template of cluster recipe {recipe.name!r}.",
        f"It is a trusted file of the image ({EXECUTOR_POD_TEMPLATE}): the driver enclave's",
        "fixed configuration points spark.kubernetes.executor.podTemplateFile at it.",
        "Written by ppml-build; rebuild the image to change it.",
    ]
    return k8s_yaml(header, executor_pod_template(recipe, executor))


def executor_pod_conf(recipe: Recipe, executor: Plan) -> tuple[tuple[str, str], ...]:
    """What the driver's configuration says of its executors on Kubernetes: the executor
    enclave's heap and cores, and the overhead that makes Spark's pod memory (memory +
    memoryOverhead, BasicExecutorFeatureStep) hold the enclave (pods.pod_sizing)."""
    jvm = executor.jvm
    assert jvm is not None
    heap_mib = -(-jvm.heap // MiB)
    sizing = pod_sizing(recipe, executor)
    return (
        ("spark.executor.memory", f"{heap_mib}m"),
        ("spark.executor.memoryOverhead", f"{sizing.memory // MiB - heap_mib}m"),
        ("spark.executor.cores", str(jvm.cpus)),
    )
