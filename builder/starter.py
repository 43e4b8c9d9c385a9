"""``ppml-build init``: copy a bundled, commented recipe and its job into a directory."""

from __future__ import annotations

from pathlib import Path

from .atomic import check_writable, write_all_or_none
from .errors import RecipeError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
STARTERS = {"spark": "spark/pyspark-sql-agg", "flink": "flink/pyflink-table"}
# Added to the starter's recipe.yaml only (the bundled recipes stay as they are): where a
# Gramine key the recipe does not model goes (builder/gramine/overrides.py).
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
    check_writable(directory, "DIRECTORY", directory=True)
    contents = {
        directory / path.name: path.read_bytes() for path in files if path.name != "recipe.yaml"
    }
    # The recipe last: a recipe.yaml in DIRECTORY means its job files are there too.
    contents[directory / "recipe.yaml"] = (
        source / "recipe.yaml"
    ).read_bytes() + MANIFEST_HINT.encode("utf-8")
    return write_all_or_none(contents, option="DIRECTORY")
