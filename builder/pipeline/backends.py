"""``ppml-build build``: one entry, a backend per ``libos.type``.

The recipe is loaded and planned once here; the backend's ``check`` refuses what it cannot
build before anything slow happens; then the output directory, the image name and the signing
key are settled once into a ``BuildJob``, and the backend builds from it. Adding a LibOS is one
entry in ``BACKENDS`` (and ``versions.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..atomic import check_writable
from ..errors import RecipeError
from ..gramine.build import build_gramine, check_gramine
from ..key_files import load_signing_key, read_passphrase
from ..occlum.build import build_occlum, check_occlum
from ..plan import Plan
from ..progress import Say, StepTimer, say_nothing
from ..recipe import Recipe
from .job import BuildJob
from .key_guard import key_needles
from .options import BuildOptions, BuildResult
from .stages import load_and_plan_build


@dataclass(frozen=True)
class Backend:
    # Refuses, before the key is read or Docker is called, what this backend cannot build.
    check: Callable[[BuildOptions, Recipe, Plan, Say], None]
    build: Callable[[BuildJob, Say], BuildResult]


BACKENDS: dict[str, Backend] = {
    "gramine": Backend(check=check_gramine, build=build_gramine),
    # Occlum measures its own image filesystem: `occlum build` runs in the Occlum base.
    "occlum": Backend(check=check_occlum, build=build_occlum),
}


def build(options: BuildOptions, say: Say = say_nothing) -> BuildResult:
    timer = StepTimer()
    with timer.step("plan"):
        recipe, plan, role_plans = load_and_plan_build(options.recipe)
    backend = BACKENDS.get(recipe.libos.type)
    if backend is None:  # the recipe model admits only known types; this guards the table
        raise RecipeError(
            f"{options.recipe}: libos.type {recipe.libos.type!r}: no backend "
            f"builds it; use one of {', '.join(sorted(BACKENDS))}"
        )
    backend.check(options, recipe, plan, say)
    output_dir = options.resolved_output_dir(recipe.name)
    check_writable(output_dir, "--output-dir", directory=True)  # not after minutes of Docker

    # The key before any Docker work: a refused key (the SDK sample key, Occlum's default)
    # must fail first.
    passphrase = read_passphrase(options.passphrase_file)
    private_key = load_signing_key(
        options.key, passphrase, allow_sample_key=options.allow_sample_key
    )
    job = BuildJob(
        options=options,
        recipe=recipe,
        plan=plan,
        output_dir=output_dir,
        image=options.image_name(recipe.name),
        private_key=private_key,
        key_needles=key_needles(options.key, private_key),
        timer=timer,
        role_plans=role_plans,
    )
    return backend.build(job, say)
