"""Run a recipe's command natively (no enclave) in a built image: smoke tests, demos, tracing.

The container gets no network (``--network none``) unless asked, hostname ``localhost`` (Spark
and Flink resolve their own hostname), and the recipe's workdir; the image's ENV already carries
the recipe's environment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import docker
import docker.errors

from ..errors import ImageError
from ..recipe import Recipe


@dataclass(frozen=True)
class NativeRun:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float = 0.0


def run_container(
    client: docker.DockerClient, image: str, *, what: str, timeout: int, **create: object
) -> NativeRun:
    """Create, start and wait for a container; its exit code and output; always removed."""
    try:
        container = client.containers.create(image, **create)
    except docker.errors.ImageNotFound:
        raise ImageError(f"{image}: no such image; build it first") from None
    except docker.errors.APIError as err:
        raise ImageError(f"{image}: cannot create a container: {err.explanation or err}") from None
    started = time.perf_counter()
    try:
        container.start()
        result = container.wait(timeout=timeout)
        seconds = time.perf_counter() - started
        stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        return NativeRun(int(result.get("StatusCode", -1)), stdout, stderr, seconds)
    except Exception as err:  # the SDK raises requests' timeout types here
        raise ImageError(f"{image}: the {what} failed: {err}") from None
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass


def run_native(
    client: docker.DockerClient,
    image: str,
    recipe: Recipe,
    *,
    network: str = "none",
    extra_args: dict | None = None,
    timeout: int = 600,
) -> NativeRun:
    if network not in ("none", "host"):
        raise ImageError(f"network {network!r}: only 'none' or 'host' (never the default bridge)")
    argv = list(recipe.app.command)
    return run_container(
        client,
        image,
        what="native run",
        timeout=timeout,
        entrypoint=[argv[0]],
        command=argv[1:],
        network_mode=network,
        hostname="localhost" if network == "none" else None,
        working_dir=recipe.app.workdir,
        labels={"ppml.native-run": recipe.name},
        **(extra_args or {}),
    )
