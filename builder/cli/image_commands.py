"""CLI commands: base images (``ppml-build base bootstrap``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ._app import app

base_app = typer.Typer(
    help="Base images: a debootstrapped Debian, Gramine 1.9, Spark and Flink layers, stand-in Gramine test bases.",
    no_args_is_help=True,
)
app.add_typer(base_app, name="base")

# Build-log lines worth a line of their own in a non-terminal log (CI); the rest is noise there.
_PLAIN_PREFIXES = (
    "Step ",
    "pushing ",
    "pulling ",
    "importing ",
    "Downloading ",
    "Successfully built",
)
_PLAIN_DEBOOTSTRAP_SKIP = (
    "I: Retrieving",
    "I: Validating",
    "I: Extracting",
    "I: Unpacking",
    "I: Configuring",
)


class PlainReporter:
    """One line per step on stderr: for logs and pipes."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr

    def __enter__(self) -> "PlainReporter":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def begin(self, target: str, message: str) -> None:
        self._say(f"[{target}] {message}")

    def progress(self, target: str, line: str) -> None:
        if line.startswith(_PLAIN_PREFIXES) or (
            line.startswith("I: ") and not line.startswith(_PLAIN_DEBOOTSTRAP_SKIP)
        ):
            self._say(f"[{target}] {line[:200]}")

    def end(self, result) -> None:
        self._say(f"[{result.name}] {_describe(result)}")

    def note(self, message: str) -> None:
        self._say(message)


class RichReporter:
    """A live spinner per target with its latest build line; results stay on screen."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.progress_bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[target]:<14}[/bold] {task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "RichReporter":
        self.progress_bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress_bar.__exit__(*exc)

    def _task(self, target: str) -> int:
        if target not in self.tasks:
            self.tasks[target] = self.progress_bar.add_task("", target=target, total=None)
        return self.tasks[target]

    def begin(self, target: str, message: str) -> None:
        self.progress_bar.update(self._task(target), description=_escape(message))

    def progress(self, target: str, line: str) -> None:
        width = max(20, self.console.width - 40)
        self.progress_bar.update(self._task(target), description=_escape(line[:width]))

    def end(self, result) -> None:
        if result.name in self.tasks:
            self.progress_bar.remove_task(self.tasks.pop(result.name))
        colour = {"built": "green", "reused": "cyan", "pulled": "blue"}.get(result.action, "white")
        text = _describe(result).split(" ", 1)[1]  # the action word is shown in colour instead
        self.progress_bar.console.print(f"[{colour}]{result.action:>6}[/{colour}] {_escape(text)}")

    def note(self, message: str) -> None:
        self.progress_bar.console.print(_escape(message))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _describe(result) -> str:
    text = f"{result.action} {result.reference} ({result.seconds:.1f} s, input {result.input_hash[:12]})"
    if result.registry_reference:
        where = f"{result.registry_reference}@{result.repo_digest}"
        text += f"; pushed {where}" if result.pushed else f"; already in registry as {where}"
    return text


@base_app.command("bootstrap")
def bootstrap_command(
    registry: Optional[str] = typer.Option(
        None,
        "--registry",
        metavar="HOST:PORT",
        help="Also tag and push the images to this registry.",
    ),
    registry_auth: Optional[Path] = typer.Option(
        None,
        "--registry-auth",
        metavar="FILE",
        help='JSON credentials: {"username": ..., "password": ...} or a Docker config.json with "auths".',
    ),
    ca_bundle: Optional[Path] = typer.Option(
        None,
        "--ca-bundle",
        metavar="FILE",
        help="PEM CA bundle pip trusts while downloading Spark/Flink (TLS-inspecting proxies); "
        "defaults to $PIP_CERT; never copied into an image.",
    ),
    only: Optional[list[str]] = typer.Option(
        None,
        "--only",
        metavar="TARGET",
        help="Make only these (and what they build on): debian, spark, flink, gramine, "
        "spark-gramine, flink-gramine, standin, spark-standin, flink-standin. Repeat or separate "
        "with commas.",
    ),
    gramine_source: Optional[Path] = typer.Option(
        None,
        "--gramine-source",
        metavar="DIR",
        envvar="PPML_GRAMINE_SOURCE",
        help="Build Gramine 1.9 from the source tarballs in DIR (gramine-1.9.tar.gz, the "
        "tarballs its meson wraps name, SHA256SUMS) instead of installing it from "
        "packages.gramineproject.io; for air-gapped build farms. Cached by the tarballs' hash.",
    ),
    spark_version: Optional[str] = typer.Option(
        None, "--spark-version", help="PyPI pyspark version to install."
    ),
    flink_version: Optional[str] = typer.Option(
        None, "--flink-version", help="PyPI apache-flink version to install."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Build (or reuse) the base images, cached by the hash of their inputs."""
    from ..errors import ImageError
    from ..image import bootstrap, engine

    if registry is not None:
        bootstrap.validate_registry(registry)
    if registry_auth is not None and registry is None:
        raise ImageError(
            "--registry-auth needs --registry HOST:PORT (credentials are for that registry)"
        )
    auth = engine.load_registry_auth(registry_auth, registry=registry) if registry_auth else None
    notes: list[str] = []
    if ca_bundle is None:
        found = bootstrap.default_ca_bundle()
        if found is not None:
            ca_bundle = found[0]
            notes.append(f"using CA bundle {ca_bundle} (from ${found[1]}) for pip downloads")
    if ca_bundle is not None:
        bootstrap.check_ca_bundle(ca_bundle)
    targets = tuple(t.strip() for item in (only or []) for t in item.split(",") if t.strip())
    selected = bootstrap.select_targets(targets)  # reject unknown names before touching the engine
    if "gramine" in selected:
        if gramine_source is not None:
            bootstrap.gramine_source_files(gramine_source)  # a bad directory fails before any work
            notes.append(
                f"building Gramine {bootstrap.GRAMINE_VERSION} from the source tarballs in {gramine_source}"
            )
        else:
            notes.append(
                f"no --gramine-source: installing Gramine {bootstrap.GRAMINE_VERSION} from "
                "packages.gramineproject.io (needs that network)"
            )

    options = bootstrap.BootstrapOptions(
        registry=registry,
        auth=auth,
        ca_bundle=ca_bundle,
        only=targets,
        spark_version=spark_version or bootstrap.DEFAULT_SPARK_VERSION,
        flink_version=flink_version or bootstrap.DEFAULT_FLINK_VERSION,
        gramine_source=gramine_source,
    )
    client = engine.connect()
    reporter = RichReporter() if (sys.stderr.isatty() and not as_json) else PlainReporter()
    started = time.monotonic()
    with reporter:
        for note in notes:
            reporter.note(note)
        results = bootstrap.bootstrap_bases(client, options, reporter)
    elapsed = round(time.monotonic() - started, 1)
    if as_json:
        print(
            json.dumps(
                {
                    "registry": registry,
                    "seconds": elapsed,
                    "images": [r.to_json() for r in results],
                },
                indent=2,
            )
        )
        return
    built = [r.reference for r in results if r.action == "built"]
    reused = [r.reference for r in results if r.action != "built"]
    print(f"built {len(built)}, reused {len(reused)} in {elapsed:.1f} s")
    for r in results:
        line = f"  {r.action:<6} {r.reference}"
        if r.registry_reference:
            line += f"  ->  {r.registry_reference}@{r.repo_digest}" + (
                "" if r.pushed else " (already there)"
            )
        print(line)
