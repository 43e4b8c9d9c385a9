"""`ppml-build verify` on a cluster image (an enclave per role), without Docker.

The image is what `ppml-build build` makes of a cluster recipe: one filesystem holding
/ppml/<name>-<role>.manifest.sgx, .sig and .manifest per role, labels ``ppml.role.<role>.*``
(no ``ppml.mrenclave``), and an output directory with the cluster's measurement.json and each
role's own roles/<role>/measurement.json. Two roles are signed here from two variants of the
directory-mode recipe (the executor has a trusted file the driver lacks, so their MRENCLAVEs
differ), and a stand-in engine answers `inspect` and `docker export` for it. Each test checks
what a user sees: the role headers, the failed role named, one error line for unusable input.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import docker.errors
import pytest
import test_verify_directory as directory_mode
from rootfs_factory import add_ppml_support, make_spark_rootfs
from test_verify_directory import OTHER, RECIPE, UNPINNED, copy_tree, failed

from ppml_build.cli import main
from ppml_build.gramine import build as gramine_build
from ppml_build.gramine.render import render_for_rootfs
from ppml_build.gramine.signing import sign_summary, tbs_sigstruct
from ppml_build.image import engine
from ppml_build.image.rootfs import DirRootFS
from ppml_build.pipeline.outputs import image_labels
from ppml_build.pipeline.stages import load_and_plan
from ppml_build.sign import keys
from ppml_build.sign.sigstruct import parse_date

isolated_cache = directory_mode.isolated_cache

NAME = "spark-demo"
ROLES = ("driver", "executor")
IMAGE = "ppml/spark-demo:1"
BASE_DIGEST = "sha256:" + "0" * 64
EXECUTOR_FILE = "/app/executor.py"  # in the executor's manifest only
# The executor's recipe: the driver's, with one more trusted file.
RECIPES = {
    "driver": RECIPE,
    "executor": RECIPE.replace(
        "files: [{src: job.py, dest: /app/job.py}]",
        "files: [{src: job.py, dest: /app/job.py}, {src: executor.py, dest: /app/executor.py}]",
    ),
}


def enclave(role: str) -> str:
    return f"{NAME}-{role}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, standin_libpal):
    """rootfs/ (the image: both roles' enclaves in /ppml), out/ (the build's outputs: the
    cluster record, each role's record, the .manifest.sgx and .sig files), the labels, the key."""
    base = tmp_path_factory.mktemp("cluster")
    assert RECIPES["executor"] != RECIPES["driver"]
    rootfs = make_spark_rootfs(base / "rootfs", libpal=standin_libpal.read_bytes())
    (rootfs / EXECUTOR_FILE.lstrip("/")).write_text("print('executor')\n")
    (base / "job.py").write_text("print('job')\n")
    (base / "executor.py").write_text("print('executor')\n")
    key = keys.generate_key()
    key_path = base / "key.pem"
    key_path.write_bytes(keys.private_key_pem(key))
    date_bcd = parse_date("2026-01-02")
    rendered, sigs, records, recipe = {}, {}, {}, None
    for role in ROLES:
        path = base / f"{role}.yaml"
        path.write_text(RECIPES[role])
        recipe, plan = load_and_plan(path)
        if role == ROLES[0]:
            add_ppml_support(rootfs, plan)
        rendered[role] = render_for_rootfs(recipe, plan, DirRootFS(rootfs), str(path))
        unsigned = tbs_sigstruct(
            rendered[role].data, standin_libpal, date_bcd, source=f"{role}.manifest"
        )
        sigs[role] = keys.sign_sigstruct(unsigned, key, source="test")
        records[role] = gramine_build.measurement_record(
            recipe=recipe,
            plan=plan,
            summary=sign_summary(sigs[role]),
            image=IMAGE,
            image_id="sha256:" + "1" * 64,
            pushed_digest=None,
            base_digest=BASE_DIGEST,
            rendered=rendered[role],
        )
        records[role].update(role=role, enclave=f"/ppml/{enclave(role)}")
    out = base / "out"
    for role in ROLES:
        for where in (rootfs / "ppml", out):
            where.mkdir(parents=True, exist_ok=True)
            (where / f"{enclave(role)}.manifest.sgx").write_bytes(rendered[role].data)
            (where / f"{enclave(role)}.sig").write_bytes(sigs[role].to_bytes())
        (rootfs / "ppml" / f"{enclave(role)}.manifest").write_bytes(rendered[role].data)
        (out / "roles" / role).mkdir(parents=True)
        (out / "roles" / role / "measurement.json").write_text(json.dumps(records[role]))
    record = gramine_build.cluster_record(recipe, records)
    (out / "measurement.json").write_text(json.dumps(record, indent=2))
    summaries = {role: sign_summary(sigs[role]) for role in ROLES}
    labels = image_labels(recipe, None, BASE_DIGEST, "2026-01-02T00:00:00Z", summaries)
    assert "ppml.mrenclave" not in labels and "ppml.role.driver.mrenclave" in labels
    mrenclaves = {role: sigs[role].enclave_hash.hex() for role in ROLES}
    assert mrenclaves["driver"] != mrenclaves["executor"]
    return {
        "base": base,
        "rootfs": rootfs,
        "out": out,
        "record": record,
        "records": records,
        "labels": labels,
        "key": key_path,
        "mrenclave": mrenclaves,
        "mrsigner": sigs["driver"].mrsigner.hex(),
        "libpal": standin_libpal,
    }


class FakeEngine:
    """Stands in for the Docker SDK client verify uses: `inspect` of an image, and `docker
    export` of a container made from it (a tar of a directory on the host)."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[dict, Path]] = {}
        self.exports = 0
        self.api = self

    def add(self, reference: str, labels: dict, root: Path) -> None:
        self.images[reference] = (dict(labels), root)

    def _id(self, reference: str) -> str:
        return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()

    def inspect_image(self, reference: str) -> dict:
        for name, (labels, _) in self.images.items():
            if reference in (name, self._id(name)):
                return {"Id": self._id(name), "Config": {"Labels": labels}}
        raise docker.errors.ImageNotFound(reference)

    def create_container(self, image: str, **_options) -> dict:
        self.inspect_image(image)
        return {"Id": image}

    def export(self, container: str, chunk_size: int):
        self.exports += 1
        root = next(root for name, (_, root) in self.images.items() if self._id(name) == container)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for child in sorted(root.iterdir()):
                tar.add(child, arcname=child.name)
        data = buffer.getvalue()
        return (data[i : i + chunk_size] for i in range(0, len(data), chunk_size))

    def remove_container(self, container: str, force: bool = False) -> None:
        pass


@pytest.fixture
def fake_engine(monkeypatch, cluster):
    """The stand-in engine, holding the cluster image as IMAGE; verify connects to it."""
    fake = FakeEngine()
    fake.add(IMAGE, cluster["labels"], cluster["rootfs"])
    monkeypatch.setattr(engine, "connect", lambda *args, **kwargs: fake)
    return fake


def verify(capsys, *args) -> tuple[int, list[str], str]:
    return directory_mode.verify(capsys, *args)


def one_error_line(err: str) -> str:
    """The one error line on stderr (image mode also says what it is doing there)."""
    errors = [line for line in err.splitlines() if line.startswith("ppml-build: error: ")]
    assert len(errors) == 1, err
    assert all(line.startswith("ppml-build: ") for line in err.splitlines() if line), err
    return errors[0]


def header(role: str) -> str:
    return f"--- role {role}: {enclave(role)} ---"


def sections(lines: list[str]) -> dict[str, list[str]]:
    """Each role's lines, from its header to the next (the last role's without the summary)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in lines[:-1]:
        role = next((r for r in ROLES if line == header(r)), None)
        if role is not None:
            current = role
            out[role] = []
        elif current is not None:
            out[current].append(line)
    return out


