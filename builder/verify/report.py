"""What verify tells the user: one ``Check`` per comparison, and the ``VerifyReport`` over them
(the text lines, the one stderr line of a failure, the JSON document); a cluster image's
``ClusterVerifyReport`` holds one ``VerifyReport`` per role, with the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        """``ok   <name>[: detail]`` or ``FAIL <name>: <what differs>``."""
        head = "ok  " if self.ok else "FAIL"
        return f"{head} {self.name}: {self.detail}" if self.detail else f"{head} {self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class VerifyReport:
    target: str
    name: str
    checks: list[Check]
    mrenclave: str | None  # recomputed; None when it could not be
    mrsigner: str
    isv_prod_id: int
    isv_svn: int
    debug: bool
    pinned_by: list[str] = field(default_factory=list)  # the trust anchors; empty: unpinned

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def warning(self) -> str | None:
        """The line printed before the checks when nothing ties the enclave to a signer."""
        return None if self.pinned_by else UNPINNED_WARNING

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "warning": self.warning,
            "pinned_by": list(self.pinned_by),
            "target": self.target,
            "name": self.name,
            "mrenclave": self.mrenclave,
            "mrsigner": self.mrsigner,
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "debug": self.debug,
            "checks": [check.as_dict() for check in self.checks],
        }

    def summary_line(self) -> str:
        if self.ok and self.pinned_by:
            return f"verified: {len(self.checks)} checks passed, MRENCLAVE {self.mrenclave}"
        if self.ok:
            return (
                f"self-consistent only, nothing pins the signer: {len(self.checks)} checks "
                f"passed, MRENCLAVE {self.mrenclave}"
            )
        failed = self.failures
        return f"NOT verified: {len(failed)} of {len(self.checks)} checks failed"

    def lines(self) -> list[str]:
        """The text report: the unpinned warning first, one line per check, the summary."""
        head = [self.warning] if self.warning else []
        return head + [check.line() for check in self.checks] + [self.summary_line()]

    def failed_names(self) -> str:
        """The failed checks' names, the first six and how many more."""
        names = [check.name for check in self.failures]
        return ", ".join(names[:6]) + (f", and {len(names) - 6} more" if len(names) > 6 else "")

    def accept_hints(self) -> list[str]:
        """For each failed check that only a flag can waive: which flag."""
        return [ACCEPT_HINTS[check.name] for check in self.failures if check.name in ACCEPT_HINTS]

    def failure_message(self) -> str:
        """The one stderr line for a failed verification."""
        hints = "".join(f"; {hint}" for hint in self.accept_hints())
        return f"{self.target}: verification failed: {self.failed_names()}{hints}"


@dataclass
class ClusterVerifyReport:
    """A cluster image's verification: each role's enclave checked on its own, shown together.

    ``roles`` maps each role to its enclave's report, in the order they are shown."""

    target: str
    roles: dict[str, VerifyReport]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.roles.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "roles": {role: report.as_dict() for role, report in self.roles.items()},
        }

    def summary_line(self) -> str:
        failed = {role: report for role, report in self.roles.items() if not report.ok}
        if failed:
            which = ", ".join(
                f"{role} ({len(report.failures)} of {len(report.checks)} checks failed)"
                for role, report in failed.items()
            )
            return f"NOT verified: {len(failed)} of {len(self.roles)} roles failed: {which}"
        measured = ", ".join(
            f"{role} MRENCLAVE {report.mrenclave}" for role, report in self.roles.items()
        )
        unpinned = [role for role, report in self.roles.items() if not report.pinned_by]
        if unpinned:
            return (
                f"self-consistent only, nothing pins the signer of {', '.join(unpinned)}: "
                f"{len(self.roles)} roles, {measured}"
            )
        return f"verified: {len(self.roles)} roles, {measured}"

    def lines(self) -> list[str]:
        """Per role: a header naming the role and its enclave, then that role's report; last,
        the summary over every role."""
        out = []
        for role, report in self.roles.items():
            out.append(f"--- role {role}: {report.name} ---")
            out += report.lines()
        return out + [self.summary_line()]

    def failure_message(self) -> str:
        """The one stderr line for a failed verification: each failed role and its checks."""
        failed = {role: report for role, report in self.roles.items() if not report.ok}
        shown = "; ".join(f"{role}: {report.failed_names()}" for role, report in failed.items())
        hints = dict.fromkeys(hint for report in failed.values() for hint in report.accept_hints())
        return f"{self.target}: verification failed: {shown}" + "".join(f"; {h}" for h in hints)


UNPINNED_WARNING = (
    "WARNING: nothing pins the signer: the checks below only show that the image agrees with "
    "its own SIGSTRUCT, and anyone can change an image and re-sign it; pin it with --record "
    "measurement.json, --policy FILE, --mrsigner HEX or --signer-key PEM"
)
# What the one stderr line adds when a check that only a flag can waive failed.
ACCEPT_HINTS = {
    "trust_anchor": "pin the signer with --record, --policy, --mrsigner or --signer-key "
    "(--allow-unpinned accepts a self-consistency check)",
    "debug_mode": "--allow-debug accepts a debug enclave (tests only)",
    "allowed_files": "--allow-unpinned accepts allowed files that cover the whole file system",
}


def differs(what: str, expected: Any, actual: Any, expected_from: str, actual_from: str) -> str:
    """A failed check's detail: ``what`` is one thing in one place and another in the other."""
    return f"{what} is {expected} in {expected_from} but {actual} in {actual_from}"


__all__ = [
    "ACCEPT_HINTS",
    "Check",
    "ClusterVerifyReport",
    "UNPINNED_WARNING",
    "VerifyReport",
    "differs",
]
