"""``ppml-build build`` for ``libos.type: occlum``: recipe → signed Occlum enclave image + record.

    pull base (digest pinned) → app layer (Docker SDK) → base index + app overlay
    → Occlum.json + bom.yaml (ppml_build.occlum.config) → in a container of that image:
      ``occlum new``, ``copy_bom``, ``occlum build --sign-key`` → read the SIGSTRUCT of
      build/lib/libocclum-libos.signed.so natively and check it → commit the container
      (labels, ``occlum run`` entrypoint) → record (+ policies) → optional push

Unlike Gramine, MRENCLAVE cannot be computed from the configuration: ``occlum build`` seals
the SEFS image and initfs MACs into the LibOS binary before ``sgx_sign`` measures it
(Occlum 0.31 `tools/occlum_build.mk`: the image MACs go into the config, then `sgx_sign`). So Occlum's own tools build and sign, and we read the result.

The signing key: a fresh host temp dir holds only a copy of it (0400), bind-mounted read-only
into the build container, which has no network. The copy is deleted as soon as the container
exits, and the container is committed only then; a bind mount is never part of a commit anyway
(it uses ``mounts=``, so not even a VOLUME entry is). The key is never in a build context, a
layer, the image config or history, a log line or the record.

Longer than most: the pure pieces (script, image config, labels, record) and the container
edge of one build, in the order the build runs them.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from .. import __version__
from ..atomic import write_all_or_none
from ..errors import ImageError, RecipeError, VerificationError

# The app image is made exactly as for Gramine, without Gramine's support stage.
from ..image.app_layer import app_image
from ..image.engine import STREAM_TIMEOUT, ImageReference
from ..pipeline.job import BuildJob, launch_support_stage
from ..pipeline.key_guard import refuse_key_in_bytes
from ..pipeline.options import BuildOptions, BuildResult
from ..pipeline.outputs import image_labels, record_fields, write_build_outputs
from ..plan import Plan
from ..progress import Say, say_nothing
from ..recipe import Recipe
from ..record import IN_IMAGE_DIR, LABEL_EDMM, LABEL_OCCLUM_INSTANCE
from ..sign import keys
from ..units import format_gramine_size
from ..versions import OCCLUM_VERSION
from .config import RenderedOcclum
from .enclave import OcclumEnclave, read_occlum_enclave
from .render import render_occlum_for_rootfs

# Where Occlum 0.31's packages install their tools (base_images/occlum/Dockerfile). Named by
# absolute path: a Spark or Flink layer on top of the Occlum base may have reset PATH.
OCCLUM_BIN_DIR = "/opt/occlum/build/bin"
OCCLUM_TEMPLATE_DIR = "/opt/occlum/etc/template"  # copy_bom's --include-dir (base.yaml)
INSTANCE_DIR = f"{IN_IMAGE_DIR}/occlum_instance"
SIGNED_ENCLAVE = "build/lib/libocclum-libos.signed.so"  # relative to the instance (occlum_build.mk)
BUILD_SCRIPT = f"{IN_IMAGE_DIR}/occlum-build.sh"
OCCLUM_JSON = f"{IN_IMAGE_DIR}/Occlum.json"
BOM_YAML = f"{IN_IMAGE_DIR}/bom.yaml"
# The read-only bind mount of the key's temp dir (never a path of the image's own files).
KEY_MOUNT_DIR = "/run/ppml-signing-key"
KEY_FILE_NAME = "enclave-key.pem"
SGX_MODE = "HW"  # SIM/HYPER builds load a different LibOS binary: a different MRENCLAVE
STEP_PREFIX = "ppml-step: "
ERROR_PREFIX = "ppml-error: "
EXIT_NO_KEY = 97
EXIT_NO_OCCLUM = 98


# --- pure pieces ------------------------------------------------------------------------------


def occlum_build_script(*, edmm: bool) -> str:
    """The shell script the build container runs (as root, no network, key mounted read-only).

    It never prints or copies the key: ``occlum build`` hands the path to sgx_sign, which reads
    it. EDMM is set explicitly both ways (``--enable-edmm``, ENABLE_EDMM): gen_internal_conf ORs
    the environment with Occlum.json's feature.enable_edmm, so a base image's ENV could
    otherwise switch it on behind the recipe's back.
    """
    flag = "Y" if edmm else "N"
    key = f"{KEY_MOUNT_DIR}/{KEY_FILE_NAME}"
    return f"""\