def image_copy(cluster, tmp_path: Path) -> Path:
    return copy_tree(cluster["rootfs"], tmp_path / "image")


# --- every role verified ----------------------------------------------------------------------


def test_cluster_image_verifies_every_role(cluster, fake_engine, capsys):
    code, lines, err = verify(capsys, IMAGE, "--record", cluster["out"])
    assert code == 0, "\n".join(lines) + err
    assert fake_engine.exports == 1  # both roles from one export
    mrenclave = cluster["mrenclave"]
    assert lines[-1] == (
        f"verified: 2 roles, driver MRENCLAVE {mrenclave['driver']}, "
        f"executor MRENCLAVE {mrenclave['executor']}"
    )
    assert lines[0] == header("driver") and header("executor") in lines
    by_role = sections(lines)
    assert set(by_role) == set(ROLES)
    record_path = cluster["out"] / "measurement.json"
    for role in ROLES:
        shown = by_role[role]
        assert all(line.startswith("ok   ") for line in shown[:-1]), shown
        assert shown[-1].startswith("verified: ") and shown[-1].endswith(mrenclave[role])
        assert f"ok   mrenclave: {mrenclave[role]}" in "\n".join(shown)
        # Its own labels, never the single-enclave ppml.mrenclave.
        assert f"ok   label:ppml.role.{role}.mrenclave: {mrenclave[role]}" in shown
        assert f"ok   label:ppml.role.{role}.isv_svn: 3" in shown
        assert "ok   label:ppml.base.digest: " + BASE_DIGEST in shown
        assert f"ok   label:org.opencontainers.image.title: {NAME}" in shown
        assert not any("label:ppml.mrenclave" in line for line in shown)
        other = next(r for r in ROLES if r != role)
        assert not any(f"ppml.role.{other}." in line for line in shown)
        assert f"ok   record:mrenclave: {mrenclave[role]}" in shown
        assert any(f"pinned by record {record_path}: roles.{role}" in line for line in shown)
    # Each role's own trusted files: the executor has one more.
    counts = {
        role: next(
            int(line.split()[3]) for line in by_role[role] if line.startswith("ok   trusted_files:")
        )
        for role in ROLES
    }
    assert counts["executor"] == counts["driver"] + 1


