"""Every bundled recipe, end to end, on real Gramine 1.9: it builds from the auth registry, its
job prints the right answer under gramine-direct with the signed manifest (and natively in the
built image), `ppml-build trace` finds nothing the LibOS or the enclave would refuse and no
process a running JVM started, Gramine's own signer agrees with our MRENCLAVE, and a tampered
trusted file is refused by the LibOS and by verify. Plus the build stage's promises: outputs are
trusted, the CA bundle stays out.

Builds are shared per recipe within this module (the real-Gramine bases test_build uses, pushed
to the session registry).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
import tomllib
from collections import Counter
from pathlib import Path

import docker.errors
import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Fixtures and helpers shared with the build tests (same bases, key and cache isolation).
from test_build import copy_recipe, expected_spark_lines, file_from_image

from ppml_build.cli import main
from ppml_build.image.native import run_native
from ppml_build.pipeline import backends
from ppml_build.pipeline.options import BuildOptions, BuildResult
from ppml_build.recipe import load_recipe
from ppml_build.trace.run import run_trace

pytestmark = pytest.mark.docker

PROJECT = Path(__file__).resolve().parents[2]
# spark-encrypted-csv's recipe.yaml gets its key by secret provisioning, which needs SGX
# attestation: test_encrypted_data.py runs its test-key twin under gramine-direct instead.
NEEDS_ATTESTATION = {"spark-encrypted-csv"}
RECIPE_DIRS = sorted(
    path.parent
    for path in PROJECT.glob("recipes/*/*/recipe.yaml")
    if path.parent.name not in NEEDS_ATTESTATION
)
NAMES = [path.name for path in RECIPE_DIRS]


# --- what each job must print ----------------------------------------------------------------


def spark_java_pi_lines() -> list[str]:
    n, inside = 2000, 0
    for i in range(n):
        x = (i + 0.5) / n
        inside += sum(1 for j in range(n) if x * x + ((j + 0.5) / n) ** 2 <= 1.0)
    return [f"RESULT inside={inside} total={n * n} pi={4.0 * inside / (n * n):.6f}"]


def spark_sql_parquet_lines() -> list[str]:
    rows = list(
        csv.DictReader(
            io.StringIO((PROJECT / "recipes/spark/spark-sql-parquet/data/sales.csv").read_text())
        )
    )
    groups: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        slot = groups.setdefault((row["region"], row["product"]), [0, 0, 0])
        slot[0] += 1
        slot[1] += int(row["quantity"])
        slot[2] += int(row["quantity"]) * int(row["unit_price_cents"])
    return [f"ROWS sales {len(rows)}", f"ROWS summary {len(groups)}"] + [
        f"RESULT region={r} product={p} orders={o} units={u} revenue_cents={c}"
        for (r, p), (o, u, c) in sorted(groups.items())
    ]


def flink_java_wordcount_lines() -> list[str]:
    source = (
        PROJECT / "recipes/flink/flink-java-wordcount/src/org/ppmlbuild/examples/"
        "StreamingWordCount.java"
    ).read_text()
    text = source.split("LINES = {", 1)[1].split("};", 1)[0]
    lines = [json.loads(s) for s in re.findall(r'"(?:[^"\\]|\\.)*"', text)]
    words = [w for line in lines for w in re.split(r"[^a-z']+", line.lower()) if w]
    counts = Counter(words)
    return [f"UPDATES {len(words)}"] + [f"RESULT {w} {counts[w]}" for w in sorted(counts)]


def pyflink_table_lines() -> list[str]:
    words = "to be or not to be that is the question".split()
    return [f"RESULT {w} {words.count(w)}" for w in sorted(set(words))]


EXPECTED = {
    "pyspark-sql-agg": expected_spark_lines,
    "spark-java-pi": spark_java_pi_lines,
    "spark-sql-parquet": spark_sql_parquet_lines,
    "flink-java-wordcount": flink_java_wordcount_lines,
    "pyflink-table": pyflink_table_lines,
}


def answer(stdout: str) -> list[str]:
    return [
        line for line in stdout.splitlines() if line.startswith(("RESULT ", "ROWS ", "UPDATES "))
    ]


def test_every_bundled_recipe_has_a_readme_line_and_an_expected_answer():
    assert set(NAMES) == set(EXPECTED), "add the new recipe's expected output to EXPECTED"
    for directory in RECIPE_DIRS:
        readme = (directory / "README.md").read_text().strip().splitlines()
        assert readme[0] == f"# {directory.name}" and len(" ".join(readme[1:])) > 40


# --- builds, shared ----------------------------------------------------------------------------


def make_ca_bundle(path: Path) -> bytes:
    """A fresh self-signed CA (PEM): its bytes must never show up in the final image."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ppml-test TLS-inspecting proxy")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return pem


