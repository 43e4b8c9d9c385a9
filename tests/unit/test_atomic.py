"""Every command that writes several files writes them all or none, and an output path that
cannot be written fails first, with one line and exit 2 (never a traceback or half an output).

Failures are injected where the file system would give them: the write(2) of one staged file
(ENOSPC) or the rename(2) that puts one file in place (EIO), chosen by the destination's name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rootfs_factory import add_ppml_support, make_spark_rootfs

from ppml_build.atomic import Output, OutputError, check_writable, write_all_or_none
from ppml_build.cli import main
from ppml_build.gramine import build as gramine_build
from ppml_build.image import app_layer
from ppml_build.occlum import build as occlum_build
from ppml_build.plan import make_plan
from ppml_build.recipe import load_recipe_text

REPO = Path(__file__).resolve().parents[2]
SPARK_RECIPE = REPO / "recipes" / "spark" / "pyspark-sql-agg" / "recipe.yaml"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/ppml/app@{DIGEST}"
GRAMINE_LIB = "usr/lib/x86_64-linux-gnu/gramine"
MANIFEST = """\
libos.entrypoint = "/app/run.sh"
loader.log_level = "error"
fs.mounts = [{ path = "/app", uri = "file:/app" }]
sgx.trusted_files = ["file:/app/"]
sgx.enclave_size = "16M"
"""
RECORD = {
    "mrenclave": "11" * 32,
    "mrsigner": "22" * 32,
    "isv_prod_id": 1,
    "isv_svn": 2,
    "debug": False,
}


# --- helpers ---------------------------------------------------------------------------------


def run(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("ppml-build: error: "), err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under ``directory`` (hidden temp files too): name → bytes (None: a dir)."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
    }


def _fd_name(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


@contextlib.contextmanager
def failing_write(monkeypatch, name: str, code: int = errno.ENOSPC):
    """write(2) to the staged temp file of output ``name`` fails (the disk fills up there)."""
    real = os.write
    hits = []

    def write(fd, data):
        if _fd_name(fd).startswith(f".{name}."):
            hits.append(name)
            raise OSError(code, os.strerror(code))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    yield hits
    monkeypatch.setattr(os, "write", real)
    assert hits, f"no write to {name} was attempted"


@contextlib.contextmanager
def failing_rename(monkeypatch, name: str):
    """The rename that puts output ``name`` in place fails (after earlier ones succeeded)."""
    real = os.replace
    hits = []

    def replace(src, dst, **kwargs):
        if os.path.basename(dst) == name:
            hits.append(name)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    yield hits
    monkeypatch.setattr(os, "replace", real)
    assert hits, f"no rename to {name} was attempted"


# --- the helper itself -----------------------------------------------------------------------


def test_all_files_land_with_their_modes_and_no_temp_files(tmp_path):
    out = tmp_path / "new" / "dir"
    written = write_all_or_none(
        {
            out / "a.json": "{}\n",
            out / "key.pem": Output(b"k", 0o600),
            out / "run.sh": Output("#!/bin/sh\n", 0o755),
        }
    )
    assert written == [out / "a.json", out / "key.pem", out / "run.sh"]
    assert snapshot(out) == {"a.json": b"{}\n", "key.pem": b"k", "run.sh": b"#!/bin/sh\n"}
    assert [stat.S_IMODE((out / n).stat().st_mode) for n in ("a.json", "key.pem", "run.sh")] == [
        0o644,
        0o600,
        0o755,
    ]


def test_a_failed_write_leaves_no_directory_it_created(tmp_path, monkeypatch):
    out = tmp_path / "new" / "dir"
    with failing_write(monkeypatch, "b"), pytest.raises(OutputError) as caught:
        write_all_or_none({out / "a": "1", out / "b": "2"}, option="--output-dir")
    assert str(caught.value) == (
        f"--output-dir: cannot write {out / 'b'} (no space left on "
        "the device); free some space or write elsewhere; nothing "
        "was written"
    )
    assert snapshot(tmp_path) == {}


_names = st.lists(
    st.sampled_from(["a", "b.sig", "c.json", "d.manifest.sgx", "e"]),
    min_size=1,
    max_size=5,
    unique=True,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=_names,
    old=st.sets(st.sampled_from(["a", "b.sig", "c.json", "e"])),
    data=st.data(),
    at_rename=st.booleans(),
)
def test_any_failure_leaves_the_directory_as_it_was(monkeypatch, names, old, data, at_rename):
    failing = data.draw(st.sampled_from(names))
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        for name in old:
            (out / name).write_text(f"old {name}\n")
        before = snapshot(out)
        inject = failing_rename if at_rename else failing_write
        with inject(monkeypatch, failing), pytest.raises(OutputError):
            write_all_or_none({out / name: f"new {name}\n" for name in names})
        assert snapshot(out) == before


def test_the_same_file_twice_is_refused(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="written twice"):
        write_all_or_none({tmp_path / "a": "1", tmp_path / "link" / "a": "2"})
    assert snapshot(tmp_path) == before


def test_check_writable_refuses_paths_that_cannot_be_written(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "plain").write_text("x")
    plain_sub = tmp_path / "plain" / "sub" / "out"
    refused = [
        (
            tmp_path / "dir",
            False,
            f"--output {tmp_path / 'dir'}: is a directory; give a file path for --output",
        ),
        (
            tmp_path / "plain",
            True,
            f"--output {tmp_path / 'plain'}: exists and is not a directory; choose another --output",
        ),
        (
            plain_sub,
            False,
            (
                f"--output {plain_sub}: {tmp_path / 'plain'} is a file, not a "
                "directory; choose another --output"
            ),
        ),
        (
            Path("/dev/null"),
            False,
            "--output /dev/null: exists and is not a regular file; choose another --output",
        ),
    ]
    for path, directory, message in refused:
        with pytest.raises(OutputError) as caught:
            check_writable(path, "--output", directory=directory)
        assert str(caught.value) == message
    before = snapshot(tmp_path)
    check_writable(tmp_path / "fresh" / "deeper", "--output-dir", directory=True)
    check_writable(tmp_path / "dir" / "file", "--output")
    assert snapshot(tmp_path) == before  # the probe leaves nothing behind


def test_check_writable_names_a_read_only_location(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(OutputError) as caught:
        check_writable(tmp_path / "out", "--output-dir", directory=True)
    assert str(caught.value) == (
        f"--output-dir {tmp_path / 'out'}: cannot create files in "
        f"{tmp_path} (read-only file system); choose a writable "
        "--output-dir"
    )


# --- sign --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_pem(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "enclave-key.pem"
    assert main(["keygen", "--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, standin_libsysdb) -> Path:
    root = tmp_path_factory.mktemp("rootfs")
    (root / GRAMINE_LIB).mkdir(parents=True)
    shutil.copy(standin_libsysdb, root / GRAMINE_LIB / "libsysdb.so")
    (root / "app").mkdir()
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    return root


@pytest.fixture
def sign_cmd(tmp_path, key_pem, image_root, standin_libpal):
    (tmp_path / "app.manifest").write_text(MANIFEST)
    return [
        "sign",
        "--manifest",
        tmp_path / "app.manifest",
        "--libpal",
        standin_libpal,
        "--key",
        key_pem,
        "--output",
        tmp_path / "app.manifest.sgx",
        "--sigfile",
        tmp_path / "app.sig",
        "--chroot",
        image_root,
    ]


@pytest.mark.parametrize(
    "inject, name",
    [(failing_write, "app.sig"), (failing_rename, "app.sig"), (failing_write, "app.manifest.sgx")],
)
def test_sign_writes_neither_file_when_one_fails(
    capsys, monkeypatch, tmp_path, sign_cmd, inject, name
):
    before = snapshot(tmp_path)
    with inject(monkeypatch, name):
        code, err = run(capsys, *sign_cmd)
    assert code == 2
    assert_one_line_error(err, f"cannot write {tmp_path / name}", "nothing was written")
    assert snapshot(tmp_path) == before


def test_sign_over_old_outputs_keeps_them_when_the_sig_fails(
    capsys, monkeypatch, tmp_path, sign_cmd
):
    assert run(capsys, *sign_cmd, "--date", "2020-01-01")[0] == 0
    before = snapshot(tmp_path)
    (tmp_path / "app.manifest").write_text(MANIFEST.replace("16M", "32M"))  # a new MRENCLAVE
    before["app.manifest"] = (tmp_path / "app.manifest").read_bytes()
    with failing_rename(monkeypatch, "app.sig"):
        code, err = run(capsys, *sign_cmd)
    assert code == 2
    assert_one_line_error(err, "--sigfile", "app.sig")
    assert snapshot(tmp_path) == before  # the first pair, whole; no temp or backup files


def test_two_step_sign_writes_no_signing_data_without_the_pending_state(
    capsys, monkeypatch, tmp_path, sign_cmd
):
    key = sign_cmd.index("--key")
    step1 = sign_cmd[:key] + sign_cmd[key + 2 :] + ["--signing-data-out", tmp_path / "data.bin"]
    before = snapshot(tmp_path)
    with failing_write(monkeypatch, "app.sig.pending"):
        code, err = run(capsys, *step1)
    assert code == 2
    assert_one_line_error(err, "app.sig.pending", "no space left")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("option", ["--output", "--sigfile"])
def test_sign_refuses_an_unwritable_output_before_reading_the_key(
    capsys, tmp_path, sign_cmd, option
):
    (tmp_path / "plain").write_text("a file, not a directory")
    args = list(sign_cmd)
    args[args.index(option) + 1] = tmp_path / "plain" / "out"
    args[args.index("--key") + 1] = tmp_path / "no-such-key.pem"  # never reached
    before = snapshot(tmp_path)
    code, err = run(capsys, *args)
    assert code == 2
    assert_one_line_error(err, f"{option} {tmp_path / 'plain' / 'out'}", "is a file")
    assert snapshot(tmp_path) == before


def test_sign_refuses_a_directory_as_sigfile(capsys, tmp_path, sign_cmd):
    (tmp_path / "app.sig").mkdir()
    code, err = run(capsys, *sign_cmd)
    assert code == 2
    assert_one_line_error(err, "--sigfile", "is a directory")
    assert not (tmp_path / "app.manifest.sgx").exists()


# --- manifest ----------------------------------------------------------------------------------

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", /app/job.py]
"""