def test_cluster_json_report(cluster, fake_engine, capsys):
    code, lines, _ = verify(capsys, IMAGE, "--record", cluster["out"], "--json")
    assert code == 0
    report = json.loads("\n".join(lines))
    assert report["ok"] is True and report["target"] == IMAGE
    assert list(report["roles"]) == list(ROLES)
    for role in ROLES:
        entry = report["roles"][role]
        assert entry["ok"] is True and entry["name"] == enclave(role)
        assert entry["mrenclave"] == cluster["mrenclave"][role]
        assert entry["mrsigner"] == cluster["mrsigner"] and entry["isv_svn"] == 3


def test_without_a_record_the_title_label_names_the_enclaves(cluster, fake_engine, capsys):
    code, lines, err = verify(capsys, IMAGE, "--signer-key", cluster["key"])
    assert code == 0, "\n".join(lines) + err
    assert header("driver") in lines and header("executor") in lines
    code, lines, err = verify(capsys, IMAGE)
    assert code == 1
    by_role = sections(lines)
    assert all(by_role[role][0].startswith(UNPINNED) for role in ROLES)
    assert all(set(failed(by_role[role])) == {"trust_anchor"} for role in ROLES)
    assert lines[-1].startswith("NOT verified: 2 of 2 roles failed: driver (1 of ")
    line = one_error_line(err)
    assert "driver: trust_anchor; executor: trust_anchor" in line
    assert line.count("--allow-unpinned") == 1  # each hint said once
    code, lines, _ = verify(capsys, IMAGE, "--allow-unpinned")
    assert code == 0
    assert lines[-1].startswith(
        "self-consistent only, nothing pins the signer of driver, executor: 2 roles, driver "
    )


# --- one role fails, the other does not -------------------------------------------------------


def test_tampered_trusted_file_of_one_role_fails_that_role_only(
    cluster, fake_engine, tmp_path, capsys
):
    image = image_copy(cluster, tmp_path)
    (image / EXECUTOR_FILE.lstrip("/")).write_text("print('something else')\n")
    fake_engine.add(IMAGE, cluster["labels"], image)
    code, lines, err = verify(capsys, IMAGE, "--record", cluster["out"])
    assert code == 1
    by_role = sections(lines)
    assert failed(by_role["driver"]) == {}
    assert by_role["driver"][-1].startswith("verified: ")
    fails = failed(by_role["executor"])
    assert set(fails) == {"trusted_files", f"trusted_file:{EXECUTOR_FILE}"}
    assert "changed" in fails[f"trusted_file:{EXECUTOR_FILE}"]
    assert lines[-1].startswith("NOT verified: 1 of 2 roles failed: executor (2 of ")
    line = one_error_line(err)
    assert f"{IMAGE}: verification failed: executor: " in line
    assert f"trusted_file:{EXECUTOR_FILE}" in line and "driver" not in line


