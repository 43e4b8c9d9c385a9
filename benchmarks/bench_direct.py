#!/usr/bin/env python3
"""Gramine's own LibOS in the loop: the bundled jobs natively vs under gramine-direct.

Needs root, dockerd, the images `ppml-build build` made for the bundled recipes
(ppml/<recipe>:latest), ppml/gramine-base:1.9, and for the steady-state variants the local
registry with the Spark and Flink bases (127.0.0.1:5000) and a signing key (default
/tmp/keys/k.pem). Run it on a quiet machine; it prints the figures and, with --json, writes
the human report to stderr and a JSON document to stdout.

    .venv/bin/python benchmarks/bench_direct.py                    # everything, 2 runs each
    .venv/bin/python benchmarks/bench_direct.py --only spark-java-pi --runs 1 --skip-steady
    .venv/bin/python benchmarks/bench_direct.py --skip-steady --only none --entries 500,2000
    .venv/bin/python benchmarks/bench_direct.py --json > direct.json
    .venv/bin/python benchmarks/bench_direct.py --only pyflink-table --skip-bundled --scale 0.1

What each figure means (issue "Gramine's own LibOS in the loop"):

1. Startup and total, per bundled job. "native" is the recipe's command run in the built image
   (ppml_build.image.native.run_native: no enclave, no LibOS); "direct" is ppml_build.gramine.direct.run_direct:
   `gramine-direct /ppml/NAME` with the signed manifest (Gramine's LibOS on its Linux PAL, no
   SGX; trusted-file hashes, mounts, fixed argv and env enforced as in the enclave).
   Both are timed by Docker's own clocks, the same way: t0 is the container's State.StartedAt;
   *startup* is t0 to the timestamp Docker gave the job's first output line (stdout or stderr,
   from `logs(follow=True, timestamps=True)`; Gramine's own "[P1:...]" log lines and blank
   lines do not count); *total* is t0 to State.FinishedAt. Also shown: *first result*, t0 to
   the first line starting "RESULT ", "ROWS " or "UPDATES ". Natively the first line usually
   comes from the JVM ("Picked up JAVA_TOOL_OPTIONS"), under Gramine from the same JVM once
   the LibOS has loaded it. A job that prints nothing before its result (the bundled
   pyflink-table: PyFlink's JVM writes to no console) is flagged: its startup is the whole run.
   Target: startup overhead (direct - native) < 10 s for Spark jobs (Flink jobs are reported
   without a target).
2. Steady state, per job: a variant that works for >= ~30 s natively (a bigger grid, many more
   rows or lines; built from a temp copy of the recipe into ppml-bench/<name>-long:latest).
   steady = total - startup of the same run. Target: direct steady state <= 1.5x native.
   The sizes are at the top of this script; --scale multiplies them (a steady state under
   ~25 s natively is flagged: raise --scale on a faster machine). The pyflink-table variant
   prints one line once its TableEnvironment (and so its JVM) is up, which is its startup.
   The variants are built with the builder of this checkout, the bundled images with whatever
   built them: compare native with direct within one image, not bundled with variant.
3. Gramine's startup vs the number of sgx.trusted_files entries: /usr/bin/true under
   gramine-direct in ppml/gramine-base:1.9 with generated manifests (N entries: /usr/bin/true,
   Gramine's runtime glibc and N - base small generated files, hashed on the host). Seconds are
   StartedAt -> FinishedAt of the container (so they include the container's own start, the
   same for every N; the "base" row is the manifest without generated files). "exponent" is
   log(t2/t1) / log(N2/N1) between neighbouring rows of (t - base): 1 is linear, 2 quadratic;
   the fitted exponent is the least-squares slope in log-log over the rows more than 50 ms
   above the base. "host wall" is the host's time from start() to wait() returning (the
   earlier figures in the issue, 0.4 s at 500 entries, look like that kind of time). Then
   each image's own trusted-entry count (its /ppml/NAME.manifest.sgx) next to its measured
   direct startup and what the curve predicts for that count: the part of the startup the
   entry count explains (per Gramine process: pyflink-table starts two, Python and its JVM).

Each configuration runs --runs times (default 2), native and direct interleaved. The figure
shown is the *best* run: the minimum, taken for each figure (startup, total, steady) on its
own; the median and every run are in the --json output. The script exits 0 when targets are
missed (it reports them), 1 when a run or a build fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import docker.errors
import yaml

from ppml_build.gramine.direct import run_direct
from ppml_build.image.engine import connect
from ppml_build.image.native import run_native
from ppml_build.recipe import load_recipe

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_KEY = Path("/tmp/keys/k.pem")
GRAMINE_BASE = "ppml/gramine-base:1.9"
GRAMINE_PREFIX = "/usr/lib/x86_64-linux-gnu/gramine"
STARTUP_OVERHEAD_TARGET = 10.0  # seconds, Spark jobs
STEADY_RATIO_TARGET = 1.5
ENTRY_COUNTS = (500, 6000, 12000, 25000)
# Measured before on this machine (issue text); 25,767 is a real image's count.
PREVIOUS_ENTRIES = {500: 0.4, 6000: 1.1, 12000: 3.0, 25767: 9.3}
MARKERS = ("RESULT ", "ROWS ", "UPDATES ")
MIN_NET = 0.05  # seconds over the base below which the entries curve is noise
# Gramine's own log lines: "(file:line:func) [P1:T1:java] warning: ..." (libos/src/utils/log.c)
GRAMINE_LINE = re.compile(r"^(?:\([^)]*\) )?\[P\d+:[^\]]*\] ")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d) ?")

# --- the steady-state variants: how much more work. Calibrated under load (2 CPUs, load ~3) to
# ~45-60 s natively, i.e. >= ~30 s on a quiet machine; --scale multiplies the work of all five.
PI_GRID = (150_000, 8)  # GridPi n, slices: n*n grid points (bundled: 2000, 4)
AGG_ROWS = 200_000_000  # spark.range rows (bundled: 1,000)
PARQUET_ROWS = 5_000_000  # generated CSV rows, ~25 bytes each (bundled: ~120)
WORDCOUNT_LINES = 500_000  # lines through the stream, 8 words each (bundled: 5)
PYFLINK_ROWS = 20_000_000  # datagen rows (bundled: 10 words)
SCALE = 1.0  # --scale


def scaled(n: int) -> int:
    return max(1, round(n * SCALE))


@dataclass(frozen=True)
class Job:
    name: str
    kind: str  # spark | flink
    recipe_dir: Path
    image: str
    mount_out: bool = False  # spark-sql-parquet writes /data/out

    @property
    def long_image(self) -> str:
        return f"ppml-bench/{self.name}-long:latest"


JOBS = [
    Job(
        "spark-java-pi",
        "spark",
        PROJECT / "recipes/spark/spark-java-pi",
        "ppml/spark-java-pi:latest",
    ),
    Job(
        "pyspark-sql-agg",
        "spark",
        PROJECT / "recipes/spark/pyspark-sql-agg",
        "ppml/pyspark-sql-agg:latest",
    ),
    Job(
        "spark-sql-parquet",
        "spark",
        PROJECT / "recipes/spark/spark-sql-parquet",
        "ppml/spark-sql-parquet:latest",
        mount_out=True,
    ),
    Job(
        "flink-java-wordcount",
        "flink",
        PROJECT / "recipes/flink/flink-java-wordcount",
        "ppml/flink-java-wordcount:latest",
    ),
    Job(
        "pyflink-table",
        "flink",
        PROJECT / "recipes/flink/pyflink-table",
        "ppml/pyflink-table:latest",
    ),
]


class RunFailed(Exception):
    """A job exited non-zero, a build failed, or a container could not run."""


OUT = sys.stdout  # the human report (stderr with --json)


def say(text: str = "") -> None:
    print(text, file=OUT, flush=True)


# --- Docker's clocks ---------------------------------------------------------------------------


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp with nanoseconds (Docker's format)."""
    match = STAMP.match(stamp.strip() + " ")
    if match is None:
        raise ValueError(f"not a Docker timestamp: {stamp!r}")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole = datetime.fromisoformat(match.group(1) + zone).timestamp()
    return whole + (float("0." + match.group(2)) if match.group(2) else 0.0)