@pytest.fixture
def manifest_cmd(tmp_path):
    add_ppml_support(make_spark_rootfs(tmp_path / "rootfs"), make_plan(load_recipe_text(RECIPE)))
    (tmp_path / "job.py").write_text("print('job')\n")
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    return [
        "manifest",
        tmp_path / "recipe.yaml",
        "--rootfs",
        tmp_path / "rootfs",
        "--output-dir",
        tmp_path / "out",
        "--no-cache",
    ]


@pytest.mark.parametrize(
    "inject, name",
    [(failing_write, "spark-demo.manifest"), (failing_rename, "spark-demo.manifest")],
)
def test_manifest_writes_no_trusted_file_list_without_the_manifest(
    capsys, monkeypatch, tmp_path, manifest_cmd, inject, name
):
    with inject(monkeypatch, name):
        code, err = run(capsys, *manifest_cmd)
    assert code == 2
    assert_one_line_error(err, "--output-dir", name)
    assert not (tmp_path / "out").exists()  # not even the directory it would have made


def test_manifest_keeps_the_old_pair_when_the_new_one_fails(
    capsys, monkeypatch, tmp_path, manifest_cmd
):
    assert run(capsys, *manifest_cmd)[0] == 0
    before = snapshot(tmp_path / "out")
    (tmp_path / "recipe.yaml").write_text(RECIPE + "files: {trusted: [/etc/os-release]}\n")
    with failing_rename(monkeypatch, "spark-demo.manifest"):
        assert run(capsys, *manifest_cmd)[0] == 2
    assert snapshot(tmp_path / "out") == before


