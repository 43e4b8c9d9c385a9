"""Where an encrypted mount's key comes from (files.keys, secret_provisioning): the recipe's
checks, the manifest Gramine gets, the record, the k8s output and the verifier's policy.

The secret-provisioning keys are checked against Gramine 1.9's own example
(CI-Examples/ra-tls-secret-prov/secret_prov_pf/client.manifest.template) and
Documentation/attestation.rst, written out here, and against the example itself when Gramine's
source tarball is at hand.
"""

from __future__ import annotations

import os
import re
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from kubernetes.client import V1ConfigMap, V1Pod
from rootfs_factory import add_ppml_support, make_spark_rootfs
from test_k8s import assert_valid

from ppml_build.cli import main
from ppml_build.errors import ManifestError, RecipeError
from ppml_build.gramine.manifest import render_manifest
from ppml_build.gramine.overrides import ManifestOptions
from ppml_build.gramine.schema import check_manifest
from ppml_build.image.hashing import FileHasher
from ppml_build.image.rootfs import DirRootFS
from ppml_build.k8s import parse_image, render_k8s
from ppml_build.pipeline.outputs import record_fields
from ppml_build.plan import make_plan
from ppml_build.policy.gramine_ratls import render as render_ratls
from ppml_build.policy.model import EnclaveValues, make_spec
from ppml_build.recipe import load_recipe, load_recipe_text

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "recipes/spark/spark-encrypted-csv"
IMAGE = "127.0.0.1:5000/ppml/app@sha256:" + "ab" * 32
SECRET_PROV_LIB = "/usr/lib/x86_64-linux-gnu/libsecret_prov_attest.so"
TEST_KEY = "7e577e577e577e577e577e577e577e57"

BASE = """\
apiVersion: ppml-build/v1
kind: spark
name: enc
base: {image: "127.0.0.1:5000/ppml/spark:1"}
app:
  files: [{src: job.py, dest: /app/job.py}]
  command: [spark-submit, --master, "local[2]", /app/job.py]
"""

PROVISIONED = (
    BASE
    + """\
files:
  encrypted:
    - {path: /data/in, uri: "file:/data/in", key_name: data}
    - {path: /data/out, uri: "file:/srv/out", key_name: data}
  keys:
    data: {source: secret-provisioning}
  scratch: [/tmp]
secret_provisioning:
  ca_chain: /app/ca.crt
"""
)


def recipe_error(text: str) -> str:
    with pytest.raises(RecipeError) as caught:
        load_recipe_text(text)
    return str(caught.value)


def render(tmp_path: Path, text: str, **options):
    recipe = load_recipe_text(text)
    plan = make_plan(recipe)
    root = add_ppml_support(make_spark_rootfs(tmp_path / "rootfs"), plan)
    (root / SECRET_PROV_LIB.lstrip("/")).write_bytes(b"\x7fELF secret_prov_attest")
    (root / "app/ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    fs = DirRootFS(root, FileHasher(use_cache=False))
    rendered = render_manifest(recipe, plan, fs, options=ManifestOptions(**options))
    return recipe, plan, rendered, tomllib.loads(rendered.text)


# --- the recipe's checks -------------------------------------------------------------------------


def test_every_encrypted_mount_needs_a_key_source_named_at_its_line():
    text = BASE + 'files:\n  encrypted: [{path: /d, uri: "file:/d", key_name: k}]\n'
    message = recipe_error(text)
    assert message.startswith("recipe.yaml:9:")
    assert "files.encrypted[0].key_name: 'k' has no source" in message
    assert "files.keys: {k: {source: secret-provisioning}}" in message


@pytest.mark.parametrize(
    "files, extra, says",
    [
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: a}, "
            "{path: /b, uri: 'file:/b', key_name: b}]\n"
            "  keys: {a: {source: secret-provisioning}, b: {source: secret-provisioning}}\n",
            "secret_provisioning: {ca_chain: /app/ca.crt}\n",
            "sets one key per enclave (SECRET_PROVISION_SET_KEY",
        ),
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: a}]\n"
            "  keys: {a: {source: secret-provisioning}}\n",
            "",
            "files.keys.a.source: secret-provisioning needs a secret_provisioning: section",
        ),
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: a}]\n  keys: {a: {source: app}}\n",
            "secret_provisioning: {ca_chain: /app/ca.crt}\n",
            "secret_provisioning: no files.keys entry has source secret-provisioning",
        ),
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: a}]\n"
            "  keys: {a: {source: app}, b: {source: app}}\n",
            "",
            "files.keys.b: no files.encrypted mount uses this key",
        ),
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: a}]\n"
            "  keys: {a: {source: insecure-test-key}}\n",
            "",
            "insecure_test_key goes with source insecure-test-key",
        ),
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: a}]\n"
            "  keys: {a: {source: insecure-test-key, insecure_test_key: abc}}\n",
            "",
            "must be 32 hex digits",
        ),
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: ppml-scratch}]\n"
            "  keys: {ppml-scratch: {source: app}}\n",
            "",
            "is ppml-build's own (files.scratch)",
        ),
        (
            "  encrypted: [{path: /a, uri: 'file:/a', key_name: a}]\n"
            "  keys: {a: {source: secret-provisioning}}\n",
            "secret_provisioning: {ca_chain: /app/ca.crt, servers: ['kms']}\n",
            "'kms': expected host:port",
        ),
    ],
)
def test_key_sources_that_cannot_work_are_refused_with_one_line(files, extra, says):
    message = recipe_error(BASE + "files:\n" + files + extra)
    assert says in message, message
    assert "\n" not in message and re.match(r"recipe\.yaml:\d+:\d+: ", message)


