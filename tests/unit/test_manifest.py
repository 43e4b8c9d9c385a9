"""Gramine manifest rendering against a root filesystem."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path

import pytest
from rootfs_factory import add_ppml_support, make_spark_rootfs

from ppml_build.cli import main
from ppml_build.errors import ManifestError
from ppml_build.gramine.manifest import render_manifest
from ppml_build.gramine.schema import check_manifest
from ppml_build.image.hashing import FileHasher
from ppml_build.image.rootfs import DirRootFS
from ppml_build.plan import make_plan
from ppml_build.recipe import load_recipe_text

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", --driver-memory, 2g, /app/job.py]
  env: {SPARK_LOCAL_IP: 127.0.0.1, FOO: "bar \\"quoted\\" \\\\ back"}
  passthrough_env: [RUN_ID]
files:
  trusted: [/etc/os-release]
  allowed: [/data/in/]
  encrypted: [{path: /data/enc, uri: "file:/data/enc", key_name: appkey}]
  keys: {appkey: {source: app}}
  tmpfs: [/scratch]
  scratch: [/tmp]
"""


@pytest.fixture()
def rootfs(tmp_path) -> Path:
    recipe = load_recipe_text(RECIPE)
    return add_ppml_support(make_spark_rootfs(tmp_path / "rootfs"), make_plan(recipe))


def resolve_in_root(root: Path, path: str) -> Path:
    """Follow links as a chroot would (written here independently of ppml_build.image.rootfs)."""
    parts, done, hops = [p for p in path.split("/") if p], [], 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            done = done[:-1]
            continue
        host = root.joinpath(*done, part)
        if host.is_symlink():
            hops += 1
            assert hops < 40
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(part)
    return root.joinpath(*done)


def render(rootfs: Path, text: str = RECIPE, **hasher):
    recipe = load_recipe_text(text)
    plan = make_plan(recipe)
    add_ppml_support(rootfs, plan)
    fs = DirRootFS(rootfs, FileHasher(use_cache=False, **hasher))
    return render_manifest(recipe, plan, fs)


def test_every_trusted_file_has_its_real_sha256(rootfs):
    rendered = render(rootfs)
    manifest = tomllib.loads(rendered.text)
    entries = manifest["sgx"]["trusted_files"]
    assert entries and all(set(e) == {"uri", "sha256"} for e in entries)
    for entry in entries:
        real = resolve_in_root(rootfs, entry["uri"][len("file:") :])
        assert hashlib.sha256(real.read_bytes()).hexdigest() == entry["sha256"], entry["uri"]
    uris = [e["uri"] for e in entries]
    assert len(uris) == len(set(uris))


def test_trusted_directory_rules(rootfs):
    uris = [e["uri"] for e in tomllib.loads(render(rootfs).text)["sgx"]["trusted_files"]]
    jars = [u for u in uris if "/jars/" in u]
    # /opt/spark/ is a symlinked directory: children carry the resolved path, sorted, dotfiles in.
    assert jars == sorted(jars)
    assert "file:/opt/spark-3.5.3/jars/.hidden-index" in jars
    assert "file:/opt/spark-3.5.3/jars/lib-00.jar" in jars
    # symlinked dirs not descended, dangling links and fifos skipped
    assert not any("conf-link" in u or "dangling" in u or "a-fifo" in u for u in uris)
    # a '../..' link clamps at the image root: it names the image's /etc/os-release
    assert "file:/opt/spark-3.5.3/jars/escape" in jars
    # the JDK's conf/ (symlink to /etc) is trusted through its own /etc entry
    assert "file:/etc/java-17-openjdk/security/java.security" in uris
    # PySpark starts from its Python; the JVM through ppml-build's '#!/bin/sh' spark-submit
    # wrapper: dash is trusted, Spark's bash scripts' interpreter is not
    assert {"file:/usr/bin/python3.11", "file:/usr/bin/dash"} <= set(uris)
    assert "file:/usr/bin/bash" not in uris and "file:/usr/bin/env" not in uris
    assert {
        "file:/ppml/bin/spark-submit",
        "file:/ppml/bin/ppml-launch.py",
        "file:/ppml/etc/hosts",
        "file:/ppml/lib/ppml-enclave-jdk.jar",
        "file:/ppml/lib/ppml-enclave-hadoop.jar",
        "file:/ppml/launch/pyspark-jvm.args",
    } <= set(uris)
    assert "file:/app/job.py" in uris and "file:/etc/os-release" in uris


