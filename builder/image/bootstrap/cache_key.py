"""A target's cache key: the input hash every base image carries as its ``ppml.input-hash`` label.

SHA-256 over what determines the image's content: Dockerfile bytes, build args, labels, files
copied in, the parent's input hash; for the Debian base the debootstrap suite and variant (its
build args). Never the CA bundle, which only lets the download stage through a proxy.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ...errors import ImageError
from ..hashing import sha256_file
from .targets import TargetSpec

INPUT_HASH_LABEL = "ppml.input-hash"
# Bump when the hashing scheme or the way images are assembled changes: every cache misses.
CACHE_FORMAT = "ppml-build/base-images/v1"


def input_hash(spec: TargetSpec, parent_hash: str | None) -> str:
    """SHA-256 of everything that decides the image's content (never of the CA bundle)."""
    inputs: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "parent": parent_hash,
        "build_args": dict(sorted(spec.build_args.items())),
        "labels": dict(sorted(spec.labels.items())),
    }
    if spec.dockerfile is None:
        inputs["kind"] = "debootstrap"
    else:
        try:
            inputs["kind"] = "dockerfile"
            inputs["dockerfile"] = sha256_file(spec.dockerfile)
            inputs["files"] = {
                name: sha256_file(path) for name, path in sorted(spec.context_files.items())
            }
        except OSError as err:
            raise ImageError(
                f"{err.filename}: cannot read an input of the {spec.name} image: {err.strerror}"
            ) from None
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


__all__ = ["CACHE_FORMAT", "INPUT_HASH_LABEL", "input_hash"]
