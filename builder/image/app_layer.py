"""The app image: the recipe's files, build stage and env on the pulled base, and our view of
its filesystem (the base's index plus the app layer), shared by every LibOS backend.

    pull base (digest pinned) → stage app.files / build.sources / CA bundle in a context
    → ``docker build`` the app layer (+ a backend's support stage) → read back build outputs
    → ``RootFS`` view for the render

Nothing here knows a LibOS: a backend adds its own files through a ``SupportStage``, and the
build's key guard is handed in as ``check_context``. The context holds only public files.

Longer than most: the app image is one sequence (stage, build, read back, view), and its steps
share the context layout named at the top.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import docker.errors

from ..errors import ImageError, RecipeError
from ..host_sources import SourceTree, Staged, StagingConflict, read_source, stage_tree
from ..plan import Plan
from ..progress import Say, StepTimer, say_nothing
from ..recipe import Recipe
from .base_index import BaseIndexJob, cached_image_rootfs
from .caches import CacheLocations
from .docker_build import build_image
from .engine import ImageReference, connect, export_image_rootfs, load_registry_auth, pull_image
from .hashing import FileHasher
from .overlay import OverlayRootFS
from .rootfs import RootFS, RootFSError
from .tarfs import TarRootFS

APP_FILES_DIR = "rootfs"  # app.files[i] is staged as <context>/rootfs/<dest>
BUILD_SOURCES_DIR = "build-src"  # build.sources[i] is staged as <context>/build-src/<i>
CA_CONTEXT_NAME = "ppml-ca-bundle.pem"
CA_IN_BUILD_STAGE = "/etc/ppml-build/ca-bundle.pem"
CA_ENV_NAMES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
APP_STAGE = "app"


@dataclass(frozen=True)
class AppLayerRequest:
    """What the app image is made from, beyond the recipe: the build's options, resolved."""

    recipe_path: Path  # the recipe's directory holds app.files and build.sources
    registry_auth: Path | None = None
    ca_bundle: Path | None = None  # for the build stage only (None: the host's default, if any)
    base_index: Literal["registry", "engine"] = "registry"
    use_cache: bool = True
    cache: CacheLocations = field(default_factory=CacheLocations.from_environment)
    support: SupportStage | None = None
    # The build's key guard: called on each build context before it is sent to the engine.
    check_context: Callable[[Path], None] = lambda context: None


@dataclass(frozen=True)
class SupportStage:
    """A backend's own files in the app image, made in a stage ``FROM`` the app stage so that
    they see exactly the app's environment (Gramine: ppml-launch.py and the enclave jars)."""

    sources: Path  # a host directory, copied into the context as ``context_dir``
    context_dir: str
    lines: list[str]  # the stage's Dockerfile lines (``FROM app AS ...``)
    copy_line: str  # the final stage's ``COPY --from=...`` of what the stage made
    in_image_dir: str  # where the files land; read back after the build, like an output


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
        lines.append(
            "RUN "
            + json.dumps(
                [
                    "/bin/sh",
                    "-ec",
                    f"apt-get{apt_ca} update; DEBIAN_FRONTEND=noninteractive "
                    f"apt-get{apt_ca} install -y --no-install-recommends {packages}; "
                    "rm -rf /var/lib/apt/lists/*",
                ]
            )
        )
    for index, item in enumerate(stage.sources):
        lines.append("COPY " + json.dumps([f"{BUILD_SOURCES_DIR}/{index}", item.dest]))
    for step in stage.steps:
        lines.append("RUN " + json.dumps(["/bin/sh", "-ec", step]))
    return lines + [""]


def app_dockerfile(
    recipe: Recipe,
    plan: Plan,
    base_ref: str,
    *,
    ca_bundle: bool = False,
    support: SupportStage | None = None,
) -> str:
    """The app layer: the recipe's files on the base, the build stage's outputs, its workdir
    and (public) env; then the backend's support stage, if it has one."""
    env = {**recipe.app.env, **plan.extra_env}
    lines = build_stage_lines(recipe, base_ref, ca_bundle=ca_bundle)
    lines.append(f"FROM {base_ref}" + (f" AS {APP_STAGE}" if support else ""))
    if recipe.app.files:
        lines.append(f"COPY {APP_FILES_DIR}/ /")
    for output in recipe.build.outputs if recipe.build else []:
        lines.append("COPY --from=build " + json.dumps([output.src, output.dest]))
    lines.append(f"WORKDIR {recipe.app.workdir}")
    for name in sorted(env):
        lines.append(f"ENV {name}={json.dumps(env[name])}")
    if support:
        lines += [""] + support.lines + [""]
        lines += [f"FROM {APP_STAGE}", support.copy_line]
    return "\n".join(lines) + "\n"