class Builds:
    def __init__(self, bases, key, registry, workdir: Path) -> None:
        self.bases, self.key, self.registry, self.workdir = bases, key, registry, workdir
        self.ca_bundle = workdir / "proxy-ca.pem"
        self.ca_pem = make_ca_bundle(self.ca_bundle)
        # A full line of the base64 body near the end (public key and signature bytes):
        # unique to this run.
        self.ca_marker = self.ca_pem.splitlines()[-3]
        self.done: dict[str, tuple[Path, BuildResult]] = {}

    def get(self, name: str) -> tuple[Path, BuildResult]:
        if name not in self.done:
            source = next(d for d in RECIPE_DIRS if d.name == name)
            remote, digest = self.bases[source.parent.name]  # spark | flink
            recipe = copy_recipe(source, self.workdir / name, remote, digest)
            if name == "spark-java-pi":
                # Prove the CA reaches the build stage: the build fails if the step cannot
                # find this run's certificate where the variables point.
                marker = self.ca_marker.decode()
                text = recipe.read_text().replace(
                    "  steps:\n",
                    (
                        "  steps:\n    - grep -qF '"
                        + marker
                        + "' \"$PIP_CERT\" && grep -qF '"
                        + marker
                        + '\' "$SSL_CERT_FILE"\n'
                    ),
                    1,
                )
                recipe.write_text(text)
            result = backends.build(
                BuildOptions(
                    recipe=recipe,
                    key=self.key,
                    output_dir=self.workdir / f"{name}-out",
                    tag=f"ppml-test/{name}:recipes",
                    registry_auth=self.registry.auth_file,
                    date="2026-11-01",
                    ca_bundle=self.ca_bundle,
                )
            )
            self.done[name] = (recipe, result)
        return self.done[name]


# ``builds`` (session-scoped, tests/integration/conftest.py): one Builds for this module and
# test_gramine_direct, so each recipe is built once per run.


# --- the jobs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_recipe_builds_and_its_job_prints_the_right_answer(name, builds, docker_client, tmp_path):
    recipe_path, result = builds.get(name)
    record = result.record
    kind = next(d for d in RECIPE_DIRS if d.name == name).parent.name
    assert record["base"]["digest"] == builds.bases[kind][1]  # pinned, from the auth registry
    assert docker_client.images.get(result.image).labels["ppml.mrenclave"] == record["mrenclave"]
    recipe = load_recipe(recipe_path)
    extra = {}
    if name == "spark-sql-parquet":
        out = tmp_path / "out"
        out.mkdir()
        out.chmod(0o777)
        extra = {"volumes": {str(out): {"bind": "/data/out", "mode": "rw"}}}
    run = run_native(docker_client, result.image, recipe, extra_args=extra)
    assert run.exit_code == 0, run.stderr[-3000:]
    assert answer(run.stdout) == EXPECTED[name](), run.stdout[-3000:]
    if name == "spark-sql-parquet":
        # The Parquet datasets are on the host side of the mount, complete and really Parquet.
        for dataset in ("sales.parquet", "summary.parquet"):
            assert (out / dataset / "_SUCCESS").is_file()
            parts = sorted((out / dataset).glob("part-*.parquet"))
            assert parts and all(
                p.read_bytes()[:4] == b"PAR1" == p.read_bytes()[-4:] for p in parts
            )


# How many LibOS processes each job is: the JVM alone, or Python and the JVM it starts.
PROCESSES = {
    "spark-java-pi": ["java"],
    "flink-java-wordcount": ["java"],
    "pyspark-sql-agg": ["python3.11", "java"],
    "spark-sql-parquet": ["python3.11", "java"],
    "pyflink-table": ["python3.11", "java"],
}


