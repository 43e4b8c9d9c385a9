"""CLI command: verify (independent re-verification of a signed enclave image or directory)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import printable
from ._app import app


@app.command("verify")
def verify_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="IMAGE_OR_DIR",
            help="An image in the local Docker engine (not pulled), or a directory holding "
            "APP.manifest.sgx and APP.sig (with --rootfs).",
            show_default=False,
        ),
    ],
    record: Annotated[
        Optional[Path],
        typer.Option(
            help="The measurement.json written by `build` (or its output directory): its "
            "MRENCLAVE, MRSIGNER, ISV values, debug flag and trusted-file digest must match. "
            "A cluster build's record is checked role by role; a role's own record "
            "(roles/ROLE/measurement.json) verifies that role only."
        ),
    ] = None,
    policy: Annotated[
        Optional[list[Path]],
        typer.Option(
            help="An attestation policy that must accept the recomputed enclave (repeatable): "
            "gramine-ratls .env, ita or trustee .rego (trustee with its .rvps.json beside "
            "it), ehsm/bigdl/marblerun .json, maa .txt/.jwt. On a cluster image, a file named "
            "ROLE-... (as `policy` writes them, e.g. driver-ra-tls.env) is applied to that "
            "role's enclave only, any other to every role."
        ),
    ] = None,
    rootfs: Annotated[
        Optional[Path],
        typer.Option(
            help="Directory mode: the image's filesystem unpacked on the host (trusted files, "
            "libsysdb.so and libpal.so are read there)."
        ),
    ] = None,
    name: Annotated[
        Optional[str],
        typer.Option(
            help="APP, when there is not exactly one APP.manifest.sgx; on a cluster image, "
            "NAME-ROLE verifies that role's enclave only (every --policy applies to it)."
        ),
    ] = None,
    libpal: Annotated[
        Optional[Path],
        typer.Option(
            help="Measure with this libpal.so instead of the one in the image "
            "(<libsysdb.so dir>/sgx/libpal.so)."
        ),
    ] = None,
    mrsigner: Annotated[
        Optional[str],
        typer.Option(
            metavar="HEX",
            help="Pin the signer: the SIGSTRUCT's MRSIGNER (SHA-256 of the key's modulus, as "
            "measurement.json holds it) must be this.",
            show_default=False,
        ),
    ] = None,
    signer_key: Annotated[
        Optional[Path],
        typer.Option(
            metavar="PEM",
            help="Pin the signer by its key: a PEM public key, or the unencrypted private key "
            "(only its public half is used).",
            show_default=False,
        ),
    ] = None,
    allow_debug: Annotated[
        bool,
        typer.Option(
            "--allow-debug",
            help="Accept a debug enclave (ATTRIBUTES.DEBUG or sgx.debug = true), whose memory the "
            "host can read and change; without it a debug enclave fails, pinned or not.",
        ),
    ] = False,
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            "--allow-unpinned",
            help="Accept what nothing pins: no trust anchor (--record, a --policy pinning "
            "MRENCLAVE or MRSIGNER, --mrsigner, --signer-key), and sgx.allowed_files or "
            "sgx.file_check_policy that let the host supply any file. The warning line and "
            "the check lines still say so.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
) -> None:
    """Re-verify a signed enclave from its own bytes: recompute MRENCLAVE, check the SIGSTRUCT,
    every trusted file, the record, the image labels and a policy. A cluster image is checked
    role by role (each role's enclave, its ppml.role.ROLE.* labels), reported together.

    An image that only agrees with itself may have been re-signed by anyone: without a trust
    anchor the first line says nothing pins the signer and verify fails unless
    --allow-unpinned. A debug enclave fails unless --allow-debug; allowed files covering the
    whole file system fail unless --allow-unpinned. Exit 0 only if every check passes, 1 with
    each failed check listed, 2 if the input cannot be read."""
    from ..errors import VerificationError
    from ..progress import reporter_for
    from ..verify.evidence import Expectations
    from ..verify.target import verify_target

    expect = Expectations(
        record=record,
        policies=list(policy or []),
        mrsigner=mrsigner,
        signer_key=signer_key,
        allow_debug=allow_debug,
        allow_unpinned=allow_unpinned,
    )
    with reporter_for(sys.stderr) as say:
        report = verify_target(
            target, rootfs=rootfs, name=name, libpal=libpal, expect=expect, say=say
        )
    if json_out:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(printable(line) for line in report.lines()))
    if not report.ok:
        raise VerificationError(report.failure_message())
