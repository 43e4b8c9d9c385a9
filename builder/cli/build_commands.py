"""CLI command: build (recipe → signed enclave image + measurement record)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import app
from .recipe_commands import AllowInsecureManifestOpt, AllowJvmWithoutExinfoOpt


class BaseIndexSource(str, Enum):
    registry = "registry"
    engine = "engine"


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="The app recipe (YAML).", show_default=False)],
    key: Annotated[
        Path,
        typer.Option(
            help="PEM signing key (RSA-3072, e=3); it stays on this "
            "machine, never in the image or the logs."
        ),
    ],
    output_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Where the record, trusted-file list, manifest, .sig and policies go "
            "[default: ./ppml-out/<recipe name>/]."
        ),
    ] = None,
    tag: Annotated[
        Optional[str],
        typer.Option(help="Name of the final image [default: ppml/<recipe name>:latest]."),
    ] = None,
    registry_auth: Annotated[
        Optional[Path],
        typer.Option(
            help="Registry credentials file (Docker config.json or {username, password}); "
            "default: the Docker config."
        ),
    ] = None,
    push: Annotated[bool, typer.Option(help="Push the final image and record its digest.")] = False,
    ca_bundle: Annotated[
        Optional[Path],
        typer.Option(
            help="CA bundle for the recipe's build stage behind a TLS-inspecting proxy (default "
            "$PIP_CERT; build stage only, never in the final image)."
        ),
    ] = None,
    date: Annotated[
        str,
        typer.Option(
            help="SIGSTRUCT date YYYY-MM-DD, for reproducible .sig files [default: today]."
        ),
    ] = "today",
    passphrase_file: Annotated[
        Optional[Path],
        typer.Option(help="File holding the key's passphrase (or set PPML_KEY_PASSPHRASE)."),
    ] = None,
    policy: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Also write this attestation policy next to the record (repeatable): "
            "gramine-ratls, ehsm, bigdl, marblerun, maa, ita, trustee."
        ),
    ] = None,
    insecure_sample_key: Annotated[
        bool,
        typer.Option(
            "--insecure-sample-key", help="Accept the public Intel SDK sample key (tests only)."
        ),
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not reuse Docker's build cache.")
    ] = False,
    base_index: Annotated[
        BaseIndexSource,
        typer.Option(
            help="Where an uncached base image's file index comes from: 'registry' reads its "
            "layers during the pull (the registry serves them twice; faster), 'engine' "
            "exports the pulled base (one download; the build waits for the export)."
        ),
    ] = "registry",
    verify_reproducible: Annotated[
        bool,
        typer.Option(
            "--verify-reproducible",
            help="Build twice from scratch (no caches) and fail if "
            "MRENCLAVE differs, naming the first differing input.",
        ),
    ] = False,
    allow_insecure_manifest: AllowInsecureManifestOpt = False,
    allow_jvm_without_exinfo: AllowJvmWithoutExinfoOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Build a signed enclave image from a recipe (Gramine: measured and signed natively;
    Occlum: `occlum build` in the Occlum base, measurement read back) and record MRENCLAVE
    (measurement.json + image labels)."""
    from ..gramine.overrides import ManifestOptions
    from ..pipeline.backends import build as run_build
    from ..pipeline.options import BuildOptions
    from ..progress import reporter_for

    options = BuildOptions(
        recipe=recipe,
        key=key,
        output_dir=output_dir,
        tag=tag,
        registry_auth=registry_auth,
        push=push,
        ca_bundle=ca_bundle,
        date=date,
        passphrase_file=passphrase_file,
        allow_sample_key=insecure_sample_key,
        policies=tuple(policy or ()),
        no_cache=no_cache,
        base_index=BaseIndexSource(base_index).value,
        manifest=ManifestOptions(
            allow_insecure_manifest=allow_insecure_manifest,
            allow_jvm_without_exinfo=allow_jvm_without_exinfo,
        ),
    )
    with reporter_for(sys.stderr) as say:
        if verify_reproducible:
            from ..pipeline.reproducible import verify_reproducible as run_twice

            twice = run_twice(options, say=say)
            say(f"reproducible: both builds measured MRENCLAVE {twice.mrenclave}")
            result = twice.build
        else:
            result = run_build(options, say=say)
    record = result.record
    if json_out:
        print(
            json.dumps(
                {
                    "image": result.image,
                    "record": str(result.record_path),
                    "policies": [str(p) for p in result.policy_files],
                    **(
                        {"roles": record["roles"]}
                        if "roles" in record
                        else {"mrenclave": record["mrenclave"], "mrsigner": record["mrsigner"]}
                    ),
                    "timings": {k: round(v, 3) for k, v in result.timings.items()},
                    "stats": result.stats,
                },
                indent=2,
            )
        )
        return
    print(f"image:     {result.image}")
    if "roles" in record:  # a cluster build: an enclave per role
        for role, values in record["roles"].items():
            print(f"MRENCLAVE: {values['mrenclave']} ({role}: {values['enclave']})")
        print(f"MRSIGNER:  {next(iter(record['roles'].values()))['mrsigner']}")
    else:
        print(f"MRENCLAVE: {record['mrenclave']}")
        print(f"MRSIGNER:  {record['mrsigner']}")
    print(f"record:    {result.record_path}")
    for path in result.policy_files:
        print(f"policy:    {path}")


