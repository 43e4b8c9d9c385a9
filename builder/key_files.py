"""The signing key and its passphrase, read on the host from the files the user named.

Shared by ``sign``, ``keygen`` and every build backend: the key is refused here (the SDK sample
key without ``--allow-sample-key``) before any slow work starts. Reads are bounded: a path may be
``/dev/zero``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import PpmlError, SigningError
from .limits import MAX_DOCUMENT_BYTES, MAX_SMALL_FILE_BYTES, check_size, read_at_most
from .sign import keys

PASSPHRASE_ENV = "PPML_KEY_PASSPHRASE"


def read_file(
    path: Path, what: str, exc: type[PpmlError] = SigningError, *, limit: int = MAX_DOCUMENT_BYTES
) -> bytes:
    try:
        data = read_at_most(path, limit)  # bounded: the path may be /dev/zero
    except FileNotFoundError:
        raise exc(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise exc(f"{path}: is a directory, expected the {what} file") from None
    except OSError as err:
        raise exc(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    check_size(data, limit, str(path), f"the {what}")
    return data


def read_passphrase(passphrase_file: Path | None) -> bytes | None:
    """The key passphrase: from ``--passphrase-file`` or $PPML_KEY_PASSPHRASE, never argv.

    One trailing newline is dropped (``echo secret > file`` is the common way to make one).
    """
    if passphrase_file is not None:
        raw = read_file(passphrase_file, "passphrase file", limit=MAX_SMALL_FILE_BYTES)
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
        if not raw:
            raise SigningError(f"{passphrase_file}: the passphrase file is empty")
        return raw
    env = os.environb.get(PASSPHRASE_ENV.encode())  # bytes: any encoding the shell used
    if env:
        return env
    return None


def load_signing_key(
    key_path: Path, passphrase: bytes | None, *, allow_sample_key: bool
) -> keys.PrivateKey:
    pem = read_file(key_path, "signing key", limit=MAX_SMALL_FILE_BYTES)
    return keys.load_private_key(
        pem, passphrase, source=str(key_path), allow_sample_key=allow_sample_key
    )


# --- encrypted-files keys ---------------------------------------------------------------------

DATA_KEY_BYTES = 16  # Gramine's encrypted files: AES-128-GCM (pf_key_t)
_KEY_COMMAND_TIMEOUT = 120


def parse_data_key(raw: bytes, source: str) -> bytes:
    """A 16-byte key: as ``gramine-sgx-pf-crypt gen-key`` writes it (16 raw bytes), or as 32 hex
    digits (what ``fs.insecure__keys`` takes), one trailing newline allowed."""
    if len(raw) == DATA_KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * DATA_KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise SigningError(
        f"{source}: not an encrypted-files key; expected {DATA_KEY_BYTES} raw bytes "
        f"(gramine-sgx-pf-crypt gen-key, ppml-build data-key) or {2 * DATA_KEY_BYTES} hex digits"
    )


def read_data_key(key_file: Path | None, key_env: str | None, key_command: str | None) -> bytes:
    """The encrypted-files key from exactly one source: a file, an environment variable (hex),
    or a command whose standard output is the key (a KMS or HSM unwrapping it, as
    ``aws kms decrypt ... | base64 -d`` would). The key is never printed or logged."""
    given = [
        name
        for name, value in (
            ("--key", key_file),
            ("--key-from-env", key_env),
            ("--key-command", key_command),
        )
        if value
    ]
    if len(given) != 1:
        raise SigningError(
            "give the encrypted-files key with exactly one of --key FILE, --key-from-env VAR, "
            f"--key-command CMD (got {', '.join(given) or 'none'})"
        )
    if key_file is not None:
        return parse_data_key(read_file(key_file, "key", limit=MAX_SMALL_FILE_BYTES), str(key_file))
    if key_env is not None:
        value = os.environb.get(key_env.encode())
        if not value:
            raise SigningError(f"--key-from-env {key_env}: the variable is not set or empty")
        return parse_data_key(value, f"${key_env}")
    return _run_key_command(str(key_command))


def _run_key_command(command: str) -> bytes:
    import shlex
    import subprocess

    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise SigningError(f"--key-command: cannot split it into words ({err})") from None
    if not argv:
        raise SigningError("--key-command: empty command")
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=_KEY_COMMAND_TIMEOUT
        )
    except FileNotFoundError:
        raise SigningError(f"--key-command: {argv[0]}: no such program") from None
    except subprocess.TimeoutExpired:
        raise SigningError(
            f"--key-command: {argv[0]} gave no key within {_KEY_COMMAND_TIMEOUT} s"
        ) from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SigningError(
            f"--key-command: {argv[0]} exited with status {done.returncode}"
            + (f": {why[0][:200]}" if why else "")
        )
    return parse_data_key(done.stdout, f"--key-command {argv[0]}")
