#!/usr/bin/env python3
"""`ppml-build encrypt` / `decrypt` against raw AES-GCM on this machine, and their peak memory.

Target (issue "Encrypted data in and out of the enclave"): encrypt and decrypt within 1.5x of
raw AES-128-GCM over the same bytes, in constant memory.

Two references, both AES-128-GCM from `cryptography` (OpenSSL) over the same plaintext, in
memory:
- **bulk**: one key, one call over the whole buffer: the fastest AES-GCM can go here;
- **per node**: the same bytes cut into Gramine's 4 KiB nodes, each sealed under its own key,
  as the protected-files format must (common/src/protected_files/protected_files.c gives every
  data and MHT node a fresh random key). This is the floor for any implementation of the format.

Ours is measured in memory (the format alone: `ppml_build.gramine.protected_files`) and file to
file (`encrypt_tree`/`decrypt_tree`: pread/pwrite, fsync, staging and rename). Peak memory is
the child process's max RSS converting a small and a large file: constant memory means the two
are the same within a few MB.

    .venv/bin/python benchmarks/bench_encrypted_files.py [--mib 256] [--memory-mib 64,1024]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml_build.encrypted_data import decrypt_tree, encrypt_tree
from ppml_build.gramine import protected_files as pf

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
NODE = pf.NODE_SIZE


def best_of(runs: int, action) -> float:
    """The fastest of ``runs`` timings: the machine's speed, not its noise."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def raw_bulk(plain: bytes) -> float:
    return best_of(3, lambda: AESGCM(KEY).encrypt(bytes(12), plain, None))


