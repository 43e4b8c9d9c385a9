"""ppml-build's in-enclave launcher for Python-first apps (a trusted file; the manifest's argv is
``python3 /ppml/bin/ppml-launch.py SCRIPT ARGS...``).

Before the app runs it gives the enclave's shared scratch mounts their key, then runs SCRIPT in
this same process, as ``python3 SCRIPT ARGS...`` would.

Gramine 1.9 gives every process its own tmpfs, so PySpark's and PyFlink's Python and JVM
processes cannot hand each other files (the gateway's connection file) there. Scratch
directories are therefore encrypted mounts over host directories, keyed ``ppml-scratch``: the
key is 16 random bytes from the LibOS (RDRAND inside SGX), written to
``/dev/attestation/keys/ppml-scratch`` (libos/src/fs/dev/attestation.c, key_save) before
anything opens them; child processes inherit it (libos/src/fs/libos_fs_encrypted.c checkpoints
the keys). Nobody outside this run of the enclave ever knows it, so the host sees only
ciphertext and cannot feed back files of its own.
"""

import os
import runpy
import sys

SCRATCH_KEY = "/dev/attestation/keys/ppml-scratch"
KEY_BYTES = 16  # pf_key_t: AES-GCM-128 (common/src/protected_files/protected_files.h)


def _set_scratch_key() -> None:
    # The key exists (unset) only if a mount names it; no scratch mounts, nothing to do.
    if not os.path.exists(SCRATCH_KEY):
        return
    with open(SCRATCH_KEY, "wb", buffering=0) as handle:
        handle.write(os.urandom(KEY_BYTES))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("ppml-launch: usage: ppml-launch.py SCRIPT [ARGS...]")
    _set_scratch_key()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    # As `python3 SCRIPT`: the script's directory first on sys.path, not this launcher's.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
