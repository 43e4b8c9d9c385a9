"""CLI commands: policy (expected-measurement policies for attestation services)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import printable
from ..policy import (
    Pin,
    PolicyError,
    bigdl,
    ehsm,
    load_policy_record,
    load_record,
    render,
    render_roles,
    write_policy_files,
)
from ..policy._http import check_url, read_secret
from ..policy.model import make_spec
from ._app import app


class PolicyFormat(str, enum.Enum):
    GRAMINE_RATLS = "gramine-ratls"
    EHSM = "ehsm"
    BIGDL = "bigdl"
    MARBLERUN = "marblerun"
    MAA = "maa"
    ITA = "ita"
    TRUSTEE = "trustee"


class SubmitTarget(str, enum.Enum):
    EHSM = "ehsm"
    BIGDL = "bigdl"


def _note(message: str) -> None:
    print(f"ppml-build: note: {printable(message)}", file=sys.stderr)


@app.command("policy")
def policy(
    record: Path = typer.Argument(
        ...,
        metavar="RECORD.json",
        help="measurement.json (a cluster build's: a policy per role), or what 'ppml-build sign --json' printed",
    ),
    fmt: Optional[PolicyFormat] = typer.Option(
        None, "--format", "-f", help="Attestation service whose policy format to write."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="File (or directory) to write; stdout when omitted."
    ),
    min_svn: Optional[int] = typer.Option(
        None, "--min-svn", min=0, max=0xFFFF, help="Lowest ISVSVN accepted [default: the record's]."
    ),
    allow_debug: bool = typer.Option(
        False, "--allow-debug", help="Accept DEBUG enclaves (test only: their memory is readable)."
    ),
    pin: Pin = typer.Option(Pin.BOTH, "--pin", help="Identity to pin."),
    submit: Optional[SubmitTarget] = typer.Option(
        None, "--submit", help="Register the policy with a running service and print its id."
    ),
    url: Optional[str] = typer.Option(None, "--url", help="Service base URL for --submit."),
    appid_file: Optional[Path] = typer.Option(
        None, "--appid-file", help="File holding the app id (from the service's enroll)."
    ),
    apikey_file: Optional[Path] = typer.Option(
        None, "--apikey-file", help="File holding the API key (never passed on the command line)."
    ),
    cacert: Optional[Path] = typer.Option(
        None, "--cacert", help="CA certificate to trust for an https --url (self-signed services)."
    ),
) -> None:
    """Write the policy that accepts exactly this enclave, for one attestation service."""
    if submit is not None:
        if fmt is not None and fmt.value != submit.value:
            raise PolicyError(
                f"--format {fmt.value} and --submit {submit.value} disagree; give one"
            )
        if output is not None:
            raise PolicyError(
                "--submit sends the policy to the service; it cannot be combined with --output"
            )
        _submit(record, submit, pin, min_svn, allow_debug, url, appid_file, apikey_file, cacert)
        return
    if fmt is None:
        raise PolicyError(
            "give --format FORMAT (gramine-ratls, ehsm, bigdl, marblerun, maa, ita, trustee)"
        )
    if url or appid_file or apikey_file or cacert:
        raise PolicyError(
            "--url, --appid-file, --apikey-file and --cacert only apply with --submit"
        )

    values = load_policy_record(record)
    # A cluster's record: a policy per role, each accepting exactly that role's enclave.
    draw = render_roles if isinstance(values, dict) else render
    rendered = draw(
        values, fmt.value, pin=pin, min_svn=min_svn, allow_debug=allow_debug, source=str(record)
    )
    for message in rendered.notes:
        _note(message)
    if output is None:
        several = len(rendered.files) > 1
        for name, text in rendered.files.items():
            if several:
                sys.stdout.write(f"==> {name} <==\n")
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    for path in write_policy_files(rendered.files, output):
        print(printable(f"ppml-build: wrote {path}"), file=sys.stderr)


def _submit(
    record: Path,
    target: SubmitTarget,
    pin: Pin,
    min_svn: int | None,
    allow_debug: bool,
    url: str | None,
    appid_file: Path | None,
    apikey_file: Path | None,
    cacert: Path | None,
) -> None:
    if not url:
        raise PolicyError(f"--submit {target.value} needs --url (the service's base URL)")
    check_url(url, "the --submit service")
    values = load_record(record)
    spec = make_spec(values, pin=pin, min_svn=min_svn, allow_debug=allow_debug, source=str(record))
    appid = read_secret(appid_file, "--appid-file")
    apikey = read_secret(apikey_file, "--apikey-file")
    if target is SubmitTarget.EHSM:
        for message in ehsm.notes(spec):
            _note(message)
        policy_id = ehsm.submit(spec, url=url, appid=appid, apikey=apikey, cacert=cacert)
        _note(f"eHSM stored the quote policy as {policy_id}")
        print(policy_id)
        return
    for message in bigdl.notes(spec):
        _note(message)
    for policy_type, policy_id in bigdl.submit(
        spec, url=url, app_id=appid, api_key=apikey, cacert=cacert
    ):
        _note(f"BigDL registered {policy_type} as {policy_id}")
        print(policy_id)
