"""One build, resolved before any Docker work: what every LibOS backend is handed.

``backends.build`` makes a ``BuildJob`` once (recipe loaded and planned, output directory and
image name settled, signing key loaded and its fingerprints taken) and passes it to the
backend that ``libos.type`` names. Backends read it; they never reload the recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..image.app_layer import APP_STAGE, AppLayerRequest, SupportStage
from ..image.engine import push_image
from ..plan import Plan
from ..plan.launch import (
    SUPPORT_CONTEXT_DIR,
    SUPPORT_DIR,
    SUPPORT_SOURCES,
    app_stage_copy_line,
    support_stage_lines,
)
from ..plan.role_script import role_scripts
from ..progress import Say, StepTimer
from ..recipe import Recipe
from ..record import RECORD_FILE
from ..sign import keys
from .key_guard import refuse_key_in_context
from .options import BuildOptions, BuildResult


def launch_support_stage(
    recipe: Recipe, plan: Plan, role_plans: dict[str, Plan] | None = None
) -> SupportStage:
    """ppml-build's in-enclave files for the plan's launch (plan/launch.py: the launcher, the
    enclave jars, /etc/hosts, Spark's launcher output) and a cluster's role scripts, made in a
    stage FROM the app image so that Spark's launcher sees exactly the app's environment. Both
    LibOSes use it."""
    # A cluster's image serves every role: the support jars any role needs, and Spark's
    # launcher output for the one role that reads it (the PySpark driver).
    launches = [role_plan.launch for role_plan in (role_plans or {}).values()] or [plan.launch]
    launch = next((one for one in launches if one.spark_launcher_output), launches[0])
    jars = dict.fromkeys(jar for one in launches for jar in one.support_jars)
    return SupportStage(
        sources=SUPPORT_SOURCES,
        context_dir=SUPPORT_CONTEXT_DIR,
        lines=support_stage_lines(
            recipe,
            dataclasses.replace(launch, support_jars=tuple(jars)),
            APP_STAGE,
            role_scripts(recipe, role_plans or {}),
        ),
        copy_line=app_stage_copy_line(),
        in_image_dir=SUPPORT_DIR,
    )


@dataclass
class BuildJob:
    options: BuildOptions
    recipe: Recipe
    plan: Plan
    output_dir: Path
    image: str  # the final image's name (--tag, else ppml/<name>:latest)
    private_key: keys.PrivateKey
    key_needles: list[bytes]  # the key in every encoding key_scan derives: never in a context
    timer: StepTimer = field(default_factory=StepTimer)
    # A cluster recipe's enclaves, by role (plan stands for the app image); empty: one enclave.
    role_plans: dict[str, Plan] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """The recipe's path as the user gave it: the head of every message."""
        return str(self.options.recipe)

    def refuse_key_in(self, context: Path) -> None:
        refuse_key_in_context(context, self.key_needles, self.source)

    def app_layer_request(self, support: SupportStage | None = None) -> AppLayerRequest:
        options = self.options
        return AppLayerRequest(
            recipe_path=options.recipe,
            registry_auth=options.registry_auth,
            ca_bundle=options.ca_bundle,
            base_index=options.base_index,
            use_cache=not options.no_cache,
            cache=options.cache,
            support=support,
            check_context=self.refuse_key_in,
        )

    def push_if_asked(self, client, auth: dict | None, say: Say) -> str | None:
        """With --push: push the final image; the digest the registry stored. Else None."""
        if not self.options.push:
            return None
        with self.timer.step("push"):
            say(f"pushing {self.image}")
            return push_image(client, self.image, auth=auth)

    def result(self, record: dict, policy_files: list[Path]) -> BuildResult:
        return BuildResult(
            record,
            self.output_dir / RECORD_FILE,
            self.output_dir,
            self.image,
            self.timer.timings,
            policy_files,
            self.stats,
        )