@pytest.mark.parametrize("name", NAMES)
def test_trace_finds_nothing_the_libos_or_the_enclave_would_refuse(name, builds):
    recipe_path, result = builds.get(name)
    traced = run_trace(recipe_path, image=result.image)
    report, doc = traced.report, traced.document
    assert traced.exit_code == 0, traced.stderr[-3000:]
    assert answer(traced.stdout) == EXPECTED[name]()  # the traced run did the real work
    # What Gramine's own LibOS said, running the signed manifest (log level raised only).
    libos = doc["libos"]
    assert libos["exit_code"] == 0 and libos["refused"] == [] and libos["hash_mismatches"] == []
    assert sorted(libos["processes"].values()) == sorted(PROCESSES[name]), libos["processes"]
    assert libos["jvm_forks_started"] == 0  # no process started by a running JVM
    if "python3.11" in PROCESSES[name]:
        assert libos["jvm_fork_attempts"] == 0  # refused in the JVM, before any fork
    # The native estimate agrees.
    assert [f.path for f in report.untrusted_reads] == []
    assert [f.path for f in report.bad_writes] == []
    assert doc["clean"] is True and report.trusted_read > 20
    size = doc["manifest_size"]
    # Our kind defaults trust far less than hashing the whole image would, and more than
    # this one run read (other inputs, other code paths).
    assert (
        size["needed"]["trusted_entries"]
        < size["shipped"]["trusted_entries"]
        < size["hash_everything"]["trusted_entries"]
    )
    assert size["shipped"]["bytes_hashed"] < size["hash_everything"]["bytes_hashed"]
    print(
        f"\n{name}: trusted entries / bytes hashed: shipped "
        f"{size['shipped']['trusted_entries']} / {size['shipped']['bytes_hashed']}, "
        f"hash-everything {size['hash_everything']['trusted_entries']} / "
        f"{size['hash_everything']['bytes_hashed']}, read "
        f"{size['needed']['trusted_entries']} / {size['needed']['bytes_hashed']} "
        f"({doc['seconds']} s)"
    )


# --- the build stage ---------------------------------------------------------------------------


def test_build_outputs_are_trusted_with_the_bytes_in_the_image(builds, docker_client):
    recipe_path, result = builds.get("spark-java-pi")
    listing = json.loads((result.output_dir / "trusted-files.json").read_text())["files"]
    entry = next(f for f in listing if f["path"] == "/app/spark-java-pi.jar")
    jar = file_from_image(docker_client, result.image, "/app/spark-java-pi.jar")
    import hashlib
    import zipfile

    assert entry["sha256"] == hashlib.sha256(jar).hexdigest() and entry["size"] == len(jar)
    names = zipfile.ZipFile(io.BytesIO(jar)).namelist()
    assert "org/ppmlbuild/examples/GridPi.class" in names
    # The compiler and the sources stayed in the build stage.
    for path in ("/usr/lib/jvm/java-17-openjdk-amd64/bin/javac", "/build/src"):
        with pytest.raises(docker.errors.NotFound):
            file_from_image(docker_client, result.image, path)
    # The jar and ppml-build's own support files (launch.py), nothing else of the image.
    support = [f for f in listing if f["path"].startswith("/ppml/")]
    assert support and result.stats["build_outputs_hashed"] == 1 + len(support)


def scan_stream(chunks, needle: bytes) -> bool:
    tail = b""
    for chunk in chunks:
        if needle in tail + chunk:
            return True
        tail = (tail + chunk)[-len(needle) :]
    return False


def test_ca_bundle_reaches_the_build_stage_but_not_the_final_image(builds, docker_client):
    # The build of spark-java-pi ran a step that fails unless the CA was in the build stage.
    _, result = builds.get("spark-java-pi")
    marker = builds.ca_marker
    assert len(marker) >= 40
    image = docker_client.images.get(result.image)
    assert not scan_stream(image.save(named=True), marker), "the CA is in docker save"
    assert marker.decode() not in json.dumps(docker_client.api.history(image.id))
    assert marker.decode() not in json.dumps(docker_client.api.inspect_image(image.id))
    config_env = " ".join(image.attrs["Config"].get("Env") or [])
    assert "ppml-build/ca-bundle" not in config_env


# --- trace catches what is missing -------------------------------------------------------------


def test_trace_reports_untrusted_reads_and_suggests_the_fix(
    builds, docker_client, tmp_path, capsys
):
    recipe_path, result = builds.get("spark-java-pi")
    manifest = tomllib.loads((result.output_dir / "spark-java-pi.manifest.sgx").read_text())
    dropped = {"file:/etc/os-release", "file:/app/spark-java-pi.jar"}
    kept = [tf for tf in manifest["sgx"]["trusted_files"] if tf["uri"] not in dropped]
    assert len(kept) == len(manifest["sgx"]["trusted_files"]) - 2
    manifest["sgx"]["trusted_files"] = kept
    broken = tmp_path / "broken.manifest.sgx"
    broken.write_text(tomli_w.dumps(manifest))
    capsys.readouterr()
    code = main(
        ["trace", str(recipe_path), "--image", result.image, "--manifest", str(broken), "--suggest"]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "untrusted reads (the enclave would refuse them): 2" in out
    assert "  /app/spark-java-pi.jar [openat]" in out and "  /etc/os-release [openat]" in out
    suggestion = out.split("# ppml-build trace --suggest: the native estimate", 1)[1]
    assert "    - /app/spark-java-pi.jar\n    - /etc/os-release\n" in suggestion
