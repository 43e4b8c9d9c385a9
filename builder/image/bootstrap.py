"""Base images for builds and tests: a debootstrapped Debian, Gramine 1.9 on it (built from its
source tarballs, or from Gramine's apt repository), Spark/Flink layers on Debian and on Gramine,
and stand-in Gramine test bases, cached by the hash of their inputs.

Every image carries the label ``ppml.input-hash``: SHA-256 over what determines its content
(Dockerfile bytes, build args, files copied in, the parent's input hash; for the Debian base the
debootstrap suite and variant). A target whose tagged image already has that label, locally or in
the registry, is reused and nothing is rebuilt. A CA bundle for pip is not an input: it only lets
the download stage through a TLS-inspecting proxy and never reaches the image.

Nothing here parses CLI arguments; ``ppml_build.cli.image_commands`` does, and reports through the
``Reporter`` protocol (rich on a terminal, plain lines otherwise).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, Sequence

import docker
import docker.errors

from . import engine
from ppml_build.errors import ImageError

INPUT_HASH_LABEL = "ppml.input-hash"
STANDIN_LABEL = "ppml.libos.standin"
# Bump when the hashing scheme or the way images are assembled changes: every cache misses.
CACHE_FORMAT = "ppml-build/base-images/v1"

DEFAULT_SPARK_VERSION = "4.3.0"  # PyPI pyspark; Spark 4 needs Java 17, which Debian 12 ships
DEFAULT_FLINK_VERSION = "2.3.0"  # PyPI apache-flink
DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

TARGET_NAMES = ("debian", "spark", "flink", "gramine", "spark-gramine", "flink-gramine",
                "standin", "spark-standin", "flink-standin")
GRAMINE_VERSION = "1.9"
# The tarballs a from-source Gramine build needs (gramine-1.9.tar.gz and what its meson wraps
# name, subprojects/*.wrap at v1.9), listed with their digests in SHA256SUMS.
GRAMINE_SOURCE_MAIN = f"gramine-{GRAMINE_VERSION}.tar.gz"
GRAMINE_SOURCE_SUMS = "SHA256SUMS"

PROJECT_ROOT = Path(__file__).resolve().parents[2]

Action = Literal["built", "reused", "pulled"]

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the engine colours RUN steps' stderr


# -- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapOptions:
    registry: str | None = None  # HOST:PORT; images are also tagged and pushed there
    auth: Mapping[str, str] | None = None
    ca_bundle: Path | None = None
    only: tuple[str, ...] = ()  # empty: every target; otherwise these and what they build on
    spark_version: str = DEFAULT_SPARK_VERSION
    flink_version: str = DEFAULT_FLINK_VERSION
    suite: str = DEBIAN_SUITE
    variant: str = DEBIAN_VARIANT
    mirror: str = DEBIAN_MIRROR
    project_root: Path = PROJECT_ROOT
    # A directory of Gramine's source tarballs (see gramine_source_files); None: Gramine's
    # own apt repository (packages.gramineproject.io), which needs that network.
    gramine_source: Path | None = None


@dataclass(frozen=True)
class TargetSpec:
    name: str
    repository: str  # local name, e.g. "ppml/spark-base"
    tag: str
    parent: str | None  # target name this one is built FROM
    dockerfile: Path | None  # None: the debootstrap import
    build_args: Mapping[str, str] = field(default_factory=dict)
    context_files: Mapping[str, Path] = field(default_factory=dict)  # name in context -> host file
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    def registry_reference(self, registry: str) -> str:
        return f"{registry}/{self.repository}:{self.tag}"


@dataclass
class TargetResult:
    name: str
    reference: str  # local tag
    input_hash: str
    action: Action
    image_id: str
    seconds: float
    registry_reference: str | None = None
    repo_digest: str | None = None  # "sha256:…" in the registry
    pushed: bool | None = None  # None: no registry; False: the registry already had it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def validate_registry(registry: str) -> str:
    """HOST[:PORT] with no scheme and no path (the form docker tags use)."""
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", registry or ""):
        raise ImageError(f"--registry {registry!r}: expected HOST:PORT such as 127.0.0.1:5000 (no scheme, no path)")
    return registry


def _dependencies() -> dict[str, str | None]:
    return {
        "debian": None,
        "spark": "debian",
        "flink": "debian",
        "gramine": "debian",
        "spark-gramine": "gramine",
        "flink-gramine": "gramine",
        "standin": "debian",
        "spark-standin": "spark",
        "flink-standin": "flink",
    }


def select_targets(only: Sequence[str]) -> list[str]:
    """The targets to make, parents first: ``only`` plus everything they build on."""
    deps = _dependencies()
    unknown = [name for name in only if name not in deps]
    if unknown:
        raise ImageError(f"--only {', '.join(unknown)}: unknown target; choose from {', '.join(TARGET_NAMES)}")
    wanted = set(only) if only else set(deps)
    for name in list(wanted):
        parent = deps[name]
        while parent is not None:
            wanted.add(parent)
            parent = deps[parent]
    return [name for name in TARGET_NAMES if name in wanted]


def target_specs(options: BootstrapOptions, standin_dir: Path | None) -> dict[str, TargetSpec]:
    """Every target's recipe. ``standin_dir`` holds the compiled libpal.so/libsysdb.so."""
    base_images = options.project_root / "base_images"
    standin_dockerfile = options.project_root / "tests" / "standin" / "image" / "Dockerfile"
    standin_files: dict[str, Path] = {}
    if standin_dir is not None:
        standin_files = {"libpal.so": standin_dir / "libpal.so", "libsysdb.so": standin_dir / "libsysdb.so"}
    standin_labels = {STANDIN_LABEL: "true"}
    if options.gramine_source is not None:
        gramine_dockerfile = base_images / "gramine" / "Dockerfile.source"
        gramine_files = gramine_source_files(options.gramine_source)
    else:
        gramine_dockerfile, gramine_files = base_images / "gramine" / "Dockerfile", {}
    return {
        "debian": TargetSpec(
            "debian", "ppml/debian-base", options.suite, None, None,
            build_args={"suite": options.suite, "variant": options.variant},
        ),
        "spark": TargetSpec(
            "spark", "ppml/spark-base", options.spark_version, "debian", base_images / "spark" / "Dockerfile",
            build_args={"SPARK_VERSION": options.spark_version},
        ),
        "flink": TargetSpec(
            "flink", "ppml/flink-base", options.flink_version, "debian", base_images / "flink" / "Dockerfile",
            build_args={"FLINK_VERSION": options.flink_version},
        ),
        "gramine": TargetSpec(
            "gramine", "ppml/gramine-base", GRAMINE_VERSION, "debian", gramine_dockerfile,
            build_args={"GRAMINE_VERSION": GRAMINE_VERSION}, context_files=gramine_files,
        ),
        "spark-gramine": TargetSpec(
            "spark-gramine", "ppml/spark-gramine", options.spark_version, "gramine",
            base_images / "spark" / "Dockerfile", build_args={"SPARK_VERSION": options.spark_version},
        ),
        "flink-gramine": TargetSpec(
            "flink-gramine", "ppml/flink-gramine", options.flink_version, "gramine",
            base_images / "flink" / "Dockerfile", build_args={"FLINK_VERSION": options.flink_version},
        ),
        "standin": TargetSpec(
            "standin", "ppml/gramine-standin", options.suite, "debian", standin_dockerfile,
            context_files=standin_files, labels=standin_labels,
        ),
        "spark-standin": TargetSpec(
            "spark-standin", "ppml/spark-gramine-standin", options.spark_version, "spark", standin_dockerfile,
            context_files=standin_files, labels=standin_labels,
        ),
        "flink-standin": TargetSpec(
            "flink-standin", "ppml/flink-gramine-standin", options.flink_version, "flink", standin_dockerfile,
            context_files=standin_files, labels=standin_labels,
        ),
    }