def test_manifest_refuses_an_unwritable_output_dir_before_hashing(capsys, tmp_path, manifest_cmd):
    (tmp_path / "plain").write_text("x")
    args = list(manifest_cmd)
    args[args.index("--output-dir") + 1] = tmp_path / "plain" / "out"
    args[args.index("--rootfs") + 1] = tmp_path / "no-rootfs"  # would be the next error
    code, err = run(capsys, *args)
    assert code == 2
    assert_one_line_error(err, f"--output-dir {tmp_path / 'plain' / 'out'}", "is a file")


# --- build (Gramine and Occlum outputs) --------------------------------------------------------


def _gramine_outputs(out: Path, policies: list[str]) -> list[Path]:
    rendered = SimpleNamespace(data=b"[loader]\n", trusted_files=[])
    return gramine_build.write_outputs(
        out, SimpleNamespace(name="app"), rendered, b"S" * 1808, RECORD, policies, "recipe.yaml"
    )


def _occlum_outputs(out: Path, policies: list[str]) -> list[Path]:
    rendered = SimpleNamespace(occlum_json_text="{}\n", bom_text="includes: []\n")
    enclave = SimpleNamespace(sigstruct=SimpleNamespace(to_bytes=lambda: b"S" * 1808))
    return occlum_build.write_outputs(
        out, SimpleNamespace(name="app"), rendered, enclave, RECORD, policies, "recipe.yaml"
    )