def test_wrong_role_label_fails_that_role(cluster, fake_engine, capsys):
    labels = {**cluster["labels"], "ppml.role.driver.mrenclave": OTHER}
    del labels["ppml.role.executor.debug"]
    fake_engine.add(IMAGE, labels, cluster["rootfs"])
    code, lines, err = verify(capsys, IMAGE, "--record", cluster["out"])
    assert code == 1
    by_role = sections(lines)
    driver, executor = failed(by_role["driver"]), failed(by_role["executor"])
    assert set(driver) == {"label:ppml.role.driver.mrenclave"}
    assert (
        f"the image says {OTHER} but the recomputed value is {cluster['mrenclave']['driver']}"
        in driver["label:ppml.role.driver.mrenclave"]
    )
    assert set(executor) == {"label:ppml.role.executor.debug"}
    assert "missing (expected false)" in executor["label:ppml.role.executor.debug"]
    line = one_error_line(err)
    assert "driver: label:ppml.role.driver.mrenclave" in line
    assert "executor: label:ppml.role.executor.debug" in line


def test_missing_role_manifest_is_one_error_line(cluster, fake_engine, tmp_path, capsys):
    image = image_copy(cluster, tmp_path)
    (image / "ppml" / f"{enclave('executor')}.manifest.sgx").unlink()
    fake_engine.add(IMAGE, cluster["labels"], image)
    code, lines, err = verify(capsys, IMAGE, "--record", cluster["out"])
    assert code == 2 and lines == []
    line = one_error_line(err)
    assert f"no {enclave('executor')}.manifest.sgx for role executor" in line
    assert f"has: {enclave('driver')}.manifest.sgx" in line


# --- --name: one role ---------------------------------------------------------------------------


def test_name_verifies_that_role_only(cluster, fake_engine, capsys):
    code, lines, err = verify(
        capsys, IMAGE, "--name", enclave("executor"), "--record", cluster["out"]
    )
    assert code == 0, "\n".join(lines) + err
    assert not any(line.startswith("--- role ") for line in lines)  # one enclave's report
    assert lines[-1].endswith(f"MRENCLAVE {cluster['mrenclave']['executor']}")
    assert f"ok   label:ppml.role.executor.mrenclave: {cluster['mrenclave']['executor']}" in lines
    assert not any("ppml.role.driver." in line or "label:ppml.mrenclave" in line for line in lines)
    assert any("roles.executor" in line for line in lines)

    code, _, err = verify(capsys, IMAGE, "--name", "spark-demo-worker")
    assert code == 2
    line = one_error_line(err)
    assert "--name spark-demo-worker" in line and "executor: spark-demo-executor" in line


# --- --record: the cluster's record, or one role's ----------------------------------------------


def test_mismatching_role_entry_of_the_cluster_record_fails(cluster, fake_engine, tmp_path, capsys):
    record = json.loads(json.dumps(cluster["record"]))
    record["roles"]["executor"]["mrenclave"] = OTHER
    path = tmp_path / "measurement.json"
    path.write_text(json.dumps(record))
    code, lines, err = verify(capsys, IMAGE, "--record", path)
    assert code == 1
    by_role = sections(lines)
    assert failed(by_role["driver"]) == {}
    fails = failed(by_role["executor"])
    assert set(fails) == {"record:mrenclave"}
    assert f"mrenclave is {OTHER} in {path}: roles.executor but" in fails["record:mrenclave"]
    assert "executor: record:mrenclave" in one_error_line(err)


def test_cluster_record_of_other_roles_is_one_error_line(cluster, fake_engine, tmp_path, capsys):
    record = json.loads(json.dumps(cluster["record"]))
    record["roles"]["worker"] = record["roles"].pop("executor")
    path = tmp_path / "measurement.json"
    path.write_text(json.dumps(record))
    code, lines, err = verify(capsys, IMAGE, "--record", path)
    assert code == 2 and lines == []
    line = one_error_line(err)
    assert "the record's roles are driver, worker" in line and "name driver, executor" in line
    assert fake_engine.exports == 0  # refused before any export


def test_a_roles_own_record_verifies_that_role(cluster, fake_engine, tmp_path, capsys):
    own = cluster["out"] / "roles" / "executor" / "measurement.json"
    code, lines, err = verify(capsys, IMAGE, "--record", own)
    assert code == 0, "\n".join(lines) + err
    assert not any(line.startswith("--- role ") for line in lines)
    assert any(line.startswith("ok   record:trusted_files: ") for line in lines)
    assert f"ok   label:ppml.role.executor.mrenclave: {cluster['mrenclave']['executor']}" in lines
    # The same record given for the other role's enclave: its values differ.
    code, lines, _ = verify(capsys, IMAGE, "--record", own, "--name", enclave("driver"))
    assert code == 1 and "record:mrenclave" in failed(lines)
    # A record that names no role of this image.
    nameless = tmp_path / "measurement.json"
    nameless.write_text(json.dumps({**cluster["records"]["executor"], "enclave": "/ppml/app"}))
    code, _, err = verify(capsys, IMAGE, "--record", nameless)
    assert code == 2
    line = one_error_line(err)
    assert "is a cluster image" in line and "--name" in line


