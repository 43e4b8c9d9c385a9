"""Command-line entry point. Command modules only parse arguments and call the pipeline."""

from __future__ import annotations

import errno
import sys

import typer

from ..errors import PpmlError, one_line, printable
from ._app import app

# Each module registers its commands on ``app`` when imported, in this order (``--help``'s).
# isort: off
from . import recipe_commands  # noqa: E402,F401
from . import sign_commands  # noqa: E402,F401
from . import data_commands  # noqa: E402,F401
from . import image_commands  # noqa: E402,F401
from . import policy_commands  # noqa: E402,F401
from . import k8s_commands  # noqa: E402,F401
from . import build_commands  # noqa: E402,F401
from . import trace_commands  # noqa: E402,F401
from . import verify_commands  # noqa: E402,F401
# isort: on


@app.command()
def version() -> None:
    """Print the ppml-build version and the LibOS versions it implements."""
    from .. import __version__
    from ..versions import DEFAULT_GRAMINE_VERSION, OCCLUM_VERSION

    print(
        f"ppml-build {__version__} (Gramine {DEFAULT_GRAMINE_VERSION} layout and signing, "
        f"Occlum {OCCLUM_VERSION} configuration)"
    )


_UNUSABLE_PATH = {
    errno.ENAMETOOLONG: "give a shorter path",
    errno.ELOOP: "the path goes through a symbolic link loop; fix the link",
}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a PpmlError becomes one line on stderr and its exit code (2 for bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        result = app(args=args, prog_name="ppml-build", standalone_mode=False)
    except PpmlError as err:
        if debug:
            raise
        print(f"ppml-build: error: {one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("ppml-build: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # a bad command line: one line too, and where to look
        if type(exc).__name__ == "NoArgsIsHelpError":  # no command given: the help answers
            exc.show()
            return exc.exit_code
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "ppml-build"
        print(
            f"ppml-build: error: {printable(exc.format_message().rstrip('.'))}; see "
            f"'{printable(command)} --help'",
            file=sys.stderr,
        )
        return exc.exit_code if exc.exit_code else 2
    except OSError as err:
        # A path the kernel will not look up at all fails wherever a command first touches it
        # (pathlib's exists() and is_dir() raise these): one line, as for any bad input.
        fix = _UNUSABLE_PATH.get(err.errno)
        if debug or fix is None:
            raise
        print(
            f"ppml-build: error: {printable(str(err.filename))}: {err.strerror}; {fix}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("ppml-build: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # python -m ppml_build.cli
    sys.exit(main())