@pytest.mark.parametrize("write", [_gramine_outputs, _occlum_outputs])
def test_build_outputs_all_land_with_the_record_renamed_last(tmp_path, monkeypatch, write):
    order = []
    real = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: order.append(os.path.basename(dst)) or real(src, dst)
    )
    policies = write(tmp_path / "out", ["maa", "gramine-ratls"])
    assert [p.name for p in policies] == ["maa-policy.txt", "maa-policy.jwt", "ra-tls.env"]
    assert order[-1] == "measurement.json" and len(order) == len(set(order)) == 7
    assert sorted(snapshot(tmp_path / "out")) == sorted(order)


@pytest.mark.parametrize("write", [_gramine_outputs, _occlum_outputs])
@pytest.mark.parametrize(
    "inject, name",
    [
        (failing_write, "measurement.json"),
        (failing_rename, "measurement.json"),
        (failing_write, "maa-policy.jwt"),
    ],
)
def test_build_outputs_all_or_none(tmp_path, monkeypatch, write, inject, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / "app.sig").write_bytes(b"old sig")
    (out / "measurement.json").write_text('{"old": true}\n')
    before = snapshot(out)
    with inject(monkeypatch, name), pytest.raises(OutputError) as caught:
        write(out, ["maa"])
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"--output-dir: cannot write {out / name}")
    assert snapshot(out) == before


def test_build_refuses_an_unwritable_output_dir_before_any_docker_work(
    capsys, tmp_path, monkeypatch
):
    def no_docker(*args, **kwargs):
        raise AssertionError("Docker work started before the output directory was checked")

    monkeypatch.setattr(gramine_build, "app_image", no_docker)
    monkeypatch.setattr(app_layer, "connect", no_docker)
    (tmp_path / "plain").write_text("x")
    code, err = run(
        capsys,
        "build",
        SPARK_RECIPE,
        "--key",
        tmp_path / "no-such-key.pem",
        "--output-dir",
        tmp_path / "plain" / "out",
    )
    assert code == 2
    assert_one_line_error(err, f"--output-dir {tmp_path / 'plain' / 'out'}", "is a file")


# --- k8s, policy, init -------------------------------------------------------------------------


def test_k8s_writes_no_file_when_one_fails(capsys, monkeypatch, tmp_path):
    out = tmp_path / "k8s"
    assert run(capsys, "k8s", SPARK_RECIPE, "--image", IMAGE, "--output-dir", out)[0] == 0
    before = snapshot(out)
    names = sorted(before)
    assert len(names) >= 2
    for name in (names[0], names[-1]):
        with failing_write(monkeypatch, name):
            code, err = run(
                capsys,
                "k8s",
                SPARK_RECIPE,
                "--image",
                IMAGE.replace("ab", "cd"),
                "--output-dir",
                out,
            )
        assert code == 2
        assert_one_line_error(err, "--output-dir", name, "no space left")
        assert snapshot(out) == before


def test_k8s_refuses_an_unwritable_output_dir(capsys, tmp_path):
    (tmp_path / "plain").write_text("x")
    code, err = run(
        capsys, "k8s", SPARK_RECIPE, "--image", IMAGE, "--output-dir", tmp_path / "plain"
    )
    assert code == 2
    assert_one_line_error(err, "--output-dir", "exists and is not a directory")


def test_policy_with_two_files_writes_both_or_neither(capsys, monkeypatch, tmp_path):
    record = tmp_path / "measurement.json"
    record.write_text(json.dumps(RECORD))
    (tmp_path / "policies").mkdir()
    before = snapshot(tmp_path)
    with failing_write(monkeypatch, "maa-policy.jwt"):
        code, err = run(capsys, "policy", record, "-f", "maa", "-o", tmp_path / "policies")
    assert code == 2
    notes = [line for line in err.splitlines() if line.startswith("ppml-build: note: ")]
    assert_one_line_error(err.split("\n", len(notes))[-1], "--output", "maa-policy.jwt")
    assert snapshot(tmp_path) == before


def test_init_writes_no_recipe_without_its_job(capsys, monkeypatch, tmp_path):
    with failing_write(monkeypatch, "recipe.yaml", errno.EDQUOT):
        code, err = run(capsys, "init", "spark", tmp_path / "new")
    assert code == 2
    assert_one_line_error(err, "DIRECTORY", "recipe.yaml", "quota")
    assert snapshot(tmp_path) == {}


def test_keygen_leaves_no_half_key_when_the_disk_fills(capsys, monkeypatch, tmp_path):
    with failing_write(monkeypatch, "k.pem"):
        code, err = run(capsys, "keygen", "--output", tmp_path / "k.pem")
    assert code == 2
    assert_one_line_error(err, f"--output {tmp_path / 'k.pem'}", "cannot write the key")
    assert snapshot(tmp_path) == {}