@dataclass
class Watch:
    """What one started container did, by Docker's clocks."""

    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    error: str | None = None


class _WatchedContainer:
    """A container that, once started, streams its log with timestamps, and before it is
    removed records its State (run_direct/run_native remove it right after wait + logs)."""

    def __init__(self, real, log_client, watches: list[Watch]):
        self._real, self._log_client, self._watches = real, log_client, watches
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def start(self, *args, **kwargs):
        result = self._real.start(*args, **kwargs)
        self._watch = Watch()
        self._watches.append(self._watch)
        self._thread = threading.Thread(target=self._stream, daemon=True)
        self._thread.start()
        return result

    def _stream(self) -> None:
        watch, pending = self._watch, b""
        try:
            for chunk in self._log_client.api.logs(
                self._real.id, stream=True, follow=True, timestamps=True, stdout=True, stderr=True
            ):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._line(raw)
            if pending:
                self._line(pending)
        except Exception as err:  # noqa: BLE001  (reported with the run)
            watch.error = f"log stream: {err}"

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        match = STAMP.match(text)
        if match is None:  # a continuation of a message Docker split (16 KiB)
            if self._watch.lines:
                stamp, before = self._watch.lines[-1]
                self._watch.lines[-1] = (stamp, before + text)
            return
        self._watch.lines.append((epoch(text[: match.end()]), text[match.end() :]))

    def remove(self, *args, **kwargs):
        if self._watch is not None:
            self._thread.join(timeout=120)
            try:
                self._real.reload()
                state = self._real.attrs["State"]
                self._watch.started = epoch(state["StartedAt"])
                if not state.get("Running"):
                    self._watch.finished = epoch(state["FinishedAt"])
                    self._watch.exit_code = state.get("ExitCode")
            except (docker.errors.APIError, KeyError, ValueError) as err:
                self._watch.error = f"inspect: {err}"
        return self._real.remove(*args, **kwargs)


