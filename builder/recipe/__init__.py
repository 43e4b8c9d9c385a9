"""The app recipe: the format's models (``model.py``) and reading it from YAML (``load.py``)."""

from .load import check_app_files, check_build_sources, load_recipe, load_recipe_text
from .model import Recipe

__all__ = ["Recipe", "check_app_files", "check_build_sources", "load_recipe", "load_recipe_text"]
