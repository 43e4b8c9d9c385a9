"""The base-image targets: what each one is (repository, tag, Dockerfile, build args, files),
what it builds on, and which of them a ``--only`` selection makes, parents first."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...errors import ImageError
from .gramine_source import GRAMINE_VERSION, gramine_source_files

STANDIN_LABEL = "ppml.libos.standin"  # on the stand-in Gramine test bases

DEFAULT_SPARK_VERSION = "4.3.0"  # PyPI pyspark; Spark 4 needs Java 17, which Debian 12 ships
DEFAULT_FLINK_VERSION = "2.3.0"  # PyPI apache-flink
DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

TARGET_NAMES = (
    "debian",
    "spark",
    "flink",
    "gramine",
    "spark-gramine",
    "flink-gramine",
    "standin",
    "spark-standin",
    "flink-standin",
)

PROJECT_ROOT = Path(__file__).resolve().parents[3]

Action = Literal["built", "reused", "pulled"]


@dataclass(frozen=True)
class BootstrapOptions:
    registry: str | None = None  # HOST:PORT; images are also tagged and pushed there
    auth: Mapping[str, str] | None = None
    ca_bundle: Path | None = None
    only: tuple[str, ...] = ()  # empty: every target; otherwise these and what they build on
    spark_version: str = DEFAULT_SPARK_VERSION
    flink_version: str = DEFAULT_FLINK_VERSION
    suite: str = DEBIAN_SUITE
    variant: str = DEBIAN_VARIANT
    mirror: str = DEBIAN_MIRROR
    project_root: Path = PROJECT_ROOT
    # A directory of Gramine's source tarballs (see gramine_source_files); None: Gramine's
    # own apt repository (packages.gramineproject.io), which needs that network.
    gramine_source: Path | None = None


@dataclass(frozen=True)
class TargetSpec:
    name: str
    repository: str  # local name, e.g. "ppml/spark-base"
    tag: str
    parent: str | None  # target name this one is built FROM
    dockerfile: Path | None  # None: the debootstrap import
    build_args: Mapping[str, str] = field(default_factory=dict)
    context_files: Mapping[str, Path] = field(default_factory=dict)  # name in context -> host file
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    def registry_reference(self, registry: str) -> str:
        return f"{registry}/{self.repository}:{self.tag}"


@dataclass
class TargetResult:
    name: str
    reference: str  # local tag
    input_hash: str
    action: Action
    image_id: str
    seconds: float
    registry_reference: str | None = None
    repo_digest: str | None = None  # "sha256:…" in the registry
    pushed: bool | None = None  # None: no registry; False: the registry already had it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def validate_registry(registry: str) -> str:
    """HOST[:PORT] with no scheme and no path (the form docker tags use)."""
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", registry or ""):
        raise ImageError(
            f"--registry {registry!r}: expected HOST:PORT such as 127.0.0.1:5000 (no scheme, no path)"
        )
    return registry


def _dependencies() -> dict[str, str | None]:
    return {
        "debian": None,
        "spark": "debian",
        "flink": "debian",
        "gramine": "debian",
        "spark-gramine": "gramine",
        "flink-gramine": "gramine",
        "standin": "debian",
        "spark-standin": "spark",
        "flink-standin": "flink",
    }


def select_targets(only: Sequence[str]) -> list[str]:
    """The targets to make, parents first: ``only`` plus everything they build on."""
    deps = _dependencies()
    unknown = [name for name in only if name not in deps]
    if unknown:
        raise ImageError(
            f"--only {', '.join(unknown)}: unknown target; choose from {', '.join(TARGET_NAMES)}"
        )
    wanted = set(only) if only else set(deps)
    for name in list(wanted):
        parent = deps[name]
        while parent is not None:
            wanted.add(parent)
            parent = deps[parent]
    return [name for name in TARGET_NAMES if name in wanted]


def target_specs(options: BootstrapOptions, standin_dir: Path | None) -> dict[str, TargetSpec]:
    """Every target's recipe. ``standin_dir`` holds the compiled libpal.so/libsysdb.so."""
    base_images = options.project_root / "base_images"
    standin_dockerfile = options.project_root / "tests" / "standin" / "image" / "Dockerfile"
    standin_files: dict[str, Path] = {}
    if standin_dir is not None:
        standin_files = {
            "libpal.so": standin_dir / "libpal.so",
            "libsysdb.so": standin_dir / "libsysdb.so",
        }
    standin_labels = {STANDIN_LABEL: "true"}
    if options.gramine_source is not None:
        gramine_dockerfile = base_images / "gramine" / "Dockerfile.source"
        gramine_files = gramine_source_files(options.gramine_source)
    else:
        gramine_dockerfile, gramine_files = base_images / "gramine" / "Dockerfile", {}
    return {
        "debian": TargetSpec(
            "debian",
            "ppml/debian-base",
            options.suite,
            None,
            None,
            build_args={"suite": options.suite, "variant": options.variant},
        ),
        "spark": TargetSpec(
            "spark",
            "ppml/spark-base",
            options.spark_version,
            "debian",
            base_images / "spark" / "Dockerfile",
            build_args={"SPARK_VERSION": options.spark_version},
        ),
        "flink": TargetSpec(
            "flink",
            "ppml/flink-base",
            options.flink_version,
            "debian",
            base_images / "flink" / "Dockerfile",
            build_args={"FLINK_VERSION": options.flink_version},
        ),
        "gramine": TargetSpec(
            "gramine",
            "ppml/gramine-base",
            GRAMINE_VERSION,
            "debian",
            gramine_dockerfile,
            build_args={"GRAMINE_VERSION": GRAMINE_VERSION},
            context_files=gramine_files,
        ),
        "spark-gramine": TargetSpec(
            "spark-gramine",
            "ppml/spark-gramine",
            options.spark_version,
            "gramine",
            base_images / "spark" / "Dockerfile",
            build_args={"SPARK_VERSION": options.spark_version},
        ),
        "flink-gramine": TargetSpec(
            "flink-gramine",
            "ppml/flink-gramine",
            options.flink_version,
            "gramine",
            base_images / "flink" / "Dockerfile",
            build_args={"FLINK_VERSION": options.flink_version},
        ),
        "standin": TargetSpec(
            "standin",
            "ppml/gramine-standin",
            options.suite,
            "debian",
            standin_dockerfile,
            context_files=standin_files,
            labels=standin_labels,
        ),
        "spark-standin": TargetSpec(
            "spark-standin",
            "ppml/spark-gramine-standin",
            options.spark_version,
            "spark",
            standin_dockerfile,
            context_files=standin_files,
            labels=standin_labels,
        ),
        "flink-standin": TargetSpec(
            "flink-standin",
            "ppml/flink-gramine-standin",
            options.flink_version,
            "flink",
            standin_dockerfile,
            context_files=standin_files,
            labels=standin_labels,
        ),
    }


__all__ = [
    "Action",
    "BootstrapOptions",
    "DEBIAN_MIRROR",
    "DEBIAN_SUITE",
    "DEBIAN_VARIANT",
    "DEFAULT_FLINK_VERSION",
    "DEFAULT_SPARK_VERSION",
    "PROJECT_ROOT",
    "STANDIN_LABEL",
    "TARGET_NAMES",
    "TargetResult",
    "TargetSpec",
    "select_targets",
    "target_specs",
    "validate_registry",
]