# --- the I/O edge -----------------------------------------------------------------------------


def _copy_source(tree: SourceTree, target: Path, staged: Staged, *, where: str, shown: str) -> None:
    """Stage one checked source at ``target`` (links as links; see host_sources)."""
    try:
        # A single file gets 0755 or 0644, as before; a directory keeps its files' modes.
        stage_tree(tree, target, staged, shown=shown, normalise_file_mode=not tree.is_dir)
    except StagingConflict as conflict:
        raise RecipeError(f"{where}.dest: {conflict}") from None


def stage_app_files(
    recipe: Recipe, recipe_dir: Path, context: Path, source: str
) -> list[tuple[Path, str]]:
    """Copy app.files into context/rootfs/<dest> (and build.sources into context/build-src/<i>);
    returns the (host source, dest) pairs of app.files.

    Every source is checked again here, as it is copied (``validate`` checked it before): no
    link may lead out of the recipe's directory, and a link kept in the image must still lead
    to the file it leads to on this machine once all entries are staged, since the app
    layer's file view (app_rootfs) hashes what it leads to here.
    """
    root = context / APP_FILES_DIR
    staged = Staged()
    pairs = []
    for index, item in enumerate(recipe.app.files):
        where = f"{source}: app.files[{index}]"
        tree = read_source(recipe_dir, item.src, where=f"{where}.src: ")
        _copy_source(tree, root / item.dest.lstrip("/"), staged, where=where, shown=item.src)
        pairs.append((tree.host, item.dest))
    mismatched = staged.link_mismatches()
    if mismatched:
        raise RecipeError(
            f"{source}: app.files: the link {mismatched[0]!r} would lead, in the "
            "image, to a file a later app.files entry puts over its target; give "
            "that entry another dest, or copy the file in instead of the link"
        )
    for index, item in enumerate(recipe.build.sources if recipe.build else []):
        where = f"{source}: build.sources[{index}]"
        tree = read_source(recipe_dir, item.src, where=f"{where}.src: ", linked_dirs=True)
        if item.dest.endswith("/") and not tree.is_dir:
            raise RecipeError(
                f"{where}.dest: {item.dest!r} ends with '/' "
                "but the source is a file; give the file's full path in the "
                "build stage"
            )
        _copy_source(
            tree, context / BUILD_SOURCES_DIR / str(index), Staged(), where=where, shown=item.src
        )
    return pairs


def stage_ca_bundle(ca_bundle: Path | None, recipe: Recipe, context: Path, say: Say) -> bool:
    """Put the CA bundle in the context when a build stage can use it (never otherwise)."""
    if recipe.build is None:
        return False
    bundle, origin = ca_bundle, "--ca-bundle"
    if bundle is None:
        from .bootstrap import default_ca_bundle

        found = default_ca_bundle()
        if found is None:
            return False
        bundle, origin = found[0], f"${found[1]}"
    from .bootstrap import check_ca_bundle

    check_ca_bundle(Path(bundle))
    shutil.copyfile(bundle, context / CA_CONTEXT_NAME)
    say(f"CA bundle {bundle} (from {origin}) goes to the build stage only")
    return True


def image_outputs(
    recipe: Recipe, support: SupportStage | None = None
) -> list[tuple[str, bool, str, str]]:
    """What the build reads back from the app image, as (dest, is_dir, where, hint): the
    build stage's outputs and the backend's support files."""
    wanted = [
        (
            output.dest,
            output.is_dir,
            f"build.outputs[{index}]",
            f"did the build steps write {output.src}?",
        )
        for index, output in enumerate(recipe.build.outputs if recipe.build else [])
    ]
    if support is not None:
        wanted.append(
            (
                support.in_image_dir + "/",
                True,
                "ppml-build's support stage",
                "the support stage did not run",
            )
        )
    return wanted


