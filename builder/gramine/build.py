"""The Gramine backend's build: app image → manifest → measure + sign natively → final image.

    app image (image/app_layer.py, with Gramine's support stage) → hash trusted files, render
    the manifest → measure + sign natively → final image (app + manifest + .sig + labels)
    → record (+ policies) → optional push

The signing key is read on the host only (``pipeline/job.py``): it is never in a build context, a
layer, the image history, a log line or the record. The final image's context holds just the
manifest and SIGSTRUCT (both public).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import ImageError, ManifestError
from ..image.app_layer import app_dockerfile as generic_app_dockerfile
from ..image.app_layer import app_image
from ..image.docker_build import build_image
from ..image.engine import ImageReference
from ..image.rootfs import resolve
from ..pipeline.job import BuildJob, launch_support_stage
from ..pipeline.options import BuildOptions, BuildResult
from ..pipeline.outputs import image_labels, record_fields, write_build_outputs
from ..plan import Plan
from ..plan.roles import ENTRY_SCRIPT, enclave_name
from ..progress import Say, say_nothing
from ..recipe import Recipe
from ..record import (
    CLUSTER_RECORD_SCHEMA,
    IN_IMAGE_DIR,
    RECORD_FILE,
    ROLES_OUTPUT_DIR,
)
from ..sign import keys
from ..sign.elf import read_pal_image
from ..sign.sigstruct import parse_date
from ..versions import gramine_version
from .manifest import RenderedManifest
from .overrides import (
    check_guarded,
    describe_overrides,
    guarded_recipe_fields,
    recipe_manifest_keys,
)
from .render import render_for_rootfs, trusted_files_document
from .signing import sign_summary, tbs_sigstruct
from .trusted import trusted_list_digest

# --- pure pieces ------------------------------------------------------------------------------


def app_dockerfile(recipe: Recipe, plan: Plan, base_ref: str, *, ca_bundle: bool = False) -> str:
    """The app layer of a Gramine build: the generic app image plus Gramine's support stage."""
    return generic_app_dockerfile(
        recipe, plan, base_ref, ca_bundle=ca_bundle, support=launch_support_stage(recipe, plan)
    )


def final_dockerfile(
    recipe: Recipe, app_image_id: str, enclaves: Iterable[str] | None = None
) -> str:
    """App image + each enclave's manifest and SIGSTRUCT (``enclaves``: their names, default
    the app's one); labels are passed to the build (one step, no layer)."""
    names = list(enclaves) if enclaves is not None else [recipe.name]
    # APP.manifest is a symlink to APP.manifest.sgx: gramine-direct loads APP.manifest, so it
    # runs exactly the bytes that were measured and signed (tools/gramine.in, pal_main.c).
    files = " ".join(f"{name}.manifest {name}.manifest.sgx {name}.sig" for name in names)
    lines = [f"FROM {app_image_id}", f"COPY {files} {IN_IMAGE_DIR}/"]
    # gramine-sgx finds APP.manifest.sgx and APP.sig from the path it is given. A cluster
    # image starts the role its first argument names (`docker run IMAGE taskmanager`), as
    # its pods do on Kubernetes (plan/role_script.py entry_script).
    if recipe.cluster is not None:
        lines.append(f'ENTRYPOINT ["{ENTRY_SCRIPT}"]')
    else:
        lines.append(f'ENTRYPOINT ["gramine-sgx", "{IN_IMAGE_DIR}/{names[0]}"]')
    lines.append("CMD []")
    return "\n".join(lines) + "\n"


def measurement_record(
    *,
    recipe: Recipe,
    plan: Plan,
    summary: dict,
    image: str,
    image_id: str,
    pushed_digest: str | None,
    base_digest: str,
    rendered: RenderedManifest,
) -> dict:
    """The versioned record: what was measured, from what, by which tool."""
    return record_fields(
        recipe=recipe,
        plan=plan,
        summary=summary,
        image=image,
        image_id=image_id,
        pushed_digest=pushed_digest,
        base_digest=base_digest,
        enclave_size=plan.enclave_size_text,
        edmm=recipe.enclave.edmm,
        manifest_sha256=hashlib.sha256(rendered.data).hexdigest(),
        trusted_files={
            "count": len(rendered.trusted_files),
            "digest": trusted_list_digest(rendered.trusted_files),
        },
        recipe_manifest_keys=recipe_manifest_keys(recipe.manifest),
    )


