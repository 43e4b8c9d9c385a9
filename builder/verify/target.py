"""The I/O edge of verify: read a directory (``APP.manifest.sgx``, ``APP.sig`` and the unpacked
image) or a local image (everything from ONE ``docker export`` stream) into ``Evidence``, and
hand it to ``run_checks``. The Docker SDK is imported only in image mode.

A cluster image (labels ``ppml.role.<role>.mrenclave``, one enclave per role in /ppml) is
checked role by role from the same export, each role's enclave with every check, its labels
and its part of the record and the policies (``ClusterVerifyReport``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ImageError, PpmlError
from ..image.rootfs import DirRootFS, RootFSError, resolve
from ..limits import MAX_SMALL_FILE_BYTES
from ..progress import Say, say_nothing
from ..record import IN_IMAGE_DIR, OCI_TITLE, label_roles
from .checks import run_checks
from .evidence import (
    Evidence,
    Expectations,
    cluster_enclaves,
    enclave_stem,
    is_cluster_record,
    load_expectations,
    parse_sigstruct,
    policy_role,
    read_host_file,
    record_for_enclave,
    record_role,
)
from .report import ClusterVerifyReport, VerifyReport

MANIFEST_SUFFIX = ".manifest.sgx"


def _enclaves_in(names: list[str]) -> list[str]:
    """APP of every APP.manifest.sgx among ``names``, sorted."""
    suffix = MANIFEST_SUFFIX
    return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix) and len(n) > len(suffix))


def _discover_name(names: list[str], where: str, name: str | None) -> str:
    suffix = MANIFEST_SUFFIX
    found = _enclaves_in(names)
    if name is not None:
        if name not in found:
            raise PpmlError(
                f"{where}: no {name}{suffix} (has: {', '.join(found) or 'none'}); check --name"
            )
        return name
    if len(found) != 1:
        listed = ", ".join(f"{n}{suffix}" for n in found) or f"no *{suffix}"
        raise PpmlError(
            f"{where}: expected exactly one *{suffix}, found {listed}; choose one with --name APP"
        )
    return found[0]


def verify_directory(
    directory: os.PathLike | str,
    *,
    rootfs: os.PathLike | str | None = None,
    name: str | None = None,
    libpal: os.PathLike | str | None = None,
    expect: Expectations = Expectations(),
) -> VerifyReport:
    """Directory mode: APP.manifest.sgx and APP.sig in ``directory``, the image in ``rootfs``.

    Without ``rootfs``, a directory that is itself an unpacked image (it has ppml/APP.*) is
    used as both.
    """
    from ..image.hashing import FileHasher

    directory = Path(directory)
    expected = load_expectations(expect)
    artifacts = directory
    if rootfs is None:
        if (directory / IN_IMAGE_DIR.strip("/")).is_dir() and not any(
            p.name.endswith(".manifest.sgx") for p in directory.iterdir()
        ):
            rootfs, artifacts = directory, directory / IN_IMAGE_DIR.strip("/")
        else:
            raise PpmlError(
                f"{directory}: directory mode needs --rootfs DIR, the image's "
                "filesystem unpacked on the host (e.g. docker export | tar -x), to "
                "check the trusted files against"
            )
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise PpmlError(f"--rootfs {rootfs}: not a directory (the image's unpacked filesystem)")
    app = _discover_name([p.name for p in artifacts.iterdir()], str(artifacts), name)
    manifest_sgx = read_host_file(artifacts / f"{app}.manifest.sgx", "manifest (.manifest.sgx)")
    sig_path = artifacts / f"{app}.sig"
    sig = parse_sigstruct(
        read_host_file(sig_path, "SIGSTRUCT (.sig)", MAX_SMALL_FILE_BYTES), str(sig_path)
    )
    pal = read_host_file(Path(libpal), "libpal.so (--libpal)") if libpal is not None else None
    # An auditor's check reads every byte: no hash cache.
    fs = DirRootFS(rootfs, FileHasher(use_cache=False))
    evidence = Evidence(
        target=str(directory),
        name=app,
        manifest_sgx=manifest_sgx,
        sigstruct=sig,
        fs=fs,
        libpal=pal,
        **_for_enclave(expected, app),
    )
    return run_checks(evidence)


def _for_enclave(expected: dict[str, Any], enclave: str) -> dict[str, Any]:
    """The user's expectations for enclave APP: a cluster record narrowed to APP's role."""
    record, source = record_for_enclave(expected["record"], expected["record_source"], enclave)
    return {**expected, "record": record, "record_source": source}


def _for_role(
    expected: dict[str, Any], enclave: str, role: str, roles: list[str]
) -> dict[str, Any]:
    """A cluster role's expectations: its part of the record, the policies named for it
    (``<role>-...``) and those named for no role."""
    policies = [
        doc
        for doc in expected["policies"]
        if policy_role(Path(doc.path).name, roles) in (None, role)
    ]
    return {**_for_enclave(expected, enclave), "policies": policies, "role": role}


def _role_enclaves(
    reference: str, labels: dict[str, str], expected: dict[str, Any]
) -> dict[str, str]:
    """Each role of a cluster image and its enclave (APP of /ppml/APP.manifest.sgx): from the
    cluster record given with --record (whose roles must be the image's), else
    ``<title label>-<role>``."""
    roles = label_roles(labels)
    record, source = expected["record"], expected["record_source"]
    if is_cluster_record(record):
        enclaves = cluster_enclaves(record, source)
        if sorted(enclaves) != roles:
            raise PpmlError(
                f"{source}: the record's roles are {', '.join(enclaves)} but {reference}'s "
                f"labels (ppml.role.ROLE.mrenclave) name {', '.join(roles)}; give the record "
                "of this image's build"
            )
        return enclaves
    title = labels.get(OCI_TITLE)
    if not isinstance(title, str) or enclave_stem(title) is None:
        raise ImageError(
            f"{reference}: a cluster image (roles {', '.join(roles)}) without a usable "
            f"{OCI_TITLE} label to name its enclaves (NAME-ROLE); give the build's record "
            "(its measurement.json) with --record"
        )
    return {role: f"{title}-{role}" for role in roles}


def _chosen_role(
    reference: str, enclaves: dict[str, str], name: str | None, expected: dict[str, Any]
) -> str | None:
    """The one role of a cluster image to verify, or None for every role.

    One role is chosen by --name NAME-ROLE, or by a role's own record given as --record
    (roles/ROLE/measurement.json, by its ``enclave`` field): that record can only vouch for its
    role, so it is verified alone, as with --name. A record of no role is an error."""
    listed = ", ".join(f"{role}: {stem}" for role, stem in enclaves.items())
    if name is not None:
        chosen = [role for role, stem in enclaves.items() if stem == name]
        if not chosen:
            raise PpmlError(
                f"--name {name}: not one of {reference}'s role enclaves ({listed}); give "
                "NAME-ROLE, or leave --name out to verify every role"
            )
        return chosen[0]
    record, source = expected["record"], expected["record_source"]
    if record is None or is_cluster_record(record):
        return None
    role = record_role(record, enclaves)
    if role is None:
        raise PpmlError(
            f"{source}: the record of one enclave, but {reference} is a cluster image with an "
            f"enclave per role ({listed}); give the cluster build's measurement.json, a "
            "role's roles/ROLE/measurement.json, or choose a role with --name"
        )
    return role


def _keep_for_verify(path: str) -> bool:
    """Hold in memory what verify reads whole: /ppml/ and the LibOS files (libpal.so)."""
    return path.startswith(IN_IMAGE_DIR + "/") or "/gramine/" in path or path.endswith("/libpal.so")


def verify_image(
    reference: str,
    *,
    name: str | None = None,
    libpal: os.PathLike | str | None = None,
    expect: Expectations = Expectations(),
    client: Any = None,
    say: Say = say_nothing,
) -> VerifyReport | ClusterVerifyReport:
    """Image mode: everything from the local engine's image, exported in ONE stream.

    A cluster image gives a ``ClusterVerifyReport`` over every role, or the ``VerifyReport`` of
    the one role --name (or a role's own record) chooses."""
    import docker.errors

    from ..image.engine import connect, export_image_rootfs

    expected = load_expectations(expect)
    pal = read_host_file(Path(libpal), "libpal.so (--libpal)") if libpal is not None else None
    client = client or connect()
    try:
        attrs = client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"{reference}: no such image in the local Docker engine (verify does "
            f"not pull); pull it first (docker pull {reference}) or build it"
        ) from None
    except docker.errors.APIError as err:
        raise ImageError(
            f"{reference}: cannot inspect the image: {err.explanation or err}"
        ) from None
    image_id = attrs["Id"]  # labels and files from the same image, even if the tag moves
    labels = dict((attrs.get("Config") or {}).get("Labels") or {})
    roles = label_roles(labels)
    # What to verify is settled before the export: bad input fails first.
    enclaves = _role_enclaves(reference, labels, expected) if roles else {}
    chosen = _chosen_role(reference, enclaves, name, expected) if roles else None
    say(f"exporting {reference} ({image_id[:19]}) to hash its files")
    fs = export_image_rootfs(client, image_id, keep=_keep_for_verify)
    try:
        names = fs.listdir(IN_IMAGE_DIR)
    except RootFSError:
        raise ImageError(
            f"{reference}: no {IN_IMAGE_DIR}/ directory in the image: not built "
            "by `ppml-build build`"
        ) from None
    where = f"{reference}:{IN_IMAGE_DIR}/"
    if not roles:
        app = _discover_name(names, where, name)
        evidence = _image_evidence(reference, fs, app, labels, pal, _for_enclave(expected, app))
        say("checking")
        return run_checks(evidence)
    if chosen is not None:  # one role, as one enclave: every policy applies to it
        app = enclaves[chosen]
        _require_role_manifest(names, where, chosen, app)
        role_expected = {**_for_enclave(expected, app), "role": chosen}
        say("checking")
        return run_checks(_image_evidence(reference, fs, app, labels, pal, role_expected))
    reports = {}
    for role, app in enclaves.items():
        _require_role_manifest(names, where, role, app)
        role_expected = _for_role(expected, app, role, list(enclaves))
        say(f"checking {role} ({app})")
        reports[role] = run_checks(_image_evidence(reference, fs, app, labels, pal, role_expected))
    return ClusterVerifyReport(reference, reports)


def _require_role_manifest(names: list[str], where: str, role: str, app: str) -> None:
    found = _enclaves_in(names)
    if app not in found:
        raise ImageError(
            f"{where}: no {app}{MANIFEST_SUFFIX} for role {role} (has: "
            f"{', '.join(f'{n}{MANIFEST_SUFFIX}' for n in found) or 'none'}); the image's role "
            "labels name enclaves it does not hold: not built by `ppml-build build`, or altered"
        )


def _image_evidence(
    reference: str, fs: Any, app: str, labels: dict[str, str], pal: bytes | None, expected: dict
) -> Evidence:
    """Enclave APP's files from the exported image, and what it is compared with."""

    def image_file(file_name: str, what: str) -> bytes:
        path = f"{IN_IMAGE_DIR}/{file_name}"
        try:
            return fs.read_bytes(resolve(fs, path))
        except (OSError, KeyError) as err:
            raise ImageError(f"{reference}: cannot read {path} ({what}): {err}") from None

    manifest_sgx = image_file(f"{app}.manifest.sgx", "the manifest")
    sig = parse_sigstruct(
        image_file(f"{app}.sig", "the SIGSTRUCT"), f"{reference}:{IN_IMAGE_DIR}/{app}.sig"
    )
    copy = None
    if fs.lstat(f"{IN_IMAGE_DIR}/{app}.manifest") is not None:
        copy = image_file(f"{app}.manifest", "the manifest copy")
    return Evidence(
        target=reference,
        name=app,
        manifest_sgx=manifest_sgx,
        sigstruct=sig,
        fs=fs,
        libpal=pal,
        labels=labels,
        manifest_copy=copy,
        **expected,
    )


def _looks_like_path(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~")) or target in (".", "..")


def verify_target(
    target: str,
    *,
    rootfs: os.PathLike | str | None = None,
    name: str | None = None,
    libpal: os.PathLike | str | None = None,
    expect: Expectations = Expectations(),
    say: Say = say_nothing,
) -> VerifyReport | ClusterVerifyReport:
    """An existing directory → directory mode; anything else is a local image reference."""
    if Path(target).is_dir():
        return verify_directory(target, rootfs=rootfs, name=name, libpal=libpal, expect=expect)
    if Path(target).exists():
        raise PpmlError(
            f"{target}: not a directory; give the directory holding "
            "APP.manifest.sgx and APP.sig (or an image reference)"
        )
    if _looks_like_path(target):
        raise PpmlError(
            f"{target}: no such directory (give a directory holding "
            "APP.manifest.sgx and APP.sig, or an image reference)"
        )
    if rootfs is not None:
        raise PpmlError(
            f"--rootfs is for directory mode; {target} is not a directory (an "
            "image is checked against its own filesystem)"
        )
    return verify_image(target, name=name, libpal=libpal, expect=expect, say=say)


__all__ = ["verify_directory", "verify_image", "verify_target"]
