"""Format registry and the pure entry point ``render_policy`` (values in, file texts out)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import bigdl, ehsm, gramine_ratls, ita, maa, marblerun, trustee
from .model import EnclaveValues, Pin, PolicyError, PolicySpec, RenderedPolicy, make_spec

Renderer = Callable[[PolicySpec], RenderedPolicy]

FORMATS: dict[str, Renderer] = {
    "gramine-ratls": gramine_ratls.render,
    "ehsm": ehsm.render,
    "bigdl": bigdl.render,
    "marblerun": marblerun.render,
    "maa": maa.render,
    "ita": ita.render,
    "trustee": trustee.render,
}


def render(
    values: EnclaveValues | Mapping[str, Any],
    fmt: str,
    *,
    pin: Pin | str = Pin.BOTH,
    min_svn: int | None = None,
    allow_debug: bool = False,
    source: str = "record",
) -> RenderedPolicy:
    """Like :func:`render_policy`, also returning the notes the format itself cannot carry."""
    renderer = FORMATS.get(fmt)
    if renderer is None:
        raise PolicyError(f"unknown policy format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not isinstance(values, EnclaveValues):
        values = EnclaveValues.from_mapping(values, source)
    spec = make_spec(values, pin=pin, min_svn=min_svn, allow_debug=allow_debug, source=source)
    return renderer(spec)


def render_policy(
    values: EnclaveValues | Mapping[str, Any],
    fmt: str,
    *,
    pin: Pin | str = Pin.BOTH,
    min_svn: int | None = None,
    allow_debug: bool = False,
) -> dict[str, str]:
    """File name → content for one service format (primary file first).

    ``values`` is a validated :class:`EnclaveValues` or a record mapping; ``min_svn`` defaults
    to the record's ``isv_svn``. Raises :class:`PolicyError` (exit 2) when the policy could not
    accept its own enclave (debug record without ``allow_debug``, ``min_svn`` too high).
    """
    return render(values, fmt, pin=pin, min_svn=min_svn, allow_debug=allow_debug).files


def render_roles(
    values: Mapping[str, EnclaveValues],
    fmt: str,
    *,
    pin: Pin | str = Pin.BOTH,
    min_svn: int | None = None,
    allow_debug: bool = False,
    source: str = "record",
) -> RenderedPolicy:
    """A cluster's policies: each role's enclave accepted by its own policy, the files named
    ``<role>-<file>`` (so one directory holds them all), the notes said once per role."""
    files: dict[str, str] = {}
    notes: list[str] = []
    for role, role_values in values.items():
        rendered = render(
            role_values,
            fmt,
            pin=pin,
            min_svn=min_svn,
            allow_debug=allow_debug,
            source=f"{source}: roles.{role}",
        )
        files.update({f"{role}-{name}": text for name, text in rendered.files.items()})
        notes += [f"{role}: {note}" for note in rendered.notes]
    return RenderedPolicy(files, notes)
