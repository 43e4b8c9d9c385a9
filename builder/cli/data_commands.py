"""CLI commands: data-key, encrypt, decrypt (Gramine 1.9's encrypted files, on the host).

Commands only parse arguments and call ``ppml_build.encrypted_data``. Keys never come from argv:
``--key FILE``, ``--key-from-env VAR`` (hex) or ``--key-command CMD`` (its standard output).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import encrypted_data, key_files
from ..atomic import Output, write_all_or_none
from ..errors import OutputError, PpmlError, printable
from ..recipe.load import load_recipe
from ._app import app

KeyFileOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--key",
        "-k",
        help="The key file: 16 raw bytes (gramine-sgx-pf-crypt gen-key, "
        "ppml-build data-key) or 32 hex digits.",
    ),
]
KeyEnvOpt = Annotated[
    Optional[str],
    typer.Option(
        "--key-from-env", metavar="VAR", help="Read the key (32 hex digits) from this variable."
    ),
]
KeyCommandOpt = Annotated[
    Optional[str],
    typer.Option(
        "--key-command",
        metavar="CMD",
        help="Run CMD (no shell) and take the key from its standard output, e.g. a KMS or "
        "HSM unwrapping a wrapped key.",
    ),
]


def _bound_path(
    recipe: Optional[Path], enclave_path: Optional[str], bound_path: Optional[str], *, needed: bool
) -> str | None:
    if bound_path is not None and (recipe is not None or enclave_path is not None):
        raise PpmlError("give either --bound-path, or --recipe with --enclave-path, not both")
    if bound_path is not None:
        return bound_path
    if (recipe is None) != (enclave_path is None):
        raise PpmlError("--recipe and --enclave-path go together")
    if recipe is not None and enclave_path is not None:
        return encrypted_data.bound_path_for(load_recipe(recipe), enclave_path)
    if needed:
        raise PpmlError(
            "say where the enclave will see the files: --recipe RECIPE --enclave-path PATH "
            "(a path under one of its files.encrypted mounts), or --bound-path PATH"
        )
    return None


RecipeOpt = Annotated[
    Optional[Path],
    typer.Option("--recipe", "-r", help="The recipe whose files.encrypted mount holds the files."),
]
EnclavePathOpt = Annotated[
    Optional[str],
    typer.Option(
        "--enclave-path",
        help="Where the enclave sees SOURCE/DEST (inside a files.encrypted mount's path).",
    ),
]
BoundPathOpt = Annotated[
    Optional[str],
    typer.Option(
        "--bound-path",
        help="The path Gramine binds into the file: the host path of the mount's URI "
        "(what gramine-sgx-pf-crypt -o takes).",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace DEST if it exists.")]


@app.command("data-key")
def data_key_command(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the key (mode 0600).")
    ],
) -> None:
    """Make an encrypted-files key: 16 random bytes, as gramine-sgx-pf-crypt gen-key writes."""
    if output.exists() or output.is_symlink():
        raise OutputError(f"--output {output}: already exists; a key is never overwritten")
    write_all_or_none(
        {output: Output(secrets.token_bytes(key_files.DATA_KEY_BYTES), mode=0o600)},
        option="--output",
    )
    print(printable(f"wrote {output} (16-byte AES-GCM key for Gramine's encrypted files, 0600)"))


def _report(verb: str, done: list[encrypted_data.Converted]) -> None:
    for item in done:
        print(printable(f"{verb} {item.source} -> {item.dest} (bound to {item.bound_path})"))
    total = sum(item.size for item in done)
    print(f"{len(done)} file{'s' if len(done) != 1 else ''}, {total} plaintext bytes")


@app.command("encrypt")
def encrypt_command(
    source: Annotated[Path, typer.Argument(help="A file or a directory tree of plaintext.")],
    dest: Annotated[Path, typer.Argument(help="The encrypted file or directory to write.")],
    key: KeyFileOpt = None,
    key_from_env: KeyEnvOpt = None,
    key_command: KeyCommandOpt = None,
    recipe: RecipeOpt = None,
    enclave_path: EnclavePathOpt = None,
    bound_path: BoundPathOpt = None,
    force: ForceOpt = False,
) -> None:
    """Encrypt files for an enclave (Gramine 1.9's encrypted-files format)."""
    where = _bound_path(recipe, enclave_path, bound_path, needed=True)
    data_key = key_files.read_data_key(key, key_from_env, key_command)
    assert where is not None
    _report("encrypted", encrypted_data.encrypt_tree(source, dest, where, data_key, force=force))


@app.command("decrypt")
def decrypt_command(
    source: Annotated[Path, typer.Argument(help="An encrypted file or directory tree.")],
    dest: Annotated[Path, typer.Argument(help="The plaintext file or directory to write.")],
    key: KeyFileOpt = None,
    key_from_env: KeyEnvOpt = None,
    key_command: KeyCommandOpt = None,
    recipe: RecipeOpt = None,
    enclave_path: EnclavePathOpt = None,
    bound_path: BoundPathOpt = None,
    any_path: Annotated[
        bool,
        typer.Option(
            "--any-path",
            help="Do not check the bound path (a renamed file then decrypts too).",
        ),
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Check and decrypt encrypted files: a wrong key, an altered, truncated or renamed file is
    refused with one line and nothing is written."""
    where = _bound_path(recipe, enclave_path, bound_path, needed=not any_path)
    if any_path and where is not None:
        raise PpmlError("--any-path skips the check that --bound-path/--enclave-path ask for")
    data_key = key_files.read_data_key(key, key_from_env, key_command)
    _report("decrypted", encrypted_data.decrypt_tree(source, dest, where, data_key, force=force))
