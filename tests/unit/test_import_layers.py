"""The dependency rule of ppml_build (README, "Where things live"), checked on the source.

Layers, lowest first; a module may import its own layer and those below, never above:

  vocabulary  errors, limits, units, versions, progress, atomic, record
  sign        sign/ (SGX facts and crypto: bytes in, bytes out)
  image       image/ views and edges (rootfs, tar, overlay, hashing, caches, engine, registry,
              base index, bootstrap, docker build)
  policy      policy/ (reads records)
  keys        key_files (the signing key, read from its file)
  recipe      gramine's manifest vocabulary (schema, overrides, uris), host_sources, recipe
  plan        plan (with plan.launch: how the enclave starts), encrypted_data
  app image   image.app_layer, image.programs, image.native
  backends    what each backend is handed (pipeline.options, .job, .outputs, .key_guard,
              .key_scan), then gramine/, occlum/
  stages      pipeline.stages (load and plan once; ``manifest`` for every backend)
  build       pipeline.backends (the registry), pipeline.reproducible
  commands    verify/, trace/, k8s, k8s_roles, k8s_files, starter
  cli         cli/, __main__

gramine/ and occlum/ are siblings: neither imports the other.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from import_graph import cycles, import_graph  # noqa: E402

P = "ppml_build."
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "vocabulary",
        (
            "ppml_build",
            P + "errors",
            P + "limits",
            P + "units",
            P + "versions",
            P + "progress",
            P + "atomic",
            P + "record",
        ),
    ),
    ("sign", (P + "sign",)),
    ("image", (P + "image",)),
    ("policy", (P + "policy",)),
    ("keys", (P + "key_files",)),
    (
        "recipe",
        (
            P + "gramine.schema",
            P + "gramine.overrides",
            P + "gramine.uris",
            P + "gramine.protected_files",
            P + "host_sources",
            P + "recipe",
        ),
    ),
    ("plan", (P + "plan", P + "encrypted_data")),
    ("app image", (P + "image.app_layer", P + "image.programs", P + "image.native")),
    (
        "backends",
        (
            P + "pipeline.options",
            P + "pipeline.job",
            P + "pipeline.outputs",
            P + "pipeline.key_guard",
            P + "pipeline.key_scan",
            P + "gramine",
            P + "occlum",
        ),
    ),
    ("stages", (P + "pipeline.stages",)),
    ("build", (P + "pipeline",)),
    (
        "commands",
        (P + "verify", P + "trace", P + "k8s", P + "k8s_roles", P + "k8s_files", P + "starter"),
    ),
    ("cli", (P + "cli", P + "__main__")),
]
SIBLINGS = [(P + "gramine", P + "occlum")]


def _owner(module: str, table: list[tuple[str, tuple[str, ...]]]) -> tuple[int, str]:
    """The layer of ``module``: the one naming its longest prefix."""
    best = (-1, -1)
    for rank, (_, prefixes) in enumerate(table):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), rank))
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS (and the README)"
    return best[1], table[best[1]][0]


def _family(module: str) -> str | None:
    for pair in SIBLINGS:
        for side in pair:
            if module == side or module.startswith(side + "."):
                return side
    return None


def test_no_module_imports_another_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in sorted(import_graph().items()):
        rank, layer = _owner(module, LAYERS)
        for target in sorted(targets):
            target_rank, target_layer = _owner(target, LAYERS)
            if target_rank > rank:
                upward.append(f"{module} ({layer}) imports {target} ({target_layer})")
    assert upward == []


def test_gramine_and_occlum_do_not_import_each_other():
    crossing = []
    for module, targets in sorted(import_graph().items()):
        family = _family(module)
        for target in targets:
            other = _family(target)
            if family and other and other != family:
                crossing.append(f"{module} imports {target}")
    assert crossing == []


def test_the_rule_can_fail():
    """The checks above see a cycle and an upward import when there is one."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _owner(P + "cli.build_commands", LAYERS)[0] > _owner(P + "gramine.build", LAYERS)[0]
    assert _owner(P + "plan.launch", LAYERS)[1] == "plan"


def test_every_package_is_installed():
    """pyproject.toml lists the packages (its package-dir maps folders onto ppml_build): a new
    folder left out of the list would be missing from a non-editable install."""
    import tomllib

    from import_graph import PROJECT, module_files

    listed = set(
        tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    packages = {module for module, path in module_files().items() if path.name == "__init__.py"}
    assert packages - listed == set()


LONG_MODULE_LINES = 450  # ~400 lines before `ruff format`


def test_a_long_module_says_why_in_its_docstring():
    import ast

    from import_graph import module_files

    unexplained = []
    for module, path in module_files().items():
        text = path.read_text()
        if text.count("\n") > LONG_MODULE_LINES:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if "Longer than most" not in docstring:
                unexplained.append(f"{module}: {text.count(chr(10))} lines")
    assert unexplained == []
