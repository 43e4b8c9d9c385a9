"""Run one ``docker build`` through the SDK and turn its event stream into lines and errors."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import docker
import docker.errors

from ..errors import ImageError
from ..progress import Say, say_nothing

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BUILT_RE = re.compile(r"Successfully built ([0-9a-f]{12,64})")


def build_image(
    client: docker.DockerClient,
    context: Path,
    *,
    tag: str | None,
    labels: Mapping[str, str] | None = None,
    buildargs: Mapping[str, str] | None = None,
    say: Say = say_nothing,
    nocache: bool = False,
) -> str:
    """Build ``context`` (which holds a Dockerfile) with host networking; return the image id.

    Never the default bridge network: builds run with network mode ``host``.
    """
    tail: deque[str] = deque(maxlen=8)
    step = ""
    image_id = None
    try:
        events = client.api.build(
            path=str(context),
            tag=tag,
            labels=dict(labels or {}),
            buildargs=dict(buildargs or {}),
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            nocache=nocache,
        )
        for event in events:
            if "error" in event:
                detail = str(event.get("error", "")).strip().splitlines()
                raise ImageError(
                    f"docker build{' ' + tag if tag else ''} failed at "
                    f"{step or 'the first step'}: "
                    f"{detail[-1] if detail else 'unknown error'}"
                )
            aux = event.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
            for line in _ANSI_RE.sub("", event.get("stream") or "").splitlines():
                line = line.rstrip()
                if not line:
                    continue
                if line.startswith("Step "):
                    step = line.split(" : ", 1)[0]
                    if " : LABEL " not in line:  # labels are listed in the record instead
                        say(line)
                match = _BUILT_RE.search(line)
                if match and image_id is None:
                    image_id = match.group(1)
                tail.append(line)
    except docker.errors.APIError as err:
        raise ImageError(f"docker build failed: {err.explanation or err}") from None
    if image_id is None:
        raise ImageError("docker build finished without reporting an image id: " + " / ".join(tail))
    return image_id if image_id.startswith("sha256:") else client.images.get(image_id).id
