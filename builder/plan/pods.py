"""What one enclave pod asks Kubernetes for, and the pieces every pod spec ppml-build writes is
made of: `k8s` renders them, and a cluster image carries one (Spark's executor pod template,
which its driver enclave reads). Pure: plans in, documents out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from ..errors import PlanError
from ..recipe import Recipe
from ..units import KiB, MiB, human, round_up
from .model import Plan

SGX_EPC = "sgx.intel.com/epc"
SGX_ENCLAVE = "sgx.intel.com/enclave"
SGX_PROVISION = "sgx.intel.com/provision"
AESM_SOCKET = "/var/run/aesmd/aesm.socket"

# The untrusted half of the Gramine process: the loader, host libc, its RPC queue and the DCAP
# quote library.
HOST_PROCESS_BASE = 256 * MiB
# Each enclave thread runs on a host thread with its own untrusted stack and signal stack.
HOST_BYTES_PER_THREAD = 256 * KiB
# The kernel keeps 128 bytes of PCMD per evicted 4K EPC page in the same shmem backing.
PCMD_FRACTION = 32

# --------------------------------------------------------------------------------------------
# Pod sizing


@dataclass(frozen=True)
class PodSizing:
    """What one enclave pod asks Kubernetes for, and why."""

    enclave_size: int  # bytes: sgx.intel.com/epc
    jvm_reserved: int  # the JVM's heap + off-heap reservations inside the enclave (0: no JVM)
    host_process: int  # untrusted Gramine loader and host threads
    pcmd_backing: int  # kernel metadata for evicted EPC pages
    memory: int  # pod memory request = limit, a whole number of MiB
    cpus: int
    provision: bool  # DCAP: sgx.intel.com/provision and the aesmd socket

    @property
    def memory_quantity(self) -> str:
        return f"{self.memory // MiB}Mi"

    def as_dict(self) -> dict:
        return {
            "epc_bytes": self.enclave_size,
            "jvm_reserved_bytes": self.jvm_reserved,
            "host_process_bytes": self.host_process,
            "pcmd_backing_bytes": self.pcmd_backing,
            "pod_memory_bytes": self.memory,
            "pod_memory": self.memory_quantity,
            "cpus": self.cpus,
            "sgx_provision": self.provision,
        }


def pod_sizing(recipe: Recipe, plan: Plan, epc_bytes: int | None = None) -> PodSizing:
    """Memory and CPU for an enclave pod: JVM heap + off-heap ≤ enclave ≤ pod memory.
    ``epc_bytes``: the enclave's size when the LibOS lays it out otherwise (Occlum)."""
    enclave = plan.enclave_size if epc_bytes is None else epc_bytes
    # Every JVM/Flink term of the plan is memory the JVM reserves inside the enclave.
    jvm_reserved = sum(
        term.value for term in plan.memory_terms if term.name.startswith(("jvm_", "flink_"))
    )
    if jvm_reserved > enclave:
        raise PlanError(
            f"enclave.size {recipe.enclave.size if epc_bytes is None else human(enclave)} is "
            f"smaller than the JVM's heap and off-heap memory ({human(jvm_reserved)}); raise "
            "enclave.size or set it to auto"
        )
    # The untrusted half (Gramine's loader or Occlum's occlum-run and PAL) and its host threads.
    host = HOST_PROCESS_BASE + plan.max_threads * HOST_BYTES_PER_THREAD
    pcmd = enclave // PCMD_FRACTION
    memory = round_up(enclave + pcmd + host, MiB)
    if plan.jvm is not None:
        cpus = plan.jvm.cpus
    else:
        cpus = recipe.resources.cpus or 1
    return PodSizing(
        enclave,
        jvm_reserved,
        host,
        pcmd,
        memory,
        cpus,
        recipe.enclave.remote_attestation == "dcap",
    )


# --------------------------------------------------------------------------------------------
# Building blocks


def k8s_name(recipe_name: str) -> str:
    """A DNS-1035 label (≤ 45 characters, Flink's cluster-id limit) from the recipe name."""
    name = re.sub(r"[^a-z0-9-]", "-", recipe_name.lower())
    if not name[:1].isalpha():
        name = "app-" + name
    return name[:45].rstrip("-")


def pod_labels(recipe: Recipe, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": k8s_name(recipe.name),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "ppml-build",
    }


def pod_resources(sizing: PodSizing, cpus: int) -> dict:
    # Extended resources cannot be overcommitted: requests must equal limits. Memory too, so the
    # node reserves all the memory the enclave can push out to backing store. No CPU limit: CFS
    # throttling stalls the JVM's GC and safepoints.
    sgx = {SGX_EPC: str(sizing.enclave_size), SGX_ENCLAVE: "1"}
    if sizing.provision:
        sgx[SGX_PROVISION] = "1"
    return {
        "requests": {"cpu": str(cpus), "memory": sizing.memory_quantity, **sgx},
        "limits": {"memory": sizing.memory_quantity, **sgx},
    }


def pod_volumes(sizing: PodSizing) -> list[dict]:
    if not sizing.provision:
        return []
    # Gramine asks aesmd's quoting enclave for DCAP quotes through this socket.
    return [{"name": "aesmd-socket", "hostPath": {"path": AESM_SOCKET, "type": "Socket"}}]


def pod_spec(containers: list[dict], sizing: PodSizing, **extra) -> dict:
    spec: dict = {**extra, "containers": containers}
    volumes = pod_volumes(sizing)
    if volumes:
        spec["volumes"] = volumes
    return spec


def enclave_container(sizing: PodSizing, env: list[dict], name: str) -> dict:
    """A container starting an enclave with the image's own entry: its env, the SGX resources
    it is sized for and, with DCAP, the aesmd socket."""
    container: dict = {"name": name, "env": env, "resources": pod_resources(sizing, sizing.cpus)}
    if sizing.provision:
        container["volumeMounts"] = [{"name": "aesmd-socket", "mountPath": AESM_SOCKET}]
    return container


def one_container_pod(recipe: Recipe, component: str, container: dict, sizing: PodSizing) -> dict:
    return pod_document(recipe, component, pod_spec([container], sizing))


def pod_document(recipe: Recipe, component: str, spec: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": pod_labels(recipe, component)},
        "spec": spec,
    }


def k8s_yaml(header: list[str], document: dict) -> str:
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header)
    return comments + yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )
