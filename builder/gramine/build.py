"""``ppml-build build``: recipe → signed enclave image + measurement record, in one command.

    pull base (digest pinned) → build app layer (Docker SDK) → export it as one tar stream
    → hash trusted files, render the manifest → measure + sign natively → final image
    (app + manifest + .sig + labels) → record (+ policies) → optional push

The signing key is read on the host only: it is never in a build context, a layer, the image
history, a log line or the record. Build contexts hold just the app files and, for the final
image, the manifest and SIGSTRUCT (both public).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import posixpath
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import docker.errors

from ppml_build import __version__
from ppml_build.atomic import check_writable, write_all_or_none
from ppml_build.image.engine import ImageReference, connect, export_image_rootfs, load_registry_auth, pull_image, push_image
from ppml_build.build import key_scan
from ppml_build.image.hashing import FileHasher
from ppml_build.image.host_sources import SourceTree, Staged, StagingConflict, read_source, stage_tree
from ppml_build.image.base_index import BaseIndexJob, cached_image_rootfs
from ppml_build.image.tarfs import TarRootFS
from ppml_build.image.overlay import OverlayRootFS
from ppml_build.errors import ImageError, ManifestError, RecipeError
from ppml_build.image.docker_build import build_image
from .launch import SUPPORT_CONTEXT_DIR, SUPPORT_DIR, app_stage_copy_line, support_stage_lines
from .manifest import RenderedManifest
from .overrides import ManifestOptions, check_guarded, describe_overrides, guarded_recipe_fields, recipe_manifest_keys
from .pipeline import load_and_plan, render_for_rootfs, trusted_files_document
from ppml_build.plan import Plan
from ppml_build.recipe import Recipe
from ppml_build.image.rootfs import RootFS, RootFSError, resolve
from .signing import load_signing_key, read_passphrase, sign_summary, tbs_sigstruct
from ppml_build.sign import keys
from ppml_build.sign.elf import read_pal_image
from ppml_build.sign.sigstruct import parse_date
from .trusted import trusted_list_digest
from ppml_build.versions import gramine_version

RECORD_SCHEMA = "ppml-build/measurement/v1"
SUPPORT_SOURCES = Path(__file__).resolve().parent / "support"
IN_IMAGE_DIR = SUPPORT_DIR  # where the final image keeps APP.manifest.sgx and APP.sig
BUILD_SOURCES_DIR = "build-src"  # build.sources[i] is staged as <context>/build-src/<i>
CA_CONTEXT_NAME = "ppml-ca-bundle.pem"
CA_IN_BUILD_STAGE = "/etc/ppml-build/ca-bundle.pem"
CA_ENV_NAMES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


@dataclass
class BuildOptions:
    recipe: Path
    key: Path
    output_dir: Path | None = None
    tag: str | None = None
    registry_auth: Path | None = None
    push: bool = False
    ca_bundle: Path | None = None
    date: str = "today"
    passphrase_file: Path | None = None
    allow_sample_key: bool = False
    policies: list[str] = field(default_factory=list)
    no_cache: bool = False
    # Where a base image's filesystem index comes from when it is not cached: "registry"
    # (its layers, read during the pull; the registry serves them twice) or "engine" (one
    # `docker export` after the pull; no second download, but the build waits for it).
    base_index: str = "registry"
    # What the recipe's manifest: keys may weaken (--allow-insecure-manifest and friends).
    manifest: ManifestOptions = field(default_factory=ManifestOptions)


@dataclass
class BuildResult:
    record: dict
    record_path: Path
    output_dir: Path
    image: str
    timings: dict[str, float]
    policy_files: list[Path]
    stats: dict[str, Any] = field(default_factory=dict)


Say = Callable[[str], None]


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def step(self, name: str):
        timer = self

        class _Step:
            def __enter__(self_inner):
                self_inner.start = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.timings[name] = timer.timings.get(name, 0.0) + \
                    time.perf_counter() - self_inner.start

        return _Step()


# --- pure pieces ------------------------------------------------------------------------------

def build_stage_lines(recipe: Recipe, base_ref: str, *, ca_bundle: bool = False) -> list[str]:
    """``FROM base AS build``: packages, sources and steps of the recipe's build stage.

    The stage runs with the network (builds use network mode host); a CA bundle, when given,
    is copied into this stage only and named by the variables pip, requests, OpenSSL and curl
    read. Nothing of the stage reaches the app image except ``COPY --from=build`` outputs.
    """
    stage = recipe.build
    if stage is None:
        return []
    lines = [f"FROM {base_ref} AS build", "USER root"]
    apt_ca = ""
    if ca_bundle:
        lines.append(f"COPY {CA_CONTEXT_NAME} {CA_IN_BUILD_STAGE}")
        lines.append("ENV " + " ".join(f"{name}={CA_IN_BUILD_STAGE}" for name in CA_ENV_NAMES))
        apt_ca = f" -o Acquire::https::CAInfo={CA_IN_BUILD_STAGE}"
    if stage.packages:
        packages = " ".join(stage.packages)
        lines.append("RUN " + json.dumps([
            "/bin/sh", "-ec", f"apt-get{apt_ca} update; DEBIAN_FRONTEND=noninteractive "
            f"apt-get{apt_ca} install -y --no-install-recommends {packages}; "
            "rm -rf /var/lib/apt/lists/*"]))
    for index, item in enumerate(stage.sources):
        lines.append("COPY " + json.dumps([f"{BUILD_SOURCES_DIR}/{index}", item.dest]))
    for step in stage.steps:
        lines.append("RUN " + json.dumps(["/bin/sh", "-ec", step]))
    return lines + [""]


APP_STAGE = "app"


def app_dockerfile(recipe: Recipe, plan: Plan, base_ref: str, *, ca_bundle: bool = False) -> str:
    """The app layer: the recipe's files on the base, the build stage's outputs, its workdir
    and (public) env; for Gramine then ppml-build's support files (launch.py), made in a stage
    FROM that app image so Spark's launcher sees exactly the app's environment."""
    env = {**recipe.app.env, **plan.extra_env}
    lines = build_stage_lines(recipe, base_ref, ca_bundle=ca_bundle)
    gramine = recipe.libos.type == "gramine"
    lines.append(f"FROM {base_ref}" + (f" AS {APP_STAGE}" if gramine else ""))
    if recipe.app.files:
        lines.append("COPY rootfs/ /")
    for output in (recipe.build.outputs if recipe.build else []):
        lines.append("COPY --from=build " + json.dumps([output.src, output.dest]))
    lines.append(f"WORKDIR {recipe.app.workdir}")
    for name in sorted(env):
        lines.append(f"ENV {name}={json.dumps(env[name])}")
    if gramine:
        lines += [""] + support_stage_lines(recipe, plan.launch, APP_STAGE) + [""]
        lines += [f"FROM {APP_STAGE}", app_stage_copy_line()]
    return "\n".join(lines) + "\n"


def _stage_support_files(context: Path) -> None:
    """builder/gramine/support/ into the context, for the support stage to COPY."""
    shutil.copytree(SUPPORT_SOURCES, context / SUPPORT_CONTEXT_DIR,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def final_dockerfile(recipe: Recipe, app_image_id: str) -> str:
    """App image + manifest + SIGSTRUCT; labels are passed to the build (one step, no layer)."""
    name = recipe.name
    # APP.manifest is a symlink to APP.manifest.sgx: gramine-direct loads APP.manifest, so it
    # runs exactly the bytes that were measured and signed (tools/gramine.in, pal_main.c).
    lines = [f"FROM {app_image_id}",
             f"COPY {name}.manifest {name}.manifest.sgx {name}.sig {IN_IMAGE_DIR}/"]
    # gramine-sgx finds APP.manifest.sgx and APP.sig from the path it is given.
    lines.append(f'ENTRYPOINT ["gramine-sgx", "{IN_IMAGE_DIR}/{name}"]')
    lines.append("CMD []")
    return "\n".join(lines) + "\n"


def image_labels(recipe: Recipe, summary: dict, base_digest: str, created: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": recipe.name,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.base.name": recipe.base.image,
        "org.opencontainers.image.base.digest": base_digest,
        "org.opencontainers.image.vendor": "ppml-build",
        "org.opencontainers.image.version": f"mrenclave-{summary['mrenclave'][:12]}",
        "ppml.mrenclave": summary["mrenclave"],
        "ppml.mrsigner": summary["mrsigner"],
        "ppml.isv_prod_id": str(summary["isv_prod_id"]),
        "ppml.isv_svn": str(summary["isv_svn"]),
        "ppml.debug": "true" if summary["debug"] else "false",
        "ppml.libos": f"{recipe.libos.type} {recipe.libos.version}",
        "ppml.base.digest": base_digest,
    }


def measurement_record(*, recipe: Recipe, plan: Plan, summary: dict, image: str, image_id: str,
                       pushed_digest: str | None, base_digest: str,
                       rendered: RenderedManifest) -> dict:
    """The versioned record: what was measured, from what, by which tool."""
    return record_fields(
        recipe=recipe, plan=plan, summary=summary, image=image, image_id=image_id,
        pushed_digest=pushed_digest, base_digest=base_digest,
        enclave_size=plan.enclave_size_text, edmm=recipe.enclave.edmm,
        manifest_sha256=hashlib.sha256(rendered.data).hexdigest(),
        trusted_files={"count": len(rendered.trusted_files),
                       "digest": trusted_list_digest(rendered.trusted_files)},
        recipe_manifest_keys=recipe_manifest_keys(recipe.manifest))


def record_fields(*, recipe: Recipe, plan: Plan, summary: dict, image: str, image_id: str,
                  pushed_digest: str | None, base_digest: str, enclave_size: str | None,
                  edmm: bool, manifest_sha256: str, trusted_files: dict,
                  recipe_manifest_keys: list[str] | None = None) -> dict:
    """The record schema's fields, in order; each LibOS build says what it measured.

    ``recipe_manifest_keys`` (added later, so readers must not require it): the manifest keys
    the recipe's ``manifest:`` set, sorted."""
    return {
        "schema": RECORD_SCHEMA,
        "name": recipe.name,
        "image": {"reference": image, "id": image_id, "digest": pushed_digest},
        "base": {"reference": recipe.base.image, "digest": base_digest},
        "libos": {"type": recipe.libos.type, "version": recipe.libos.version},
        "mrenclave": summary["mrenclave"],
        "mrsigner": summary["mrsigner"],
        "isv_prod_id": summary["isv_prod_id"],
        "isv_svn": summary["isv_svn"],
        "debug": summary["debug"],
        "attributes": summary["attributes"],
        "misc_select": summary["misc_select"],
        "enclave_size": enclave_size,
        "max_threads": plan.max_threads,
        "edmm": edmm,
        "manifest_sha256": manifest_sha256,
        "trusted_files": trusted_files,
        "tool": {"name": "ppml-build", "version": __version__},
        "date": summary["date"],
        "recipe_manifest_keys": sorted(recipe_manifest_keys or []),
    }


# --- the I/O edge -----------------------------------------------------------------------------

def _copy_source(tree: SourceTree, target: Path, staged: Staged, *, where: str,
                 shown: str) -> None:
    """Stage one checked source at ``target`` (links as links; see host_sources)."""
    try:
        # A single file gets 0755 or 0644, as before; a directory keeps its files' modes.
        stage_tree(tree, target, staged, shown=shown, normalise_file_mode=not tree.is_dir)
    except StagingConflict as conflict:
        raise RecipeError(f"{where}.dest: {conflict}") from None


def _stage_app_files(recipe: Recipe, recipe_dir: Path, context: Path,
                     source: str) -> list[tuple[Path, str]]:
    """Copy app.files into context/rootfs/<dest> (and build.sources into context/build-src/<i>);
    returns the (host source, dest) pairs of app.files.

    Every source is checked again here, as it is copied (``validate`` checked it before): no
    link may lead out of the recipe's directory, and a link kept in the image must still lead
    to the file it leads to on this machine once all entries are staged, since the app
    layer's file view (app_rootfs) hashes what it leads to here.
    """
    root = context / "rootfs"
    staged = Staged()
    pairs = []
    for index, item in enumerate(recipe.app.files):
        where = f"{source}: app.files[{index}]"
        tree = read_source(recipe_dir, item.src, where=f"{where}.src: ")
        _copy_source(tree, root / item.dest.lstrip("/"), staged, where=where, shown=item.src)
        pairs.append((tree.host, item.dest))
    mismatched = staged.link_mismatches()
    if mismatched:
        raise RecipeError(f"{source}: app.files: the link {mismatched[0]!r} would lead, in the "
                          "image, to a file a later app.files entry puts over its target; give "
                          "that entry another dest, or copy the file in instead of the link")
    for index, item in enumerate(recipe.build.sources if recipe.build else []):
        where = f"{source}: build.sources[{index}]"
        tree = read_source(recipe_dir, item.src, where=f"{where}.src: ", linked_dirs=True)
        if item.dest.endswith("/") and not tree.is_dir:
            raise RecipeError(f"{where}.dest: {item.dest!r} ends with '/' "
                              "but the source is a file; give the file's full path in the "
                              "build stage")
        _copy_source(tree, context / BUILD_SOURCES_DIR / str(index), Staged(), where=where,
                     shown=item.src)
    return pairs


def _stage_ca_bundle(options: BuildOptions, recipe: Recipe, context: Path,
                     say: Say) -> bool:
    """Put the CA bundle in the context when a build stage can use it (never otherwise)."""
    if recipe.build is None:
        return False
    bundle, origin = options.ca_bundle, "--ca-bundle"
    if bundle is None:
        from ppml_build.image.bootstrap import default_ca_bundle

        found = default_ca_bundle()
        if found is None:
            return False
        bundle, origin = found[0], f"${found[1]}"
    from ppml_build.image.bootstrap import check_ca_bundle

    check_ca_bundle(Path(bundle))
    shutil.copyfile(bundle, context / CA_CONTEXT_NAME)
    say(f"CA bundle {bundle} (from {origin}) goes to the build stage only")
    return True


def image_outputs(recipe: Recipe) -> list[tuple[str, bool, str, str]]:
    """What the build reads back from the app image, as (dest, is_dir, where, hint): the
    build stage's outputs and, for Gramine, ppml-build's support files (launch.py)."""
    wanted = [(output.dest, output.is_dir, f"build.outputs[{index}]",
               f"did the build steps write {output.src}?")
              for index, output in enumerate(recipe.build.outputs if recipe.build else [])]
    if recipe.libos.type == "gramine":
        wanted.append((SUPPORT_DIR + "/", True, "ppml-build's support stage",
                       "the support stage did not run"))
    return wanted


def fetch_image_paths(client, app_image_id: str, name: str,
                      wanted: list[tuple[str, bool, str, str]],
                      into: Path) -> list[tuple[Path, str]]:
    """The bytes of each (dest, is_dir, where, hint) path, read back from the built image.

    Returns (host copy, dest) pairs: a file, or a directory holding what the image has at
    dest. Only regular files and directories are taken; a symlink there would make our view
    of the image differ from the image, so it is refused. One container for all of them.
    """
    if not wanted:
        return []
    out: list[tuple[Path, str]] = []
    try:
        container = client.containers.create(app_image_id, entrypoint=["/ppml-never-runs"],
                                             network_mode="none",
                                             labels={"ppml.build-outputs": "1"})
    except docker.errors.APIError as err:
        raise ImageError(f"{app_image_id[:19]}: cannot read the build outputs: "
                         f"{err.explanation or err}") from None
    try:
        for index, (wanted_dest, is_dir, where, hint) in enumerate(wanted):
            dest = wanted_dest.rstrip("/")
            try:
                chunks, _ = container.get_archive(dest)
                data = b"".join(chunks)
            except docker.errors.NotFound:
                raise RecipeError(f"{name}: {where}: {dest} is not in the app image; "
                                  + hint) from None
            target = into / str(index)
            target.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                members = archive.getmembers()
                for member in members:
                    if not (member.isreg() or member.isdir()):
                        raise RecipeError(f"{name}: {where}: {member.name} is not a "
                                          "regular file or directory; outputs must be plain "
                                          "files (copy the link's target instead)")
                    if member.name.startswith("/") or ".." in member.name.split("/"):
                        raise ImageError(f"{name}: {where}: the engine returned an "
                                         f"unsafe name {member.name!r}")
                # The "data" filter where this Python has it (3.11.4+); names checked above.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(target, members=members, **safe)
            host = target / posixpath.basename(dest)
            if is_dir != host.is_dir():
                kind = "a directory" if host.is_dir() else "a file"
                raise RecipeError(f"{name}: {where}: {dest} is {kind} in the image; write "
                                  "directories with a trailing '/' on src and dest, files "
                                  "without")
            out.append((host, wanted_dest))
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
    return out


def add_build_outputs(fs, outputs: list[tuple[Path, str]], recipe: Recipe) -> OverlayRootFS:
    """The app filesystem with the build outputs laid over it, as ``COPY --from`` put them.

    A layer of its own with a hasher that keeps no cache: the copies live in a temp dir that
    is gone after the build, so remembering their digests would only grow the cache.
    """
    layer = OverlayRootFS(fs, FileHasher(use_cache=False))
    try:
        for host, dest in outputs:
            if host.is_dir():
                layer.add_tree(dest, host)
            else:
                layer.add_file(dest, host)
    except RootFSError as err:
        raise RecipeError(f"{recipe.name}: build.outputs: {err}") from None
    return layer


def base_index_keep(recipe: Recipe) -> tuple[str, ...]:
    """What a base index holds whole, not just hashed: the LibOS files we measure."""
    return (recipe.libos.prefix,)


def _base_index(client, base_image_id: str, recipe: Recipe, *, base_job: BaseIndexJob | None,
                use_cache: bool, say: Say) -> tuple[TarRootFS, str]:
    """The base's index and where it came from: "registry", "cache" or "export"."""
    if base_job is not None:
        fs = base_job.result(base_image_id)
        if fs is not None:
            how = ("reused from the cache" if base_job.source == "cache"
                   else "read from the registry during the pull")
            say(f"base image index: {how} ({base_job.seconds:.1f} s)")
            return fs, base_job.source
        say(f"base index: reading it from the registry failed ({base_job.failure}); "
            "exporting it from the engine instead")

    def export(keep):
        say("indexing the base image's filesystem (one export stream, cached by image id)")
        return export_image_rootfs(client, base_image_id, keep=keep)

    fs, cached = cached_image_rootfs(base_image_id, export, base_index_keep(recipe),
                                     use_cache=use_cache)
    if cached:
        say("base image index: reused from the cache")
    return fs, "cache" if cached else "export"


def app_rootfs(client, base_image_id: str, recipe: Recipe, app_files: list[tuple[Path, str]], *,
               use_cache: bool = True, say: Say = lambda line: None,
               stats: dict | None = None, base_job: BaseIndexJob | None = None) -> OverlayRootFS:
    """The app image's filesystem: the base's index plus the app layer we built.

    The base index comes from ``base_job`` (read from the registry during the pull) when it
    is of the pulled image; else from the cache or one export stream. Either way it is keyed
    by image id (content-addressed, so it cannot go stale); the LibOS files are kept whole
    because we measure libpal.so.
    """
    base_fs, source = _base_index(client, base_image_id, recipe, base_job=base_job,
                                  use_cache=use_cache, say=say)
    if stats is not None:
        stats["base_index_cached"] = source == "cache"
        stats["base_index_source"] = source
        if base_job is not None:
            stats["base_index_seconds"] = round(base_job.seconds, 3)
        stats["base_files"] = len(base_fs.files)
    fs = OverlayRootFS(base_fs, FileHasher(use_cache=use_cache))
    try:
        # Hashed at their source in the recipe directory, so the hash cache recognises an
        # unchanged file from one build to the next (the staged copies are new every time).
        for host, dest in app_files:
            if host.is_dir():
                fs.add_tree(dest, host)
            else:
                fs.add_file(dest, host)
        fs.add_dir(recipe.app.workdir)
    except RootFSError as err:
        raise RecipeError(f"{recipe.name}: app.files: {err}") from None
    return fs


@dataclass
class AppImage:
    """The app layer built on the pulled base, and our view of its filesystem."""

    client: Any
    auth: dict | None
    base_digest: str  # the registry's manifest digest of the base
    base_ref: str  # repository@digest, what the app layer was built FROM
    image_id: str  # the app image (no tag)
    fs: RootFS  # base index + app layer (+ build-stage outputs)


@contextlib.contextmanager
def app_image(options: BuildOptions, recipe: Recipe, plan: Plan, *, key_refusals: list[bytes],
              timer: _Timer, stats: dict, say: Say) -> Iterator[AppImage]:
    """Pull the base (digest pinned), build the app layer, and give its filesystem view.

    Shared by the Gramine and Occlum builds. Host files behind ``fs`` (staged build outputs)
    live until the ``with`` block ends: render inside it.
    """
    client = connect()
    auth = None
    if options.registry_auth is not None:
        auth = load_registry_auth(options.registry_auth,
                                  ImageReference.parse(recipe.base.image).registry)
    base_job = None
    if options.base_index == "registry":
        # Read the base's layers from the registry while the engine pulls them: the cold
        # build then need not wait for an export of the whole base after the pull.
        base_job = BaseIndexJob(_pinned_reference(recipe), auth=auth,
                                registry_config=_engine_registry_config(client),
                                keep_prefixes=base_index_keep(recipe),
                                use_cache=not options.no_cache).start()
    try:
        with timer.step("pull"):
            say(f"pulling {recipe.base.image}")
            pulled = pull_image(client, recipe.base.image, auth=auth,
                                expected_digest=recipe.base.digest)
        with _app_layer(options, recipe, plan, client, auth, pulled, base_job,
                        key_refusals=key_refusals, timer=timer, stats=stats, say=say) as app:
            yield app
    finally:
        if base_job is not None:
            base_job.cancel()


def _pinned_reference(recipe: Recipe) -> str:
    ref = ImageReference.parse(recipe.base.image)
    if recipe.base.digest and not ref.digest:
        return f"{ref}@{recipe.base.digest}"
    return str(ref)


def _engine_registry_config(client) -> dict | None:
    try:
        return client.info().get("RegistryConfig")
    except Exception:  # noqa: BLE001 -- without it we simply try HTTPS only
        return None


@contextlib.contextmanager
def _app_layer(options: BuildOptions, recipe: Recipe, plan: Plan, client, auth, pulled,
               base_job: BaseIndexJob | None, *, key_refusals: list[bytes], timer: _Timer,
               stats: dict, say: Say) -> Iterator[AppImage]:
    source = str(options.recipe)
    base_ref = f"{ImageReference.parse(recipe.base.image).repository}@{pulled.repo_digest}"
    say(f"base {base_ref}")

    with tempfile.TemporaryDirectory(prefix="ppml-app-") as scratch:
        context = Path(scratch) / "context"
        context.mkdir()
        app_files = _stage_app_files(recipe, options.recipe.resolve().parent, context, source)
        ca_bundle = _stage_ca_bundle(options, recipe, context, say)
        if recipe.libos.type == "gramine":
            _stage_support_files(context)
        _refuse_key_in_context(context, key_refusals, source)
        (context / "Dockerfile").write_text(app_dockerfile(recipe, plan, base_ref,
                                                          ca_bundle=ca_bundle))
        with timer.step("docker_build_app"):
            say("building the app layer" + (" (with its build stage)" if recipe.build else ""))
            app_image_id = build_image(client, context, tag=None, labels={
                "ppml.stage": "app", "ppml.recipe": recipe.name}, say=say,
                nocache=options.no_cache)
        with timer.step("export_hash"):
            app_fs = app_rootfs(client, pulled.image_id, recipe, app_files,
                                use_cache=not options.no_cache, say=say, stats=stats,
                                base_job=base_job)
            fs: RootFS = app_fs
            outputs = fetch_image_paths(client, app_image_id, recipe.name,
                                        image_outputs(recipe), Path(scratch) / "outputs")
            if outputs:
                fs = add_build_outputs(app_fs, outputs, recipe)
        yield AppImage(client, auth, pulled.repo_digest, base_ref, app_image_id, fs)
        stats["app_files_hashed"] = app_fs.hasher.hashed_files
        if fs is not app_fs:
            stats["build_outputs_hashed"] = fs.hasher.hashed_files


def push_if_asked(options: BuildOptions, client, image: str, auth: dict | None, *,
                  timer: _Timer, say: Say) -> str | None:
    """With --push: push the final image; the digest the registry stored. Else None."""
    if not options.push:
        return None
    with timer.step("push"):
        say(f"pushing {image}")
        return push_image(client, image, auth=auth)


def build(options: BuildOptions, say: Say = lambda line: None) -> BuildResult:
    timer = _Timer()
    stats: dict[str, Any] = {}
    source = str(options.recipe)
    with timer.step("plan"):
        recipe, plan = load_and_plan(options.recipe)
    if recipe.libos.type == "occlum":
        # Occlum measures its own image filesystem: `occlum build` runs in the Occlum base.
        from ppml_build.occlum.build import build_occlum  # late import: occlum_build uses this module

        return build_occlum(options, say)
    # A refused recipe field or manifest: key fails now, not after the image build (the
    # render repeats this with the image at hand, for allowed entries naming a directory).
    check_guarded(recipe.manifest, recipe.kind, options.manifest,
                  fields=guarded_recipe_fields(recipe.files.allowed, recipe.app.passthrough_env))
    for warning in plan.warnings:  # before any Docker work (build_occlum says its own)
        say(f"warning: {warning}")
    output_dir = (options.output_dir or Path("ppml-out") / recipe.name).resolve()
    check_writable(output_dir, "--output-dir", directory=True)  # not after minutes of Docker
    image = options.tag or f"ppml/{recipe.name}:latest"
    reference = ImageReference.parse(image)
    if options.push and not _names_a_registry(reference):
        raise ImageError(f"--push needs --tag with a registry, e.g. --tag "
                         f"registry.example.com/ppml/{recipe.name}:1 ({image} names none)")
    date_bcd = parse_date(options.date)

    # The key first: a refused key must fail before minutes of Docker work.
    passphrase = read_passphrase(options.passphrase_file)
    private_key = load_signing_key(options.key, passphrase,
                                   allow_sample_key=options.allow_sample_key)
    key_refusals = _key_fingerprints(options.key, private_key)

    with app_image(options, recipe, plan, key_refusals=key_refusals, timer=timer,
                   stats=stats, say=say) as app:
        with timer.step("manifest"):
            rendered = render_for_rootfs(recipe, plan, app.fs, source, options=options.manifest)
        for line in describe_overrides(recipe.manifest):
            say(f"manifest key from the recipe: {line}")
        for warning in rendered.warnings:
            say(f"warning: {warning}")
        stats["trusted_files"] = len(rendered.trusted_files)
    client, auth, fs = app.client, app.auth, app.fs

    version = gramine_version(recipe.libos.version)
    libpal_path = recipe.libos.prefix + version.libpal
    with timer.step("measure_sign"):
        try:
            pal_bytes = fs.read_bytes(resolve(fs, libpal_path))
        except (OSError, KeyError, ValueError) as err:
            raise ManifestError(f"{source}: libos.prefix: no {libpal_path} in the image "
                                f"({err}); is Gramine installed there?") from None
        pal = read_pal_image(pal_bytes, name=libpal_path)
        unsigned = tbs_sigstruct(rendered.data, pal, date_bcd, source=f"{recipe.name}.manifest")
        signed = keys.sign_sigstruct(unsigned, private_key, source=str(options.key))
        sig_bytes = signed.to_bytes()
        summary = sign_summary(signed)
    say(f"MRENCLAVE {summary['mrenclave']}")

    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = image_labels(recipe, summary, app.base_digest, created)
    with tempfile.TemporaryDirectory(prefix="ppml-final-") as scratch:
        context = Path(scratch)
        (context / f"{recipe.name}.manifest.sgx").write_bytes(rendered.data)
        (context / f"{recipe.name}.manifest").symlink_to(f"{recipe.name}.manifest.sgx")
        (context / f"{recipe.name}.sig").write_bytes(sig_bytes)
        (context / "Dockerfile").write_text(final_dockerfile(recipe, app.image_id))
        _refuse_key_in_context(context, key_refusals, source)
        with timer.step("docker_build_final"):
            say("building the final image")
            image_id = build_image(client, context, tag=image, labels=labels, say=say,
                                   nocache=options.no_cache)

    pushed_digest = push_if_asked(options, client, image, auth, timer=timer, say=say)

    with timer.step("record"):
        record = measurement_record(recipe=recipe, plan=plan, summary=summary, image=image,
                                    image_id=image_id, pushed_digest=pushed_digest,
                                    base_digest=app.base_digest, rendered=rendered)
        policy_files = _write_outputs(output_dir, recipe, rendered, sig_bytes, record,
                                      options.policies, source)
    return BuildResult(record, output_dir / "measurement.json", output_dir, image,
                       timer.timings, policy_files, stats)


def _write_outputs(output_dir: Path, recipe: Recipe, rendered: RenderedManifest,
                   sig_bytes: bytes, record: dict, policies: list[str],
                   source: str) -> list[Path]:
    """Manifest, .sig and trusted-file list, then write_build_outputs."""
    return write_build_outputs(output_dir, {
        f"{recipe.name}.manifest.sgx": rendered.data,
        f"{recipe.name}.sig": sig_bytes,
        "trusted-files.json": json.dumps(trusted_files_document(rendered), indent=2) + "\n",
    }, record, policies, source)


def write_build_outputs(output_dir: Path, files: dict[str, str | bytes], record: dict,
                        policies: list[str], source: str) -> list[Path]:
    """A backend's ``files``, the policies and the record, all or none; the record is renamed
    last, so a record in OUTPUT_DIR means the files beside it are from its build. Returns the
    policy files' paths."""
    outputs: dict[Path, str | bytes] = {output_dir / name: data for name, data in files.items()}
    policy_paths: list[Path] = []
    if policies:
        from ppml_build.policy import render

        for fmt in dict.fromkeys(policies):  # --policy maa --policy maa: once
            for name, text in render(record, fmt, source=source).files.items():
                outputs[output_dir / name] = text
                policy_paths.append(output_dir / name)
    outputs[output_dir / "measurement.json"] = json.dumps(record, indent=2) + "\n"
    write_all_or_none(outputs, option="--output-dir")
    return policy_paths


def _names_a_registry(reference: ImageReference) -> bool:
    """Docker's rule: the first path component is a registry if it has a '.' or ':' or is
    localhost; otherwise the reference means Docker Hub by default, never what a user meant."""
    first, sep, _ = reference.repository.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _key_fingerprints(key_path: Path, private_key: keys.PrivateKey | None) -> list[bytes]:
    """What must never appear in a build context: the key in every encoding we can derive
    (key_scan: the key file, DER, base64, hex and the raw private numbers)."""
    return key_scan.key_needles(key_path.read_bytes(), private_key)


def _refuse_key_in_context(context: Path, needles: list[bytes], source: str) -> None:
    """One line naming where in the image (or build stage) the key would have gone."""
    found = key_scan.find_in_tree(context, needles)
    if found is None:
        return
    rel, needle = found
    encoding = getattr(needle, "encoding", "PEM")
    first, _, rest = rel.partition("/")
    if first == "rootfs":
        place, fix = f"app.files would put the signing key ({encoding}) into the image at " \
            f"/{rest}", "remove it from app.files"
    elif first == BUILD_SOURCES_DIR:
        index = rest.partition("/")[0]
        place, fix = f"build.sources[{index}] would put the signing key ({encoding}) into " \
            f"the build stage ({rel})", "remove it from build.sources"
    else:
        place, fix = f"the build context file {rel} holds the signing key ({encoding})", \
            "remove it"
    raise RecipeError(f"{source}: {place}; the signing key must never be shipped: {fix}")


__all__ = ["BuildOptions", "BuildResult", "build", "app_dockerfile", "build_stage_lines",
           "fetch_image_paths", "image_outputs", "add_build_outputs", "final_dockerfile",
           "image_labels", "measurement_record"]