def test_multiarch_tree_is_trusted_less_perl_and_pam(rootfs):
    multiarch = rootfs / "usr/lib/x86_64-linux-gnu"
    for name in (
        "perl-base/strict.pm",
        "gconv/UTF-16.so",
        "security/pam_unix.so",
        "engines-3/afalg.so",
        "libppmltest.so.1.0",
    ):
        (multiarch / name).parent.mkdir(parents=True, exist_ok=True)
        (multiarch / name).write_bytes(name.encode())
    (multiarch / "libppmltest.so.1").symlink_to("libppmltest.so.1.0")
    (multiarch / "engines-link").symlink_to("engines-3")
    uris = {e["uri"] for e in tomllib.loads(render(rootfs).text)["sgx"]["trusted_files"]}
    lib = "file:/usr/lib/x86_64-linux-gnu/"
    # What the whole tree gave is still there: files, links to files, other trees.
    assert {
        lib + "libppmltest.so.1.0",
        lib + "libppmltest.so.1",
        lib + "engines-3/afalg.so",
        lib + "gconv/UTF-16.so",
    } <= uris
    # Not what no enclave loads, and a symlinked directory is still not descended.
    assert not any(
        u.startswith(lib + p) for u in uris for p in ("perl-base/", "security/", "engines-link/")
    )
    # A recipe can still trust one of them by name.
    text = RECIPE.replace(
        "trusted: [/etc/os-release]",
        "trusted: [/etc/os-release, /usr/lib/x86_64-linux-gnu/security/pam_unix.so]",
    )
    uris = {e["uri"] for e in tomllib.loads(render(rootfs, text).text)["sgx"]["trusted_files"]}
    assert lib + "security/pam_unix.so" in uris and lib + "perl-base/strict.pm" not in uris


def test_escaping_symlink_is_hashed_inside_the_root(rootfs):
    entries = tomllib.loads(render(rootfs).text)["sgx"]["trusted_files"]
    escape = next(e for e in entries if e["uri"].endswith("/jars/escape"))
    assert escape["sha256"] == hashlib.sha256(b"PRETTY_NAME=image\n").hexdigest()


def test_manifest_keys_and_values(rootfs):
    manifest = tomllib.loads(render(rootfs).text)
    check_manifest(manifest)
    # spark-submit ... job.py runs Python first (launch.py): the job's Python starts the JVM
    assert manifest["libos"]["entrypoint"] == "/usr/bin/python3.11"
    assert manifest["loader"]["argv"] == [
        "/usr/bin/python3",
        "/ppml/bin/ppml-launch.py",
        "/app/job.py",
    ]
    assert (
        manifest["loader"]["entrypoint"]["uri"]
        == "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"
    )
    assert (
        manifest["loader"]["entrypoint"]["sha256"]
        == hashlib.sha256(b"stand-in libsysdb").hexdigest()
    )
    env = manifest["loader"]["env"]
    assert env["FOO"] == 'bar "quoted" \\ back'
    assert env["RUN_ID"] == {"passthrough": True}
    assert env["MALLOC_ARENA_MAX"] == "4"
    assert env["PYSPARK_SUBMIT_ARGS"] == (
        "--master 'local[2]' --driver-memory 2g --driver-class-path "
        "/ppml/lib/ppml-enclave-hadoop.jar --conf "
        "spark.hadoop.fs.file.impl=org.ppmlbuild.enclave.hadoop.NioLocalFileSystem --conf "
        "spark.ui.showConsoleProgress=false pyspark-shell"
    )
    jvm_flags = env["JAVA_TOOL_OPTIONS"].split()
    assert {
        "-XX:ActiveProcessorCount=2",
        "-Dio.netty.transport.noNative=true",
        "-Djava.security.manager=org.ppmlbuild.enclave.NoChildProcesses",
        "-Xbootclasspath/a:/ppml/lib/ppml-enclave-jdk.jar",
    } <= set(jvm_flags)
    sgx = manifest["sgx"]
    assert sgx["enclave_size"] == "8G" and sgx["max_threads"] == 104
    assert sgx["debug"] is False and sgx["remote_attestation"] == "dcap"
    assert sgx["file_check_policy"] == "strict"
    assert sgx["allowed_files"] == ["file:/data/in/"]
    mounts = manifest["fs"]["mounts"]
    assert {
        "type": "encrypted",
        "path": "/data/enc",
        "uri": "file:/data/enc",
        "key_name": "appkey",
    } in mounts
    assert {"type": "tmpfs", "path": "/scratch"} in mounts
    assert {
        "type": "encrypted",
        "path": "/tmp",
        "uri": "file:/tmp",
        "key_name": "ppml-scratch",
    } in mounts
    assert {"path": "/opt/spark/bin/spark-submit", "uri": "file:/ppml/bin/spark-submit"} in mounts
    assert {"path": "/etc/hosts", "uri": "file:/ppml/etc/hosts"} in mounts
    assert manifest["sys"]["stack"]["size"] == "2M"  # Python is the main program
    assert "disallow_subprocesses" not in manifest["sys"]  # Python must start the JVM
    text = render(rootfs).text
    for forbidden in ("insecure__use_host_env", "allow_all_but_log", "insecure__use_cmdline_argv"):
        assert forbidden not in text