def test_provisioning_needs_an_attested_gramine_enclave():
    text = PROVISIONED + "enclave: {remote_attestation: none}\n"
    assert "enclave.remote_attestation: secret provisioning attests" in recipe_error(text)
    occlum = BASE.replace("app:\n", 'libos: {type: occlum, version: "0.31"}\napp:\n') + (
        "files:\n  encrypted: [{path: /a, uri: 'file:/a'}]\n  keys: {default: {source: app}}\n"
    )
    assert "files.keys: Occlum 0.31 keys every encrypted (SEFS) mount" in recipe_error(occlum)


# --- the manifest --------------------------------------------------------------------------------


def test_secret_provisioning_sets_what_gramines_example_sets(tmp_path):
    _, _, rendered, manifest = render(tmp_path, PROVISIONED)
    env = manifest["loader"]["env"]
    # secret_prov_pf/client.manifest.template and Documentation/attestation.rst (v1.9):
    # LD_PRELOAD of libsecret_prov_attest.so, CONSTRUCTOR=1, SET_KEY=<the mount's key name>,
    # CA_CHAIN_PATH=<a trusted file>, SERVERS (fixed, or here left to the host).
    assert env["LD_PRELOAD"].split(":")[0] == SECRET_PROV_LIB
    assert env["SECRET_PROVISION_CONSTRUCTOR"] == "1"
    assert env["SECRET_PROVISION_SET_KEY"] == "data"
    assert env["SECRET_PROVISION_CA_CHAIN_PATH"] == "/app/ca.crt"
    assert env["SECRET_PROVISION_SERVERS"] == {"passthrough": True}
    assert manifest["sgx"]["remote_attestation"] == "dcap"
    trusted = {entry["uri"] for entry in manifest["sgx"]["trusted_files"]}
    assert "file:/app/ca.crt" in trusted  # the host cannot swap the server's CA
    assert f"file:{SECRET_PROV_LIB}" in trusted or "file:/usr/lib/x86_64-linux-gnu/" in str(
        manifest["sgx"]["trusted_files"]
    )
    encrypted = [m for m in manifest["fs"]["mounts"] if m.get("type") == "encrypted"]
    assert {
        "path": "/data/out",
        "uri": "file:/srv/out",
        "key_name": "data",
        "type": "encrypted",
    } in (encrypted)
    check_manifest(manifest, "1.9")  # Gramine's schema: every key known, every type right
    # No key material: no fixed keys, and no value outside the file hashes looks like one.
    assert "insecure__keys" not in rendered.text
    hashes = {entry["sha256"] for entry in manifest["sgx"]["trusted_files"]}
    hashes.add(manifest["loader"]["entrypoint"]["sha256"])
    for found in re.findall(r"[0-9a-fA-F]{32,}", rendered.text):
        assert found in hashes, found


