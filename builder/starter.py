"""``ppml-build init``: copy a bundled, commented recipe and its job into a directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import RecipeError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
STARTERS = {"spark": "spark/pyspark-sql-agg", "flink": "flink/pyflink-table"}
# Added to the starter's recipe.yaml only (the bundled recipes stay as they are): where a
# Gramine key the recipe does not model goes (builder/manifest_overrides.py).
MANIFEST_HINT = """
# Extra Gramine 1.9 manifest keys the recipe does not model, dotted or nested (checked
# against Gramine's manifest schema; keys the recipe sets elsewhere are refused):
# manifest: {sgx.preheat_enclave: true}
"""


def _recipes_root() -> Path:
    if RECIPES_DIR.is_dir():
        return RECIPES_DIR
    from importlib.resources import files

    return Path(str(files("ppml_build.recipes")))


def write_starter(kind: str, directory: Path) -> list[Path]:
    if kind not in STARTERS:
        raise RecipeError(f"init: unknown kind {kind!r}; choose one of: {', '.join(STARTERS)}")
    source = _recipes_root() / STARTERS[kind]
    directory = Path(directory)
    files = sorted(p for p in source.iterdir() if p.is_file())
    clashes = [directory / p.name for p in files if (directory / p.name).exists()]
    if clashes:
        raise RecipeError(f"init: {clashes[0]} already exists; choose an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        target = directory / path.name
        shutil.copyfile(path, target)
        if path.name == "recipe.yaml":
            with target.open("a", encoding="utf-8") as handle:
                handle.write(MANIFEST_HINT)
        written.append(target)
    return written
