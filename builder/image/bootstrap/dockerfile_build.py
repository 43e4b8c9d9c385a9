"""Every base image but Debian: its Dockerfile built FROM the parent target, in a scratch context
holding the Dockerfile, the files it copies and (for the download stage only) the CA bundle."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import deque
from pathlib import Path

import docker.errors

from ...errors import ImageError
from .cache_key import INPUT_HASH_LABEL
from .reporter import Reporter
from .targets import BootstrapOptions, TargetSpec

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the engine colours RUN steps' stderr


def build_from_dockerfile(
    client,
    spec: TargetSpec,
    digest: str,
    parent: str | None,
    options: BootstrapOptions,
    reporter: Reporter,
) -> None:
    """Build ``spec.dockerfile`` FROM ``parent`` as ``spec.reference``, labelled ``digest``."""
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
            raise ImageError(
                f"building {spec.reference} failed: {err.explanation or err}"
            ) from None


__all__ = ["build_from_dockerfile"]
