"""Attestation policies as verify sees them: would the policy accept this enclave (platform
assumed genuine and up to date), and which of MRENCLAVE and MRSIGNER does it really pin?
``ppml_build.policy.evaluate`` reads and evaluates the formats; this turns that into checks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..policy.evaluate import PolicyDocument, QuoteValues, policy_problems
from .report import Check


def evaluate_policy(doc: PolicyDocument, quote: QuoteValues) -> Check:
    """Would this policy accept the enclave? (Platform assumed genuine and up to date.)"""
    problems = policy_problems(doc, quote)
    label = f"policy:{doc.format}"
    where = Path(doc.path).name
    if problems:
        return Check(label, False, f"{where} rejects this enclave: " + "; ".join(problems))
    return Check(label, True, f"{where} accepts this enclave")


def policy_pins(doc: PolicyDocument, quote: QuoteValues) -> list[str]:
    """Which of MRENCLAVE and MRSIGNER the policy really constrains: changing only that value
    changes its verdict. Format-blind, so a policy that says "any" pins nothing."""
    baseline = policy_problems(doc, quote)
    pinned = []
    for label, attr in (("MRENCLAVE", "mrenclave"), ("MRSIGNER", "mrsigner")):
        flipped = bytes(b ^ 0xFF for b in bytes.fromhex(getattr(quote, attr))).hex()
        if policy_problems(doc, dataclasses.replace(quote, **{attr: flipped})) != baseline:
            pinned.append(label)
    return pinned


__all__ = ["evaluate_policy", "policy_pins"]
