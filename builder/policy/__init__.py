"""Expected-measurement policies for attestation services (``ppml-build policy``).

``model`` holds the canonical policy; one module per service serialises it:
``gramine_ratls``, ``ehsm``, ``bigdl``, ``marblerun``, ``maa``, ``ita``, ``trustee``.
"""

from __future__ import annotations

from .model import (
    EnclaveValues,
    Pin,
    PolicyError,
    PolicySpec,
    RenderedPolicy,
    load_policy_record,
    load_record,
    make_spec,
)
from .output import output_paths, write_policy_files
from .render import FORMATS, render, render_policy, render_roles

__all__ = [
    "FORMATS",
    "EnclaveValues",
    "Pin",
    "PolicyError",
    "PolicySpec",
    "RenderedPolicy",
    "load_policy_record",
    "load_record",
    "make_spec",
    "output_paths",
    "render",
    "render_policy",
    "render_roles",
    "write_policy_files",
]