#!/bin/sh
# Written by ppml-build {__version__}: builds and signs the Occlum {OCCLUM_VERSION} instance.
# The signing key is a read-only bind mount from the build host; it is not in this image.
set -eu
step() {{ echo "{STEP_PREFIX}$*"; }}
fail() {{ code=$1; shift; echo "{ERROR_PREFIX}$*"; exit "$code"; }}
export PATH="{OCCLUM_BIN_DIR}:$PATH"
export SGX_MODE={SGX_MODE} ENABLE_EDMM={flag}
[ -r "{key}" ] || fail {EXIT_NO_KEY} "no signing key at {key}"
command -v occlum >/dev/null 2>&1 || fail {EXIT_NO_OCCLUM} "occlum"
command -v copy_bom >/dev/null 2>&1 || fail {EXIT_NO_OCCLUM} "copy_bom"
rm -rf "{INSTANCE_DIR}"
step "occlum new {INSTANCE_DIR}"
occlum new "{INSTANCE_DIR}"
cd "{INSTANCE_DIR}"
cp "{OCCLUM_JSON}" Occlum.json
step "copy_bom -f {BOM_YAML} --root image"
copy_bom -f "{BOM_YAML}" --root image --include-dir "{OCCLUM_TEMPLATE_DIR}"
step "occlum build --sign-key {key} --enable-edmm {flag}"
occlum build --sign-key "{key}" --enable-edmm {flag}
test -f "{SIGNED_ENCLAVE}" || fail 1 "occlum build wrote no {SIGNED_ENCLAVE}"
step "done"
"""


def occlum_run_command(entry_program: str) -> list[str]:
    """How the image (and a Kubernetes pod) starts the enclave, in the instance directory."""
    return [f"{OCCLUM_BIN_DIR}/occlum", "run", entry_program]


def final_image_config(
    recipe: Recipe, rendered: RenderedOcclum, labels: dict[str, str]
) -> dict[str, Any]:
    """Image config the commit applies. Running the image runs, in the instance directory,

        /opt/occlum/build/bin/occlum run /ppml/entry/start.sh

    which needs the SGX devices (``docker run --device /dev/sgx_enclave --device
    /dev/sgx_provision IMAGE``). The entry script holds the command and refuses arguments, so
    a CMD given at run time stops it. With app.insecure_host_argv the program itself is the
    entry point and CMD (app.command[1:]) can be replaced by the host.
    """
    return {
        "Entrypoint": occlum_run_command(rendered.entry_program),
        "Cmd": [] if rendered.entry_script is not None else list(recipe.app.command[1:]),
        "WorkingDir": INSTANCE_DIR,
        "Labels": dict(labels),
    }


def occlum_labels(
    recipe: Recipe, enclave: OcclumEnclave, base_digest: str, created: str
) -> dict[str, str]:
    """Gramine's label set (OCI + ppml.*; ppml.libos = "occlum 0.31"), plus EDMM and where
    the instance is."""
    labels = image_labels(recipe, enclave.summary(), base_digest, created)
    labels[LABEL_EDMM] = "true" if enclave.edmm else "false"
    labels[LABEL_OCCLUM_INSTANCE] = INSTANCE_DIR
    return labels


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def occlum_measurement_record(
    *,
    recipe: Recipe,
    plan: Plan,
    enclave: OcclumEnclave,
    image: str,
    image_id: str,
    pushed_digest: str | None,
    base_digest: str,
    rendered: RenderedOcclum,
) -> dict:
    """The record, in the shape of ``ppml_build.gramine.build.measurement_record``.

    What Gramine's keys mean here: ``manifest_sha256`` is Occlum.json's digest (the
    configuration sealed into the LibOS); ``trusted_files`` counts the files the bom puts into
    the integrity-protected image, with the bom's digest; ``enclave_size`` is what sgx_sign
    laid out (from the signed metadata), not our estimate.
    """
    occlum_json = rendered.occlum_json_text.encode("utf-8")
    bom = rendered.bom_text.encode("utf-8")
    summary = enclave.summary()
    enclave_size = (
        format_gramine_size(enclave.metadata.enclave_size) if enclave.metadata is not None else None
    )
    record = record_fields(
        recipe=recipe,
        plan=plan,
        summary=summary,
        image=image,
        image_id=image_id,
        pushed_digest=pushed_digest,
        base_digest=base_digest,
        enclave_size=enclave_size,
        edmm=enclave.edmm,
        manifest_sha256=_sha256(occlum_json),
        trusted_files={"count": rendered.image_file_count, "digest": "sha256:" + _sha256(bom)},
    )
    return {
        **record,
        "occlum": {
            "instance": INSTANCE_DIR,
            "signed_enclave": f"{INSTANCE_DIR}/{SIGNED_ENCLAVE}",
            "sgx_mode": SGX_MODE,
            "sdk_metadata_version": (
                enclave.metadata.version if enclave.metadata is not None else None
            ),
            "occlum_json_sha256": _sha256(occlum_json),
            "bom_sha256": _sha256(bom),
        },
    }


def config_archive(files: dict[str, bytes]) -> bytes:
    """A tar of in-image paths → bytes (root-owned, mtime 0) for ``put_archive`` at /."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        dirs = sorted({posixpath.dirname(path) for path in files} - {"/"})
        for directory in dirs:
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(files[path])
            info.mode = 0o755 if path.endswith(".sh") else 0o644
            archive.addfile(info, io.BytesIO(files[path]))
    return buffer.getvalue()


