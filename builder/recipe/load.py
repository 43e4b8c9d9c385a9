"""YAML in, a validated ``Recipe`` out, with every error pointing at the YAML.

``recipe.yaml:12:5: enclave.size: must be a power of two, e.g. 16G``. YAML is composed into nodes
first, so every key and value keeps its line and column, and bounded (size, alias expansion,
nesting, digits: limits.py) before any value is built.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from ..errors import InputLimitError, RecipeError
from ..gramine.overrides import OverrideError
from ..limits import MAX_INT_DIGITS, MAX_NESTING, MAX_RECIPE_BYTES, MAX_RECIPE_VALUES, read_at_most
from .model import API_VERSION, FieldError, Recipe

# --------------------------------------------------------------------------------------------
# YAML with positions


class _Located:
    """Line/column (1-based) of every key and value, keyed by the path of keys to it."""

    def __init__(self) -> None:
        self.positions: dict[tuple, tuple[int, int]] = {}

    def at(self, loc: tuple) -> tuple[int, int] | None:
        # Pydantic locations may carry extra parts (union branches); fall back to parents.
        loc = tuple(loc)
        while loc:
            if loc in self.positions:
                return self.positions[loc]
            loc = loc[:-1]
        return self.positions.get(())


class _Limits:
    """What one recipe may build (limits.py): values after alias expansion, nesting depth."""

    def __init__(self) -> None:
        self.values = 0


def _to_python(node: yaml.Node, path: tuple, located: _Located, limits: _Limits) -> Any:
    limits.values += 1
    if limits.values > MAX_RECIPE_VALUES:
        raise _Refused(
            node,
            f"the recipe expands to more than {MAX_RECIPE_VALUES:,} values "
            "(counting each value a YAML alias repeats); a recipe needs hundreds",
            limit=True,
        )
    depth = sum(1 for part in path if part != "<key>")
    if depth > MAX_NESTING:
        raise _Refused(
            node,
            f"mappings and lists nest deeper than {MAX_NESTING} levels (or an "
            "alias refers to itself); a recipe needs a handful",
            limit=True,
        )
    located.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, path + ("<key>",), located, limits)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise _Refused(key_node, "mapping keys must be strings")
            if key in out:
                raise _DuplicateKey(key, key_node)
            # A value error points at the value; a key error (unknown key) at the key.
            located.positions[path + (key,)] = (
                value_node.start_mark.line + 1,
                value_node.start_mark.column + 1,
            )
            located.positions[path + (key, "<key>")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            out[key] = _to_python(value_node, path + (key,), located, limits)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(item, path + (index,), located, limits)
            for index, item in enumerate(node.value)
        ]
    try:
        return _scalar(node)
    except _Refused as refused:
        refused.path = path
        raise


class _DuplicateKey(Exception):
    def __init__(self, key: Any, node: yaml.Node) -> None:
        self.key, self.node = key, node


class _Refused(Exception):
    """A YAML value refused before the models see it, with the node it is at."""

    def __init__(self, node: yaml.Node, message: str, *, limit: bool = False) -> None:
        self.node, self.message, self.limit = node, message, limit
        self.path: tuple = ()

    def where(self) -> str:
        shown = tuple(part for part in self.path if part != "<key>")
        if not shown:
            return ""
        return _format_loc(shown) + (" (a key)" if self.path[-1:] == ("<key>",) else "") + ": "


_YAML_INT_TAG = "tag:yaml.org,2002:int"
_YAML_BOOL_TAG = "tag:yaml.org,2002:bool"


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.tag == _YAML_INT_TAG and sum(ch.isdigit() for ch in node.value) > MAX_INT_DIGITS:
        raise _Refused(
            node,
            f"a number of more than {MAX_INT_DIGITS} digits; no recipe value is that large",
            limit=True,
        )
    # YAML 1.1 reads yes/no/on/off as booleans (debug: on is a debug enclave): only the two
    # spellings nobody misreads are taken.
    if node.tag == _YAML_BOOL_TAG and node.value.lower() not in ("true", "false"):
        raise _Refused(
            node,
            f"{node.value!r} is read as a boolean by YAML 1.1; write true or "
            "false (or quote it if you meant the text)",
        )
    loader = yaml.SafeLoader("")
    try:
        value = loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
    if isinstance(value, str):
        problem = unsafe_character(value)
        if problem:
            raise _Refused(node, problem)
    return value


def unsafe_character(text: str) -> str | None:
    """Why ``text`` cannot reach a manifest or argv unchanged, or None.

    NUL ends a C string (Gramine reads loader.argv and env as C strings, so the value would be
    cut there); a lone surrogate is not a character and cannot be written as UTF-8.
    """
    for index, ch in enumerate(text):
        if ch == "\0":
            return (
                f"contains U+0000 (NUL) at character {index}; Gramine's C strings would "
                "end the value there. Remove it"
            )
        if "\ud800" <= ch <= "\udfff":
            return (
                f"contains U+{ord(ch):04X} at character {index}, half of a UTF-16 "
                "surrogate pair and not a character; write the character itself"
            )
    return None


def _format_loc(loc: tuple) -> str:
    parts = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            text = str(item)
            if not re.fullmatch(r"[\w.\-]+", text):
                text = repr(text)  # keep odd keys (newlines, spaces) on one readable line
            parts.append(("." if parts else "") + text)
    return "".join(parts) or "(top level)"


def _friendly(error: dict) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key; check the spelling (see `ppml-build init` for a commented recipe)"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind in (
        "string_type",
        "int_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_type",
        "int_parsing",
        "bool_parsing",
    ):
        wanted = {
            "string_type": "a string",
            "int_type": "a whole number",
            "int_parsing": "a whole number",
            "bool_type": "true or false",
            "bool_parsing": "true or false",
            "list_type": "a list",
            "dict_type": "a mapping",
            "model_type": "a mapping",
        }[kind]
        return f"must be {wanted}, got {type(error.get('input')).__name__}"
    message = " ".join(str(error.get("msg", "invalid value")).split())
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return message


def _error_loc(error: dict, data: Any) -> tuple:
    """Strip pydantic's union/validator parts; use the key's position for unknown keys."""
    loc = tuple(
        part
        for part in error.get("loc", ())
        if not (isinstance(part, str) and ("[" in part or part.startswith("function-")))
    )
    if error.get("type") == "extra_forbidden":
        return loc + ("<key>",)
    return loc


def load_recipe_text(text: str, source: str = "recipe.yaml") -> Recipe:
    located = _Located()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
        raise InputLimitError(
            f"{source}: the recipe is larger than {MAX_RECIPE_BYTES:,} bytes; "
            "keep data files in app.files, not in the recipe"
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = err.problem or err.context or "invalid YAML"
        raise RecipeError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: YAML error: {str(err).splitlines()[0]}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise InputLimitError(
            f"{source}: mappings and lists nest deeper than {MAX_NESTING} "
            "levels; a recipe needs a handful"
        ) from None
    if node is None:
        raise RecipeError(f"{source}: the recipe is empty; start from `ppml-build init spark`")
    try:
        data = _to_python(node, (), located, _Limits())
    except _DuplicateKey as dup:
        mark = dup.node.start_mark
        raise RecipeError(
            f"{source}:{mark.line + 1}:{mark.column + 1}: duplicate key {dup.key!r}; keep one"
        ) from None
    except _Refused as refused:
        mark = refused.node.start_mark
        error = InputLimitError if refused.limit else RecipeError
        raise error(
            f"{source}:{mark.line + 1}:{mark.column + 1}: {refused.where()}{refused.message}"
        ) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: YAML error: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RecipeError(
            f"{source}:1:1: the recipe must be a mapping with apiVersion, kind, name, base and app"
        )
    version = data.get("apiVersion")
    if version != API_VERSION:
        line, col = located.at(("apiVersion",)) or (1, 1)
        raise RecipeError(
            f"{source}:{line}:{col}: apiVersion: must be {API_VERSION!r}, got {version!r}"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        override = (first.get("ctx") or {}).get("error")
        if isinstance(override, OverrideError):  # manifest: names its own key, dotted
            line, col = located.at(override.yaml_path) or (1, 1)
            raise RecipeError(f"{source}:{line}:{col}: {override}") from None
        if isinstance(override, FieldError):  # a cross-field check names its field
            line, col = located.at(override.where) or (1, 1)
            raise RecipeError(
                f"{source}:{line}:{col}: {_format_loc(override.where)}: {override}"
            ) from None
        loc = _error_loc(first, data)
        line, col = located.at(loc) or (1, 1)
        shown = tuple(part for part in loc if part != "<key>")
        raise RecipeError(
            f"{source}:{line}:{col}: {_format_loc(shown)}: {_friendly(first)}"
        ) from None


def load_recipe(path: Path | str) -> Recipe:
    path = Path(path)
    try:
        raw = read_at_most(path, MAX_RECIPE_BYTES)  # the path may be /dev/zero
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a directory; give the recipe YAML file") from None
    except OSError as err:
        raise RecipeError(f"{path}: cannot read: {err.strerror}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise InputLimitError(
            f"{path}: the recipe is larger than {MAX_RECIPE_BYTES:,} bytes; "
            "keep data files in app.files, not in the recipe"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(
            f"{path}: not UTF-8 text (byte {err.start}); save the recipe as UTF-8"
        ) from None
    return load_recipe_text(text, str(path))


def _host_sources(
    items, field_name: str, recipe_dir: Path, source: str, *, linked_dirs: bool = False
) -> list[tuple[Path, str]]:
    """(resolved host path, dest) of each item, after checking it and everything below it
    (host_sources: nothing may lead out of the recipe's directory, by link or otherwise)."""
    from ..host_sources import read_source  # here: the models above need none of it

    out = []
    for index, item in enumerate(items):
        tree = read_source(
            recipe_dir,
            item.src,
            where=f"{source}: {field_name}[{index}].src: ",
            linked_dirs=linked_dirs,
        )
        out.append((tree.host, item.dest))
    return out


def check_build_sources(recipe: Recipe, recipe_dir: Path, source: str) -> list[tuple[Path, str]]:
    """Host sources of build.sources, checked like app.files; [] without a build stage."""
    if recipe.build is None:
        return []
    # A build stage may keep a link to a directory of its own tree: nothing there is trusted.
    return _host_sources(
        recipe.build.sources, "build.sources", recipe_dir, source, linked_dirs=True
    )


def check_app_files(recipe: Recipe, recipe_dir: Path, source: str) -> list[tuple[Path, str]]:
    """Host sources of app.files must exist inside the recipe's directory, and so must every
    link below a directory source lead (see host_sources for what each kind of link becomes).

    The build stage's sources are checked too (so `validate` catches a missing one); only the
    app.files pairs are returned.
    """
    check_build_sources(recipe, recipe_dir, source)
    return _host_sources(recipe.app.files, "app.files", recipe_dir, source)
