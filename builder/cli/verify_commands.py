"""CLI command: verify (independent re-verification of a signed enclave image or directory)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app


@app.command("verify")
def verify_command(
    target: Annotated[str, typer.Argument(
        metavar="IMAGE_OR_DIR",
        help="An image in the local Docker engine (not pulled), or a directory holding "
             "APP.manifest.sgx and APP.sig (with --rootfs).", show_default=False)],
    record: Annotated[Optional[Path], typer.Option(
        help="The measurement.json written by `build` (or its output directory): its "
             "MRENCLAVE, MRSIGNER, ISV values, debug flag and trusted-file digest must match.")]
    = None,
    policy: Annotated[Optional[list[Path]], typer.Option(
        help="An attestation policy that must accept the recomputed enclave (repeatable): "
             "gramine-ratls .env, ita or trustee .rego (trustee with its .rvps.json beside "
             "it), ehsm/bigdl/marblerun .json, maa .txt/.jwt.")] = None,
    rootfs: Annotated[Optional[Path], typer.Option(
        help="Directory mode: the image's filesystem unpacked on the host (trusted files, "
             "libsysdb.so and libpal.so are read there).")] = None,
    name: Annotated[Optional[str], typer.Option(
        help="APP, when there is not exactly one APP.manifest.sgx.")] = None,
    libpal: Annotated[Optional[Path], typer.Option(
        help="Measure with this libpal.so instead of the one in the image "
             "(<libsysdb.so dir>/sgx/libpal.so).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Re-verify a signed enclave from its own bytes: recompute MRENCLAVE, check the SIGSTRUCT,
    every trusted file, the record, the image labels and a policy. Exit 0 only if all match,
    1 with each mismatch listed, 2 if the input cannot be read."""
    from ..errors import VerificationError
    from ..progress import reporter_for
    from ..verify import verify_target

    with reporter_for(sys.stderr) as say:
        report = verify_target(target, rootfs=rootfs, name=name, libpal=libpal, record=record,
                               policies=list(policy or []), say=say)
    if json_out:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for check in report.checks:
            print(check.line())
        print(report.summary_line())
    if not report.ok:
        raise VerificationError(report.failure_message())
