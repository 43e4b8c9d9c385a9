"""CLI commands: keygen, sign, measure, sigstruct-view (mirroring Gramine's SGX tools).

Commands only parse arguments and call ``ppml_build.gramine.signing``. Passphrases never come from argv:
only ``--passphrase-file`` or $PPML_KEY_PASSPHRASE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import key_files
from ..errors import PpmlError, VerificationError, printable
from ..gramine import signing
from ._app import app


def _json_option() -> Any:
    return typer.Option("--json", help="Print a JSON object instead of text.")


def _libpal_option() -> Any:
    return typer.Option(
        "--libpal", "-l", help=f"Gramine's SGX libpal.so [default: {signing.DEFAULT_LIBPAL}]"
    )


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _print_aligned(rows: list[tuple[str, Any]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        if isinstance(value, bool):
            value = "true" if value else "false"
        print(f"{name + ':':<{width + 1}} {value}")


def _flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in obj.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, value))
    return rows


# --- keygen ---------------------------------------------------------------------------------


@app.command("keygen")
def keygen_command(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Where to write the new PEM key (mode 0600; never overwritten)."
        ),
    ],
    passphrase_file: Annotated[
        Optional[Path],
        typer.Option(
            "--passphrase-file",
            help="Encrypt the key with the passphrase in this file (or set PPML_KEY_PASSPHRASE).",
        ),
    ] = None,
) -> None:
    """Make an enclave signing key: RSA-3072, public exponent 3 (gramine-sgx-gen-private-key)."""
    # The same passphrase sources as sign and build read, so a key made here opens there.
    passphrase = key_files.read_passphrase(passphrase_file)
    key = signing.keygen(output, passphrase)
    from ..sign.keys import mrsigner_of

    encrypted = ", encrypted" if passphrase else ""
    print(printable(f"wrote {output} (RSA-3072, e=3, mode 0600{encrypted})"))
    print(f"mrsigner: {mrsigner_of(key.public_key()).hex()}")


# --- sign -----------------------------------------------------------------------------------


def _reject(flags: dict[str, Any], why: str) -> None:
    given = [name for name, value in flags.items() if value not in (None, False)]
    if given:
        raise PpmlError(f"sign: {', '.join(given)} cannot be used {why}")


@app.command("sign")
def sign_command(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The .manifest.sgx to write (or, with --complete, the one written by step 1).",
        ),
    ],
    manifest: Annotated[
        Optional[Path], typer.Option("--manifest", "-m", help="Input manifest (TOML).")
    ] = None,
    libpal: Annotated[Optional[Path], _libpal_option()] = None,
    key: Annotated[
        Optional[Path], typer.Option("--key", "-k", help="PEM signing key (RSA-3072, e=3).")
    ] = None,
    sigfile: Annotated[
        Optional[Path],
        typer.Option(
            "--sigfile",
            "-s",
            help="The .sig to write [default: manifest name without .manifest, plus .sig].",
        ),
    ] = None,
    date: Annotated[
        Optional[str],
        typer.Option(
            "--date",
            "-d",
            help="SIGSTRUCT date YYYY-MM-DD (0000-00-00 for reproducible output) "
            "or 'today' (UTC) [default: today].",
        ),
    ] = None,
    passphrase_file: Annotated[
        Optional[Path],
        typer.Option(
            "--passphrase-file",
            help=f"File holding the key's passphrase (or set {key_files.PASSPHRASE_ENV}).",
        ),
    ] = None,
    chroot: Annotated[
        Optional[Path],
        typer.Option("--chroot", help="Resolve trusted files inside this image root."),
    ] = None,
    insecure_sample_key: Annotated[
        bool,
        typer.Option(
            "--insecure-sample-key", help="Accept the public Intel SDK sample key (tests only)."
        ),
    ] = False,
    signing_data_out: Annotated[
        Optional[Path],
        typer.Option(
            "--signing-data-out",
            help="Two-step signing, step 1: write the 256 bytes to sign here (no --key) and stop.",
        ),
    ] = None,
    complete: Annotated[
        bool,
        typer.Option(
            "--complete",
            help="Two-step signing, step 2: attach --signature made with the key of --public-key.",
        ),
    ] = False,
    signature: Annotated[
        Optional[Path],
        typer.Option(
            "--signature",
            help="Raw RSA signature of the signing data (openssl dgst -sha256 -sign).",
        ),
    ] = None,
    public_key: Annotated[
        Optional[Path], typer.Option("--public-key", help="PEM public key that made --signature.")
    ] = None,
    json_output: Annotated[bool, _json_option()] = False,
) -> None:
    """Sign a Gramine manifest: write APP.manifest.sgx and its SIGSTRUCT (gramine-sgx-sign)."""
    if complete:
        _reject(
            {
                "--manifest": manifest,
                "--key": key,
                "--signing-data-out": signing_data_out,
                "--passphrase-file": passphrase_file,
                "--chroot": chroot,
                "--date": date,
                "--libpal": libpal,
            },
            "with --complete (they were fixed in step 1)",
        )
        missing = [
            name
            for name, value in (("--signature", signature), ("--public-key", public_key))
            if value is None
        ]
        if missing:
            raise PpmlError(f"sign --complete needs {' and '.join(missing)}")
        sigfile = sigfile or _sigfile_from_output(output)
        result = signing.complete_external_signing(
            output, sigfile, signature, public_key, allow_sample_key=insecure_sample_key
        )
        _report_signed(result, json_output)
        return

    _reject({"--signature": signature, "--public-key": public_key}, "without --complete")
    if manifest is None:
        raise PpmlError("sign needs --manifest APP.manifest (or --complete for two-step signing)")
    libpal = libpal or Path(signing.DEFAULT_LIBPAL)
    sigfile = sigfile or signing.default_sigfile(manifest)
    date = date or "today"
    if signing_data_out is not None:
        _reject(
            {
                "--key": key,
                "--passphrase-file": passphrase_file,
                "--insecure-sample-key": insecure_sample_key,
            },
            "with --signing-data-out (the key is used in step 2)",
        )
        result = signing.prepare_external_signing(
            manifest, libpal, output, sigfile, signing_data_out, date=date, chroot=chroot
        )
        _report_pending(result, json_output)
        return
    if key is None:
        raise PpmlError(
            "sign needs --key KEY.pem (make one with `ppml-build keygen`), or "
            "--signing-data-out DATA.bin to sign with an HSM/KMS"
        )
    passphrase = key_files.read_passphrase(passphrase_file)
    result = signing.sign(
        manifest,
        libpal,
        output,
        sigfile,
        key_path=key,
        passphrase=passphrase,
        date=date,
        chroot=chroot,
        allow_sample_key=insecure_sample_key,
    )
    _report_signed(result, json_output)


def _sigfile_from_output(output: Path) -> Path:
    name = output.name
    for suffix in (".manifest.sgx", ".sgx"):
        if name.endswith(suffix):
            return output.with_name(name[: -len(suffix)] + ".sig")
    return output.with_name(name + ".sig")


def _report_signed(result: signing.SignResult, json_output: bool) -> None:
    summary = signing.sign_summary(result.sigstruct)
    if json_output:
        _print_json(summary)
        return
    print(printable(f"wrote {result.manifest_sgx} and {result.sigfile}"))
    _print_aligned(
        [
            ("  mrenclave", summary["mrenclave"]),
            ("  mrsigner", summary["mrsigner"]),
            ("  isv_prod_id", summary["isv_prod_id"]),
            ("  isv_svn", summary["isv_svn"]),
            ("  debug", summary["debug"]),
            ("  date", summary["date"]),
            (
                "  attributes",
                f"flags {summary['attributes']['flags']} xfrm {summary['attributes']['xfrm']}",
            ),
            ("  misc_select", summary["misc_select"]),
        ]
    )


def _report_pending(result: signing.SignResult, json_output: bool) -> None:
    summary = signing.sign_summary(result.sigstruct)
    summary["mrsigner"] = None  # known only once the key has signed
    summary["signing_data"] = str(result.signing_data)
    summary["pending"] = str(result.pending)
    if json_output:
        _print_json(summary)
        return
    print(
        printable(
            f"wrote {result.manifest_sgx}, {result.signing_data} (256 bytes to sign) "
            f"and {result.pending}"
        )
    )
    print(f"  mrenclave: {summary['mrenclave']}")
    print(
        printable(
            f"next: sign {result.signing_data} with RSA-3072 (e=3), SHA-256, PKCS#1 v1.5, e.g. "
            f"`openssl dgst -sha256 -sign KEY.pem -out SIG.bin {result.signing_data}`; then run "
            f"`ppml-build sign --complete --signature SIG.bin --public-key PUB.pem "
            f"--output {result.manifest_sgx} --sigfile {result.sigfile}`"
        )
    )


# --- measure --------------------------------------------------------------------------------


@app.command("measure")
def measure_command(
    manifest: Annotated[
        Path, typer.Option("--manifest", "-m", help="The .manifest.sgx to measure, as is.")
    ],
    libpal: Annotated[Optional[Path], _libpal_option()] = None,
    json_output: Annotated[bool, _json_option()] = False,
) -> None:
    """Compute MRENCLAVE of a .manifest.sgx without signing (no key needed)."""
    result = signing.measure(manifest, libpal or Path(signing.DEFAULT_LIBPAL))
    summary = {
        "mrenclave": result.mrenclave.hex(),
        "enclave_size": result.enclave_size,
        "max_threads": result.max_threads,
        "edmm_enable": result.edmm_enable,
    }
    if json_output:
        _print_json(summary)
    else:
        _print_aligned(list(summary.items()))


# --- sigstruct-view -------------------------------------------------------------------------


@app.command("sigstruct-view")
def sigstruct_view_command(
    file: Annotated[
        Path,
        typer.Argument(help="A raw 1808-byte SIGSTRUCT (.sig) or an SGX-SDK-signed enclave ELF."),
    ],
    json_output: Annotated[bool, _json_option()] = False,
) -> None:
    """Show every SIGSTRUCT field and check the signature; exit 1 if it does not verify."""
    result = signing.view(file)
    summary = signing.view_summary(result)
    if json_output:
        _print_json(summary)
    else:
        rows = _flatten(
            {k: v for k, v in summary.items() if k not in ("signature_valid", "q1_q2_valid")}
        )
        rows.append(("signature_check", "valid" if result.signature_valid else "INVALID"))
        rows.append(("q1_q2_check", "valid" if result.q1_q2_valid else "INVALID"))
        _print_aligned(rows)
    if not result.signature_valid:
        raise VerificationError(
            f"{file}: the RSA signature does not verify against the "
            "SIGSTRUCT's modulus (modified after signing, or corrupt)"
        )
    if not result.q1_q2_valid:
        raise VerificationError(
            f"{file}: Q1/Q2 do not match the signature; EINIT would reject this SIGSTRUCT"
        )
