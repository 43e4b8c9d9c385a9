"""Base images for builds and tests: a debootstrapped Debian, Gramine 1.9 on it (built from its
source tarballs, or from Gramine's apt repository), Spark/Flink layers on Debian and on Gramine,
and stand-in Gramine test bases, cached by the hash of their inputs.

Every image carries the label ``ppml.input-hash``: SHA-256 over what determines its content
(Dockerfile bytes, build args, files copied in, the parent's input hash; for the Debian base the
debootstrap suite and variant). A target whose tagged image already has that label, locally or in
the registry, is reused and nothing is rebuilt. A CA bundle for pip is not an input: it only lets
the download stage through a TLS-inspecting proxy and never reaches the image.

One module per job, dependencies pointing down: ``gramine_source`` (the ``--gramine-source``
tarballs), ``targets`` (what each image is and builds on), ``cache_key`` (its input hash),
``reporter`` (the progress protocol), ``debootstrap`` (the Debian base, imported into the
engine), ``dockerfile_build`` (every other image), ``ca_bundle`` (pip's CA bundle) and ``run``
(``bootstrap_bases``: reuse, pull, build and push, parents first). This module only names the
public API, so callers keep writing ``bootstrap.BootstrapOptions``.

Nothing here parses CLI arguments; ``ppml_build.cli.image_commands`` does, and reports through the
``Reporter`` protocol (rich on a terminal, plain lines otherwise).
"""

from .ca_bundle import check_ca_bundle, default_ca_bundle
from .cache_key import CACHE_FORMAT, INPUT_HASH_LABEL, input_hash
from .gramine_source import GRAMINE_VERSION, gramine_source_files
from .reporter import Reporter, SilentReporter
from .run import bootstrap_bases, build_standin_binaries
from .targets import (
    DEFAULT_FLINK_VERSION,
    DEFAULT_SPARK_VERSION,
    PROJECT_ROOT,
    STANDIN_LABEL,
    TARGET_NAMES,
    BootstrapOptions,
    TargetResult,
    TargetSpec,
    select_targets,
    target_specs,
    validate_registry,
)

__all__ = [
    "BootstrapOptions",
    "CACHE_FORMAT",
    "DEFAULT_FLINK_VERSION",
    "DEFAULT_SPARK_VERSION",
    "GRAMINE_VERSION",
    "INPUT_HASH_LABEL",
    "PROJECT_ROOT",
    "Reporter",
    "STANDIN_LABEL",
    "SilentReporter",
    "TARGET_NAMES",
    "TargetResult",
    "TargetSpec",
    "bootstrap_bases",
    "build_standin_binaries",
    "gramine_source_files",
    "check_ca_bundle",
    "default_ca_bundle",
    "input_hash",
    "select_targets",
    "target_specs",
    "validate_registry",
]
