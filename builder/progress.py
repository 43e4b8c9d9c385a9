"""Progress for long steps: a rich status line on a terminal, plain lines in CI logs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from .errors import printable

Say = Callable[[str], None]  # one progress line; every long step takes one


def say_nothing(line: str) -> None:
    """The default ``say``: a library caller who passes none sees no progress."""


class StepTimer:
    """Seconds per named step (``build`` reports them; the benchmarks read them)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


@contextlib.contextmanager
def reporter_for(stream: TextIO) -> Iterator[Say]:
    """Yield a ``say(line)`` function suited to ``stream``."""
    if stream.isatty():
        from rich.console import Console
        from rich.text import Text

        console = Console(file=stream)
        start = time.perf_counter()
        with console.status("starting") as status:

            def say(line: str) -> None:
                line = printable(line)  # and no rich markup: a path may hold "[red]"
                status.update(Text(line))
                if not line.startswith("Step "):
                    console.log(Text(line))

            yield say
        console.log(f"done in {time.perf_counter() - start:.1f} s")
    else:

        def say(line: str) -> None:
            print(f"ppml-build: {printable(line)}", file=stream, flush=True)

        yield say
