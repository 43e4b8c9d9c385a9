"""CLI commands: recipe."""

from __future__ import annotations

from ._app import app  # noqa: F401
