"""Error types the CLI turns into one line and exit code 2 (tracebacks only with --debug)."""

from __future__ import annotations


class PpmlError(Exception):
    """A user-facing error: bad input, a missing file, a refused key.

    ``str(err)`` is the single line the CLI prints; it names the file, the field and the fix.
    """

    exit_code = 2


class RecipeError(PpmlError):
    """The recipe YAML is malformed or asks for something impossible."""


class PlanError(PpmlError):
    """The enclave cannot be sized as asked (too small, too many threads)."""


class ManifestError(PpmlError):
    """A manifest cannot be rendered or read (bad key, missing trusted file)."""


class SigningError(PpmlError):
    """A key, a manifest or a SIGSTRUCT is not acceptable for signing or measuring."""


class VerificationError(PpmlError):
    """A SIGSTRUCT or an image does not verify. Exit code 1: the input was readable but wrong."""

    exit_code = 1


class ImageError(PpmlError):
    """Docker engine or registry problems (engine down, auth refused, digest mismatch)."""
