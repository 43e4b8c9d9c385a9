"""Progress for long steps: a rich status line on a terminal, plain lines in CI logs."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, TextIO


@contextlib.contextmanager
def reporter_for(stream: TextIO) -> Iterator[Callable[[str], None]]:
    """Yield a ``say(line)`` function suited to ``stream``."""
    if stream.isatty():
        from rich.console import Console

        console = Console(file=stream)
        start = time.perf_counter()
        with console.status("starting") as status:
            def say(line: str) -> None:
                status.update(line)
                if not line.startswith("Step "):
                    console.log(line)
            yield say
        console.log(f"done in {time.perf_counter() - start:.1f} s")
    else:
        def say(line: str) -> None:
            print(f"ppml-build: {line}", file=stream, flush=True)
        yield say
