"""The Debian base: ``debootstrap`` into a scratch tree, scrubbed of host files, imported into
the engine as one layer with its labels. Needs root and the ``debootstrap`` program."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections import deque
from pathlib import Path

import docker.errors

from ...errors import ImageError
from .cache_key import INPUT_HASH_LABEL
from .reporter import Reporter
from .targets import BootstrapOptions, TargetSpec


def import_debootstrap_base(
    client, spec: TargetSpec, digest: str, options: BootstrapOptions, reporter: Reporter
) -> None:
    """debootstrap ``options.suite`` and import it as ``spec.reference``, labelled ``digest``."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageError(
            "debootstrap is not installed; run scripts/docker-up.sh (installs it) or apt-get install debootstrap"
        )
    if os.geteuid() != 0:
        raise ImageError(
            "debootstrap needs root to create the Debian base; run `ppml-build base bootstrap` as root"
        )
    root = Path(tempfile.mkdtemp(prefix="ppml-debootstrap-"))
    try:
        cmd = [
            debootstrap,
            f"--variant={options.variant}",
            options.suite,
            str(root),
            options.mirror,
        ]
        tail = _run_logged(cmd, spec.name, reporter)
        if tail is not None:
            raise ImageError(
                f"debootstrap {options.suite} failed: {tail}; check network access to {options.mirror}"
            )
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
                [
                    "tar",
                    "-C",
                    str(root),
                    "--numeric-owner",
                    "--exclude=./dev/*",
                    "--exclude=./proc/*",
                    "--exclude=./sys/*",
                    "-cf",
                    str(archive),
                    ".",
                ],
                check=True,
                capture_output=True,
            )
            client.api.import_image(
                src=str(archive), repository=spec.repository, tag=spec.tag, changes=changes
            )
        except subprocess.CalledProcessError as err:
            detail = (err.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise ImageError(
                f"tar of the debootstrap tree failed: {detail[-1] if detail else err}"
            ) from None
        except docker.errors.APIError as err:
            raise ImageError(
                f"importing the Debian base failed: {err.explanation or err}"
            ) from None
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
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                reporter.progress(target, line)
    if proc.returncode == 0:
        return None
    return " / ".join(tail) or f"exit status {proc.returncode}"


__all__ = ["import_debootstrap_base"]