def raw_per_node(plain: bytes) -> float:
    view = memoryview(plain)
    keys = os.urandom(16 * (len(plain) // NODE + 1))

    def seal_all() -> None:
        for index in range(0, len(plain), NODE):
            node_key = keys[index // NODE * 16 : index // NODE * 16 + 16]
            AESGCM(node_key).encrypt(bytes(12), view[index : index + NODE], None)

    return best_of(3, seal_all)


def raw_file_to_file(plain_file: Path, work: Path) -> float:
    """The I/O any tool pays around the per-node AES-GCM: read 96 nodes, seal each, write them,
    fsync at the end; our format's work is everything above this."""
    target = work / "raw-sealed"
    group = 96 * NODE

    def seal_file() -> None:
        with open(plain_file, "rb") as src, open(target, "wb") as out:
            offset = 0
            while chunk := os.pread(src.fileno(), group, offset):
                view, keys = memoryview(chunk), os.urandom(16 * 96)
                sealed = [
                    memoryview(
                        AESGCM(keys[i // NODE * 16 : i // NODE * 16 + 16]).encrypt(
                            bytes(12), view[i : i + NODE], None
                        )
                    )[:NODE]
                    for i in range(0, len(chunk), NODE)
                ]
                os.pwrite(out.fileno(), b"".join(sealed), offset)
                offset += len(chunk)
            os.fsync(out.fileno())

    seconds = best_of(3, seal_file)
    target.unlink()
    return seconds


def ours_in_memory(plain: bytes) -> tuple[float, float]:
    sealed = bytearray(pf.encrypted_size(len(plain)))

    def write_at(offset: int, data: bytes) -> None:
        sealed[offset : offset + len(data)] = data

    def encrypt() -> None:
        pf.encrypt(lambda o, n: plain[o : o + n], len(plain), write_at, KEY, "/data/in/f")

    enc = best_of(3, encrypt)
    frozen = bytes(sealed)
    out = bytearray(len(plain))  # preallocated, as a file's pages would be: no regrowth timed
    filled = [0]

    def sink(data: bytes) -> None:
        out[filled[0] : filled[0] + len(data)] = data
        filled[0] += len(data)

    def decrypt() -> None:
        filled[0] = 0
        pf.decrypt(
            lambda first, count: frozen[first * NODE : (first + count) * NODE],
            len(frozen),
            sink,
            KEY,
            "/data/in/f",
        )

    dec = best_of(3, decrypt)
    assert bytes(out) == plain
    return enc, dec


def ours_file_to_file(plain_file: Path, work: Path) -> tuple[float, float]:
    enc_dir, dec_dir = work / "enc", work / "dec"

    def encrypt() -> None:
        encrypt_tree(plain_file, enc_dir, "/data/in/f", KEY, force=True)

    def decrypt() -> None:
        decrypt_tree(enc_dir, dec_dir, "/data/in/f", KEY, force=True)

    enc = best_of(3, encrypt)
    dec = best_of(3, decrypt)
    assert dec_dir.stat().st_size == plain_file.stat().st_size
    return enc, dec


def peak_rss_mib(mode: str, size_mib: int, work: Path) -> float:
    """Peak RSS of a fresh process that encrypts (or decrypts) a ``size_mib`` file."""
    plain = work / f"plain-{size_mib}"
    if not plain.exists():
        with open(plain, "wb") as out:
            for _ in range(size_mib):
                out.write(os.urandom(1 << 20))
    sealed = work / f"sealed-{size_mib}"
    if mode == "decrypt" and not sealed.exists():
        encrypt_tree(plain, sealed, "/data/in/f", KEY)
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(plain), str(sealed), str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.strip())


def child(mode: str, plain: Path, sealed: Path, work: Path) -> None:
    if mode == "encrypt":
        encrypt_tree(plain, work / "child-out", "/data/in/f", KEY, force=True)
    else:
        decrypt_tree(sealed, work / "child-out", "/data/in/f", KEY, force=True)
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec
    status = Path("/proc/self/status").read_text()
    print(int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="throughput test size")
    parser.add_argument("--memory-mib", default="64,1024", help="file sizes for peak RSS")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, plain, sealed, work = args.child
        child(mode, Path(plain), Path(sealed), Path(work))
        return

    size = args.mib << 20
    plain = os.urandom(size)
    mb = size / 1e6
    bulk, per_node = raw_bulk(plain), raw_per_node(plain)
    enc_mem, dec_mem = ours_in_memory(plain)
    with tempfile.TemporaryDirectory(prefix="ppml-bench-pf-") as tmp:
        work = Path(tmp)
        plain_file = work / "plain"
        plain_file.write_bytes(plain)
        del plain
        raw_file = raw_file_to_file(plain_file, work)
        enc_file, dec_file = ours_file_to_file(plain_file, work)
        print(f"{args.mib} MiB of random bytes, best of 3 ({os.cpu_count()} cores)")
        print(f"  {'':44} {'MB/s':>7} {'x bulk':>7} {'x per-node':>10} {'x raw file':>10}")
        rows = [
            ("raw AES-128-GCM, bulk, in memory", bulk),
            ("raw AES-128-GCM, per 4 KiB node, in memory", per_node),
            ("raw AES-128-GCM, per node, file to file", raw_file),
            ("encrypt, in memory", enc_mem),
            ("decrypt, in memory", dec_mem),
            ("encrypt, file to file", enc_file),
            ("decrypt, file to file", dec_file),
        ]
        for label, seconds in rows:
            print(
                f"  {label:44} {mb / seconds:7.0f} {seconds / bulk:7.2f} "
                f"{seconds / per_node:10.2f} {seconds / raw_file:10.2f}"
            )
        fastest = min(bulk, per_node)
        in_memory, on_disk = max(enc_mem, dec_mem) / fastest, max(enc_file, dec_file) / raw_file
        print(
            "target: within 1.5x of raw AES-GCM over the same bytes: in memory "
            f"{in_memory:.2f}x the faster raw ({'met' if in_memory <= 1.5 else 'missed'}), "
            "file to file "
            f"{on_disk:.2f}x raw file to file ({'met' if on_disk <= 1.5 else 'missed'})"
        )

        sizes = [int(x) for x in args.memory_mib.split(",")]
        for mode in ("encrypt", "decrypt"):
            peaks = [peak_rss_mib(mode, s, work) for s in sizes]
            shown = ", ".join(f"{s} MiB file: {p:.0f} MiB" for s, p in zip(sizes, peaks))
            growth = peaks[-1] - peaks[0]
            print(
                f"peak RSS, {mode}: {shown}; growth {growth:+.0f} MiB over "
                f"{sizes[-1] - sizes[0]} MiB more data -> "
                f"{'constant' if growth < 8 else 'NOT constant'}"
            )


if __name__ == "__main__":
    main()
