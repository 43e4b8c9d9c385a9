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