def fetch_image_paths(
    client, app_image_id: str, name: str, wanted: list[tuple[str, bool, str, str]], into: Path
) -> list[tuple[Path, str]]:
    """The bytes of each (dest, is_dir, where, hint) path, read back from the built image.

    Returns (host copy, dest) pairs: a file, or a directory holding what the image has at
    dest. Only regular files and directories are taken; a symlink there would make our view
    of the image differ from the image, so it is refused. One container for all of them.
    """
    if not wanted:
        return []
    out: list[tuple[Path, str]] = []
    try:
        container = client.containers.create(
            app_image_id,
            entrypoint=["/ppml-never-runs"],
            network_mode="none",
            labels={"ppml.build-outputs": "1"},
        )
    except docker.errors.APIError as err:
        raise ImageError(
            f"{app_image_id[:19]}: cannot read the build outputs: {err.explanation or err}"
        ) from None
    try:
        for index, (wanted_dest, is_dir, where, hint) in enumerate(wanted):
            dest = wanted_dest.rstrip("/")
            try:
                chunks, _ = container.get_archive(dest)
                data = b"".join(chunks)
            except docker.errors.NotFound:
                raise RecipeError(
                    f"{name}: {where}: {dest} is not in the app image; " + hint
                ) from None
            target = into / str(index)
            target.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                members = archive.getmembers()
                for member in members:
                    if not (member.isreg() or member.isdir()):
                        raise RecipeError(
                            f"{name}: {where}: {member.name} is not a "
                            "regular file or directory; outputs must be plain "
                            "files (copy the link's target instead)"
                        )
                    if member.name.startswith("/") or ".." in member.name.split("/"):
                        raise ImageError(
                            f"{name}: {where}: the engine returned an unsafe name {member.name!r}"
                        )
                # The "data" filter where this Python has it (3.11.4+); names checked above.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(target, members=members, **safe)
            host = target / posixpath.basename(dest)
            if is_dir != host.is_dir():
                kind = "a directory" if host.is_dir() else "a file"
                raise RecipeError(
                    f"{name}: {where}: {dest} is {kind} in the image; write "
                    "directories with a trailing '/' on src and dest, files "
                    "without"
                )
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


def _base_index(
    client,
    base_image_id: str,
    recipe: Recipe,
    *,
    base_job: BaseIndexJob | None,
    use_cache: bool,
    cache: CacheLocations,
    say: Say,
) -> tuple[TarRootFS, str]:
    """The base's index and where it came from: "registry", "cache" or "export"."""
    if base_job is not None:
        fs = base_job.result(base_image_id)
        if fs is not None:
            how = (
                "reused from the cache"
                if base_job.source == "cache"
                else "read from the registry during the pull"
            )
            say(f"base image index: {how} ({base_job.seconds:.1f} s)")
            return fs, base_job.source
        say(
            f"base index: reading it from the registry failed ({base_job.failure}); "
            "exporting it from the engine instead"
        )

    def export(keep):
        say("indexing the base image's filesystem (one export stream, cached by image id)")
        return export_image_rootfs(client, base_image_id, keep=keep)

    fs, cached = cached_image_rootfs(
        base_image_id,
        export,
        base_index_keep(recipe),
        use_cache=use_cache,
        cache_dir=cache.base_indexes,
    )
    if cached:
        say("base image index: reused from the cache")
    return fs, "cache" if cached else "export"


