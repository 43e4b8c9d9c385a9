"""The rendered manifest and the signer agree: what `manifest` writes is exactly what gets measured."""

from __future__ import annotations

import json
import shutil

from rootfs_factory import add_ppml_support, make_spark_rootfs

from ppml_build.cli import main
from ppml_build.plan import make_plan
from ppml_build.recipe import load_recipe_text

RECIPE = """\
apiVersion: ppml-build/v1
kind: spark
name: spark-demo
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", --driver-memory, 1g, /app/job.py]
enclave: {isv_prod_id: 7, isv_svn: 3}
"""


def test_manifest_then_sign_is_a_fixed_point(tmp_path, standin_libpal, capsys):
    rootfs = make_spark_rootfs(tmp_path / "rootfs", libpal=standin_libpal.read_bytes())
    add_ppml_support(rootfs, make_plan(load_recipe_text(RECIPE)))
    (tmp_path / "job.py").write_text("print('job')\n")
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    out = tmp_path / "out"
    assert (
        main(
            [
                "manifest",
                str(tmp_path / "recipe.yaml"),
                "--rootfs",
                str(rootfs),
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    key = tmp_path / "key.pem"
    assert main(["keygen", "--output", str(key)]) == 0
    libpal = rootfs / "usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so"
    capsys.readouterr()
    assert (
        main(
            [
                "sign",
                "--manifest",
                str(out / "spark-demo.manifest"),
                "--libpal",
                str(libpal),
                "--key",
                str(key),
                "--output",
                str(out / "spark-demo.manifest.sgx"),
                "--sigfile",
                str(out / "spark-demo.sig"),
                "--chroot",
                str(rootfs),
                "--date",
                "2026-01-02",
                "--json",
            ]
        )
        == 0
    )
    signed = json.loads(capsys.readouterr().out)
    # Gramine's signer re-serialises the manifest; ours must already be that fixed point.
    assert (out / "spark-demo.manifest.sgx").read_bytes() == (
        out / "spark-demo.manifest"
    ).read_bytes()
    assert signed["isv_prod_id"] == 7 and signed["isv_svn"] == 3 and signed["debug"] is False
    assert (
        main(
            [
                "measure",
                "--manifest",
                str(out / "spark-demo.manifest.sgx"),
                "--libpal",
                str(libpal),
                "--json",
            ]
        )
        == 0
    )
    measured = json.loads(capsys.readouterr().out)
    assert measured["mrenclave"] == signed["mrenclave"]
    assert measured["enclave_size"] == 4 << 30
    # Changing one trusted file changes the manifest and so MRENCLAVE.
    (rootfs / "opt/spark-3.5.3/jars/lib-03.jar").write_bytes(b"tampered")
    shutil.rmtree(out)
    assert (
        main(
            [
                "manifest",
                str(tmp_path / "recipe.yaml"),
                "--rootfs",
                str(rootfs),
                "--output-dir",
                str(out),
                "--no-cache",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "measure",
                "--manifest",
                str(out / "spark-demo.manifest"),
                "--libpal",
                str(libpal),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["mrenclave"] != signed["mrenclave"]