def test_insecure_host_argv_only_when_asked(rootfs):
    text = RECIPE.replace("  passthrough_env:", "  insecure_host_argv: true\n  passthrough_env:")
    text = text.replace("  scratch: [/tmp]\n", "")  # the host's argv: no launcher, one process
    manifest = tomllib.loads(render(rootfs, text).text)
    assert manifest["loader"]["insecure__use_cmdline_argv"] is True
    assert "argv" not in manifest["loader"]
    recipe = load_recipe_text(text)
    assert any("INSECURE" in w for w in make_plan(recipe).warnings)


def test_output_is_byte_reproducible(rootfs):
    first = render(rootfs).text
    assert render(rootfs, workers=1).text == first
    assert render(rootfs, workers=7).text == first


def test_missing_entrypoint_and_missing_trusted_file(rootfs):
    with pytest.raises(ManifestError, match=r"app.command\[0\]: 'nosuch' is not an executable"):
        render(rootfs, RECIPE.replace("[spark-submit,", "[nosuch,").replace("scratch: [/tmp]", ""))
    with pytest.raises(ManifestError, match="/etc/missing: no such file"):
        render(rootfs, RECIPE.replace("trusted: [/etc/os-release]", "trusted: [/etc/missing]"))
    with pytest.raises(ManifestError, match="is a directory; write it with a trailing '/'"):
        render(rootfs, RECIPE.replace("trusted: [/etc/os-release]", "trusted: [/etc]"))


def test_missing_gramine_install(rootfs):
    (rootfs / "usr/lib/x86_64-linux-gnu/gramine/libsysdb.so").unlink()
    with pytest.raises(ManifestError, match="libos.prefix"):
        render(rootfs)


def test_schema_rejects_keys_gramine_rejects():
    base = {
        "fs": {"mounts": []},
        "libos": {"entrypoint": "/x"},
        "loader": {"entrypoint": {"uri": "file:/y"}},
    }
    check_manifest(base)
    for bad, match in [
        ({"sgx": {"thread_num": 4}}, "sgx.thread_num"),
        ({"sgx": {"enclave_size": 4096}}, "sgx.enclave_size: expected str"),
        ({"loader": {"entrypoint": {"uri": "file:/y"}, "preload": "x"}}, "loader.preload"),
        ({"sgx": {"file_check_policy": "lax"}}, "must be one of"),
        ({"sgx": {"max_threads": True}}, "expected int"),
    ]:
        with pytest.raises(ManifestError, match=match):
            check_manifest({**base, **bad})
    with pytest.raises(ManifestError, match="libos.entrypoint: required"):
        check_manifest({**base, "libos": {}})


def test_manifest_command_writes_outputs(rootfs, tmp_path, capsys):
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    (recipe_dir / "job.py").write_text("print('job')\n")
    (recipe_dir / "recipe.yaml").write_text(RECIPE)
    out = tmp_path / "out"
    args = [
        "manifest",
        str(recipe_dir / "recipe.yaml"),
        "--rootfs",
        str(rootfs),
        "--output-dir",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    text = (out / "spark-demo.manifest").read_text()
    listing = json.loads((out / "trusted-files.json").read_text())
    assert (
        summary["trusted_file_count"]
        == len(listing["files"])
        == len(tomllib.loads(text)["sgx"]["trusted_files"])
    )
    for item in listing["files"]:
        if item["size"] is not None and item["path"].startswith("/opt/spark-3.5.3/jars/lib"):
            assert (rootfs / item["path"][1:]).stat().st_size == item["size"]
    assert main(args) == 0
    assert (out / "spark-demo.manifest").read_text() == text


def test_manifest_command_bad_input_writes_nothing(rootfs, tmp_path, capsys):
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    (recipe_dir / "job.py").write_text("print('job')\n")
    (recipe_dir / "recipe.yaml").write_text(RECIPE.replace("[/etc/os-release]", "[/nope]"))
    out = tmp_path / "out"
    assert (
        main(
            [
                "manifest",
                str(recipe_dir / "recipe.yaml"),
                "--rootfs",
                str(rootfs),
                "--output-dir",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recipe.yaml: sgx.trusted_files: file:/nope" in err[0]
    assert not out.exists() or not any(out.iterdir())
    assert (
        main(
            [
                "manifest",
                str(recipe_dir / "recipe.yaml"),
                "--rootfs",
                str(tmp_path / "none"),
                "--output-dir",
                str(out),
            ]
        )
        == 2
    )


def test_engine_managed_files_are_never_trusted(rootfs):
    (rootfs / "etc/hostname").write_text("placeholder\n")
    with pytest.raises(ManifestError, match="replaced by the container engine"):
        render(rootfs, RECIPE.replace("trusted: [/etc/os-release]", "trusted: [/etc/hostname]"))
    manifest = tomllib.loads(
        render(rootfs, RECIPE.replace("trusted: [/etc/os-release]", "trusted: [/etc/]")).text
    )
    uris = {e["uri"] for e in manifest["sgx"]["trusted_files"]}
    assert "file:/etc/passwd" in uris and "file:/etc/hostname" not in uris
