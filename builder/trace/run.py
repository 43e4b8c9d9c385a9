"""The Docker edge of ``ppml-build trace``: the tracing image, the native run under strace and
the job under gramine-direct; ``run_trace`` reads what they leave and hands it to the pure core.

The recipe's command runs natively in the built image under ``strace -f`` (a throwaway image
``FROM`` it with strace added, cached by the image id). The Docker SDK is imported only when a
run starts.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ImageError, ManifestError, RecipeError
from ..image.rootfs import RootFS, RootFSError, resolve
from ..progress import Say, say_nothing
from ..record import IN_IMAGE_DIR
from .comparison import Lookup, TraceReport, compare, image_lookup
from .manifest_view import ManifestView
from .parse import libos_output_tail, parse_strace
from .report import LIBOS_PROGRAM, hash_everything_size, merge_libos, report_document, shipped_size
from .suggest import NATIVE_ESTIMATE, combined_suggestion, suggest, suggest_libos

if TYPE_CHECKING:  # direct.py imports the Docker SDK; the pure core never needs it
    from ..gramine.direct import LibosReport

TRACE_DIR = "/ppml-trace"  # where the host temp dir is mounted in the traced container
TRACE_LOG = TRACE_DIR + "/strace.log"
TRACE_IMAGE_LABEL = "ppml.trace.for"  # the image id a tracing image was made from
STRACE_ARGS = [
    "strace",
    "-f",
    "-qq",
    "-y",
    "-s",
    "4096",
    "-e",
    "trace=%file,execve,execveat",
    "-o",
    TRACE_LOG,
]

# Docker's default PATH, searched when the image sets none
DEFAULT_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class TraceResult:
    report: TraceReport
    document: dict[str, Any]
    suggestion: str
    stdout: str
    stderr: str
    exit_code: int
    libos_output_tail: list[str] = field(default_factory=list)  # the job's last lines there


def tracing_dockerfile(image_id: str, user: str | None) -> str:
    """The app image plus strace; nothing else changes (strace's own libraries are loaded
    before tracing starts, so they never show up in the trace)."""
    lines = [
        f"FROM {image_id}",
        "USER root",
        'RUN ["/bin/sh", "-ec", "apt-get update; DEBIAN_FRONTEND=noninteractive apt-get '
        'install -y --no-install-recommends strace; rm -rf /var/lib/apt/lists/*"]',
    ]
    if user:
        lines.append(f"USER {user}")
    return "\n".join(lines) + "\n"


def tracing_image(client, image_id: str, *, say: Say = say_nothing) -> str:
    """An image FROM ``image_id`` with strace, built once per image id (found by its label)."""
    from ..image.docker_build import build_image

    found = client.images.list(filters={"label": f"{TRACE_IMAGE_LABEL}={image_id}"})
    if found:
        return found[0].id
    user = (client.images.get(image_id).attrs.get("Config") or {}).get("User") or None
    say("building a tracing image (the app image plus strace), once per image")
    with tempfile.TemporaryDirectory(prefix="ppml-tracer-") as scratch:
        (Path(scratch) / "Dockerfile").write_text(tracing_dockerfile(image_id, user))
        try:
            return build_image(
                client,
                Path(scratch),
                tag=None,
                labels={TRACE_IMAGE_LABEL: image_id, "ppml.stage": "trace"},
                say=say,
            )
        except ImageError as err:
            raise ImageError(
                f"cannot add strace to {image_id[:19]}: {err}; the image needs "
                "apt-get (Debian/Ubuntu) and a package mirror it can reach"
            ) from None


def _read_manifest_option(manifest: Path) -> tuple[str, str]:
    try:
        return manifest.read_text(encoding="utf-8"), str(manifest)
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not UTF-8 text"
        raise ManifestError(f"--manifest {manifest}: cannot read it: {reason}") from None


def _manifest_text(fs: RootFS, name: str) -> tuple[str, str]:
    in_image = f"{IN_IMAGE_DIR}/{name}.manifest.sgx"
    try:
        return fs.read_bytes(in_image).decode("utf-8"), f"image:{in_image}"
    except (OSError, KeyError, ValueError):
        pass
    local = Path("ppml-out") / name / f"{name}.manifest.sgx"
    if local.is_file():
        return local.read_text(encoding="utf-8"), str(local)
    raise ManifestError(
        f"no manifest: the image has no {in_image} and there is no {local}; "
        "trace the image `ppml-build build` made, or pass --manifest FILE"
    )


def _search_path(image_attrs: dict[str, Any]) -> str:
    """The image's PATH (what Docker searches for the entrypoint), or "" when it sets none."""
    for item in (image_attrs.get("Config") or {}).get("Env") or []:
        if item.startswith("PATH="):
            return item[len("PATH=") :]
    return ""


