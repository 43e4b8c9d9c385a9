"""``build --verify-reproducible``: build twice from scratch and require the same MRENCLAVE.

Both builds run with Docker's build cache off and with their own empty hash and image-index
caches (a fresh ``CacheLocations`` under a temporary directory each), so nothing computed
by the first build can hide a difference in the second. The first build is the one the user
keeps (their tag, their output directory); the second goes to a temporary tag and directory and
is removed afterwards. A requested push happens only once both builds agree.

When MRENCLAVE differs, the first differing input is named, in the order MRENCLAVE depends on
them: a trusted file (trusted-files.json), then the manifest text, then libpal.so.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..atomic import write_all_or_none
from ..errors import ImageError, RecipeError, VerificationError
from ..image.caches import CacheLocations
from ..progress import Say, say_nothing
from ..record import CLUSTER_RECORD_SCHEMA
from ..versions import gramine_version
from . import backends
from .options import BuildOptions, BuildResult

CHECK_TAG_SUFFIX = "-reproducible-check"
LIBPAL_IN_PREFIX = gramine_version().libpal


@dataclass
class ReproducibleResult:
    """Two builds of one recipe; ``build`` is the one kept (the user's tag and output dir)."""

    build: BuildResult
    check_mrenclave: str  # MRENCLAVE of the second, throw-away build
    check_image: str  # its temporary tag (removed again)
    difference: str | None = None  # the first differing input, when MRENCLAVE differs

    @property
    def mrenclave(self) -> str:
        return self.build.record["mrenclave"]

    @property
    def reproducible(self) -> bool:
        return self.difference is None and self.mrenclave == self.check_mrenclave


class NotReproducibleError(VerificationError):
    """MRENCLAVE differs between two from-scratch builds (exit 1). ``result`` has both."""

    def __init__(self, message: str, result: ReproducibleResult) -> None:
        super().__init__(message)
        self.result = result


# --- the pure comparison ---------------------------------------------------------------------


def first_trusted_difference(first: list[dict], second: list[dict]) -> str | None:
    """The first trusted file (in the first build's order) whose sha256 differs or that only
    one build has; lists are trusted-files.json ``files`` entries ({path, sha256, size})."""
    other = {entry["path"]: entry["sha256"] for entry in second}
    mine = {entry["path"] for entry in first}
    for entry in first:
        path, sha = entry["path"], entry["sha256"]
        if path not in other:
            return f"trusted file {path}: in build 1 only (sha256 {sha})"
        if other[path] != sha:
            return f"trusted file {path}: sha256 {sha} in build 1, {other[path]} in build 2"
    for entry in second:
        if entry["path"] not in mine:
            return f"trusted file {entry['path']}: in build 2 only (sha256 {entry['sha256']})"
    return None


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def first_manifest_difference(first: bytes, second: bytes) -> str | None:
    if first == second:
        return None
    a = first.decode("utf-8", "replace").splitlines()
    b = second.decode("utf-8", "replace").splitlines()
    for number, (line_a, line_b) in enumerate(zip(a, b), start=1):
        if line_a != line_b:
            return (
                f"manifest line {number}: {_clip(line_a)!r} in build 1, "
                f"{_clip(line_b)!r} in build 2"
            )
    if len(a) != len(b):
        number = min(len(a), len(b)) + 1
        return (
            f"manifest line {number}: build {1 if len(a) > len(b) else 2} has more lines "
            f"({len(a)} vs {len(b)})"
        )
    return "manifest: the bytes differ (line endings or a trailing newline)"


def first_difference(
    trusted: tuple[list[dict], list[dict]],
    manifests: tuple[bytes, bytes],
    libpals: Callable[[], tuple[str, bytes, bytes]] | None = None,
) -> str:
    """Name the first input that differs: trusted files, then the manifest, then libpal.so.

    ``libpals`` is called only when the first two agree (reading libpal.so from the images
    costs a container each); it returns (in-image path, bytes of build 1, bytes of build 2).
    """
    found = first_trusted_difference(*trusted) or first_manifest_difference(*manifests)
    if found:
        return found
    if libpals is not None:
        path, pal_a, pal_b = libpals()
        if pal_a != pal_b:
            return (
                f"libpal.so ({path}): sha256 {hashlib.sha256(pal_a).hexdigest()} in build 1, "
                f"{hashlib.sha256(pal_b).hexdigest()} in build 2"
            )
    return (
        "no differing input found: trusted files, manifest and libpal.so are identical, "
        "yet MRENCLAVE differs (report this as a ppml-build bug)"
    )


# --- the I/O edge ----------------------------------------------------------------------------


def check_tag(image: str) -> str:
    """A tag beside the user's for the throw-away second build."""
    from ..image.engine import ImageReference

    ref = ImageReference.parse(image)
    tag = (ref.tag or "latest")[: 128 - len(CHECK_TAG_SUFFIX)]
    return f"{ref.repository}:{tag}{CHECK_TAG_SUFFIX}"


def _prefixed(say: Say, prefix: str) -> Say:
    return lambda line: say(f"[{prefix}] {line}")


def _trusted_list(output_dir: Path) -> list[dict]:
    document = json.loads((output_dir / "trusted-files.json").read_text())
    return list(document["files"])


def _manifest_bytes(result: BuildResult) -> bytes:
    return (result.output_dir / f"{result.record['name']}.manifest.sgx").read_bytes()


def libpal_path_of(manifest_sgx: bytes) -> str:
    """<directory of loader.entrypoint (libsysdb.so)>/sgx/libpal.so, as verify reads it."""
    import tomllib

    from ..versions import DEFAULT_GRAMINE_PREFIX

    try:
        uri = tomllib.loads(manifest_sgx.decode("utf-8"))["loader"]["entrypoint"]["uri"]
        directory = posixpath.dirname(uri[len("file:") :])
    except (ValueError, KeyError, TypeError):
        directory = DEFAULT_GRAMINE_PREFIX.rstrip("/")
    return posixpath.join(directory, LIBPAL_IN_PREFIX)


def read_image_file(client: Any, image: str, path: str, *, max_links: int = 8) -> bytes:
    """One file's bytes from an image (a never-started container's archive; links followed)."""
    import docker.errors

    container = client.api.create_container(
        image, command=["/ppml-read-never-runs"], network_disabled=True, labels={"ppml.export": "1"}
    )
    try:
        for _ in range(max_links):
            stream, _stat = client.api.get_archive(container["Id"], path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
                member = archive.next()
                if member is None:
                    raise ImageError(f"{image}: {path} is empty in the archive")
                if member.issym():
                    target = member.linkname
                    path = (
                        target
                        if target.startswith("/")
                        else posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
                    )
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    raise ImageError(f"{image}: {path} is not a regular file")
                return handle.read()
        raise ImageError(f"{image}: {path}: too many symbolic links")
    except docker.errors.APIError as err:
        raise ImageError(f"{image}: cannot read {path}: {err.explanation or err}") from None
    finally:
        try:
            client.api.remove_container(container["Id"], force=True)
        except docker.errors.APIError:
            pass


def _image_libpals(
    first: BuildResult, second: BuildResult, manifest: bytes
) -> Callable[[], tuple[str, bytes, bytes]]:
    def read() -> tuple[str, bytes, bytes]:
        from ..image.engine import connect

        client = connect()
        path = libpal_path_of(manifest)
        return (
            path,
            read_image_file(client, first.image, path),
            read_image_file(client, second.image, path),
        )

    return read


def _remove_image(reference: str) -> None:
    import docker.errors

    from ..image.engine import connect

    try:
        connect().api.remove_image(reference)
    except (docker.errors.APIError, ImageError):
        pass  # a leftover tag costs disk, never correctness


def _push_and_record(result: BuildResult, options: BuildOptions) -> None:
    """Push the kept image after both builds agreed; put its digest in the record."""
    from ..image.engine import ImageReference, connect, load_registry_auth, push_image

    auth = None
    if options.registry_auth is not None:
        auth = load_registry_auth(
            options.registry_auth, ImageReference.parse(result.image).registry
        )
    digest = push_image(connect(), result.image, auth=auth)
    result.record["image"]["digest"] = digest
    write_all_or_none(
        {result.record_path: json.dumps(result.record, indent=2) + "\n"}, option="--output-dir"
    )


def verify_reproducible(options: BuildOptions, say: Say = say_nothing) -> ReproducibleResult:
    """Build ``options`` twice from scratch; raise NotReproducibleError if MRENCLAVE differs.

    Returns the result of the first build (tagged and written as ``options`` asks) together
    with the second build's MRENCLAVE. ``options.push`` is honoured after the comparison.
    """
    run_build = backends.build
    with tempfile.TemporaryDirectory(prefix="ppml-reproducible-") as scratch_name:
        scratch = Path(scratch_name)
        first = run_build(
            replace(options, no_cache=True, push=False, cache=CacheLocations(scratch / "cache-1")),
            _prefixed(say, "build 1/2"),
        )
        if first.record.get("schema") == CLUSTER_RECORD_SCHEMA:
            raise RecipeError(
                f"{options.recipe}: cluster: --verify-reproducible compares one enclave's "
                "builds so far; the first build is written, build again without it to compare"
            )
        second_tag = check_tag(first.image)
        second = run_build(
            replace(
                options,
                no_cache=True,
                push=False,
                tag=second_tag,
                output_dir=scratch / "second",
                policies=(),
                cache=CacheLocations(scratch / "cache-2"),
            ),
            _prefixed(say, "build 2/2"),
        )
        try:
            result = ReproducibleResult(first, second.record["mrenclave"], second.image)
            if not result.reproducible:
                manifest_first = _manifest_bytes(first)
                result.difference = first_difference(
                    (_trusted_list(first.output_dir), _trusted_list(second.output_dir)),
                    (manifest_first, _manifest_bytes(second)),
                    _image_libpals(first, second, manifest_first),
                )
                base_first = first.record["base"]["digest"]
                base_second = second.record["base"]["digest"]
                moved = (
                    ""
                    if base_first == base_second
                    else (
                        f" (the base image changed between the builds: {base_first} then "
                        f"{base_second}; pin base.digest)"
                    )
                )
                raise NotReproducibleError(
                    f"{options.recipe}: not reproducible: MRENCLAVE {result.mrenclave} in build "
                    f"1, {result.check_mrenclave} in build 2; first difference: "
                    f"{result.difference}{moved}",
                    result,
                )
        finally:
            _remove_image(second.image)
    say(f"reproducible: both builds give MRENCLAVE {result.mrenclave}")
    if options.push:
        say(f"pushing {first.image}")
        _push_and_record(first, options)
    return result


__all__ = [
    "NotReproducibleError",
    "ReproducibleResult",
    "first_difference",
    "first_manifest_difference",
    "first_trusted_difference",
    "verify_reproducible",
]
