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
from ..progress import Say, say_nothing
from ..recipe import Recipe
from ..record import IN_IMAGE_DIR
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


def final_dockerfile(recipe: Recipe, app_image_id: str) -> str:
    """App image + manifest + SIGSTRUCT; labels are passed to the build (one step, no layer)."""
    name = recipe.name
    # APP.manifest is a symlink to APP.manifest.sgx: gramine-direct loads APP.manifest, so it
    # runs exactly the bytes that were measured and signed (tools/gramine.in, pal_main.c).
    lines = [
        f"FROM {app_image_id}",
        f"COPY {name}.manifest {name}.manifest.sgx {name}.sig {IN_IMAGE_DIR}/",
    ]
    # gramine-sgx finds APP.manifest.sgx and APP.sig from the path it is given.
    lines.append(f'ENTRYPOINT ["gramine-sgx", "{IN_IMAGE_DIR}/{name}"]')
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
    recipe, plan, options, timer, source = job.recipe, job.plan, job.options, job.timer, job.source
    date_bcd = parse_date(options.date)
    with app_image(
        job.app_layer_request(launch_support_stage(recipe, plan)),
        recipe,
        plan,
        timer=timer,
        stats=job.stats,
        say=say,
    ) as app:
        with timer.step("manifest"):
            rendered = render_for_rootfs(recipe, plan, app.fs, source, options=options.manifest)
        for line in describe_overrides(recipe.manifest):
            say(f"manifest key from the recipe: {line}")
        for warning in rendered.warnings:
            say(f"warning: {warning}")
        job.stats["trusted_files"] = len(rendered.trusted_files)
    client, auth, fs = app.client, app.auth, app.fs

    version = gramine_version(recipe.libos.version)
    libpal_path = recipe.libos.prefix + version.libpal
    with timer.step("measure_sign"):
        try:
            pal_bytes = fs.read_bytes(resolve(fs, libpal_path))
        except (OSError, KeyError, ValueError) as err:
            raise ManifestError(
                f"{source}: libos.prefix: no {libpal_path} in the image "
                f"({err}); is Gramine installed there?"
            ) from None
        pal = read_pal_image(pal_bytes, name=libpal_path)
        unsigned = tbs_sigstruct(rendered.data, pal, date_bcd, source=f"{recipe.name}.manifest")
        signed = keys.sign_sigstruct(unsigned, job.private_key, source=str(options.key))
        sig_bytes = signed.to_bytes()
        summary = sign_summary(signed)
    say(f"MRENCLAVE {summary['mrenclave']}")

    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = image_labels(recipe, summary, app.base_digest, created)
    with tempfile.TemporaryDirectory(prefix="ppml-final-") as scratch:
        context = Path(scratch)
        (context / f"{recipe.name}.manifest.sgx").write_bytes(rendered.data)
        (context / f"{recipe.name}.manifest").symlink_to(f"{recipe.name}.manifest.sgx")
        (context / f"{recipe.name}.sig").write_bytes(sig_bytes)
        (context / "Dockerfile").write_text(final_dockerfile(recipe, app.image_id))
        job.refuse_key_in(context)
        with timer.step("docker_build_final"):
            say("building the final image")
            image_id = build_image(
                client, context, tag=job.image, labels=labels, say=say, nocache=options.no_cache
            )

    pushed_digest = job.push_if_asked(client, auth, say)

    with timer.step("record"):
        record = measurement_record(
            recipe=recipe,
            plan=plan,
            summary=summary,
            image=job.image,
            image_id=image_id,
            pushed_digest=pushed_digest,
            base_digest=app.base_digest,
            rendered=rendered,
        )
        policy_files = write_outputs(
            job.output_dir, recipe, rendered, sig_bytes, record, options.policies, source
        )
    return job.result(record, policy_files)


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
        output_dir,
        {
            f"{recipe.name}.manifest.sgx": rendered.data,
            f"{recipe.name}.sig": sig_bytes,
            "trusted-files.json": json.dumps(trusted_files_document(rendered), indent=2) + "\n",
        },
        record,
        policies,
        source,
    )


__all__ = [
    "build_gramine",
    "check_gramine",
    "app_dockerfile",
    "final_dockerfile",
    "measurement_record",
    "write_outputs",
]
