"""CLI command: trace (which files the app really opens, compared with its manifest, and what
the LibOS itself refuses under gramine-direct)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app


@app.command()
def trace(
    recipe: Annotated[
        Path, typer.Argument(help="The app recipe the image was built from.", show_default=False)
    ],
    image: Annotated[
        Optional[str],
        typer.Option(help="The built (or app) image [default: ppml/<recipe name>:latest]."),
    ] = None,
    manifest: Annotated[
        Optional[Path],
        typer.Option(
            help="The manifest the native run is compared with [default: the image's "
            "/ppml/<name>.manifest.sgx, else ./ppml-out/<name>/<name>.manifest.sgx]; the "
            "LibOS run always loads the image's own signed manifest."
        ),
    ] = None,
    suggest: Annotated[
        bool,
        typer.Option(
            "--suggest",
            help="Print the files.trusted / files.allowed changes for the recipe: "
            "what the LibOS refused, then the native estimate.",
        ),
    ] = False,
    timeout: Annotated[int, typer.Option(help="Seconds each traced run may take.")] = 1800,
    no_libos: Annotated[
        bool,
        typer.Option(
            "--no-libos",
            help="Skip the run under gramine-direct (e.g. an image without it, or "
            "without its signed /ppml/<name>.manifest.sgx).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the recipe's command natively under strace in the built image and compare every
    file it opens with the manifest: reads the enclave would refuse (neither trusted nor
    allowed), writes outside allowed/tmpfs/encrypted paths, and trusted files never read.
    Then run the job under gramine-direct with the image's signed manifest at log level trace
    and report what the LibOS itself refused, hash mismatches and its processes.
    Exits 0 when clean, 1 when the enclave would refuse something or the app failed."""
    from ..progress import reporter_for
    from ..trace.report import group_by_directory, libos_lines
    from ..trace.run import run_trace
    from ..units import human

    with reporter_for(sys.stderr) as say:
        result = run_trace(
            recipe, image=image, manifest=manifest, timeout=timeout, libos=not no_libos, say=say
        )
    doc = result.document
    if json_out:
        print(json.dumps(doc | ({"suggest": result.suggestion} if suggest else {}), indent=2))
        raise typer.Exit(0 if doc["clean"] else 1)

    report = result.report
    size = doc["manifest_size"]
    print(
        f"trace {doc['recipe']} in {doc['image']}: app exited {doc['app_exit_code']}, "
        f"{report.files_read} files read or executed "
        f"({report.trusted_read} trusted, {report.allowed_read} allowed)"
    )
    if doc["app_exit_code"] != 0:
        tail = result.stderr.strip().splitlines()[-5:]
        print("  the app failed under strace, so the trace may be incomplete:")
        for line in tail:
            print(f"    {line}")
    print(f"untrusted reads (the enclave would refuse them): {len(report.untrusted_reads)}")
    for finding in report.untrusted_reads:
        where = "" if finding.host_path == finding.path else f" (host {finding.host_path})"
        missing = "" if finding.in_image else ", not in the image"
        print(f"  {finding.path}{where} [{finding.syscall}{missing}]")
    if report.refused_starts:
        print(
            f"programs the native run started that the LibOS refuses to fork for "
            f"(sys.disallow_subprocesses), not checked: {', '.join(report.refused_starts)}"
        )
    print(f"writes outside allowed/tmpfs/encrypted paths: {len(report.bad_writes)}")
    for finding in report.bad_writes:
        print(f"  {finding.path} [{finding.syscall}]")
    for line in libos_lines(doc.get("libos"), result.libos_output_tail):
        print(line)
    unused = doc["unused_trusted"]
    print(
        f"trusted but never read (candidates to drop): {unused['count']} files, "
        f"{human(unused['bytes'])}"
    )
    for directory, files, size_bytes in group_by_directory(report.unused_trusted)[:8]:
        print(f"  {directory:<48} {files:>6} files  {human(size_bytes):>10}")
    shipped, everything, needed = (size["shipped"], size["hash_everything"], size["needed"])
    print("manifest size (trusted entries / bytes hashed at signing):")
    print(
        f"  as shipped:                     {shipped['trusted_entries']:>7}  "
        f"{human(shipped['bytes_hashed']):>10}"
    )
    print(
        f"  hash every file (GSC's way):    {everything['trusted_entries']:>7}  "
        f"{human(everything['bytes_hashed']):>10}"
    )
    print(
        f"  only what this run read:        {needed['trusted_entries']:>7}  "
        f"{human(needed['bytes_hashed']):>10}"
    )
    if suggest:
        print()
        sys.stdout.write(result.suggestion)
    raise typer.Exit(0 if doc["clean"] else 1)
