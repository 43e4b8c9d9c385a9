"""Command-line entry point. Command modules only parse arguments and call the pipeline."""

from __future__ import annotations

import sys

import typer

from ..errors import PpmlError
from ._app import app

# Each module registers its commands on ``app`` when imported.
from . import recipe_commands  # noqa: E402,F401
from . import sign_commands  # noqa: E402,F401
from . import image_commands  # noqa: E402,F401
from . import policy_commands  # noqa: E402,F401
from . import k8s_commands  # noqa: E402,F401
from . import build_commands  # noqa: E402,F401
from . import trace_commands  # noqa: E402,F401
from . import verify_commands  # noqa: E402,F401


@app.command()
def version() -> None:
    """Print the ppml-build version and the LibOS versions it implements."""
    from .. import __version__

    print(f"ppml-build {__version__} (Gramine 1.9 layout and signing, Occlum 0.31 configuration)")


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
        print(f"ppml-build: error: {err}", file=sys.stderr)
        return err.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("ppml-build: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors: typer prints its own message
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"ppml-build: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code if exc.exit_code else 2
    except KeyboardInterrupt:
        print("ppml-build: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # python -m ppml_build.cli
    sys.exit(main())
