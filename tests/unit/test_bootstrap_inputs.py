"""What decides a base image's cache key, and which targets a --only selection makes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ppml_build.errors import ImageError
from ppml_build.image import bootstrap
from ppml_build.image.bootstrap import BootstrapOptions, TargetSpec, input_hash, select_targets


def test_only_pulls_in_what_a_target_builds_on_in_build_order():
    assert select_targets(["spark-standin"]) == ["debian", "spark", "spark-standin"]
    assert select_targets(["flink", "debian"]) == ["debian", "flink"]
    assert select_targets([]) == list(bootstrap.TARGET_NAMES)
    assert select_targets(["spark-gramine"]) == ["debian", "gramine", "spark-gramine"]
    with pytest.raises(ImageError, match="unknown target"):
        select_targets(["spark", "graphene"])


@pytest.fixture
def spec(tmp_path) -> TargetSpec:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\n")
    lib = tmp_path / "libpal.so"
    lib.write_bytes(b"\x7fELF one")
    return TargetSpec("t", "ppml/t", "1", "debian", dockerfile, {"V": "1"}, {"libpal.so": lib})


def test_same_inputs_same_hash(spec):
    assert input_hash(spec, "p") == input_hash(replace(spec, name="other", tag="2"), "p")


def test_every_input_changes_the_hash(spec, tmp_path):
    base = input_hash(spec, "p")
    assert input_hash(spec, "q") != base  # parent rebuilt from other inputs
    assert input_hash(replace(spec, build_args={"V": "2"}), "p") != base
    assert input_hash(replace(spec, labels={"k": "v"}), "p") != base
    spec.dockerfile.write_text("FROM x\nRUN true\n")
    assert input_hash(spec, "p") != base
    spec.dockerfile.write_text("FROM x\n")
    spec.context_files["libpal.so"].write_bytes(b"\x7fELF two")
    assert input_hash(spec, "p") != base


def test_debootstrap_hash_depends_on_suite_and_variant_only():
    opts = BootstrapOptions()
    debian = bootstrap.target_specs(opts, None)["debian"]
    other_mirror = bootstrap.target_specs(
        replace(opts, mirror="http://mirror.example/debian"), None
    )["debian"]
    trixie = bootstrap.target_specs(replace(opts, suite="trixie"), None)["debian"]
    assert input_hash(debian, None) == input_hash(other_mirror, None)
    assert input_hash(trixie, None) != input_hash(debian, None)


def test_ca_bundle_is_not_an_input(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    plain = bootstrap.target_specs(BootstrapOptions(), None)["spark"]
    proxied = bootstrap.target_specs(BootstrapOptions(ca_bundle=bundle), None)["spark"]
    assert input_hash(plain, "p") == input_hash(proxied, "p")


def test_spark_and_flink_versions_are_build_args():
    specs = bootstrap.target_specs(
        BootstrapOptions(spark_version="3.5.7", flink_version="1.20.3"), None
    )
    assert (
        specs["spark"].build_args == {"SPARK_VERSION": "3.5.7"}
        and specs["spark"].reference == "ppml/spark-base:3.5.7"
    )
    assert specs["flink"].build_args == {"FLINK_VERSION": "1.20.3"}
    assert specs["spark-standin"].parent == "spark"
    assert specs["spark-standin"].labels[bootstrap.STANDIN_LABEL] == "true"


def test_dockerfiles_pin_versions_as_build_args_and_label_contents():
    root = bootstrap.PROJECT_ROOT / "base_images"
    for name, arg in (("spark", "SPARK_VERSION"), ("flink", "FLINK_VERSION")):
        text = (root / name / "Dockerfile").read_text()
        assert f"ARG {arg}=" in text and "ARG BASE" in text
        assert "org.opencontainers.image.version" in text
        assert "/usr/lib/jvm/java-17-openjdk-amd64" in text
        assert "extra-ca.pem" in text  # the CA bundle only reaches the download stage
    default_versions = {
        "spark": bootstrap.DEFAULT_SPARK_VERSION,
        "flink": bootstrap.DEFAULT_FLINK_VERSION,
    }
    for name, version in default_versions.items():
        assert f"_VERSION={version}" in (root / name / "Dockerfile").read_text()


@pytest.mark.parametrize("good", ["127.0.0.1:5000", "registry.example", "reg-1.example:443"])
def test_registry_address_accepted(good):
    assert bootstrap.validate_registry(good) == good


@pytest.mark.parametrize("bad", ["http://127.0.0.1:5000", "127.0.0.1:5000/path", "", "a b"])
def test_registry_address_rejected(bad):
    with pytest.raises(ImageError, match="HOST:PORT"):
        bootstrap.validate_registry(bad)


def test_ca_bundle_checks(tmp_path):
    good = tmp_path / "ok.pem"
    good.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert bootstrap.check_ca_bundle(good) == good
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(ImageError, match="not a PEM"):
        bootstrap.check_ca_bundle(bad)
    with pytest.raises(ImageError, match="cannot read"):
        bootstrap.check_ca_bundle(tmp_path / "absent.pem")
    assert bootstrap.default_ca_bundle({"PIP_CERT": str(good)}) == (good, "PIP_CERT")
    assert bootstrap.default_ca_bundle({"PIP_CERT": str(tmp_path / "nope")}) is None
    assert bootstrap.default_ca_bundle({}) is None


def test_cli_rejects_auth_without_registry_before_touching_the_engine(
    tmp_path, capsys, monkeypatch
):
    from ppml_build.cli import main

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    auth = tmp_path / "auth.json"
    auth.write_text('{"username": "u", "password": "p"}')
    assert main(["base", "bootstrap", "--registry-auth", str(auth)]) == 2
    assert "needs --registry" in capsys.readouterr().err
    assert main(["base", "bootstrap", "--only", "sparky"]) == 2
    assert "unknown target" in capsys.readouterr().err


def _source_dir(tmp_path, files: dict[str, bytes]):
    import hashlib

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    )
    return tmp_path


def test_gramine_source_files_are_checked_against_their_sums(tmp_path):
    src = _source_dir(tmp_path, {"gramine-1.9.tar.gz": b"g", "glibc-2.40.tar.gz": b"c"})
    files = bootstrap.gramine_source_files(src)
    assert set(files) == {"SHA256SUMS", "gramine-1.9.tar.gz", "glibc-2.40.tar.gz"}
    (src / "glibc-2.40.tar.gz").write_bytes(b"tampered")
    with pytest.raises(ImageError, match="glibc-2.40.tar.gz does not match its sha256"):
        bootstrap.gramine_source_files(src)
    (src / "glibc-2.40.tar.gz").unlink()
    with pytest.raises(ImageError, match="glibc-2.40.tar.gz is listed in SHA256SUMS but missing"):
        bootstrap.gramine_source_files(src)


def test_gramine_source_needs_sums_and_the_gramine_tarball(tmp_path):
    with pytest.raises(ImageError, match="no SHA256SUMS there"):
        bootstrap.gramine_source_files(tmp_path)
    src = _source_dir(tmp_path, {"glibc-2.40.tar.gz": b"c"})
    with pytest.raises(ImageError, match="gramine-1.9.tar.gz is not listed"):
        bootstrap.gramine_source_files(src)
    (src / "SHA256SUMS").write_text("not a sum line\n")
    with pytest.raises(ImageError, match="SHA256SUMS:1: expected"):
        bootstrap.gramine_source_files(src)


def test_gramine_from_source_is_cached_by_its_tarballs(tmp_path):
    src = _source_dir(tmp_path, {"gramine-1.9.tar.gz": b"g", "glibc-2.40.tar.gz": b"c"})
    from_source = bootstrap.target_specs(BootstrapOptions(gramine_source=src), None)["gramine"]
    from_apt = bootstrap.target_specs(BootstrapOptions(), None)["gramine"]
    assert (
        from_source.dockerfile.name == "Dockerfile.source"
        and from_apt.dockerfile.name == "Dockerfile"
    )
    first = input_hash(from_source, "p")
    assert first != input_hash(from_apt, "p")
    (src / "glibc-2.40.tar.gz").write_bytes(b"other")
    _source_dir(tmp_path, {"gramine-1.9.tar.gz": b"g", "glibc-2.40.tar.gz": b"other"})
    again = bootstrap.target_specs(BootstrapOptions(gramine_source=src), None)["gramine"]
    assert input_hash(again, "p") != first
    spark = bootstrap.target_specs(BootstrapOptions(gramine_source=src), None)["spark-gramine"]
    assert spark.parent == "gramine"


def test_a_bad_gramine_source_is_one_line_and_exit_2_before_any_docker_work(
    tmp_path, capsys, monkeypatch
):
    from ppml_build.cli import main
    from ppml_build.image import engine

    def no_engine():
        raise AssertionError("the engine was asked before the input was checked")

    monkeypatch.setattr(engine, "connect", no_engine)
    assert (
        main(["base", "bootstrap", "--only", "spark-gramine", "--gramine-source", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--gramine-source {tmp_path}: no SHA256SUMS there" in err[0]