# --- the I/O edge -----------------------------------------------------------------------------


@contextlib.contextmanager
def key_mount_dir(private_key: keys.PrivateKey) -> Iterator[Path]:
    """A fresh 0700 temp dir holding only the key (unencrypted PKCS#1 PEM, 0400), removed
    afterwards whatever happens.

    PKCS#1 is the form of Occlum's own Enclave.pem and what sgx_sign reads; it has no
    passphrase option, so an encrypted --key is written decrypted, only here.
    """
    directory = Path(tempfile.mkdtemp(prefix="ppml-occlum-key-"))
    try:
        path = directory / KEY_FILE_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as handle:
            handle.write(keys.private_key_pem(private_key))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class ContainerRun:
    exit_code: int
    log: str
    last_step: str


def _read_file(container, path: str) -> bytes | None:
    """One regular file from a (stopped) container; None if it is not there."""
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            member = archive.next()
            if member is None or not member.isfile():
                return None
            handle = archive.extractfile(member)
            return handle.read() if handle is not None else None
    except docker.errors.NotFound:
        return None


def _run_build_container(container, say: Say) -> ContainerRun:
    """Start, stream the log (steps go to ``say``), wait for the exit code."""
    lines: list[str] = []
    last_step = "the start"
    container.start()
    pending = b""
    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip()
            lines.append(line)
            if line.startswith(STEP_PREFIX):
                last_step = line[len(STEP_PREFIX) :]
                say(last_step)
    if pending:
        lines.append(pending.decode("utf-8", "replace").rstrip())
    status = container.wait(timeout=STREAM_TIMEOUT)
    return ContainerRun(int(status.get("StatusCode", -1)), "\n".join(lines) + "\n", last_step)


def _failure(run: ContainerRun, base: str, log_path: Path) -> ImageError:
    lines = [line for line in run.log.splitlines() if line.strip()]
    ours = [line[len(ERROR_PREFIX) :] for line in lines if line.startswith(ERROR_PREFIX)]
    if run.exit_code == EXIT_NO_KEY:
        return ImageError(
            f"occlum build: the bind-mounted signing key is not visible in the build container "
            f"({ours[-1] if ours else 'missing'}); the Docker engine must run on this machine "
            f"(DOCKER_HOST pointing elsewhere cannot see the host's temp dir)"
        )
    if run.exit_code == EXIT_NO_OCCLUM:
        return ImageError(
            f"{base}: has no `{ours[-1] if ours else 'occlum'}` in {OCCLUM_BIN_DIR} or PATH; "
            "base.image must be an Occlum 0.31 image (base_images/occlum) with the app's runtime"
        )
    detail = ours[-1:] or [line for line in lines if not line.startswith(STEP_PREFIX)][-1:]
    return ImageError(
        f"occlum build in {base} failed at `{run.last_step}` (exit "
        f"{run.exit_code}): {(detail or ['no output'])[0][:300]}; "
        f"full log: {log_path}"
    )