def names_a_registry(reference: ImageReference) -> bool:
    """Docker's rule: the first path component is a registry if it has a '.' or ':' or is
    localhost; otherwise the reference means Docker Hub by default, never what a user meant."""
    first, sep, _ = reference.repository.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


# --- the I/O edge -----------------------------------------------------------------------------


def check_gramine(options: BuildOptions, recipe: Recipe, plan: Plan, say: Say) -> None:
    """What refuses a Gramine build before any Docker work (and before the key is read)."""
    # A refused recipe field or manifest: key fails now, not after the image build (the
    # render repeats this with the image at hand, for allowed entries naming a directory).
    check_guarded(
        recipe.manifest,
        recipe.kind,
        options.manifest,
        fields=guarded_recipe_fields(recipe.files.allowed, recipe.app.passthrough_env),
    )
    for warning in plan.warnings:
        say(f"warning: {warning}")
    image = options.image_name(recipe.name)
    if options.push and not names_a_registry(ImageReference.parse(image)):
        raise ImageError(
            f"--push needs --tag with a registry, e.g. --tag "
            f"registry.example.com/ppml/{recipe.name}:1 ({image} names none)"
        )
    parse_date(options.date)


def build_gramine(job: BuildJob, say: Say = say_nothing) -> BuildResult:
    """One app image, then an enclave over it: the recipe's, or for a cluster recipe one per
    role, each with its own manifest (that role's size, command and cluster parameters),
    SIGSTRUCT and record; the final image carries them all (/ppml/<name>[-<role>].manifest.sgx,
    .sig)."""
    recipe, plan, options, timer, source = job.recipe, job.plan, job.options, job.timer, job.source
    plans: dict[str | None, Plan] = dict(job.role_plans) or {None: plan}
    date_bcd = parse_date(options.date)
    with app_image(
        job.app_layer_request(launch_support_stage(recipe, plan, job.role_plans)),
        recipe,
        plan,
        timer=timer,
        stats=job.stats,
        say=say,
    ) as app:
        with timer.step("manifest"):
            rendered = {
                role: render_for_rootfs(recipe, each, app.fs, source, options=options.manifest)
                for role, each in plans.items()
            }
        for line in describe_overrides(recipe.manifest):
            say(f"manifest key from the recipe: {line}")
        for role, manifest in rendered.items():
            for warning in manifest.warnings:
                say(f"warning: {role}: {warning}" if role else f"warning: {warning}")
            job.stats["trusted_files" + (f"_{role}" if role else "")] = len(manifest.trusted_files)
    client, auth, fs = app.client, app.auth, app.fs

    signed: dict[str | None, tuple[bytes, dict]] = {}
    with timer.step("measure_sign"):
        pal = _read_pal(recipe, fs, source)
        for role, manifest in rendered.items():
            signed[role] = _measure_sign(job, manifest, pal, date_bcd, enclave_name(recipe, role))
    for role, (_, summary) in signed.items():
        say(f"MRENCLAVE {summary['mrenclave']}" + (f" ({role})" if role else ""))

    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if job.role_plans:
        summaries = {role: summary for role, (_, summary) in signed.items() if role}
        labels = image_labels(recipe, None, app.base_digest, created, summaries)
    else:
        labels = image_labels(recipe, signed[None][1], app.base_digest, created)
    enclaves = {
        enclave_name(recipe, role): (manifest, signed[role][0])
        for role, manifest in rendered.items()
    }
    image_id = _build_final(job, client, app.image_id, enclaves, labels, say)
    pushed_digest = job.push_if_asked(client, auth, say)

    with timer.step("record"):
        records = {
            role: measurement_record(
                recipe=recipe,
                plan=plans[role],
                summary=signed[role][1],
                image=job.image,
                image_id=image_id,
                pushed_digest=pushed_digest,
                base_digest=app.base_digest,
                rendered=manifest,
            )
            for role, manifest in rendered.items()
        }
        if not job.role_plans:
            record = records[None]
            policy_files = write_outputs(
                job.output_dir, recipe, rendered[None], signed[None][0], record,
                options.policies, source,
            )  # fmt: skip
            return job.result(record, policy_files)
        for role, role_record in records.items():
            role_record.update(role=role, enclave=f"{IN_IMAGE_DIR}/{enclave_name(recipe, role)}")
        record = cluster_record(recipe, records)
        files: dict[str, str | bytes] = {}
        for role, manifest in rendered.items():
            files.update(
                enclave_files(
                    enclave_name(recipe, role),
                    manifest,
                    signed[role][0],
                    f"{ROLES_OUTPUT_DIR}/{role}/",
                )
            )
        policy_files = write_build_outputs(
            job.output_dir,
            files,
            record,
            options.policies,
            source,
            role_records={f"{ROLES_OUTPUT_DIR}/{role}": rec for role, rec in records.items()},
        )
    return job.result(record, policy_files)


