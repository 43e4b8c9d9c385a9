"""CLI command: k8s (Kubernetes deployment files for a signed enclave image)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import printable
from ._app import app


@app.command()
def k8s(
    recipe: Annotated[
        Path,
        typer.Argument(help="The app recipe (YAML, apiVersion ppml-build/v1).", show_default=False),
    ],
    image: Annotated[
        str,
        typer.Option(
            "--image", help="The signed image, pinned: NAME@sha256:<digest>.", show_default=False
        ),
    ],
    output_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--output-dir",
            help="Where to write the files [default: ppml-out/<name>/k8s/].",
            show_default=False,
        ),
    ] = None,
    allow_tag: Annotated[
        bool,
        typer.Option(
            "--allow-tag", help="Accept an image reference without a digest (the tag may move)."
        ),
    ] = False,
    flink_version: Annotated[
        Optional[str],
        typer.Option(
            "--flink-version",
            help="flinkVersion of the FlinkDeployment, in the operator's spelling [default: the Flink base's release, v2_3].",
            show_default=False,
        ),
    ] = None,
    secret_prov_servers: Annotated[
        Optional[str],
        typer.Option(
            "--secret-prov-servers",
            metavar="HOST:PORT",
            help="The secret-provisioning server(s), when the recipe leaves them to the host "
            "(written to a ConfigMap the pods read).",
        ),
    ] = None,
    replicas: Annotated[
        Optional[int],
        typer.Option(
            "--replicas",
            help="A cluster recipe's executors or TaskManagers, each in its own pod [default: 2].",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Write Kubernetes files that run the signed enclave on SGX nodes: Spark pod templates and
    spark-submit.sh, a FlinkDeployment, or a Job; EPC, memory and CPU from the enclave plan. A
    cluster recipe's pods each start their role's enclave."""
    from ..k8s_files import write_k8s

    result = write_k8s(
        recipe,
        image,
        output_dir,
        allow_tag=allow_tag,
        flink_version=flink_version,
        secret_prov_servers=secret_prov_servers,
        replicas=replicas,
    )
    if json_out:
        print(json.dumps(result, indent=2))
        return
    for path in result["files"]:
        print(printable(str(path)))
    for warning in result["warnings"]:
        print(printable(f"warning: {warning}"), file=sys.stderr)