def _commit(container, image: str, conf: dict[str, Any]) -> str:
    ref = ImageReference.parse(image)
    if ref.digest:
        raise ImageError(f"--tag {image}: name the image with a tag, not a digest")
    try:
        committed = container.commit(
            repository=ref.repository,
            tag=ref.tag or "latest",
            conf=conf,
            message="ppml-build: occlum build",
        )
    except docker.errors.APIError as err:
        raise ImageError(
            f"committing the Occlum build container as {image} failed: {err.explanation or err}"
        ) from None
    return committed.id


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "explanation", None) or err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _create_build_container(
    client, image_id: str, key_dir: Path, inputs: dict[str, bytes], base_ref: str
):
    """The build container: no network, the key dir bind-mounted read-only, our inputs in."""
    try:
        container = client.containers.create(
            image_id,
            entrypoint=["/bin/sh", BUILD_SCRIPT],
            command=[],
            network_mode="none",
            # mounts=, not volumes=: the SDK turns volumes= into a VOLUME entry of the container
            # config, which a commit would copy into the image.
            mounts=[Mount(KEY_MOUNT_DIR, str(key_dir), type="bind", read_only=True)],
        )
    except docker.errors.APIError as err:
        raise ImageError(
            f"cannot create the Occlum build container from {base_ref}: {_first_line(err)}"
        ) from None
    try:
        container.put_archive("/", config_archive(inputs))
    except docker.errors.APIError as err:
        container.remove(force=True)
        raise ImageError(
            f"cannot copy Occlum.json and bom.yaml into the build container: {_first_line(err)}"
        ) from None
    return container


def _check_instance(container, occlum_json: bytes) -> None:
    """What occlum build left besides the enclave must match what we asked for."""
    written = _read_file(container, f"{INSTANCE_DIR}/Occlum.json")
    if written != occlum_json:
        raise VerificationError(
            f"{INSTANCE_DIR}/Occlum.json: differs from the one ppml-build "
            "wrote; the base image's occlum changed it"
        )
    mode = (_read_file(container, f"{INSTANCE_DIR}/.sgx_mode") or b"").strip()
    if mode and mode != SGX_MODE.encode():
        raise VerificationError(
            f"{INSTANCE_DIR}/.sgx_mode: {mode.decode()!r}; the enclave must "
            f"be built in {SGX_MODE} mode (a SIM/HYPER LibOS has another "
            "MRENCLAVE)"
        )


def check_occlum(options: BuildOptions, recipe: Recipe, plan: Plan, say: Say) -> None:
    """What refuses an Occlum build before any Docker work (and before the key is read)."""
    source = str(options.recipe)
    if recipe.libos.type != "occlum":
        raise RecipeError(
            f"{source}: libos.type {recipe.libos.type!r}: the Occlum build "
            "handles occlum recipes only"
        )
    if recipe.libos.version != OCCLUM_VERSION:
        raise RecipeError(
            f"{source}: libos.version: Occlum {recipe.libos.version} is not "
            f'supported; use "{OCCLUM_VERSION}"'
        )
    if recipe.cluster is not None:
        raise RecipeError(
            f"{source}: cluster: an enclave per cluster role is built for Gramine so far; "
            "remove cluster: for Occlum's single-enclave job, or use libos.type gramine"
        )
    image = options.image_name(recipe.name)
    if ImageReference.parse(image).digest:
        raise ImageError(f"--tag {image}: name the image with a tag, not a digest")


