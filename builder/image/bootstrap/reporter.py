"""How a bootstrap run reports progress: the ``Reporter`` protocol the CLI implements (rich on a
terminal, plain lines otherwise) and a silent one for library callers."""

from __future__ import annotations

from typing import Protocol

from .targets import TargetResult


class Reporter(Protocol):
    def begin(self, target: str, message: str) -> None: ...

    def progress(self, target: str, line: str) -> None: ...

    def end(self, result: TargetResult) -> None: ...

    def note(self, message: str) -> None: ...


class SilentReporter:
    def begin(self, target: str, message: str) -> None:
        pass

    def progress(self, target: str, line: str) -> None:
        pass

    def end(self, result: TargetResult) -> None:
        pass

    def note(self, message: str) -> None:
        pass


__all__ = ["Reporter", "SilentReporter"]