def gramine_source_files(directory: Path) -> dict[str, Path]:
    """The tarballs of a ``--gramine-source`` directory, checked against its SHA256SUMS.

    Every file SHA256SUMS names must be there with that digest, and gramine-1.9.tar.gz among
    them; the Dockerfile checks the sums again inside the build. The directory may be
    read-only (an air-gapped mirror): the files are copied into the build context.
    """
    directory = Path(directory)
    where = f"--gramine-source {directory}"
    sums = directory / GRAMINE_SOURCE_SUMS
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ImageError(f"{where}: no {GRAMINE_SOURCE_SUMS} there; the directory must hold "
                         f"{GRAMINE_SOURCE_MAIN}, the tarballs its meson wraps name, and "
                         f"their {GRAMINE_SOURCE_SUMS}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ImageError(f"{where}: cannot read {GRAMINE_SOURCE_SUMS}: "
                         f"{getattr(err, 'strerror', None) or err}") from None
    files: dict[str, Path] = {GRAMINE_SOURCE_SUMS: sums}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-f]{64}) [ *]([A-Za-z0-9._+-]+)", line.strip())
        if match is None:
            raise ImageError(f"{sums}:{number}: expected '<sha256>  <file name>' (sha256sum's "
                             "format)")
        digest, name = match.groups()
        path = directory / name
        if not path.is_file():
            raise ImageError(f"{where}: {name} is listed in {GRAMINE_SOURCE_SUMS} but missing")
        if _sha256_file(path) != digest:
            raise ImageError(f"{where}: {name} does not match its sha256 in "
                             f"{GRAMINE_SOURCE_SUMS}; copy it again")
        files[name] = path
    if GRAMINE_SOURCE_MAIN not in files:
        raise ImageError(f"{where}: {GRAMINE_SOURCE_MAIN} is not listed in "
                         f"{GRAMINE_SOURCE_SUMS}; this base builds Gramine {GRAMINE_VERSION}")
    return files


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def input_hash(spec: TargetSpec, parent_hash: str | None) -> str:
    """SHA-256 of everything that decides the image's content (never of the CA bundle)."""
    inputs: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "parent": parent_hash,
        "build_args": dict(sorted(spec.build_args.items())),
        "labels": dict(sorted(spec.labels.items())),
    }
    if spec.dockerfile is None:
        inputs["kind"] = "debootstrap"
    else:
        try:
            inputs["kind"] = "dockerfile"
            inputs["dockerfile"] = _sha256_file(spec.dockerfile)
            inputs["files"] = {name: _sha256_file(path) for name, path in sorted(spec.context_files.items())}
        except OSError as err:
            raise ImageError(f"{err.filename}: cannot read an input of the {spec.name} image: {err.strerror}") from None
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# -- reporting --------------------------------------------------------------------------------


