"""CLI commands: init, validate, plan, manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import RecipeError, printable
from ._app import app

RecipeArg = Annotated[
    Path,
    typer.Argument(help="The app recipe (YAML, apiVersion ppml-build/v1).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
# For the recipe's manifest: keys (gramine/overrides.py); `build` takes the same two flags.
AllowInsecureManifestOpt = Annotated[
    bool,
    typer.Option(
        "--allow-insecure-manifest",
        help="Accept manifest: keys that weaken the enclave "
        "(insecure__*, sgx.debug, allow_all_but_log, allowed directory trees), each with a "
        "warning.",
    ),
]
AllowJvmWithoutExinfoOpt = Annotated[
    bool,
    typer.Option(
        "--allow-jvm-without-exinfo",
        help="Accept manifest: sgx.use_exinfo = false for a JVM app "
        "(Gramine 1.9 then ends the enclave at the JVM's first deliberate page fault).",
    ),
]


@app.command()
def init(
    kind: Annotated[str, typer.Argument(help="spark or flink")],
    directory: Annotated[
        Path, typer.Argument(help="Where to write the recipe and its job.")
    ] = Path("."),
) -> None:
    """Write a working, commented recipe (and a small job) to start from."""
    from ..starter import write_starter

    written = write_starter(kind, directory)
    for path in written:
        print(printable(str(path)))


@app.command()
def validate(
    recipes: Annotated[list[Path], typer.Argument(help="One or more recipes.")],
    json_out: JsonOpt = False,
) -> None:
    """Check recipes: schema, types, sizes, paths. Exit 2 with file:line:column on the first error."""
    from ..pipeline.stages import validate_recipe

    results = []
    for path in recipes:
        recipe = validate_recipe(path)
        results.append(
            {
                "recipe": str(path),
                "name": recipe.name,
                "kind": recipe.kind,
                "libos": recipe.libos.type,
                "valid": True,
            }
        )
    if json_out:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        for item in results:
            print(
                printable(
                    f"{item['recipe']}: ok ({item['kind']} app {item['name']!r}, {item['libos']})"
                )
            )


@app.command()
def plan(recipe: RecipeArg, json_out: JsonOpt = False) -> None:
    """Size the enclave (sgx.enclave_size, sgx.max_threads) from the app's JVM and engine settings,
    showing each term of the derivation."""
    from ..occlum.sizing import describe_occlum_sizing, occlum_sizing, occlum_sizing_dict
    from ..pipeline.stages import load_and_plan_build
    from ..plan import format_plan
    from ..plan.roles import describe_role, role_launch

    loaded, single, role_plans = load_and_plan_build(recipe)
    plans: dict = dict(role_plans) or {None: single}
    documents, lines = {}, []
    for role, result in plans.items():
        # Occlum splits the enclave (user space, kernel heap, threads): its sizes from the plan's.
        try:
            occlum = occlum_sizing(loaded, result) if loaded.libos.type == "occlum" else None
        except RecipeError as err:
            raise RecipeError(f"{recipe}: {err}") from None
        document = result.as_dict()
        if occlum is not None:
            document["occlum"] = occlum_sizing_dict(occlum)
        documents[role] = document
        if lines:
            lines.append("")
        lines += format_plan(result).splitlines()
        launch = role_launch(loaded, result, role_plans)
        if launch is not None:
            lines += describe_role(launch)
        if occlum is not None:
            lines += describe_occlum_sizing(occlum, result)
    if json_out:
        single_document = documents.get(None)
        print(json.dumps(single_document or {"roles": documents}, indent=2))
    else:
        print("\n".join(printable(line) for line in lines))


@app.command()
def manifest(
    recipe: RecipeArg,
    rootfs: Annotated[Path, typer.Option(help="The image's filesystem, unpacked on the host.")],
    output_dir: Annotated[Path, typer.Option(help="Where to write the manifest.")],
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Re-hash every file.")] = False,
    allow_insecure_manifest: AllowInsecureManifestOpt = False,
    allow_jvm_without_exinfo: AllowJvmWithoutExinfoOpt = False,
    role: Annotated[
        Optional[str],
        typer.Option(
            help="A cluster recipe's role (its own manifest, NAME-ROLE.manifest).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Render the LibOS configuration for a recipe against a root filesystem: a Gramine manifest
    with every trusted file hashed (APP.manifest + trusted-files.json); for a cluster recipe,
    one role's."""
    from ..gramine.overrides import ManifestOptions
    from ..pipeline.stages import write_manifest

    options = ManifestOptions(
        allow_insecure_manifest=allow_insecure_manifest,
        allow_jvm_without_exinfo=allow_jvm_without_exinfo,
    )
    result = write_manifest(
        recipe, rootfs, output_dir, use_cache=not no_cache, options=options, role=role
    )
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        for key in ("manifest", "trusted_files_list"):
            print(printable(f"{key.replace('_', ' ')}: {result[key]}"))
        print(
            f"trusted files: {result['trusted_file_count']} "
            f"({result['trusted_bytes']} bytes, {result['hashed_files']} hashed now)"
        )
        print(f"enclave_size: {result['enclave_size']}, max_threads: {result['max_threads']}")
        if result.get("recipe_manifest_keys"):
            print(
                printable(
                    "manifest keys from the recipe: " + ", ".join(result["recipe_manifest_keys"])
                )
            )
        for warning in result["warnings"]:
            print(printable(f"warning: {warning}"))