def libos_run_problem(lookup: Lookup, name: str, search_path: str) -> str | None:
    """Why the image cannot run its job under gramine-direct, or None.

    The LibOS run loads the image's own signed manifest (direct.py), whatever --manifest says.
    """
    manifest = f"{IN_IMAGE_DIR}/{name}.manifest.sgx"
    if lookup(manifest) is None:
        return f"it has no {manifest} for gramine-direct to load"
    for directory in (search_path or DEFAULT_SEARCH_PATH).split(":"):
        found = lookup(posixpath.join(directory or "/", LIBOS_PROGRAM))
        if found is not None and found[0] == "file":
            return None
    return f"it has no {LIBOS_PROGRAM} on its PATH"


def trace_under_libos(
    client, image: str, name: str, *, timeout: int, say: Say
) -> "tuple[LibosReport, Any]":
    """The job under gramine-direct at log level trace: (what Gramine said, the DirectRun)."""
    from ..gramine.direct import read_libos_log, run_direct

    say(
        f"running the job under {LIBOS_PROGRAM} (the signed manifest at loader.log_level = "
        "trace, no network)"
    )
    # The native run mounts only the directory strace writes its log to, which the job never
    # reads: the LibOS run needs no volume.
    run = run_direct(client, image, name, network="none", log_level="trace", timeout=timeout)
    # On the Linux PAL the app's console is host fd 1 (pal/src/host/linux/pal_console.c) and
    # Gramine's log fd 2 (PAL_LOG_DEFAULT_FD, pal_streams.c): read both streams together.
    return read_libos_log(run.stdout + "\n" + run.stderr), run


def _native_file_mounts(view: ManifestView, fs: RootFS, into: Path) -> dict[str, dict]:
    """The manifest's mounts of ppml-build's own files over image paths (the spark-submit
    wrapper, /etc/hosts), as bind mounts for the native run, so it starts the JVM the way the
    enclave does instead of through Spark's bash scripts."""
    volumes: dict[str, dict] = {}
    for index, mount in enumerate(view.mounts):
        source = mount.uri_path
        if mount.type != "chroot" or not source or not source.startswith(IN_IMAGE_DIR + "/"):
            continue
        try:
            data = fs.read_bytes(resolve(fs, source))
        except (OSError, KeyError, ValueError, RootFSError):
            continue  # a directory, or not kept whole: the native run goes without it
        into.mkdir(parents=True, exist_ok=True)
        host = into / str(index)
        host.write_bytes(data)
        host.chmod(0o755)
        volumes[str(host)] = {"bind": mount.path, "mode": "ro"}
    return volumes