def build_occlum(job: BuildJob, say: Say = say_nothing) -> BuildResult:
    recipe, plan, options, timer, source = job.recipe, job.plan, job.options, job.timer, job.source
    stats, image, output_dir = job.stats, job.image, job.output_dir
    # The sample key (Occlum's default) was refused when the job was made, before Docker.
    private_key = job.private_key
    expected_mrsigner = keys.mrsigner_of(private_key.public_key())
    # The copy we mount is this key re-encoded: its DER and private numbers are among these.
    key_refusals = job.key_needles

    # The app image exactly as the Gramine build makes it (app files, build stage, workdir,
    # env), and our view of its filesystem: the base's cached index + the app layer.
    # Spark's launcher output and ppml-build's jars, when the launch uses them (plan/launch.py).
    support = launch_support_stage(recipe, plan) if plan.launch.form == "spark-jvm" else None
    request = job.app_layer_request(support)
    with app_image(request, recipe, plan, timer=timer, stats=stats, say=say) as app:
        with timer.step("render"):
            rendered = render_occlum_for_rootfs(recipe, plan, app.fs, source)
        stats["image_files"] = rendered.image_file_count
    client, auth = app.client, app.auth
    app_image_id, base_ref = app.image_id, app.base_ref
    for warning in plan.warnings + rendered.warnings:
        say(f"warning: {warning}")

    inputs = {
        OCCLUM_JSON: rendered.occlum_json_text.encode("utf-8"),
        BOM_YAML: rendered.bom_text.encode("utf-8"),
        BUILD_SCRIPT: occlum_build_script(edmm=recipe.enclave.edmm).encode("utf-8"),
    }
    if rendered.entry_script is not None:  # the bom pins its hash; copy_bom copies it
        inputs[rendered.entry_program] = rendered.entry_script.encode("utf-8")
    refuse_key_in_bytes(
        {posixpath.basename(path): data for path, data in inputs.items()}, key_refusals, source
    )

    enclave_path = f"{INSTANCE_DIR}/{SIGNED_ENCLAVE}"
    log_path = output_dir / "occlum-build.log"
    with key_mount_dir(private_key) as key_dir:
        container = _create_build_container(client, app_image_id, key_dir, inputs, base_ref)
        try:
            with timer.step("occlum_build"):
                say("occlum build (in a container of the base image, no network)")
                run = _run_build_container(container, say)
            # The build is over: delete the key now. Its (empty) dir must outlive the container,
            # because the engine re-mounts a container's binds for every archive read.
            (key_dir / KEY_FILE_NAME).unlink(missing_ok=True)
            if any(needle and needle in run.log.encode() for needle in key_refusals):
                raise VerificationError(
                    "the occlum build log contains the signing key; the "
                    "base image's occlum printed it: do not use that base"
                )
            write_all_or_none({log_path: run.log}, option="--output-dir")
            if run.exit_code != 0:
                raise _failure(run, recipe.base.image, log_path)
            with timer.step("verify"):
                signed = _read_file(container, enclave_path)
                if signed is None:
                    raise ImageError(
                        f"occlum build in {recipe.base.image} reported success but "
                        f"wrote no {enclave_path}; full log: {log_path}"
                    )
                _check_instance(container, inputs[OCCLUM_JSON])
                enclave = read_occlum_enclave(
                    signed, source=enclave_path, recipe=recipe, expected_mrsigner=expected_mrsigner
                )
            summary = enclave.summary()
            say(f"MRENCLAVE {summary['mrenclave']}")
            stats["signed_enclave_bytes"] = len(signed)

            created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            labels = occlum_labels(recipe, enclave, app.base_digest, created)
            with timer.step("commit"):
                say(f"committing {image}")
                image_id = _commit(container, image, final_image_config(recipe, rendered, labels))
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise ImageError(f"occlum build container: {_first_line(err)}") from None
        finally:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass  # already gone

    pushed_digest = job.push_if_asked(client, auth, say)

    with timer.step("record"):
        record = occlum_measurement_record(
            recipe=recipe,
            plan=plan,
            enclave=enclave,
            image=image,
            image_id=image_id,
            pushed_digest=pushed_digest,
            base_digest=app.base_digest,
            rendered=rendered,
        )
        policy_files = write_outputs(
            output_dir, recipe, rendered, enclave, record, options.policies, source
        )
    return job.result(record, policy_files)


def write_outputs(
    output_dir: Path,
    recipe: Recipe,
    rendered: RenderedOcclum,
    enclave: OcclumEnclave,
    record: dict,
    policies: tuple[str, ...],
    source: str,
) -> list[Path]:
    """Occlum.json, bom.yaml and the SIGSTRUCT (.sig), then build.write_build_outputs."""
    return write_build_outputs(
        output_dir,
        {
            "Occlum.json": rendered.occlum_json_text,
            "bom.yaml": rendered.bom_text,
            f"{recipe.name}.sig": enclave.sigstruct.to_bytes(),
        },
        record,
        policies,
        source,
    )


__all__ = [
    "build_occlum",
    "check_occlum",
    "write_outputs",
    "occlum_build_script",
    "final_image_config",
    "occlum_run_command",
    "occlum_labels",
    "occlum_measurement_record",
    "config_archive",
    "key_mount_dir",
]