# --- --policy: a role's policy for its role ----------------------------------------------------


def test_role_policies_apply_to_their_role_only(cluster, fake_engine, tmp_path, capsys):
    policies = tmp_path / "policies"
    policies.mkdir()
    code = main(
        [
            "policy",
            str(cluster["out"] / "measurement.json"),
            "--format",
            "gramine-ratls",
            "--output",
            str(policies),
        ]
    )
    assert code == 0
    own = [policies / f"{role}-ra-tls.env" for role in ROLES]
    code, lines, err = verify(capsys, IMAGE, "--policy", own[0], "--policy", own[1])
    assert code == 0, "\n".join(lines) + err
    by_role = sections(lines)
    for role in ROLES:
        checks = [line for line in by_role[role] if line.startswith("ok   policy:")]
        assert checks == [f"ok   policy:gramine-ratls: {role}-ra-tls.env accepts this enclave"]
        assert any(f"pinned by policy {role}-ra-tls.env" in line for line in by_role[role])
    # A policy named for no role is applied to every role: the driver's values reject the
    # executor's enclave.
    shutil.copy(own[0], tmp_path / "ra-tls.env")
    code, lines, err = verify(capsys, IMAGE, "--policy", tmp_path / "ra-tls.env")
    assert code == 1
    by_role = sections(lines)
    assert failed(by_role["driver"]) == {}
    assert set(failed(by_role["executor"])) == {"policy:gramine-ratls"}
    assert "ra-tls.env rejects this enclave" in failed(by_role["executor"])["policy:gramine-ratls"]
    assert "executor: policy:gramine-ratls" in one_error_line(err)


# --- directory mode, and single-enclave images ---------------------------------------------------


def test_directory_mode_compares_a_role_with_its_cluster_record_entry(cluster, capsys):
    base = [cluster["out"], "--rootfs", cluster["rootfs"], "--record", cluster["out"]]
    code, lines, err = verify(capsys, *base, "--name", enclave("driver"))
    assert code == 0, "\n".join(lines) + err
    record_path = cluster["out"] / "measurement.json"
    assert any(f"pinned by record {record_path}: roles.driver" in line for line in lines)
    assert f"ok   record:mrenclave: {cluster['mrenclave']['driver']}" in lines
    code, _, err = verify(capsys, *base)
    assert code == 2 and "--name" in one_error_line(err)


def test_single_enclave_image_is_verified_as_before(cluster, fake_engine, tmp_path, capsys):
    """A stand-in single-enclave image: the driver's enclave as APP, ppml.mrenclave labels."""
    image = image_copy(cluster, tmp_path)
    for suffix in (".manifest.sgx", ".sig", ".manifest"):
        (image / "ppml" / f"{enclave('driver')}{suffix}").rename(image / "ppml" / f"{NAME}{suffix}")
        (image / "ppml" / f"{enclave('executor')}{suffix}").unlink()
    record = {**cluster["records"]["driver"]}
    for key in ("role", "enclave"):
        record.pop(key)
    path = tmp_path / "measurement.json"
    path.write_text(json.dumps(record))
    recipe, _ = load_and_plan(cluster["base"] / "driver.yaml")
    summary = {
        "mrenclave": cluster["mrenclave"]["driver"],
        "mrsigner": cluster["mrsigner"],
        "isv_prod_id": 7,
        "isv_svn": 3,
        "debug": False,
    }
    labels = image_labels(recipe, summary, BASE_DIGEST, "2026-01-02T00:00:00Z")
    fake_engine.add("ppml/single:1", labels, image)
    code, lines, err = verify(capsys, "ppml/single:1", "--record", path)
    assert code == 0, "\n".join(lines) + err
    assert not any(line.startswith("--- role ") for line in lines)
    assert f"ok   label:ppml.mrenclave: {cluster['mrenclave']['driver']}" in lines
    assert lines[-1] == (
        f"verified: {len(lines) - 1} checks passed, MRENCLAVE {cluster['mrenclave']['driver']}"
    )
    # The cluster's record names no enclave of this image.
    code, _, err = verify(capsys, "ppml/single:1", "--record", cluster["out"])
    assert code == 2
    assert f"no role's enclave is {NAME}" in one_error_line(err)