@app.command("run-native")
def run_native_command(
    recipe: Annotated[Path, typer.Argument(help="The app recipe the image was built from.")],
    image: Annotated[
        Optional[str], typer.Option(help="The built image [default: ppml/<recipe name>:latest].")
    ] = None,
    network: Annotated[str, typer.Option(help="none or host (never the default bridge).")] = "none",
) -> None:
    """Run the recipe's command natively in the built image, without an enclave (a smoke test
    that needs no SGX machine). Prints the job's output; exits with its exit code."""
    from ..image.engine import connect
    from ..image.native import run_native
    from ..pipeline.stages import validate_recipe

    parsed = validate_recipe(recipe)
    result = run_native(connect(), image or f"ppml/{parsed.name}:latest", parsed, network=network)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.exit_code)


@app.command("run-direct")
def run_direct_command(
    recipe: Annotated[Path, typer.Argument(help="The app recipe the image was built from.")],
    image: Annotated[
        Optional[str], typer.Option(help="The built image [default: ppml/<recipe name>:latest].")
    ] = None,
    network: Annotated[str, typer.Option(help="none or host (never the default bridge).")] = "none",
    log_level: Annotated[
        Optional[str],
        typer.Option(
            help="Diagnose: run a copy of the signed manifest with only loader.log_level changed "
            "(warning shows refused files, trace every system call)."
        ),
    ] = None,
    diagnose: Annotated[
        bool,
        typer.Option(
            help="When the job fails, run it once more at log level warning and show the files "
            "the LibOS refused."
        ),
    ] = True,
    volume: Annotated[
        Optional[list[str]],
        typer.Option(
            help="HOST_DIR:IMAGE_DIR to mount read-write (e.g. an allowed output directory); "
            "repeatable."
        ),
    ] = None,
) -> None:
    """Run the built image's job under gramine-direct (Gramine's LibOS without SGX) with the
    signed manifest the enclave would load. Prints the job's output and Gramine's own lines;
    exits with the job's exit code (non-zero when the LibOS refuses something)."""
    from ..gramine.direct import run_direct
    from ..image.engine import connect
    from ..pipeline.stages import validate_recipe

    parsed = validate_recipe(recipe)
    if parsed.libos.type != "gramine":
        from ..errors import RecipeError

        raise RecipeError(
            f"{recipe}: libos.type {parsed.libos.type!r}: run-direct runs "
            "Gramine's LibOS; use run-native for this image"
        )
    client, target = connect(), image or f"ppml/{parsed.name}:latest"
    extra = {"volumes": _volumes(volume or [])} if volume else None
    result = run_direct(
        client, target, parsed.name, network=network, log_level=log_level, extra_args=extra
    )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.exit_code != 0 and log_level is None and diagnose:
        # The signed manifest logs only errors, and Gramine reports refused files as
        # warnings (libos/src/fs/chroot/fs.c, trusted.c): run once more to show them.
        from ..gramine.direct import refusal_lines

        print(
            f"run-direct: the job failed (exit {result.exit_code}); what the LibOS refused "
            "(a second run at loader.log_level = warning):",
            file=sys.stderr,
        )
        again = run_direct(
            client, target, parsed.name, network=network, log_level="warning", extra_args=extra
        )
        for line in refusal_lines(again.stdout + again.stderr) or [
            "(nothing: the app itself failed)"
        ]:
            print(f"  {line}", file=sys.stderr)
    raise typer.Exit(result.exit_code)


def _volumes(specs: list[str]) -> dict:
    from ..errors import ImageError

    volumes = {}
    for spec in specs:
        host, sep, inside = spec.partition(":")
        if not sep or not host or not inside.startswith("/") or not Path(host).is_dir():
            raise ImageError(
                f"--volume {spec!r}: expected HOST_DIR:IMAGE_DIR with an existing "
                "host directory and an absolute path in the image"
            )
        volumes[str(Path(host).resolve())] = {"bind": inside, "mode": "rw"}
    return volumes