def test_fixed_servers_are_measured_with_the_manifest(tmp_path):
    text = PROVISIONED.replace(
        "  ca_chain: /app/ca.crt\n",
        "  ca_chain: /app/ca.crt\n  servers: [kms.example.com:4433, backup:443]\n",
    )
    env = render(tmp_path, text)[3]["loader"]["env"]
    assert env["SECRET_PROVISION_SERVERS"] == "kms.example.com:4433;backup:443"


def test_gramines_own_example_names_the_same_variables(tmp_path):
    """Against the example itself, from Gramine's source tarball when it is here."""
    tarball = REPO.parent / "shared/gramine/gramine-1.9.tar.gz"
    tarball = Path(os.environ.get("PPML_GRAMINE_SOURCE", tarball.parent)) / tarball.name
    if not tarball.is_file():
        pytest.skip(f"Gramine's source tarball is not at {tarball}")
    with tarfile.open(tarball) as archive:
        member = next(
            m
            for m in archive.getmembers()
            if m.name.endswith("ra-tls-secret-prov/secret_prov_pf/client.manifest.template")
        )
        template = archive.extractfile(member).read().decode()
    theirs = dict(
        re.findall(r'^loader\.env\.(SECRET_PROVISION_\w+|LD_PRELOAD) = "([^"]*)"', template, re.M)
    )
    env = render(tmp_path, PROVISIONED)[3]["loader"]["env"]
    assert set(theirs) == {
        name for name in env if name.startswith(("SECRET_PROVISION_", "LD_PRELOAD"))
    }
    assert os.path.basename(env["LD_PRELOAD"].split(":")[0]) == theirs["LD_PRELOAD"]
    assert env["SECRET_PROVISION_CONSTRUCTOR"] == theirs["SECRET_PROVISION_CONSTRUCTOR"]
    assert 'sgx.remote_attestation = "dcap"' in template


def test_a_test_key_needs_the_insecure_flag_and_lands_in_fs_insecure_keys(tmp_path):
    text = PROVISIONED.replace(
        "{source: secret-provisioning}",
        f"{{source: insecure-test-key, insecure_test_key: {TEST_KEY.upper()}}}",
    ).split("secret_provisioning:")[0]
    with pytest.raises(ManifestError, match="pass --allow-insecure-manifest"):
        render(tmp_path, text)
    _, _, rendered, manifest = render(tmp_path / "2", text, allow_insecure_manifest=True)
    assert manifest["fs"]["insecure__keys"] == {"data": TEST_KEY}
    assert any("INSECURE: files.keys.data" in warning for warning in rendered.warnings)
    assert "SECRET_PROVISION_SET_KEY" not in manifest["loader"]["env"]
    check_manifest(manifest, "1.9")


def test_an_app_key_sets_nothing(tmp_path):
    text = PROVISIONED.replace("{source: secret-provisioning}", "{source: app}").split(
        "secret_provisioning:"
    )[0]
    manifest = render(tmp_path, text)[3]
    assert "insecure__keys" not in manifest.get("fs", {})
    assert not any(name.startswith("SECRET_PROVISION") for name in manifest["loader"]["env"])


# --- record, policy, k8s -------------------------------------------------------------------------


def _record(recipe, plan) -> dict:
    summary = {
        "mrenclave": "11" * 32,
        "mrsigner": "22" * 32,
        "isv_prod_id": 5,
        "isv_svn": 1,
        "debug": False,
        "attributes": {},
        "misc_select": "0x0",
        "date": "2026-11-01",
    }
    return record_fields(
        recipe=recipe,
        plan=plan,
        summary=summary,
        image="i",
        image_id="i",
        pushed_digest=None,
        base_digest="d",
        enclave_size="4G",
        edmm=False,
        manifest_sha256="00",
        trusted_files={},
    )