def app_rootfs(
    client,
    base_image_id: str,
    recipe: Recipe,
    app_files: list[tuple[Path, str]],
    *,
    use_cache: bool = True,
    cache: CacheLocations | None = None,
    say: Say = say_nothing,
    stats: dict | None = None,
    base_job: BaseIndexJob | None = None,
) -> OverlayRootFS:
    """The app image's filesystem: the base's index plus the app layer we built.

    The base index comes from ``base_job`` (read from the registry during the pull) when it
    is of the pulled image; else from the cache or one export stream. Either way it is keyed
    by image id (content-addressed, so it cannot go stale); the LibOS files are kept whole
    because we measure libpal.so.
    """
    cache = cache or CacheLocations.from_environment()
    base_fs, source = _base_index(
        client, base_image_id, recipe, base_job=base_job, use_cache=use_cache, cache=cache, say=say
    )
    if stats is not None:
        stats["base_index_cached"] = source == "cache"
        stats["base_index_source"] = source
        if base_job is not None:
            stats["base_index_seconds"] = round(base_job.seconds, 3)
        stats["base_files"] = len(base_fs.files)
    fs = OverlayRootFS(base_fs, FileHasher(cache.hash_cache, use_cache=use_cache))
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
def app_image(
    request: AppLayerRequest, recipe: Recipe, plan: Plan, *, timer: StepTimer, stats: dict, say: Say
) -> Iterator[AppImage]:
    """Pull the base (digest pinned), build the app layer, and give its filesystem view.

    Shared by the Gramine and Occlum builds. Host files behind ``fs`` (staged build outputs)
    live until the ``with`` block ends: render inside it.
    """
    client = connect()
    auth = None
    if request.registry_auth is not None:
        auth = load_registry_auth(
            request.registry_auth, ImageReference.parse(recipe.base.image).registry
        )
    base_job = None
    if request.base_index == "registry":
        # Read the base's layers from the registry while the engine pulls them: the cold
        # build then need not wait for an export of the whole base after the pull.
        base_job = BaseIndexJob(
            _pinned_reference(recipe),
            auth=auth,
            registry_config=_engine_registry_config(client),
            keep_prefixes=base_index_keep(recipe),
            use_cache=request.use_cache,
            cache_dir=request.cache.base_indexes,
        ).start()
    try:
        with timer.step("pull"):
            say(f"pulling {recipe.base.image}")
            pulled = pull_image(
                client, recipe.base.image, auth=auth, expected_digest=recipe.base.digest
            )
        with _app_layer(
            request, recipe, plan, client, auth, pulled, base_job, timer=timer, stats=stats, say=say
        ) as app:
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
def _app_layer(
    request: AppLayerRequest,
    recipe: Recipe,
    plan: Plan,
    client,
    auth,
    pulled,
    base_job: BaseIndexJob | None,
    *,
    timer: StepTimer,
    stats: dict,
    say: Say,
) -> Iterator[AppImage]:
    source = str(request.recipe_path)
    base_ref = f"{ImageReference.parse(recipe.base.image).repository}@{pulled.repo_digest}"
    say(f"base {base_ref}")
    support = request.support

    with tempfile.TemporaryDirectory(prefix="ppml-app-") as scratch:
        context = Path(scratch) / "context"
        context.mkdir()
        app_files = stage_app_files(recipe, request.recipe_path.resolve().parent, context, source)
        ca_bundle = stage_ca_bundle(request.ca_bundle, recipe, context, say)
        if support is not None:
            shutil.copytree(
                support.sources,
                context / support.context_dir,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        request.check_context(context)
        (context / "Dockerfile").write_text(
            app_dockerfile(recipe, plan, base_ref, ca_bundle=ca_bundle, support=support)
        )
        with timer.step("docker_build_app"):
            say("building the app layer" + (" (with its build stage)" if recipe.build else ""))
            app_image_id = build_image(
                client,
                context,
                tag=None,
                labels={"ppml.stage": "app", "ppml.recipe": recipe.name},
                say=say,
                nocache=not request.use_cache,
            )
        with timer.step("export_hash"):
            app_fs = app_rootfs(
                client,
                pulled.image_id,
                recipe,
                app_files,
                use_cache=request.use_cache,
                cache=request.cache,
                say=say,
                stats=stats,
                base_job=base_job,
            )
            fs: RootFS = app_fs
            outputs = fetch_image_paths(
                client,
                app_image_id,
                recipe.name,
                image_outputs(recipe, support),
                Path(scratch) / "outputs",
            )
            if outputs:
                fs = add_build_outputs(app_fs, outputs, recipe)
        yield AppImage(client, auth, pulled.repo_digest, base_ref, app_image_id, fs)
        stats["app_files_hashed"] = app_fs.hasher.hashed_files
        if fs is not app_fs:
            stats["build_outputs_hashed"] = fs.hasher.hashed_files