class Reporter(Protocol):
    def begin(self, target: str, message: str) -> None: ...

    def progress(self, target: str, line: str) -> None: ...

    def end(self, result: TargetResult) -> None: ...

    def note(self, message: str) -> None: ...


class SilentReporter:
    def begin(self, target: str, message: str) -> None:
        pass

    def progress(self, target: str, line: str) -> None:
        pass

    def end(self, result: TargetResult) -> None:
        pass

    def note(self, message: str) -> None:
        pass


# -- the run ----------------------------------------------------------------------------------


def bootstrap_bases(
    client: docker.DockerClient,
    options: BootstrapOptions,
    reporter: Reporter | None = None,
) -> list[TargetResult]:
    """Make (or reuse) the selected base images, parents first; push them if a registry is set."""
    reporter = reporter or SilentReporter()
    if options.registry:
        validate_registry(options.registry)
    names = select_targets(options.only)
    with tempfile.TemporaryDirectory(prefix="ppml-standin-") as scratch:
        standin_dir = None
        if any(n.endswith("standin") for n in names):
            standin_dir = build_standin_binaries(options.project_root, Path(scratch))
        specs = target_specs(options, standin_dir)
        hashes: dict[str, str] = {}
        results: list[TargetResult] = []
        for name in names:
            spec = specs[name]
            hashes[name] = input_hash(spec, hashes.get(spec.parent) if spec.parent else None)
            result = _make_target(client, spec, hashes[name], specs, options, reporter)
            reporter.end(result)
            results.append(result)
        return results


