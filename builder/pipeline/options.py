"""What one ``ppml-build build`` was asked to do, resolved once into frozen values.

The CLI makes a ``BuildOptions``; every stage reads it and none changes it (or the process
environment): a second build with other settings is ``dataclasses.replace(options, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..gramine.overrides import ManifestOptions
from ..image.caches import CacheLocations


@dataclass(frozen=True)
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
    policies: tuple[str, ...] = ()
    no_cache: bool = False
    # Where a base image's filesystem index comes from when it is not cached: "registry"
    # (its layers, read during the pull; the registry serves them twice) or "engine" (one
    # `docker export` after the pull; no second download, but the build waits for it).
    base_index: Literal["registry", "engine"] = "registry"
    # What the recipe's manifest: keys may weaken (--allow-insecure-manifest and friends).
    manifest: ManifestOptions = field(default_factory=ManifestOptions)
    # Read from the environment once, when the options are made.
    cache: CacheLocations = field(default_factory=CacheLocations.from_environment)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(self.policies))

    def resolved_output_dir(self, recipe_name: str) -> Path:
        return (self.output_dir or Path("ppml-out") / recipe_name).resolve()

    def image_name(self, recipe_name: str) -> str:
        return self.tag or f"ppml/{recipe_name}:latest"


@dataclass
class BuildResult:
    record: dict
    record_path: Path
    output_dir: Path
    image: str
    timings: dict[str, float]
    policy_files: list[Path]
    stats: dict[str, Any] = field(default_factory=dict)