def run_trace(
    recipe_path: Path,
    *,
    image: str | None = None,
    manifest: Path | None = None,
    timeout: int = 1800,
    libos: bool = True,
    say: Say = say_nothing,
) -> TraceResult:
    """Trace the recipe's command in ``image`` (default ppml/<name>:latest) and compare; with
    ``libos``, also run the job under gramine-direct and report what the LibOS refused."""
    import docker.errors

    from ..image.base_index import cached_image_rootfs
    from ..image.engine import connect, export_image_rootfs
    from ..image.native import run_native
    from ..pipeline.stages import validate_recipe

    started = time.perf_counter()
    recipe = validate_recipe(recipe_path)
    if recipe.libos.type != "gramine":
        raise RecipeError(
            f"{recipe_path}: libos.type {recipe.libos.type!r}: trace compares "
            "with a Gramine manifest; Occlum images carry no file lists to check"
        )
    image = image or f"ppml/{recipe.name}:latest"
    given = _read_manifest_option(manifest) if manifest is not None else None
    client = connect()
    try:
        found_image = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"{image}: no such image; build it first (ppml-build build "
            f"{recipe_path}) or name it with --image"
        ) from None
    except docker.errors.APIError as err:
        raise ImageError(f"{image}: {err.explanation or err}") from None
    image_id = found_image.id

    def export(keep):
        say(f"indexing {image} (one export stream, cached by image id)")
        return export_image_rootfs(client, image_id, keep=keep)

    fs, _ = cached_image_rootfs(image_id, export, (IN_IMAGE_DIR + "/",))
    text, source = given or _manifest_text(fs, recipe.name)
    view = ManifestView.from_text(text, source)
    lookup = image_lookup(fs)
    if libos:  # before the long native run: say at once when the LibOS run cannot happen
        problem = libos_run_problem(lookup, recipe.name, _search_path(found_image.attrs))
        if problem:
            raise ImageError(f"{image}: {problem}; trace with --no-libos for the native run only")
    argv = list(view.argv) or list(recipe.app.command)
    tracer = tracing_image(client, image_id, say=say)

    with tempfile.TemporaryDirectory(prefix="ppml-trace-") as scratch:
        os.chmod(scratch, 0o777)  # the app may run as a non-root user
        traced = recipe.model_copy(
            update={
                "app": recipe.app.model_copy(
                    update={"command": STRACE_ARGS + argv, "workdir": view.start_dir}
                )
            }
        )
        volumes = {scratch: {"bind": TRACE_DIR, "mode": "rw"}}
        volumes.update(_native_file_mounts(view, fs, Path(scratch) / "mounts"))
        say(f"running {' '.join(argv)} under strace (no network)")
        run = run_native(
            client,
            tracer,
            traced,
            timeout=timeout,
            extra_args={
                "cap_add": ["SYS_PTRACE"],
                "security_opt": ["seccomp=unconfined"],
                # The manifest's environment, so the app searches the same library paths it will
                # search in the enclave.
                "environment": dict(view.env),
                "volumes": volumes,
            },
        )
        log_path = Path(scratch) / Path(TRACE_LOG).name
        if not log_path.is_file():
            raise ImageError(
                f"{image}: strace wrote no log (exit {run.exit_code}): "
                f"{(run.stderr.strip().splitlines() or ['no output'])[-1]}"
            )
        log = log_path.read_text(encoding="utf-8", errors="surrogateescape")

    accesses = parse_strace(log, cwd=view.start_dir)
    report = compare(accesses, view, lookup)
    native = suggest(report, recipe.files.trusted, title=NATIVE_ESTIMATE)
    libos_report, direct = (
        trace_under_libos(client, image, recipe.name, timeout=timeout, say=say)
        if libos
        else (None, None)
    )
    document = report_document(
        report,
        recipe=recipe.name,
        image=image,
        exit_code=run.exit_code,
        shipped=shipped_size(view, lookup),
        everything=hash_everything_size(fs),
        seconds=time.perf_counter() - started,
    )
    if direct is None:
        return TraceResult(
            report, merge_libos(document, None), native, run.stdout, run.stderr, run.exit_code
        )
    document = merge_libos(
        document, libos_report, exit_code=direct.exit_code, seconds=direct.seconds
    )
    written = {access.path for access in accesses if access.write}
    suggestion = combined_suggestion(suggest_libos(libos_report, view, lookup, written), native)
    return TraceResult(
        report,
        document,
        suggestion,
        run.stdout,
        run.stderr,
        run.exit_code,
        libos_output_tail(direct.stdout + "\n" + direct.stderr),
    )


__all__ = [
    "IN_IMAGE_DIR",
    "STRACE_ARGS",
    "TRACE_DIR",
    "TraceResult",
    "libos_run_problem",
    "run_trace",
    "trace_under_libos",
    "tracing_dockerfile",
    "tracing_image",
]