def cluster_record(recipe: Recipe, records: dict[str, dict]) -> dict:
    """A cluster build's record: what its enclaves share, and each role's identity (its full
    record is beside it, in roles/<role>/measurement.json)."""
    first = next(iter(records.values()))
    shared = ("name", "image", "base", "libos", "tool", "date")
    return {
        "schema": CLUSTER_RECORD_SCHEMA,
        **{key: first[key] for key in shared},
        "roles": {
            role: {
                "record": f"{ROLES_OUTPUT_DIR}/{role}/{RECORD_FILE}",
                "enclave": rec["enclave"],
                "mrenclave": rec["mrenclave"],
                "mrsigner": rec["mrsigner"],
                "isv_prod_id": rec["isv_prod_id"],
                "isv_svn": rec["isv_svn"],
                "debug": rec["debug"],
                "enclave_size": rec["enclave_size"],
                "max_threads": rec["max_threads"],
                "manifest_sha256": rec["manifest_sha256"],
            }
            for role, rec in records.items()
        },
    }


def _read_pal(recipe: Recipe, fs, source: str):
    version = gramine_version(recipe.libos.version)
    libpal_path = recipe.libos.prefix + version.libpal
    try:
        pal_bytes = fs.read_bytes(resolve(fs, libpal_path))
    except (OSError, KeyError, ValueError) as err:
        raise ManifestError(
            f"{source}: libos.prefix: no {libpal_path} in the image "
            f"({err}); is Gramine installed there?"
        ) from None
    return read_pal_image(pal_bytes, name=libpal_path)


def _measure_sign(
    job: BuildJob, rendered: RenderedManifest, pal, date_bcd, name: str
) -> tuple[bytes, dict]:
    """MRENCLAVE of manifest + PAL, signed with the job's key: the .sig and its summary."""
    unsigned = tbs_sigstruct(rendered.data, pal, date_bcd, source=f"{name}.manifest")
    signed = keys.sign_sigstruct(unsigned, job.private_key, source=str(job.options.key))
    return signed.to_bytes(), sign_summary(signed)


def _build_final(
    job: BuildJob,
    client,
    app_image_id: str,
    enclaves: dict[str, tuple[RenderedManifest, bytes]],
    labels: dict[str, str],
    say: Say,
) -> str:
    """The final image: the app image plus each enclave's manifest and .sig (public only)."""
    with tempfile.TemporaryDirectory(prefix="ppml-final-") as scratch:
        context = Path(scratch)
        for name, (rendered, sig_bytes) in enclaves.items():
            (context / f"{name}.manifest.sgx").write_bytes(rendered.data)
            (context / f"{name}.manifest").symlink_to(f"{name}.manifest.sgx")
            (context / f"{name}.sig").write_bytes(sig_bytes)
        (context / "Dockerfile").write_text(final_dockerfile(job.recipe, app_image_id, enclaves))
        job.refuse_key_in(context)
        with job.timer.step("docker_build_final"):
            say("building the final image")
            return build_image(
                client,
                context,
                tag=job.image,
                labels=labels,
                say=say,
                nocache=job.options.no_cache,
            )


def write_outputs(
    output_dir: Path,
    recipe: Recipe,
    rendered: RenderedManifest,
    sig_bytes: bytes,
    record: dict,
    policies: tuple[str, ...],
    source: str,
) -> list[Path]:
    """Manifest, .sig and trusted-file list, then write_build_outputs."""
    return write_build_outputs(
        output_dir, enclave_files(recipe.name, rendered, sig_bytes), record, policies, source
    )


def enclave_files(
    name: str, rendered: RenderedManifest, sig_bytes: bytes, list_dir: str = ""
) -> dict[str, str | bytes]:
    """One enclave's output files: NAME.manifest.sgx, NAME.sig, and its trusted-file list in
    ``list_dir`` (a cluster role's: roles/<role>/)."""
    return {
        f"{name}.manifest.sgx": rendered.data,
        f"{name}.sig": sig_bytes,
        f"{list_dir}trusted-files.json": json.dumps(trusted_files_document(rendered), indent=2)
        + "\n",
    }


__all__ = [
    "build_gramine",
    "check_gramine",
    "app_dockerfile",
    "final_dockerfile",
    "measurement_record",
    "write_outputs",
]