class _WatchedContainers:
    def __init__(self, real, log_client, watches):
        self._real, self._log_client, self._watches = real, log_client, watches

    def __getattr__(self, name):
        return getattr(self._real, name)

    def create(self, *args, **kwargs):
        return _WatchedContainer(
            self._real.create(*args, **kwargs), self._log_client, self._watches
        )


class WatchingClient:
    """The Docker client run_direct / run_native get: the same engine, with every container it
    starts watched (see _WatchedContainer). ``watches`` holds one Watch per started container."""

    def __init__(self, client, log_client):
        self._client = client
        self.watches: list[Watch] = []
        self.containers = _WatchedContainers(client.containers, log_client, self.watches)

    def __getattr__(self, name):
        return getattr(self._client, name)


# --- one run of a job --------------------------------------------------------------------------


@dataclass
class Timing:
    startup: float | None  # first output line
    first_result: float | None  # first RESULT/ROWS/UPDATES line
    total: float
    exit_code: int
    first_line: str
    lines: int

    @property
    def steady(self) -> float | None:
        return None if self.startup is None else self.total - self.startup


def timing_from(watch: Watch, exit_code: int) -> Timing:
    if watch.started is None or watch.finished is None:
        raise RunFailed(f"no container state recorded ({watch.error or 'unknown'})")
    t0 = watch.started
    output = [(t, line) for t, line in watch.lines if line.strip() and not GRAMINE_LINE.match(line)]
    first = output[0] if output else None
    result = next(((t, line) for t, line in output if line.startswith(MARKERS)), None)
    return Timing(
        startup=first[0] - t0 if first else None,
        first_result=result[0] - t0 if result else None,
        total=watch.finished - t0,
        exit_code=exit_code,
        first_line=first[1][:100] if first else "",
        lines=len(output),
    )