def build_standin_binaries(project_root: Path, dest: Path) -> Path:
    """Compile the stand-in libpal.so and libsysdb.so (tests/standin) into ``dest``."""
    init = project_root / "tests" / "standin" / "__init__.py"
    if not init.is_file():
        raise ImageError(
            f"{init}: not found; the stand-in Gramine images need a source checkout of ppml-build "
            "(or leave them out with --only debian,spark,flink)"
        )
    spec = importlib.util.spec_from_file_location("_ppml_standin", init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        module.build_libpal(dest)
        module.build_libsysdb(dest)
    except RuntimeError as err:
        raise ImageError(f"compiling the stand-in Gramine binaries failed: {str(err).splitlines()[0]}") from None
    return dest


def _local_image(client: docker.DockerClient, reference: str):
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def _label(image, key: str) -> str | None:
    return ((image.attrs.get("Config") or {}).get("Labels") or {}).get(key)


def _make_target(
    client: docker.DockerClient,
    spec: TargetSpec,
    digest: str,
    specs: Mapping[str, TargetSpec],
    options: BootstrapOptions,
    reporter: Reporter,
) -> TargetResult:
    started = time.monotonic()
    registry_ref = spec.registry_reference(options.registry) if options.registry else None
    action: Action

    image = _local_image(client, spec.reference)
    if image is not None and _label(image, INPUT_HASH_LABEL) == digest:
        action = "reused"
    else:
        image = None
        if registry_ref is not None:
            image = _pull_if_current(client, spec, registry_ref, digest, options, reporter)
        if image is not None:
            action = "pulled"
        else:
            reporter.begin(spec.name, f"building {spec.reference}")
            if spec.dockerfile is None:
                _debootstrap_import(client, spec, digest, options, reporter)
            else:
                parent = specs[spec.parent].reference if spec.parent else None
                _docker_build(client, spec, digest, parent, options, reporter)
            image = client.images.get(spec.reference)
            action = "built"

    result = TargetResult(
        name=spec.name,
        reference=spec.reference,
        input_hash=digest,
        action=action,
        image_id=image.id,
        seconds=0.0,
        registry_reference=registry_ref,
    )
    if registry_ref is not None:
        client.api.tag(image.id, *registry_ref.rsplit(":", 1))
        image = client.images.get(image.id)
        have = engine.registry_digest(client, registry_ref, auth=options.auth)
        local_digests = {d.partition("@")[2] for d in image.attrs.get("RepoDigests") or ()
                         if d.partition("@")[0] == registry_ref.rsplit(":", 1)[0]}
        if have is not None and have in local_digests:
            result.repo_digest, result.pushed = have, False
        else:
            reporter.progress(spec.name, f"pushing {registry_ref}")
            result.repo_digest = engine.push_image(client, registry_ref, auth=options.auth)
            result.pushed = True
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _pull_if_current(client, spec: TargetSpec, registry_ref: str, digest: str, options: BootstrapOptions, reporter):
    """The registry's image if it carries this input hash (then also tagged locally), else None."""
    if engine.registry_digest(client, registry_ref, auth=options.auth) is None:
        return None
    reporter.progress(spec.name, f"pulling {registry_ref}")
    pulled = engine.pull_image(client, registry_ref, auth=options.auth)
    image = client.images.get(pulled.image_id)
    if _label(image, INPUT_HASH_LABEL) != digest:
        return None
    client.api.tag(image.id, spec.repository, spec.tag)
    return image


# -- debootstrap ------------------------------------------------------------------------------


def _debootstrap_import(client, spec: TargetSpec, digest: str, options: BootstrapOptions, reporter: Reporter) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageError("debootstrap is not installed; run scripts/docker-up.sh (installs it) or apt-get install debootstrap")
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root to create the Debian base; run `ppml-build base bootstrap` as root")
    root = Path(tempfile.mkdtemp(prefix="ppml-debootstrap-"))
    try:
        cmd = [debootstrap, f"--variant={options.variant}", options.suite, str(root), options.mirror]
        tail = _run_logged(cmd, spec.name, reporter)
        if tail is not None:
            raise ImageError(f"debootstrap {options.suite} failed: {tail}; check network access to {options.mirror}")
        _scrub_rootfs(root)
        reporter.progress(spec.name, f"importing the root filesystem as {spec.reference}")
        labels = {
            INPUT_HASH_LABEL: digest,
            "org.opencontainers.image.title": "ppml debian base",
            "org.opencontainers.image.description": f"Debian {options.suite} ({options.variant}) made with debootstrap",
            "org.opencontainers.image.version": options.suite,
            **spec.labels,
        }
        changes = [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in labels.items()]
        changes += [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            'CMD ["/bin/bash"]',
        ]
        # Tar to a file beside the tree, then import by path: the engine reads a file faster
        # than a chunked HTTP upload of a pipe.
        archive = root.with_name(root.name + ".tar")
        try:
            subprocess.run(
                ["tar", "-C", str(root), "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*",
                 "--exclude=./sys/*", "-cf", str(archive), "."],
                check=True, capture_output=True,
            )
            client.api.import_image(src=str(archive), repository=spec.repository, tag=spec.tag, changes=changes)
        except subprocess.CalledProcessError as err:
            detail = (err.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise ImageError(f"tar of the debootstrap tree failed: {detail[-1] if detail else err}") from None
        except docker.errors.APIError as err:
            raise ImageError(f"importing the Debian base failed: {err.explanation or err}") from None
        finally:
            archive.unlink(missing_ok=True)
    finally:
        _remove_tree(root)


def _scrub_rootfs(root: Path) -> None:
    """Drop what debootstrap copies from the host or leaves behind (the engine supplies these)."""
    for rel in ("etc/resolv.conf", "etc/hostname", "etc/hosts"):
        path = root / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log/bootstrap.log"):
        path = root / rel
        if path.is_dir():
            for child in path.iterdir():
                if child.is_file() and child.name != "lock":
                    child.unlink()
        elif path.is_file():
            path.unlink()


def _remove_tree(root: Path) -> None:
    """rm -rf a debootstrap tree, first unmounting anything a failed run left mounted in it."""
    try:
        with open("/proc/mounts", encoding="utf-8") as handle:
            mounts = [line.split()[1] for line in handle]
    except OSError:
        mounts = []
    for mount in sorted((m for m in mounts if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _run_logged(cmd: list[str], target: str, reporter: Reporter) -> str | None:
    """Run ``cmd`` streaming its lines to the reporter; None on success, else the last lines."""
    tail: deque[str] = deque(maxlen=5)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                reporter.progress(target, line)
    if proc.returncode == 0:
        return None
    return " / ".join(tail) or f"exit status {proc.returncode}"


# -- docker build -----------------------------------------------------------------------------


def _docker_build(
    client,
    spec: TargetSpec,
    digest: str,
    parent: str | None,
    options: BootstrapOptions,
    reporter: Reporter,
) -> None:
    assert spec.dockerfile is not None
    with tempfile.TemporaryDirectory(prefix=f"ppml-build-{spec.name}-") as ctx:
        context = Path(ctx)
        shutil.copyfile(spec.dockerfile, context / "Dockerfile")
        for name, path in spec.context_files.items():
            shutil.copyfile(path, context / name)
        if options.ca_bundle is not None:
            # Seen by the download stage only (see base_images/*/Dockerfile); not a cache input.
            shutil.copyfile(options.ca_bundle, context / "extra-ca.pem")
        build_args = dict(spec.build_args)
        if parent is not None:
            build_args["BASE"] = parent
        labels = {INPUT_HASH_LABEL: digest, **spec.labels}
        tail: deque[str] = deque(maxlen=8)
        step = ""
        try:
            events = client.api.build(
                path=str(context),
                tag=spec.reference,
                buildargs=build_args,
                labels=labels,
                network_mode="host",
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for event in events:
                if "error" in event:
                    detail = str(event.get("error", "")).strip().splitlines()
                    for line in tail:
                        reporter.progress(spec.name, line)
                    raise ImageError(
                        f"building {spec.reference} failed at {step or 'the first step'}: "
                        f"{detail[-1] if detail else 'unknown error'}"
                    )
                text = event.get("stream")
                if not text:
                    continue
                for line in _ANSI_RE.sub("", text).splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    if line.startswith("Step "):
                        step = line.split(" : ", 1)[0]
                    tail.append(line)
                    reporter.progress(spec.name, line)
        except docker.errors.APIError as err:
            raise ImageError(f"building {spec.reference} failed: {err.explanation or err}") from None


# -- CA bundle --------------------------------------------------------------------------------


def default_ca_bundle(environ: Mapping[str, str] | None = None) -> tuple[Path, str] | None:
    """The CA bundle host pip is told to trust ($PIP_CERT), to hand to pip inside the build."""
    environ = os.environ if environ is None else environ
    value = environ.get("PIP_CERT")
    if value and Path(value).is_file():
        return Path(value), "PIP_CERT"
    return None


def check_ca_bundle(path: Path) -> Path:
    try:
        head = path.read_bytes()[:1 << 16]
    except OSError as err:
        raise ImageError(f"--ca-bundle {path}: cannot read it: {err.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise ImageError(f"--ca-bundle {path}: not a PEM certificate bundle (no BEGIN CERTIFICATE line)")
    return path


__all__ = [
    "BootstrapOptions",
    "CACHE_FORMAT",
    "DEFAULT_FLINK_VERSION",
    "DEFAULT_SPARK_VERSION",
    "INPUT_HASH_LABEL",
    "Reporter",
    "STANDIN_LABEL",
    "SilentReporter",
    "TARGET_NAMES",
    "TargetResult",
    "TargetSpec",
    "bootstrap_bases",
    "build_standin_binaries",
    "gramine_source_files",
    "check_ca_bundle",
    "default_ca_bundle",
    "input_hash",
    "select_targets",
    "target_specs",
    "validate_registry",
]