def test_the_record_names_keys_and_sources_and_the_policy_tells_the_server(tmp_path):
    recipe = load_recipe_text(PROVISIONED)
    record = _record(recipe, make_plan(recipe))
    assert record["encryption_keys"] == {"data": "secret-provisioning"}
    assert record["secret_provisioning"] == {
        "key": "data",
        "servers": None,
        "ca_chain": "/app/ca.crt",
    }
    policy = render_ratls(make_spec(EnclaveValues.from_mapping(record))).files["ra-tls.env"]
    assert "encrypted-files key 'data'" in policy and "16 raw bytes" in policy
    assert "RA_TLS_MRENCLAVE=" + "11" * 32 in policy
    # A test key stays out of the record: names and sources only.
    test = load_recipe_text(
        BASE + "files:\n  encrypted: [{path: /a, uri: 'file:/a', key_name: t}]\n"
        f"  keys: {{t: {{source: insecure-test-key, insecure_test_key: {TEST_KEY}}}}}\n"
    )
    record = _record(test, make_plan(test))
    assert TEST_KEY not in str(record) and record["encryption_keys"] == {"t": "insecure-test-key"}
    assert record["secret_provisioning"] is None


def test_k8s_carries_the_server_address_as_a_configmap_never_a_key():
    recipe = load_recipe_text(PROVISIONED)
    plan = make_plan(recipe)
    with pytest.raises(RecipeError, match="--secret-prov-servers HOST:PORT"):
        render_k8s(recipe, plan, parse_image(IMAGE))
    with pytest.raises(RecipeError, match="not host:port"):
        render_k8s(recipe, plan, parse_image(IMAGE), secret_prov_servers="kms")
    bundle = render_k8s(recipe, plan, parse_image(IMAGE), secret_prov_servers="kms.ns.svc:4433")
    config = yaml.safe_load(bundle.files["secret-provisioning.yaml"])
    assert_valid(V1ConfigMap, config)
    assert config["data"] == {"servers": "kms.ns.svc:4433"}
    for name in ("driver-pod-template.yaml", "executor-pod-template.yaml"):
        pod = yaml.safe_load(bundle.files[name])
        assert_valid(V1Pod, pod)
        (container,) = pod["spec"]["containers"]
        assert container["env"] == [
            {
                "name": "SECRET_PROVISION_SERVERS",
                "valueFrom": {
                    "configMapKeyRef": {"name": config["metadata"]["name"], "key": "servers"}
                },
            }
        ]
    fixed = load_recipe_text(
        PROVISIONED.replace(
            "  ca_chain: /app/ca.crt\n", "  ca_chain: /app/ca.crt\n  servers: [kms:4433]\n"
        )
    )
    with pytest.raises(RecipeError, match="fixes secret_provisioning.servers"):
        render_k8s(fixed, make_plan(fixed), parse_image(IMAGE), secret_prov_servers="kms:4433")
    assert (
        "secret-provisioning.yaml"
        not in render_k8s(fixed, make_plan(fixed), parse_image(IMAGE)).files
    )


def test_the_bundled_encrypted_recipes(tmp_path, capsys):
    """recipe.yaml provisions its key; recipe.test-key.yaml is the same job with a test key."""
    production = load_recipe(BUNDLED / "recipe.yaml")
    twin = load_recipe(BUNDLED / "recipe.test-key.yaml")
    assert production.files.keys_from("secret-provisioning") and production.secret_provisioning
    assert twin.files.keys_from("insecure-test-key") and twin.secret_provisioning is None
    assert production.app.command == twin.app.command
    assert production.files.encrypted == twin.files.encrypted
    assert (BUNDLED / "README.md").read_text().startswith("# spark-encrypted-csv\n")
    # The README's encrypt step binds the files where the enclave opens them.
    code = main(
        [
            "encrypt",
            str(BUNDLED / "data"),
            str(tmp_path / "in"),
            "--key-from-env",
            "PPML_TEST_DATA_KEY",
            "--recipe",
            str(BUNDLED / "recipe.yaml"),
            "--enclave-path",
            "/data/in",
        ]
    )
    assert code == 2  # the variable is not set: one line, nothing written
    assert "PPML_TEST_DATA_KEY" in capsys.readouterr().err
    assert not (tmp_path / "in").exists()
