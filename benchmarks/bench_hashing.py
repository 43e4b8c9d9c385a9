#!/usr/bin/env python3
"""Trusted-file hashing: ppml-build's hasher against Gramine's way, on a real JDK + Spark tree.

The tree: the jars of PyPI's `pyspark` sdist plus Debian's `openjdk-17-jre-headless` (the
installed JDK if present, else the .deb unpacked). Prints both times (warm page cache), the
ratio, and the time of a second run over the unchanged tree with the content cache.
Targets (issue "Recipes, enclave sizing and Gramine manifests"): >= 1.8x the reference on 2
cores; the cached re-run >= 20x faster than the first.

    .venv/bin/python benchmarks/bench_hashing.py [--tree DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from ppml_build.image.hashing import FileHasher, sha256_files_reference

CACHE = Path(__file__).resolve().parent / ".cache"
PYSPARK_VERSION = "3.5.3"
HOST_JDK = Path("/usr/lib/jvm/java-17-openjdk-amd64")


def download_sdist(name: str, version: str, target: Path) -> Path:
    """The sdist from PyPI's simple index, checked against its sha256 (pip would try to build
    its metadata, which pyspark's sdist cannot do offline)."""
    import hashlib
    import re
    import urllib.request

    with urllib.request.urlopen(f"https://pypi.org/simple/{name}/") as answer:
        index = answer.read().decode()
    match = re.search(
        rf'href="([^"]*/{name}-{re.escape(version)}\.tar\.gz)#sha256=([0-9a-f]{{64}})"', index
    )
    if not match:
        raise SystemExit(f"{name} {version}: no sdist on the index")
    url, expected = match.groups()
    path = target / url.rsplit("/", 1)[1]
    partial = path.with_suffix(".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url) as answer, open(partial, "wb") as out:
        while chunk := answer.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != expected:
        raise SystemExit(f"{path.name}: sha256 mismatch")
    partial.rename(path)
    return path


def prepare_tree() -> Path:
    tree = CACHE / "jdk-spark-tree-v2"
    if (tree / ".complete").exists():
        return tree
    tree.mkdir(parents=True, exist_ok=True)
    downloads = CACHE / "downloads"
    downloads.mkdir(exist_ok=True)
    sdist = next(downloads.glob(f"pyspark-{PYSPARK_VERSION}.tar.gz"), None)
    if sdist is None:
        print(f"downloading pyspark {PYSPARK_VERSION} sdist (~300 MB) ...", flush=True)
        sdist = download_sdist("pyspark", PYSPARK_VERSION, downloads)
    spark_dir = tree / "opt/spark"
    with tarfile.open(sdist) as archive:  # the whole distribution: jars, scripts, python
        for member in archive:
            if member.isfile() and "/" in member.name:
                member.name = member.name.split("/", 1)[1]
                archive.extract(member, spark_dir, filter="data")
    jdk_target = tree / "usr/lib/jvm/java-17-openjdk-amd64"
    if HOST_JDK.is_dir():
        shutil.copytree(HOST_JDK, jdk_target, symlinks=True)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(
                ["apt-get", "download", "openjdk-17-jre-headless"], cwd=scratch, check=True
            )
            deb = next(Path(scratch).glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    (tree / ".complete").write_text("ok\n")
    return tree


def regular_files(tree: Path) -> list[Path]:
    out = []
    for dirpath, _, names in os.walk(tree):
        for name in sorted(names):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and name != ".complete":
                out.append(path)
    return sorted(out)


def best_of(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="hash this tree instead of JDK+Spark")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tree = args.tree or prepare_tree()
    files = regular_files(tree)
    total = sum(p.stat().st_size for p in files)
    sha256_files_reference(files)  # warm the page cache
    print(f"tree: {tree}")
    print(f"files: {len(files)}, bytes: {total / 2**20:.0f} MiB, cores: {os.cpu_count()}")

    reference = best_of(args.repeat, lambda: sha256_files_reference(files))
    ours = best_of(args.repeat, lambda: FileHasher(use_cache=False).sha256_files(files))
    assert FileHasher(use_cache=False).sha256_files(files) == sha256_files_reference(files)
    print(
        f"reference (1 thread, 8 KiB reads, as gramine-manifest): {reference:.3f} s "
        f"({total / 2**30 / reference:.2f} GiB/s)"
    )
    print(
        f"ppml-build hasher (parallel, 4 MiB reads):            {ours:.3f} s "
        f"({total / 2**30 / ours:.2f} GiB/s)"
    )
    print(f"speed-up vs reference: {reference / ours:.2f}x (target >= 1.8x)")

    with tempfile.TemporaryDirectory() as scratch:
        cache_path = Path(scratch) / "hash-cache.json"
        start = time.perf_counter()
        FileHasher(cache_path=cache_path).sha256_files(files)
        first = time.perf_counter() - start
        second = best_of(args.repeat, lambda: FileHasher(cache_path=cache_path).sha256_files(files))
    print(
        f"first run with cache: {first:.3f} s, unchanged re-run: {second:.4f} s, "
        f"{first / second:.0f}x faster (target >= 20x)"
    )


if __name__ == "__main__":
    main()