@contextlib.contextmanager
def out_mount(job: Job):
    """spark-sql-parquet's /data/out: a fresh host dir (mode 777) per run."""
    if not job.mount_out:
        yield {}
        return
    scratch = Path(tempfile.mkdtemp(prefix="ppml-bench-out-", dir="/var/tmp"))
    scratch.chmod(0o777)
    try:
        yield {"volumes": {str(scratch): {"bind": "/data/out", "mode": "rw"}}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_once(client, log_client, job: Job, image: str, recipe, mode: str) -> Timing:
    watching = WatchingClient(client, log_client)
    with out_mount(job) as extra:
        try:
            if mode == "native":
                run = run_native(watching, image, recipe, extra_args=extra, timeout=3600)
                code, stdout, stderr = run.exit_code, run.stdout, run.stderr
            else:
                run = run_direct(watching, image, job.name, extra_args=extra, timeout=3600)
                code, stdout, stderr = run.exit_code, run.stdout, run.stderr
        except Exception as err:  # noqa: BLE001  (ImageError and the SDK's)
            raise RunFailed(f"{image} ({mode}): {err}") from None
    if code != 0:
        tail = (stdout + stderr)[-2500:]
        raise RunFailed(f"{image} ({mode}) exited {code}:\n{tail}")
    if len(watching.watches) != 1:
        raise RunFailed(
            f"{image} ({mode}): expected one started container, saw {len(watching.watches)}"
        )
    return timing_from(watching.watches[0], code)


def best(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(timings: list[Timing]) -> dict:
    figures = {}
    for name in ("startup", "first_result", "total", "steady"):
        values = [getattr(t, name) for t in timings]
        figures[name] = {"best": best(values), "median": median(values)}
    figures["runs"] = [asdict(t) | {"steady": t.steady} for t in timings]
    return figures


def measure(
    client, log_client, job: Job, image: str, recipe, runs: int, label: str
) -> dict[str, dict]:
    """native and direct, interleaved, ``runs`` times each."""
    timings: dict[str, list[Timing]] = {"native": [], "direct": []}
    for index in range(runs):
        for mode in ("native", "direct"):
            say(f"  [{label}] run {index + 1}/{runs} {mode} ...")
            timing = run_once(client, log_client, job, image, recipe, mode)
            timings[mode].append(timing)
            say(
                f"    startup {fmt(timing.startup)}  first result {fmt(timing.first_result)}  "
                f"total {fmt(timing.total)}  (first line: {timing.first_line!r})"
            )
    return {mode: summary(values) for mode, values in timings.items()}


def fmt(value: float | None, width: int = 0) -> str:
    text = "—" if value is None else f"{value:.2f} s"
    return text.rjust(width) if width else text


# --- what an image trusts ----------------------------------------------------------------------


def file_from_image(client, image: str, path: str) -> bytes:
    from ppml_build.errors import ImageError
    from ppml_build.gramine.direct import read_file_from_image

    try:
        return read_file_from_image(client, image, path)
    except ImageError as err:
        raise RunFailed(str(err)) from None


def signed_manifest(client, image: str, name: str) -> dict:
    return tomllib.loads(
        file_from_image(client, image, f"/ppml/{name}.manifest.sgx").decode("utf-8")
    )


def check_command(job: Job, recipe, manifest: dict) -> None:
    """Warn when the recipe in the checkout no longer matches what the image was built from
    (native would then run something else than the enclave)."""
    argv = manifest.get("loader", {}).get("argv", [])
    if argv and list(recipe.app.command)[-1] != argv[-1]:
        say(
            f"  WARNING: {job.name}: the recipe's command ends {recipe.app.command[-1]!r} but "
            f"the image's signed argv ends {argv[-1]!r}; rebuild the image"
        )


# --- part 1 and 2 ------------------------------------------------------------------------------


def report_pair(title: str, job: Job, entries: int, figures: dict) -> dict:
    native, direct = figures["native"], figures["direct"]
    ns, ds = native["startup"]["best"], direct["startup"]["best"]
    nt, dt = native["total"]["best"], direct["total"]["best"]
    nr, dr = native["first_result"]["best"], direct["first_result"]["best"]
    say(f"{title}  (trusted entries: {entries})")
    say(f"  {'':8} {'startup':>10} {'1st result':>11} {'total':>10}")
    say(f"  {'native':8} {fmt(ns, 10)} {fmt(nr, 11)} {fmt(nt, 10)}")
    say(f"  {'direct':8} {fmt(ds, 10)} {fmt(dr, 11)} {fmt(dt, 10)}")
    verdict: dict = {"entries": entries}
    if ns is not None and ds is not None:
        overhead = ds - ns
        verdict["startup_overhead"] = overhead
        line = f"  startup overhead (direct - native): {overhead:+.2f} s"
        if job.kind == "spark":
            passed = overhead < STARTUP_OVERHEAD_TARGET
            verdict["startup_target"] = STARTUP_OVERHEAD_TARGET
            verdict["startup_pass"] = passed
            line += f"  target < {STARTUP_OVERHEAD_TARGET:.0f} s: {'PASS' if passed else 'MISS'}"
        else:
            line += "  (no target for Flink jobs)"
        say(line)
    if nt and dt:
        verdict["total_ratio"] = dt / nt
        say(f"  total: direct / native = {dt / nt:.2f}x (+{dt - nt:.2f} s)")
    return verdict


def report_steady(job: Job, figures: dict) -> dict:
    native, direct = figures["native"]["steady"]["best"], figures["direct"]["steady"]["best"]
    verdict: dict = {"steady_target": STEADY_RATIO_TARGET}
    if native is None or direct is None:
        say("  steady state: — (a run printed nothing)")
        return verdict
    ratio = direct / native
    passed = ratio <= STEADY_RATIO_TARGET
    verdict |= {
        "steady_native": native,
        "steady_direct": direct,
        "steady_ratio": ratio,
        "steady_pass": passed,
    }
    say(
        f"  steady state (total - startup): native {native:.2f} s, direct {direct:.2f} s = "
        f"{ratio:.2f}x  target <= {STEADY_RATIO_TARGET}x: {'PASS' if passed else 'MISS'}"
    )
    if native < 25:
        say(
            f"  note: the native steady state is {native:.1f} s, under the ~30 s the variant "
            "should take; raise --scale (or the sizes at the top of this script)"
        )
    return verdict


def bundled(client, log_client, job: Job, runs: int) -> dict:
    recipe = load_recipe(job.recipe_dir / "recipe.yaml")
    manifest = signed_manifest(client, job.image, job.name)
    check_command(job, recipe, manifest)
    entries = len(manifest.get("sgx", {}).get("trusted_files", []))
    figures = measure(client, log_client, job, job.image, recipe, runs, job.name)
    verdict = report_pair(f"{job.name} ({job.image}), best of {runs}", job, entries, figures)
    note_result_first(figures)
    return {"image": job.image, **figures, **verdict}


def note_result_first(figures: dict) -> None:
    for mode, data in figures.items():
        if any(run["first_line"].startswith(MARKERS) for run in data["runs"]):
            say(
                f"  note: {mode}, the first output line is already the job's result (it prints "
                "nothing before): startup here is almost the whole run"
            )
            break


# -- the variants (temp copies of the recipes; nothing in the checkout changes)


def _sub(path: Path, pattern: str, replacement: str, what: str) -> None:
    text = path.read_text()
    new, count = re.subn(pattern, replacement, text, count=1)
    if count != 1:
        raise RunFailed(
            f"{path.name}: cannot find {what} to enlarge (pattern {pattern!r}); "
            "update benchmarks/bench_direct.py to the recipe"
        )
    path.write_text(new)


def _edit_recipe(recipe_dir: Path, edit) -> None:
    path = recipe_dir / "recipe.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))


def long_spark_java_pi(recipe_dir: Path) -> str:
    def edit(data):
        command = data["app"]["command"]
        if command[-2:] != ["2000", "4"]:
            raise RunFailed(
                f"spark-java-pi: command ends {command[-2:]}, expected the grid args 2000 4"
            )
        command[-2:] = [str(n), str(PI_GRID[1])]

    n = max(1, round(PI_GRID[0] * math.sqrt(SCALE)))  # the work grows with n * n
    _edit_recipe(recipe_dir, edit)
    return f"GridPi {n:,} x {n:,} grid, {PI_GRID[1]} slices"


def long_pyspark_sql_agg(recipe_dir: Path) -> str:
    rows = scaled(AGG_ROWS)
    _sub(
        recipe_dir / "job.py",
        r"spark\.range\(1, 1001\)",
        f"spark.range(1, {rows + 1})",
        "spark.range(1, 1001)",
    )
    return f"{rows:,} rows from spark.range (JVM only)"


def long_spark_sql_parquet(recipe_dir: Path) -> str:
    source = recipe_dir / "data/sales.csv"
    rows = list(csvrows(source.read_text()))
    header, body = rows[0], rows[1:]
    regions = sorted({r[1] for r in body})
    products = sorted({(r[2], r[4]) for r in body})
    with open(source, "w", encoding="utf-8") as out:
        out.write(",".join(header) + "\n")
        for i in range(1, scaled(PARQUET_ROWS) + 1):
            product, price = products[(i * 7) % len(products)]
            out.write(f"{i},{regions[(i * 3) % len(regions)]},{product},{i % 13 + 1},{price}\n")
    size = source.stat().st_size
    return f"{scaled(PARQUET_ROWS):,} CSV rows ({size / 1e6:.0f} MB, a trusted file in the image)"


def csvrows(text: str):
    for line in text.splitlines():
        if line.strip():
            yield line.split(",")


def long_flink_java_wordcount(recipe_dir: Path) -> str:
    sources = list((recipe_dir / "src").rglob("StreamingWordCount.java"))
    if len(sources) != 1:
        raise RunFailed("flink-java-wordcount: StreamingWordCount.java not found")
    _sub(
        sources[0],
        r"env\.fromData\(LINES\)",
        f"env.fromSequence(1, {scaled(WORDCOUNT_LINES)}L)"
        ".map(i -> LINES[(int) (i % LINES.length)]).returns(Types.STRING)",
        "env.fromData(LINES)",
    )
    return f"{scaled(WORDCOUNT_LINES):,} lines from fromSequence (every update collected)"


def long_pyflink_table(recipe_dir: Path) -> str:
    rows = scaled(PYFLINK_ROWS)
    generated = (
        "env.execute_sql(\"CREATE TEMPORARY TABLE seq (id BIGINT) WITH ('connector' = "
        f"'datagen', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', "
        f"'fields.id.end' = '{rows}', 'number-of-rows' = '{rows}', "
        "'rows-per-second' = '1000000000')\")\n"
        'array = ", ".join(f"\'{w}\'" for w in words)\n'
        'table = env.sql_query(f"SELECT ARRAY[{array}][CAST(MOD(id, {len(words)}) AS INT) + 1] '
        'AS word FROM seq")'
    )
    _sub(
        recipe_dir / "job.py",
        r"table = env\.from_elements\(\[\(w,\) for w in words\], "
        r'\["word"\]\)',
        generated.replace("\\", "\\\\"),
        "table = env.from_elements(...)",
    )
    # PyFlink's JVM writes to no console and the job prints only its result, so "startup"
    # (the first output line) would be the whole run: mark the environment being up (the
    # TableEnvironment exists, so the gateway JVM runs), as the JVM's own first line does for
    # the other jobs.
    _sub(
        recipe_dir / "job.py",
        r"(?m)^(env = TableEnvironment\.create\(.*\)\n)",
        r'\1print("BENCH table environment ready", flush=True)\n',
        "env = TableEnvironment.create(...)",
    )
    return f"{rows:,} rows from a datagen sequence table (JVM only)"


VARIANTS = {
    "spark-java-pi": long_spark_java_pi,
    "pyspark-sql-agg": long_pyspark_sql_agg,
    "spark-sql-parquet": long_spark_sql_parquet,
    "flink-java-wordcount": long_flink_java_wordcount,
    "pyflink-table": long_pyflink_table,
}


def build_variant(job: Job, scratch: Path, key: Path):
    recipe_dir = scratch / job.name
    shutil.copytree(job.recipe_dir, recipe_dir)
    what = VARIANTS[job.name](recipe_dir)
    say(f"  building {job.long_image}: {what} ...")
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "ppml_build",
        "build",
        str(recipe_dir / "recipe.yaml"),
        "--key",
        str(key),
        "--tag",
        job.long_image,
        "--output-dir",
        str(scratch / f"{job.name}-out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RunFailed(
            f"building {job.long_image} failed ({done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    say(f"  built in {time.perf_counter() - started:.0f} s")
    return load_recipe(recipe_dir / "recipe.yaml"), what


def steady(client, log_client, job: Job, runs: int, scratch: Path, key: Path) -> dict:
    recipe, what = build_variant(job, scratch, key)
    entries = len(
        signed_manifest(client, job.long_image, job.name).get("sgx", {}).get("trusted_files", [])
    )
    figures = measure(client, log_client, job, job.long_image, recipe, runs, f"{job.name}-long")
    verdict = report_pair(f"{job.name}-long ({what}), best of {runs}", job, entries, figures)
    note_result_first(figures)
    verdict |= report_steady(job, figures)
    return {"image": job.long_image, "work": what, **figures, **verdict}


# --- part 3: Gramine's startup vs the number of trusted entries --------------------------------


def base_files(client) -> tuple[str, list[tuple[str, str]]]:
    """libsysdb.so's sha256 and the (path, sha256) of /usr/bin/true and Gramine's runtime glibc,
    read out of the Gramine base image and hashed here."""
    container = client.containers.create(
        GRAMINE_BASE, entrypoint=["/ppml-never-runs"], network_mode="none"
    )
    try:

        def archive(path: str) -> tarfile.TarFile:
            chunks, _ = container.get_archive(path)
            return tarfile.open(fileobj=io.BytesIO(b"".join(chunks)))

        def one(path: str) -> str:
            with archive(path) as tar:
                return hashlib.sha256(tar.extractfile(tar.next()).read()).hexdigest()

        sysdb = one(f"{GRAMINE_PREFIX}/libsysdb.so")
        files = [("/usr/bin/true", one("/usr/bin/true"))]
        glibc = f"{GRAMINE_PREFIX}/runtime/glibc"
        with archive(glibc) as tar:
            members = {m.name: m for m in tar.getmembers()}
            digests = {
                name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()
                for name, m in members.items()
                if m.isfile()
            }
            for name, member in sorted(members.items()):
                if member.issym():  # trusted by its own path, with its target's bytes
                    target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
                    if target in digests:
                        digests[name] = digests[target]
        for name in sorted(digests):
            rel = name.split("/", 1)[1] if "/" in name else None
            if rel:
                files.append((f"{glibc}/{rel}", digests[name]))
        return sysdb, files
    finally:
        container.remove(force=True)


def write_manifest(path: Path, sysdb: str, files: list[tuple[str, str]]) -> None:
    lines = [
        'libos.entrypoint = "/usr/bin/true"',
        'loader.log_level = "error"',
        f'loader.entrypoint.uri = "file:{GRAMINE_PREFIX}/libsysdb.so"',
        f'loader.entrypoint.sha256 = "{sysdb}"',
        'loader.argv = ["/usr/bin/true"]',
        'loader.env.LD_LIBRARY_PATH = "/lib"',
        'fs.root.uri = "file:/"',
        f'fs.mounts = [{{ path = "/lib", uri = "file:{GRAMINE_PREFIX}/runtime/glibc" }}]',
        "sgx.trusted_files = [",
        *(f'  {{ uri = "file:{p}", sha256 = "{h}" }},' for p, h in files),
        "]",
    ]
    path.write_text("\n".join(lines) + "\n")


def generate_files(root: Path, count: int) -> list[tuple[str, str]]:
    """``count`` small files under root/files (1,000 a directory), hashed; container paths."""
    files = []
    for i in range(count):
        folder = root / "files" / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        data = f"ppml-bench trusted entry {i}\n".encode()
        (folder / f"f{i:06d}.txt").write_bytes(data)
        files.append(
            (f"/bench/files/d{i // 1000:03d}/f{i:06d}.txt", hashlib.sha256(data).hexdigest())
        )
    return files


def run_true(client, root: Path, app: str) -> tuple[float, float]:
    """(StartedAt -> FinishedAt, host seconds from start() to wait() returning)."""
    container = client.containers.create(
        GRAMINE_BASE,
        entrypoint=["gramine-direct"],
        command=[f"/bench/{app}"],
        network_mode="none",
        security_opt=["seccomp=unconfined"],
        volumes={str(root): {"bind": "/bench", "mode": "ro"}},
    )
    try:
        began = time.perf_counter()
        container.start()
        code = container.wait(timeout=600).get("StatusCode", -1)
        wall = time.perf_counter() - began
        container.reload()
        state = container.attrs["State"]
        if code != 0:
            log = container.logs().decode("utf-8", "replace")[-2000:]
            raise RunFailed(f"gramine-direct /usr/bin/true ({app}) exited {code}:\n{log}")
        return epoch(state["FinishedAt"]) - epoch(state["StartedAt"]), wall
    finally:
        container.remove(force=True)


def entries_curve(client, counts: list[int], runs: int) -> dict:
    sysdb, base = base_files(client)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ppml-bench-entries-", dir="/var/tmp") as scratch:
        root = Path(scratch)
        generated = generate_files(root, max(0, max(counts) - len(base)))
        plan = [("base", len(base))] + [(f"n{n}", n) for n in counts]
        for app, n in plan:
            write_manifest(
                root / f"{app}.manifest", sysdb, base + generated[: max(0, n - len(base))]
            )
        os.chmod(root, 0o755)
        for app, n in plan:
            seconds, walls = [], []
            for _ in range(runs):
                docker_seconds, wall = run_true(client, root, app)
                seconds.append(docker_seconds)
                walls.append(wall)
            entries = max(n, len(base))
            rows.append(
                {
                    "entries": entries,
                    "best": min(seconds),
                    "median": statistics.median(seconds),
                    "runs": seconds,
                    "wall_best": min(walls),
                    "wall_runs": walls,
                    "manifest_bytes": (root / f"{app}.manifest").stat().st_size,
                    "base": app == "base",
                }
            )
    base_row = rows[0]
    say(
        f"Gramine's startup vs trusted entries: /usr/bin/true under gramine-direct in "
        f"{GRAMINE_BASE}, best of {runs} (StartedAt -> FinishedAt)"
    )
    say(
        f"  {'entries':>12} {'manifest':>10} {'seconds':>9} {'- base':>8} {'ms/entry':>8} "
        f"{'exponent':>9} {'host wall':>10} {'previous':>12}"
    )
    previous = None
    for row in rows:
        net = row["best"] - base_row["best"]
        row["net"] = net
        exponent = None
        if (
            previous is not None
            and previous["net"] >= MIN_NET
            and net >= MIN_NET
            and row["entries"] > previous["entries"]
        ):
            exponent = math.log(net / previous["net"]) / math.log(
                row["entries"] / previous["entries"]
            )
        row["exponent"] = exponent
        extra = max(1, row["entries"] - base_row["entries"])
        per_entry = "" if row["base"] else f"{1000 * net / extra:.3f}"
        shown_exponent = "" if exponent is None else f"{exponent:.2f}"
        ref = next(
            (
                f"{s:.1f} s@{n:,}"
                for n, s in PREVIOUS_ENTRIES.items()
                if abs(n - row["entries"]) <= 0.05 * n
            ),
            "",
        )
        label = f"{row['entries']:,}" + (" base" if row["base"] else "")
        say(
            f"  {label:>12} {row['manifest_bytes'] / 1e6:8.2f}MB {row['best']:8.2f}s "
            f"{net:7.2f}s {per_entry:>8} {shown_exponent:>9} {row['wall_best']:9.2f}s {ref:>12}"
        )
        if not row["base"]:
            previous = row
    exps = [r["exponent"] for r in rows if r["exponent"] is not None]
    fit = [
        (math.log(r["entries"]), math.log(r["net"]))
        for r in rows
        if not r["base"] and r["net"] >= MIN_NET
    ]
    fitted = None
    if len(fit) >= 2:  # least squares in log-log: net seconds ~ c * entries ** fitted
        mx, my = statistics.fmean(x for x, _ in fit), statistics.fmean(y for _, y in fit)
        fitted = sum((x - mx) * (y - my) for x, y in fit) / sum((x - mx) ** 2 for x, _ in fit)
    verdict = None
    if exps:
        verdict = exps[-1] > 1.15
        say(
            f"  growth between the two largest counts: exponent {exps[-1]:.2f}"
            + (f"; fitted over {len(fit)} counts: {fitted:.2f}" if fitted is not None else "")
            + f" -> {'faster than linear' if verdict else 'about linear or slower'}"
            " (1 = linear, 2 = quadratic)"
        )
    else:
        say(f"  (too few counts with more than {MIN_NET} s over the base to say how it grows)")
    return {
        "rows": rows,
        "faster_than_linear": verdict,
        "fitted_exponent": fitted,
        "previous": {str(k): v for k, v in PREVIOUS_ENTRIES.items()},
    }


def predict(curve: dict, entries: int) -> tuple[float | None, bool]:
    """Gramine's startup for ``entries`` from the measured curve: piecewise linear inside it,
    beyond its largest count the fitted power law (then the second value is True)."""
    points = sorted((r["entries"], r["best"]) for r in curve["rows"])
    if not points:
        return None, False
    if entries <= points[0][0]:
        return points[0][1], False
    for (n1, t1), (n2, t2) in itertools.pairwise(points):
        if entries <= n2:
            return t1 + (t2 - t1) * (entries - n1) / (n2 - n1), False
    fitted, (n_max, t_max) = curve.get("fitted_exponent"), points[-1]
    if fitted is None:
        return None, True
    base = points[0][1]
    return base + (t_max - base) * (entries / n_max) ** fitted, True


def image_entries(client, results: dict, curve: dict | None, names: list[str]) -> list[dict]:
    say("Each image's own trusted entries (its /ppml/NAME.manifest.sgx) and its startup:")
    say(
        f"  {'image':<44} {'entries':>8} {'direct startup':>15} {'overhead':>9} "
        f"{'curve predicts':>15}"
    )
    table, extrapolated = [], False
    for job in JOBS:
        if job.name not in names:
            continue
        for image, section in ((job.image, "bundled"), (job.long_image, "steady")):
            measured = results.get(section, {}).get(job.name)
            if measured and "entries" in measured:
                entries = measured["entries"]
            else:
                try:
                    entries = len(
                        signed_manifest(client, image, job.name)
                        .get("sgx", {})
                        .get("trusted_files", [])
                    )
                except (docker.errors.ImageNotFound, docker.errors.NotFound, RunFailed):
                    continue
            startup = measured["direct"]["startup"]["best"] if measured else None
            overhead = measured.get("startup_overhead") if measured else None
            predicted, beyond = predict(curve, entries) if curve else (None, False)
            table.append(
                {
                    "image": image,
                    "entries": entries,
                    "direct_startup": startup,
                    "startup_overhead": overhead,
                    "predicted_gramine_startup": predicted,
                    "predicted_by_extrapolation": beyond,
                }
            )
            shown = fmt(predicted) + ("*" if beyond and predicted is not None else "")
            say(
                f"  {image:<44} {entries:8,} {fmt(startup, 15)} "
                f"{'—' if overhead is None else f'{overhead:+.2f} s':>9} {shown:>15}"
            )
            extrapolated = extrapolated or beyond
    if extrapolated:
        say("  * beyond the largest entry count measured: the fitted power law, extrapolated")
    if curve:
        say(
            "  (curve predicts: /usr/bin/true's startup with that many entries, the part of the "
            "direct startup the entry count explains)"
        )
    return table


def rounded(value):
    """Seconds to the millisecond for the JSON document."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(item) for item in value]
    return value


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global OUT, SCALE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [job.name for job in JOBS]
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"only this job (repeatable): {', '.join(names)}; 'none' for no "
        "job (e.g. only the entries part)",
    )
    parser.add_argument("--runs", type=int, default=2, help="runs per configuration (default 2)")
    parser.add_argument(
        "--skip-bundled", action="store_true", help="no part 1 (the bundled images)"
    )
    parser.add_argument("--skip-steady", action="store_true", help="no steady-state variants")
    parser.add_argument("--skip-entries", action="store_true", help="no trusted-entries curve")
    parser.add_argument(
        "--entries",
        default=",".join(map(str, ENTRY_COUNTS)),
        help="entry counts for the curve (default %(default)s)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the steady-state variants' work (default 1: ~30 s "
        "natively on a quiet 2-core machine)",
    )
    parser.add_argument(
        "--key",
        type=Path,
        default=DEFAULT_KEY,
        help="signing key for the variants' builds (default %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON results on stdout (the report goes to stderr)"
    )
    args = parser.parse_args(argv)
    selected = names if not args.only else [n for n in args.only if n != "none"]
    unknown = sorted(set(selected) - set(names))
    if unknown or args.runs < 1:
        parser.error(f"unknown job(s) {unknown}" if unknown else "--runs must be >= 1")
    try:
        counts = sorted({int(n) for n in args.entries.split(",") if n.strip()})
    except ValueError:
        parser.error("--entries: comma-separated integers")
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    SCALE = args.scale
    if args.json:
        OUT = sys.stderr

    client, log_client = connect(), connect()
    load = os.getloadavg()
    results: dict = {
        "runs": args.runs,
        "scale": SCALE,
        "statistic": "best (minimum per figure)",
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": load},
        "bundled": {},
        "steady": {},
        "entries": None,
        "images": [],
        "failures": [],
    }
    say(
        f"bench_direct: {args.runs} run(s) per configuration, best shown; {os.cpu_count()} "
        f"CPUs, load average {load[0]:.2f} at start"
    )
    jobs = [job for job in JOBS if job.name in selected]

    if not args.skip_bundled and jobs:
        say("\n== 1. startup and total: bundled jobs, native vs gramine-direct ==")
    for job in [] if args.skip_bundled else jobs:
        try:
            results["bundled"][job.name] = bundled(client, log_client, job, args.runs)
        except RunFailed as err:
            results["failures"].append({"part": "bundled", "job": job.name, "error": str(err)})
            say(f"{job.name}: FAILED: {err}")

    if not args.skip_steady and jobs:
        say("\n== 2. steady state: longer variants ==")
        if not args.key.is_file():
            say(f"no signing key at {args.key} (--key): skipping the steady-state part")
            results["failures"].append({"part": "steady", "error": f"no key {args.key}"})
        else:
            with tempfile.TemporaryDirectory(
                prefix="ppml-bench-variants-", dir="/var/tmp"
            ) as scratch:
                for job in jobs:
                    try:
                        results["steady"][job.name] = steady(
                            client, log_client, job, args.runs, Path(scratch), args.key
                        )
                    except RunFailed as err:
                        results["failures"].append(
                            {"part": "steady", "job": job.name, "error": str(err)}
                        )
                        say(f"{job.name}-long: FAILED: {err}")

    if not args.skip_entries:
        say("\n== 3. Gramine's startup vs the number of trusted entries ==")
        try:
            results["entries"] = entries_curve(client, counts, args.runs)
        except RunFailed as err:
            results["failures"].append({"part": "entries", "error": str(err)})
            say(f"entries: FAILED: {err}")
    if jobs:
        say("")
        results["images"] = image_entries(client, results, results["entries"], selected)

    say("\n== summary ==")
    for job, data in results["bundled"].items():
        if "startup_pass" in data:
            say(
                f"  {job:<22} startup overhead < 10 s: {data['startup_overhead']:+.2f} s "
                f"{'PASS' if data['startup_pass'] else 'MISS'}"
            )
    for job, data in results["steady"].items():
        if "steady_pass" in data:
            say(
                f"  {job + '-long':<22} steady state <= 1.5x: {data['steady_ratio']:.2f}x "
                f"{'PASS' if data['steady_pass'] else 'MISS'}"
            )
    if results["entries"] and results["entries"]["faster_than_linear"] is not None:
        say(
            f"  trusted entries: startup grows "
            f"{'faster than linearly' if results['entries']['faster_than_linear'] else 'about linearly'}"
        )
    for failure in results["failures"]:
        say(
            f"  FAILED: {failure.get('job', failure['part'])}: "
            f"{failure['error'].splitlines()[0] if failure['error'] else ''}"
        )
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    if args.json:
        json.dump(rounded(results), sys.stdout, indent=2, default=str)
        print()
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
